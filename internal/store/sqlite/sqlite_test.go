package sqlite

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/store"
	"github.com/commucat/commucat/internal/store/storetest"
)

// openTemp opens and migrates a fresh database in a temporary directory.
func openTemp(tb testing.TB) *Store {
	tb.Helper()
	s, err := Open(tb.Context(), filepath.Join(tb.TempDir(), "sub", "dir", "commucat.db"))
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	if _, _, err := s.Migrate(tb.Context()); err != nil {
		tb.Fatalf("Migrate: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

func BenchmarkEnqueue(b *testing.B) {
	storetest.BenchEnqueue(b, func(b *testing.B) store.Store { return openTemp(b) })
}

func TestOpenCreatesDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "c.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file: %v", err)
	}
	if s.Kind() != "sqlite" {
		t.Errorf("Kind = %q", s.Kind())
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestOpenRejectsURIs(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file:x.db", filepath.Join(t.TempDir(), "x.db?mode=ro")} {
		if s, err := Open(t.Context(), p); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", p)
		}
	}
}

func TestMigrations(t *testing.T) {
	storetest.RunMigrations(t, storetest.MigrationBackend{
		Latest: LatestVersion(),
		Open: func(t *testing.T) storetest.Migratable {
			s, err := Open(t.Context(), filepath.Join(t.TempDir(), "m.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		Recorded: func(t *testing.T, st storetest.Migratable) []int {
			rows, err := st.(*Store).readers.QueryContext(t.Context(), `SELECT version, applied_at FROM schema_migrations ORDER BY version`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var vs []int
			for rows.Next() {
				var v int
				var at int64
				if err := rows.Scan(&v, &at); err != nil {
					t.Fatal(err)
				}
				if d := time.Since(fromMicros(at)); d < -time.Hour || d > time.Hour {
					t.Errorf("version %d applied at %v", v, fromMicros(at))
				}
				vs = append(vs, v)
			}
			return vs
		},
		Record: func(t *testing.T, st storetest.Migratable, v int) {
			if _, err := st.(*Store).writer.ExecContext(t.Context(),
				`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, v, toMicros(time.Now())); err != nil {
				t.Fatal(err)
			}
		},
	})
}

func TestMigrationCreatesEveryTable(t *testing.T) {
	s := openTemp(t)
	want := []string{
		"users", "devices", "sessions", "relay_queue", "channels", "channel_members", "groups",
		"group_members", "pairing_codes", "device_key_events", "admin_tokens", "noise_keys",
		"noise_config", "federation_peers", "federation_outbox", "user_blobs", "schema_migrations",
		"inbox_usage",
	}
	for _, name := range want {
		var n int
		err := s.readers.QueryRowContext(t.Context(),
			`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, name).Scan(&n)
		if err != nil || n != 1 {
			t.Errorf("table %s: %d, %v", name, n, err)
		}
	}
	// relay_queue ids are AUTOINCREMENT (never reused).
	var sqlText string
	if err := s.readers.QueryRowContext(t.Context(),
		`SELECT sql FROM sqlite_master WHERE name = 'relay_queue'`).Scan(&sqlText); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.ToUpper(sqlText), "AUTOINCREMENT") {
		t.Errorf("relay_queue is not AUTOINCREMENT: %s", sqlText)
	}
}

func TestPragmas(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t)
	var (
		mode         string
		sync, fk, bt int
	)
	for _, c := range []struct {
		pragma string
		dst    any
	}{
		{"journal_mode", &mode}, {"synchronous", &sync}, {"foreign_keys", &fk}, {"busy_timeout", &bt},
	} {
		if err := s.writer.QueryRowContext(ctx, "PRAGMA "+c.pragma).Scan(c.dst); err != nil {
			t.Fatalf("PRAGMA %s: %v", c.pragma, err)
		}
	}
	if mode != "wal" || sync != 2 || fk != 1 || bt != busyTimeoutMS {
		t.Errorf("writer: journal_mode %q, synchronous %d, foreign_keys %d, busy_timeout %d; want wal, 2, 1, %d",
			mode, sync, fk, bt, busyTimeoutMS)
	}
	// Statement journals in memory (durability is the WAL's, synchronous
	// stays FULL).
	var temp int
	if err := s.writer.QueryRowContext(ctx, "PRAGMA temp_store").Scan(&temp); err != nil || temp != 2 {
		t.Errorf("writer: temp_store %d, %v; want 2 (memory)", temp, err)
	}
	// Inside Tx too (the same connection).
	err := s.Tx(ctx, func(q store.Queries) error {
		return q.(*queries).w.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk)
	})
	if err != nil || fk != 1 {
		t.Errorf("foreign_keys in Tx = %d, %v", fk, err)
	}
	// Readers: WAL (a property of the file), busy timeout, read-only.
	if err := s.readers.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("reader journal_mode = %q, %v", mode, err)
	}
	if err := s.readers.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&bt); err != nil || bt != busyTimeoutMS {
		t.Errorf("reader busy_timeout = %d, %v", bt, err)
	}
	if _, err := s.readers.ExecContext(ctx, `INSERT INTO noise_config (id, public_key, recorded_at) VALUES (1, zeroblob(32), 0)`); err == nil {
		t.Error("a reader connection accepted a write")
	}
}

func TestSurvivesReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "persist.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	u := store.User{ID: "u1", Handle: "alice", CreatedAt: now, UpdatedAt: now}
	d := store.Device{ID: "d1", UserID: "u1", Status: store.DeviceActive, CreatedAt: now, UpdatedAt: now}
	d.PublicKey[0] = 7
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	ids, err := s.EnqueueInbox(ctx, []store.InboxEntry{{
		EnvelopeID: "e1", Recipient: "d1", Sender: "d0", Channel: 5, FrameType: 3,
		Payload: []byte("hello"), CreatedAt: now, ExpiresAt: now.Add(time.Hour),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	applied, v, err := s.Migrate(ctx)
	if err != nil || applied != 0 || v != LatestVersion() {
		t.Fatalf("Migrate after reopen = %d, %d, %v", applied, v, err)
	}
	got, err := s.GetUser(ctx, "u1")
	if err != nil || got.Handle != "alice" {
		t.Fatalf("GetUser after reopen = %+v, %v", got, err)
	}
	dev, err := s.GetDevice(ctx, "d1")
	if err != nil || dev.PublicKey != d.PublicKey {
		t.Fatalf("GetDevice after reopen = %+v, %v", dev, err)
	}
	l, err := s.ListInbox(ctx, "d1", 0, now, 10)
	if err != nil || len(l) != 1 || l[0].QueueID != ids[0] || string(l[0].Payload) != "hello" {
		t.Fatalf("ListInbox after reopen = %+v, %v", l, err)
	}
	// Queue ids continue after a reopen.
	ids2, err := s.EnqueueInbox(ctx, []store.InboxEntry{{
		EnvelopeID: "e2", Recipient: "d1", Sender: "d0", Channel: 5, FrameType: 3,
		Payload: []byte("again"), CreatedAt: now, ExpiresAt: now.Add(time.Hour),
	}})
	if err != nil || ids2[0] <= ids[0] {
		t.Fatalf("EnqueueInbox after reopen = %v, %v", ids2, err)
	}
}

// TestForeignKeyCascade checks the ON DELETE behaviour of the schema, which
// the store API does not expose.
func TestForeignKeyCascade(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t)
	now := time.Now()
	mk := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mk(s.CreateUser(ctx, store.User{ID: "u1", Handle: "a", CreatedAt: now, UpdatedAt: now}))
	for _, id := range []string{"d1", "d2"} {
		mk(s.CreateDevice(ctx, store.Device{ID: id, UserID: "u1", Status: store.DeviceActive, CreatedAt: now, UpdatedAt: now}))
	}
	mk(s.CreateGroup(ctx, store.Group{ID: "g1", OwnerDevice: "d1", CreatedAt: now}))
	mk(s.UpsertGroupMember(ctx, store.GroupMember{GroupID: "g1", DeviceID: "d1", Role: store.RoleOwner, JoinedAt: now}))
	g := "g1"
	mk(s.CreateChannel(ctx, store.Channel{ID: 1, GroupID: &g, CreatedBy: "d1", CreatedAt: now}, []string{"d1", "d2"}, now))
	mk(s.CreateSession(ctx, store.Session{ID: "s1", UserID: "u1", DeviceID: "d1", NodeID: "n", CreatedAt: now, LastActiveAt: now}))
	_, err := s.EnqueueInbox(ctx, []store.InboxEntry{{EnvelopeID: "e", Recipient: "d1", Sender: "d2", CreatedAt: now, ExpiresAt: now.Add(time.Hour), Payload: []byte{1}}})
	mk(err)
	_, err = s.writer.ExecContext(ctx, `INSERT INTO pairing_codes (pair_code, user_id, issuer_device_id, issued_at, expires_at, redeemed_device_id)
		VALUES ('ABCD-EF23', 'u1', 'd2', 0, 0, 'd1')`)
	mk(err)

	// Deleting a group unbinds its channels.
	_, err = s.writer.ExecContext(ctx, `DELETE FROM groups WHERE group_id = 'g1'`)
	mk(err)
	c, err := s.GetChannel(ctx, 1)
	mk(err)
	if c.GroupID != nil {
		t.Errorf("channel group after group deletion = %q", *c.GroupID)
	}
	if _, err := s.GetGroupMember(ctx, "g1", "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("group member after group deletion: %v", err)
	}

	// Deleting device d1 cascades to its sessions and inbox, sets the
	// pairing code's redeemed device to NULL, and leaves channel members
	// (plain text) alone.
	_, err = s.writer.ExecContext(ctx, `DELETE FROM devices WHERE device_id = 'd1'`)
	mk(err)
	if _, err := s.GetSession(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session after device deletion: %v", err)
	}
	if n, _, _ := s.InboxStats(ctx); n != 0 {
		t.Errorf("inbox after device deletion: %d entries", n)
	}
	var redeemed *string
	mk(s.readers.QueryRowContext(ctx, `SELECT redeemed_device_id FROM pairing_codes`).Scan(&redeemed))
	if redeemed != nil {
		t.Errorf("redeemed_device_id = %q, want NULL", *redeemed)
	}
	if ok, _ := s.IsChannelMember(ctx, 1, "d1"); !ok {
		t.Error("channel member removed with the device")
	}

	// Deleting the user cascades to devices and pairing codes.
	_, err = s.writer.ExecContext(ctx, `DELETE FROM users WHERE user_id = 'u1'`)
	mk(err)
	if _, err := s.GetDevice(ctx, "d2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("device after user deletion: %v", err)
	}
	var n int
	mk(s.readers.QueryRowContext(ctx, `SELECT count(*) FROM pairing_codes`).Scan(&n))
	if n != 0 {
		t.Errorf("pairing codes after user deletion: %d", n)
	}
}

// Migration 2 fills inbox_usage from the entries already queued.
func TestMigrationInboxUsageBackfill(t *testing.T) {
	ctx := t.Context()
	all := migrations
	t.Cleanup(func() { migrations = all })
	migrations = all[:1]
	s, err := Open(ctx, t.TempDir()+"/db.sqlite")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, v, err := s.Migrate(ctx); err != nil || v != 1 {
		t.Fatalf("Migrate to 1: %d, %v", v, err)
	}
	storetest.InboxUsageBackfill(t, s, func() {
		migrations = all
		if _, v, err := s.Migrate(ctx); err != nil || v != len(all) {
			t.Fatalf("Migrate to %d: %d, %v", len(all), v, err)
		}
	})
}

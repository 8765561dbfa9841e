package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/commucat/commucat/internal/store"
	"github.com/commucat/commucat/internal/store/storetest"
	"github.com/commucat/commucat/internal/testenv"
)

// The tests need COMMUCAT_TEST_PG_DSN (a user that may create databases),
// e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable; without
// it they skip, except under CI=true where they fail (internal/testenv).

// freshDatabase creates an empty database commucat_test_<random> and
// returns its DSN; cleanup terminates its connections and drops it. Where
// the server supports it the database's default collation is ICU en-US,
// not byte order, so the suite checks that sorting does not depend on it.
func freshDatabase(tb testing.TB) string {
	tb.Helper()
	admin := testenv.PostgresDSN(tb)
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	name := "commucat_test_" + hex.EncodeToString(rnd[:])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		tb.Fatalf("connect %s: %v", testenv.PostgresEnv, err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+ident+
		` TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'`); err != nil {
		// Older servers or no ICU: the server's default.
		if _, err := conn.Exec(ctx, `CREATE DATABASE `+ident); err != nil {
			tb.Fatalf("create database: %v", err)
		}
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			tb.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx,
			`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name); err != nil {
			tb.Errorf("terminate connections to %s: %v", name, err)
		}
		if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+ident); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	return withDatabase(tb, admin, name)
}

// withDatabase returns dsn naming database name instead.
func withDatabase(tb testing.TB, dsn, name string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			tb.Fatalf("%s: %v", testenv.PostgresEnv, err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String()
	}
	return dsn + " dbname=" + name // key=value: the last setting wins
}

// openDSN opens a Store on dsn, closed at cleanup.
func openDSN(tb testing.TB, dsn string) *Store {
	tb.Helper()
	s, err := Open(tb.Context(), dsn)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// openFresh opens and migrates a Store on a fresh database.
func openFresh(tb testing.TB) *Store {
	tb.Helper()
	s := openDSN(tb, freshDatabase(tb))
	if _, _, err := s.Migrate(tb.Context()); err != nil {
		tb.Fatalf("Migrate: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openFresh(t) })
}

// BenchmarkEnqueue: batch=1 is the single-insert baseline, batch=256 the
// group commit of router.Writer.
//
//	COMMUCAT_TEST_PG_DSN=postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable \
//	  go test -run '^$' -bench Enqueue ./internal/store/postgres
func BenchmarkEnqueue(b *testing.B) {
	storetest.BenchEnqueue(b, func(b *testing.B) store.Store { return openFresh(b) })
}

func TestOpen(t *testing.T) {
	dsn := freshDatabase(t)
	s := openDSN(t, dsn)
	if s.Kind() != "postgres" {
		t.Errorf("Kind = %q", s.Kind())
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if got := s.pool.Config().MaxConns; got != DefaultMaxConns {
		t.Errorf("MaxConns = %d, want %d", got, DefaultMaxConns)
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	if !strings.Contains(dsn, "://") {
		sep = " "
	}
	param := "pool_max_conns=3"
	s3 := openDSN(t, dsn+sep+param)
	if got := s3.pool.Config().MaxConns; got != 3 {
		t.Errorf("MaxConns with %s = %d", param, got)
	}

	for _, bad := range []string{"", "   ", "postgres://[::1", "postgres://nobody@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"} {
		if s, err := Open(t.Context(), bad); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", bad)
		}
	}
}

func TestMigrations(t *testing.T) {
	storetest.RunMigrations(t, storetest.MigrationBackend{
		Latest: LatestVersion(),
		Open:   func(t *testing.T) storetest.Migratable { return openDSN(t, freshDatabase(t)) },
		Recorded: func(t *testing.T, st storetest.Migratable) []int {
			return recordedVersions(t, st.(*Store))
		},
		Record: func(t *testing.T, st storetest.Migratable, v int) {
			if _, err := st.(*Store).pool.Exec(t.Context(),
				`INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())`, v); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// recordedVersions returns the versions in schema_migrations, ascending,
// each checked to carry a plausible applied_at.
func recordedVersions(t *testing.T, s *Store) []int {
	t.Helper()
	rows, err := s.pool.Query(t.Context(), `SELECT version, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Version   int
		AppliedAt time.Time
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	var vs []int
	for _, r := range got {
		if r.AppliedAt.IsZero() || time.Since(r.AppliedAt).Abs() > time.Hour {
			t.Errorf("schema_migrations row %+v", r)
		}
		vs = append(vs, r.Version)
	}
	return vs
}

func TestMigrationCreatesEveryTable(t *testing.T) {
	s := openFresh(t)
	ctx := t.Context()
	want := []string{
		"users", "devices", "sessions", "relay_queue", "channels", "channel_members", "groups",
		"group_members", "pairing_codes", "device_key_events", "admin_tokens", "noise_keys",
		"noise_config", "federation_peers", "federation_outbox", "user_blobs", "schema_migrations",
		"inbox_usage",
	}
	for _, name := range want {
		var ok bool
		if err := s.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok); err != nil || !ok {
			t.Errorf("table %s: %v, %v", name, ok, err)
		}
	}
	// The type mapping of §9.1, and byte-order collation on every text
	// column.
	rows, err := s.pool.Query(ctx,
		`SELECT table_name, column_name, data_type, coalesce(collation_name, '')
		FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name <> 'schema_migrations'`)
	if err != nil {
		t.Fatal(err)
	}
	type col struct{ Table, Column, Type, Collation string }
	cols, err := pgx.CollectRows(rows, pgx.RowToStructByPos[col])
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"text": true, "bytea": true, "bigint": true, "boolean": true, "timestamp with time zone": true}
	for _, c := range cols {
		if !allowed[c.Type] {
			t.Errorf("%s.%s has type %s", c.Table, c.Column, c.Type)
		}
		if c.Type == "text" && c.Collation != "C" {
			t.Errorf("%s.%s has collation %q, want C", c.Table, c.Column, c.Collation)
		}
		if c.Type != "text" && c.Collation != "" {
			t.Errorf("%s.%s (%s) has collation %q", c.Table, c.Column, c.Type, c.Collation)
		}
	}
	var identity string
	if err := s.pool.QueryRow(ctx,
		`SELECT is_identity FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = 'relay_queue' AND column_name = 'queue_id'`).Scan(&identity); err != nil || identity != "YES" {
		t.Errorf("relay_queue.queue_id is not an identity column: %q, %v", identity, err)
	}
}

// TestConcurrentMigrate starts two nodes (two Stores, two pools) migrating
// one fresh database at once: both succeed and each migration is applied
// once. A third connection holds the migration lock until both wait for
// it, so the two really contend.
func TestConcurrentMigrate(t *testing.T) {
	ctx := t.Context()
	dsn := freshDatabase(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)

	holder, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
		t.Fatal(err)
	}

	type result struct{ applied, version int }
	results := make([]result, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, s := range []*Store{a, b} {
		wg.Go(func() {
			results[i].applied, results[i].version, errs[i] = s.Migrate(ctx)
		})
	}
	// Wait until both wait for the advisory lock, then release it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		if err := holder.QueryRow(ctx,
			`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d migrators wait for the lock, want 2", waiting)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Fatalf("Migrate %d: %v", i, err)
		}
		if results[i].version != LatestVersion() {
			t.Errorf("Migrate %d version = %d, want %d", i, results[i].version, LatestVersion())
		}
	}
	if n := results[0].applied + results[1].applied; n != LatestVersion() {
		t.Errorf("applied %d + %d migrations, want %d in all", results[0].applied, results[1].applied, LatestVersion())
	}
	if vs := recordedVersions(t, a); len(vs) != LatestVersion() || vs[0] != 1 || vs[len(vs)-1] != LatestVersion() {
		t.Errorf("schema_migrations holds versions %v, want 1…%d once each", vs, LatestVersion())
	}
	for _, s := range []*Store{a, b} {
		if v, pending, err := s.SchemaVersion(ctx); err != nil || pending || v != LatestVersion() {
			t.Errorf("SchemaVersion = %d, %v, %v", v, pending, err)
		}
	}
}

// TestTwoStores: two nodes on one database see each other's writes.
func TestTwoStores(t *testing.T) {
	ctx := t.Context()
	dsn := freshDatabase(t)
	a := openDSN(t, dsn)
	if _, _, err := a.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	b := openDSN(t, dsn)
	if applied, _, err := b.Migrate(ctx); err != nil || applied != 0 {
		t.Fatalf("second node Migrate = %d, %v", applied, err)
	}
	now := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.CreateUser(ctx, store.User{ID: "u1", Handle: "alice", CreatedAt: now, UpdatedAt: now}))
	must(a.CreateDevice(ctx, store.Device{ID: "d1", UserID: "u1", Status: store.DeviceActive, CreatedAt: now, UpdatedAt: now}))
	u, err := b.GetUserByHandle(ctx, "alice")
	if err != nil || u.ID != "u1" {
		t.Fatalf("node b GetUserByHandle = %+v, %v", u, err)
	}
	if err := b.CreateUser(ctx, store.User{ID: "u2", Handle: "alice", CreatedAt: now, UpdatedAt: now}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("node b CreateUser with node a's handle: %v, want ErrConflict", err)
	}

	entry := func(env string) store.InboxEntry {
		return store.InboxEntry{EnvelopeID: env, Recipient: "d1", Sender: "x", Channel: 1, FrameType: 3,
			Payload: []byte(env), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	idsA, err := a.EnqueueInbox(ctx, []store.InboxEntry{entry("e1"), entry("e2")})
	must(err)
	var idsB []int64
	must(b.Tx(ctx, func(q store.Queries) error {
		var err error
		idsB, err = q.EnqueueInbox(ctx, []store.InboxEntry{entry("e3")})
		if err != nil {
			return err
		}
		return q.CreateChannel(ctx, store.Channel{ID: 9, CreatedBy: "d1", CreatedAt: now}, []string{"d1"}, now)
	}))
	if idsB[0] <= idsA[1] {
		t.Errorf("queue ids %v then %v: not increasing across nodes", idsA, idsB)
	}
	l, err := a.ListInbox(ctx, "d1", 0, now, 10)
	must(err)
	if len(l) != 3 || l[2].QueueID != idsB[0] || string(l[2].Payload) != "e3" {
		t.Errorf("node a ListInbox = %+v", l)
	}
	if ok, err := a.IsChannelMember(ctx, 9, "d1"); err != nil || !ok {
		t.Errorf("node a IsChannelMember of node b's channel = %v, %v", ok, err)
	}
	must(a.DeleteInbox(ctx, "d1", idsA))
	if l, err := b.ListInbox(ctx, "d1", 0, now, 10); err != nil || len(l) != 1 {
		t.Errorf("node b ListInbox after node a's delete = %d entries, %v", len(l), err)
	}
}

// TestEnqueueCommitOrder: an enqueue waits for an open transaction that
// enqueued before it, so queue ids become visible in increasing order and
// a reader paging with ListInbox(after) skips nothing.
func TestEnqueueCommitOrder(t *testing.T) {
	ctx := t.Context()
	a, b, now := twoNodes(t, "d1")
	entry := func(env string) store.InboxEntry {
		return store.InboxEntry{EnvelopeID: env, Recipient: "d1", Sender: "x", CreatedAt: now, ExpiresAt: now.Add(time.Hour), Payload: []byte{1}}
	}

	enqueued := make(chan int64)
	release := make(chan struct{})
	txDone := make(chan error, 1)
	go func() {
		txDone <- a.Tx(ctx, func(q store.Queries) error {
			ids, err := q.EnqueueInbox(ctx, []store.InboxEntry{entry("first")})
			if err != nil {
				close(enqueued)
				return err
			}
			enqueued <- ids[0]
			<-release
			return nil
		})
	}()
	first, ok := <-enqueued
	if !ok {
		t.Fatal(<-txDone)
	}

	secondDone := make(chan []int64, 1)
	go func() {
		ids, err := b.EnqueueInbox(ctx, []store.InboxEntry{entry("second")})
		if err != nil {
			t.Error(err)
		}
		secondDone <- ids
	}()
	select {
	case ids := <-secondDone:
		t.Fatalf("EnqueueInbox finished (%v) while an earlier enqueue transaction was open", ids)
	case <-time.After(300 * time.Millisecond):
	}
	// Meanwhile nothing is visible.
	if l, err := b.ListInbox(ctx, "d1", 0, now, 10); err != nil || len(l) != 0 {
		t.Errorf("ListInbox during the open transaction = %d entries, %v", len(l), err)
	}
	close(release)
	if err := <-txDone; err != nil {
		t.Fatal(err)
	}
	second := <-secondDone
	if len(second) != 1 || second[0] <= first {
		t.Fatalf("second enqueue ids %v, first %d", second, first)
	}
}

// TestTxRollsBackOnPanic: a panic in fn rolls back and the pool is usable.

// TestTxAbortedByOtherErrors documents the PostgreSQL rule: an error other
// than ErrConflict/ErrNotFound (here a foreign key violation) aborts the
// transaction; Tx then fails even if fn ignores the error.
func TestTxAbortedByOtherErrors(t *testing.T) {
	ctx := t.Context()
	s := openFresh(t)
	now := time.Now()
	err := s.Tx(ctx, func(q store.Queries) error {
		if err := q.CreateUser(ctx, store.User{ID: "u1", Handle: "a", CreatedAt: now, UpdatedAt: now}); err != nil {
			return err
		}
		if err := q.CreateDevice(ctx, store.Device{ID: "d", UserID: "no-such-user", Status: store.DeviceActive, CreatedAt: now, UpdatedAt: now}); err == nil {
			return errors.New("CreateDevice of an unknown user succeeded")
		}
		return nil // ignoring the error
	})
	if err == nil {
		t.Fatal("Tx committed after a foreign key violation")
	}
	if _, err := s.GetUser(ctx, "u1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("user of the failed Tx: %v", err)
	}
}

// TestForeignKeyCascade checks the ON DELETE behaviour of the schema, which
// the store API does not expose (as the SQLite test of the same name).
func TestForeignKeyCascade(t *testing.T) {
	ctx := t.Context()
	s := openFresh(t)
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
	mk(s.CreatePairingCode(ctx, store.PairingCode{Code: "ABCD-EF23", UserID: "u1", IssuerDeviceID: "d2", IssuedAt: now, ExpiresAt: now}))
	mk(s.RedeemPairingCode(ctx, "ABCD-EF23", "d1", [32]byte{1}, now))
	mk(s.PutUserBlob(ctx, "u1", "friends", "{}", now))

	_, err = s.pool.Exec(ctx, `DELETE FROM groups WHERE group_id = 'g1'`)
	mk(err)
	c, err := s.GetChannel(ctx, 1)
	mk(err)
	if c.GroupID != nil {
		t.Errorf("channel group after group deletion = %q", *c.GroupID)
	}
	if _, err := s.GetGroupMember(ctx, "g1", "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("group member after group deletion: %v", err)
	}

	_, err = s.pool.Exec(ctx, `DELETE FROM devices WHERE device_id = 'd1'`)
	mk(err)
	if _, err := s.GetSession(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session after device deletion: %v", err)
	}
	if n, _, _ := s.InboxStats(ctx); n != 0 {
		t.Errorf("inbox after device deletion: %d entries", n)
	}
	p, err := s.GetPairingCode(ctx, "ABCD-EF23")
	mk(err)
	if p.RedeemedDeviceID != nil {
		t.Errorf("redeemed_device_id = %q, want NULL", *p.RedeemedDeviceID)
	}
	if ok, _ := s.IsChannelMember(ctx, 1, "d1"); !ok {
		t.Error("channel member removed with the device")
	}

	_, err = s.pool.Exec(ctx, `DELETE FROM users WHERE user_id = 'u1'`)
	mk(err)
	if _, err := s.GetDevice(ctx, "d2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("device after user deletion: %v", err)
	}
	if _, err := s.GetPairingCode(ctx, "ABCD-EF23"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("pairing code after user deletion: %v", err)
	}
	if _, err := s.GetUserBlob(ctx, "u1", "friends"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("user blob after user deletion: %v", err)
	}
}

// Migration 2 fills inbox_usage from the entries already queued.
func TestMigrationInboxUsageBackfill(t *testing.T) {
	all := migrations
	t.Cleanup(func() { migrations = all })
	migrations = all[:1]
	s := openDSN(t, freshDatabase(t))
	if _, v, err := s.Migrate(t.Context()); err != nil || v != 1 {
		t.Fatalf("Migrate to 1: %d, %v", v, err)
	}
	storetest.InboxUsageBackfill(t, s, func() {
		migrations = all
		if _, v, err := s.Migrate(t.Context()); err != nil || v != len(all) {
			t.Fatalf("Migrate to %d: %d, %v", len(all), v, err)
		}
	})
}

// Two nodes writing inbox entries for the same recipients in opposite
// orders (each transaction deletes for one and inserts for the other, as
// the inbox writer's group commits do) never deadlock on the usage
// bookkeeping, and the fold in PurgeExpiredInbox keeps the sums while it
// leaves one row per device.
func TestInboxUsageConcurrentWriters(t *testing.T) {
	ctx := t.Context()
	a, b, now := twoNodes(t, "x", "y")
	const rounds = 30
	entry := func(env, r string) store.InboxEntry {
		return store.InboxEntry{EnvelopeID: env, Recipient: r, Sender: "s", Channel: 1, FrameType: 3,
			Payload: []byte("12345"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	queued := map[string][]int64{}
	for _, r := range []string{"x", "y"} {
		for i := range rounds {
			ids, err := a.EnqueueInbox(ctx, []store.InboxEntry{entry("pre-"+r+strconv.Itoa(i), r)})
			if err != nil {
				t.Fatal(err)
			}
			queued[r] = append(queued[r], ids...)
		}
	}
	// Each transaction deletes an entry of one recipient, pauses so that
	// the other node's transaction overlaps it, and inserts one for the
	// other recipient: with a shared per-device counter row the two would
	// take the two rows in opposite orders.
	run := func(s *Store, tag, del, ins string, errc chan<- error) {
		for i := range rounds {
			err := s.Tx(ctx, func(q store.Queries) error {
				if err := q.DeleteInbox(ctx, del, queued[del][i:i+1]); err != nil {
					return err
				}
				time.Sleep(2 * time.Millisecond)
				_, err := q.EnqueueInbox(ctx, []store.InboxEntry{entry(tag+strconv.Itoa(i), ins)})
				return err
			})
			if err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}
	errc := make(chan error, 2)
	go run(a, "a", "x", "y", errc)
	go run(b, "b", "y", "x", errc)
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	count := func(r string) int64 {
		var n int64
		if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM relay_queue WHERE recipient_device = $1`, r).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before, err := a.InboxUsage(ctx, []string{"x", "y"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"x", "y"} {
		if n := count(r); before[r] != (store.InboxUsage{Entries: n, Bytes: 5 * n}) {
			t.Errorf("usage of %s = %v, want %d entries of 5 bytes", r, before[r], n)
		}
	}
	if _, err := a.PurgeExpiredInbox(ctx, now); err != nil { // expires nothing, folds
		t.Fatal(err)
	}
	after, err := a.InboxUsage(ctx, []string{"x", "y"})
	if err != nil || after["x"] != before["x"] || after["y"] != before["y"] {
		t.Fatalf("usage after the fold = %v, %v; want %v", after, err, before)
	}
	var rows int
	if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM inbox_usage`).Scan(&rows); err != nil || rows != 2 {
		t.Errorf("inbox_usage holds %d rows after the fold, want 2 (%v)", rows, err)
	}
}

// twoNodes opens two Stores (two nodes) on a fresh migrated database that
// holds user u1 with the given active devices.
func twoNodes(t *testing.T, devices ...string) (a, b *Store, now time.Time) {
	t.Helper()
	ctx := t.Context()
	dsn := freshDatabase(t)
	a = openDSN(t, dsn)
	if _, _, err := a.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	b = openDSN(t, dsn)
	now = time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	if err := a.CreateUser(ctx, store.User{ID: "u1", Handle: "alice", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, d := range devices {
		if err := a.CreateDevice(ctx, store.Device{ID: d, UserID: "u1", Status: store.DeviceActive, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	return a, b, now
}

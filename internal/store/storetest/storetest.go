// Package storetest is the conformance suite every storage backend runs:
// it checks only behaviour promised by package store, never a backend's
// specifics.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { … })
//	}
package storetest

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// Run runs the suite. open is called once per subtest with that subtest's
// t and must return a fresh, migrated, empty store; it owns the store's
// cleanup (typically t.Cleanup(func() { s.Close() })). Subtests do not run
// in parallel.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("Basics", func(t *testing.T) { testBasics(t, open(t)) })
	t.Run("Users", func(t *testing.T) { testUsers(t, open(t)) })
	t.Run("Devices", func(t *testing.T) { testDevices(t, open(t)) })
	t.Run("KeyEvents", func(t *testing.T) { testKeyEvents(t, open(t)) })
	t.Run("Sessions", func(t *testing.T) { testSessions(t, open(t)) })
	t.Run("Channels", func(t *testing.T) { testChannels(t, open(t)) })
	t.Run("Groups", func(t *testing.T) { testGroups(t, open(t)) })
	t.Run("Inbox", func(t *testing.T) { testInbox(t, open(t)) })
	t.Run("InboxPayloads", func(t *testing.T) { testInboxPayloads(t, open(t)) })
	t.Run("InboxLargeBatch", func(t *testing.T) { testInboxLargeBatch(t, open(t)) })
	t.Run("InboxUsage", func(t *testing.T) { testInboxUsage(t, open(t)) })
	t.Run("NoiseKeys", func(t *testing.T) { testNoiseKeys(t, open(t)) })
	t.Run("NoiseConfig", func(t *testing.T) { testNoiseConfig(t, open(t)) })
	t.Run("Tx", func(t *testing.T) { testTx(t, open(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, open(t)) })
	t.Run("Times", func(t *testing.T) { testTimes(t, open(t)) })
	t.Run("PairingCodes", func(t *testing.T) { testPairingCodes(t, open(t)) })
	t.Run("AdminTokens", func(t *testing.T) { testAdminTokens(t, open(t)) })
	t.Run("UserBlobs", func(t *testing.T) { testUserBlobs(t, open(t)) })
	t.Run("RemoveDeviceMemberships", func(t *testing.T) { testRemoveDeviceMemberships(t, open(t)) })
	t.Run("TxAfterConflict", func(t *testing.T) { testTxAfterConflict(t, open(t)) })
	t.Run("TxPanic", func(t *testing.T) { testTxPanic(t, open(t)) })
}

// t0 is the base time of the fixtures (microsecond precision, UTC).
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

// at returns t0 + sec seconds.
func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func key32(b byte) [32]byte {
	var k [32]byte
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func ptr[T any](v T) *T { return &v }

// Fixtures.

func mustUser(t testing.TB, s store.Store, id string) store.User {
	t.Helper()
	u := store.User{ID: id, Handle: "h-" + id, CreatedAt: t0, UpdatedAt: t0}
	if err := s.CreateUser(t.Context(), u); err != nil {
		t.Fatalf("CreateUser(%s): %v", id, err)
	}
	return u
}

func mustDevice(t testing.TB, s store.Store, userID, id string, created time.Time) store.Device {
	t.Helper()
	d := store.Device{
		ID: id, UserID: userID, PublicKey: key32(byte(len(id))), Status: store.DeviceActive,
		CreatedAt: created, UpdatedAt: created,
	}
	if err := s.CreateDevice(t.Context(), d); err != nil {
		t.Fatalf("CreateDevice(%s): %v", id, err)
	}
	return d
}

// Assertions.

func noErr(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func isErr(t testing.TB, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v, want %v", what, err, target)
	}
}

func anyErr(t testing.TB, err error, what string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one", what)
	}
}

// same compares got and want after canonicalising both (times re-created
// from their Unix microseconds in UTC, empty slices as nil) and checks that
// every time in got is in UTC.
func same(t testing.TB, got, want any, what string) {
	t.Helper()
	g, utc := canon(reflect.ValueOf(got))
	if !utc {
		t.Errorf("%s: a time is not in UTC: %s", what, show(got))
	}
	w, _ := canon(reflect.ValueOf(want))
	if !reflect.DeepEqual(g.Interface(), w.Interface()) {
		t.Errorf("%s:\n got  %s\n want %s", what, show(got), show(want))
	}
}

var timeType = reflect.TypeFor[time.Time]()

func canon(v reflect.Value) (reflect.Value, bool) {
	if !v.IsValid() {
		return v, true
	}
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == timeType {
			tm := v.Interface().(time.Time)
			return reflect.ValueOf(time.UnixMicro(tm.UnixMicro()).UTC()), tm.Location() == time.UTC
		}
		out := reflect.New(v.Type()).Elem()
		out.Set(v)
		utc := true
		for i := range v.NumField() {
			if !out.Field(i).CanSet() {
				continue
			}
			f, ok := canon(v.Field(i))
			utc = utc && ok
			out.Field(i).Set(f)
		}
		return out, utc
	case reflect.Pointer:
		if v.IsNil() {
			return v, true
		}
		e, ok := canon(v.Elem())
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(e)
		return p, ok
	case reflect.Slice:
		if v.Len() == 0 {
			return reflect.Zero(v.Type()), true
		}
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return v, true
		}
		out := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		utc := true
		for i := range v.Len() {
			e, ok := canon(v.Index(i))
			utc = utc && ok
			out.Index(i).Set(e)
		}
		return out, utc
	}
	return v, true
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	if len(b) > 2000 {
		b = append(b[:2000], "…"...)
	}
	return string(b)
}

// Migratable is a store whose schema migrations can be driven.
type Migratable interface {
	store.Store
	store.Migrator
}

// MigrationBackend is what the migration tests need of a SQL backend
// beyond the Store: a fresh database, and raw access to its
// schema_migrations table.
type MigrationBackend struct {
	// Latest is the newest embedded migration version.
	Latest int
	// Open returns a store on a fresh database that Migrate has not run on.
	Open func(t *testing.T) Migratable
	// Recorded returns the versions recorded in schema_migrations, in
	// ascending order, each checked to carry a plausible applied_at.
	Recorded func(t *testing.T, s Migratable) []int
	// Record inserts a schema_migrations row for version v.
	Record func(t *testing.T, s Migratable, v int)
}

// RunMigrations runs the migration tests against one backend.
func RunMigrations(t *testing.T, b MigrationBackend) {
	t.Run("Idempotent", func(t *testing.T) {
		ctx := t.Context()
		s := b.Open(t)
		v, pending, err := s.SchemaVersion(ctx)
		if err != nil || v != 0 || !pending {
			t.Fatalf("SchemaVersion before Migrate = %d, %v, %v; want 0, true, nil", v, pending, err)
		}
		applied, v, err := s.Migrate(ctx)
		if err != nil || applied != b.Latest || v != b.Latest {
			t.Fatalf("first Migrate = %d, %d, %v; want %d, %d, nil", applied, v, err, b.Latest, b.Latest)
		}
		applied, v2, err := s.Migrate(ctx)
		if err != nil || applied != 0 || v2 != v {
			t.Fatalf("second Migrate = %d, %d, %v; want 0, %d, nil", applied, v2, err, v)
		}
		v, pending, err = s.SchemaVersion(ctx)
		if err != nil || v != b.Latest || pending {
			t.Fatalf("SchemaVersion after Migrate = %d, %v, %v", v, pending, err)
		}
		got := b.Recorded(t, s)
		if len(got) != b.Latest {
			t.Fatalf("schema_migrations holds versions %v, want 1…%d once each", got, b.Latest)
		}
		for i, v := range got {
			if v != i+1 {
				t.Fatalf("schema_migrations holds versions %v, want 1…%d once each", got, b.Latest)
			}
		}
	})
	t.Run("SchemaTooNew", func(t *testing.T) {
		ctx := t.Context()
		s := b.Open(t)
		if _, _, err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		b.Record(t, s, b.Latest+1)
		applied, v, err := s.Migrate(ctx)
		if !errors.Is(err, store.ErrSchemaTooNew) {
			t.Fatalf("Migrate = %d, %d, %v; want ErrSchemaTooNew", applied, v, err)
		}
		if applied != 0 || v != b.Latest+1 {
			t.Errorf("Migrate = %d, %d; want 0, %d", applied, v, b.Latest+1)
		}
		v, pending, err := s.SchemaVersion(ctx)
		if !errors.Is(err, store.ErrSchemaTooNew) || v != b.Latest+1 || pending {
			t.Errorf("SchemaVersion = %d, %v, %v; want %d, false, ErrSchemaTooNew", v, pending, err, b.Latest+1)
		}
	})
}

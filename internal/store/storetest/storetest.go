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

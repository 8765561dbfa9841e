package storetest

import (
	"testing"

	"github.com/commucat/commucat/internal/store"
)

func testBasics(t *testing.T, s store.Store) {
	ctx := t.Context()
	noErr(t, s.Ping(ctx), "Ping")
	if k := s.Kind(); k != "sqlite" && k != "postgres" {
		t.Errorf("Kind() = %q", k)
	}
	if m, ok := s.(store.Migrator); ok {
		v, pending, err := m.SchemaVersion(ctx)
		noErr(t, err, "SchemaVersion")
		if pending || v < 1 {
			t.Errorf("SchemaVersion = %d, pending %v; want >= 1, false", v, pending)
		}
		applied, v2, err := m.Migrate(ctx)
		noErr(t, err, "Migrate on a migrated store")
		if applied != 0 || v2 != v {
			t.Errorf("Migrate on a migrated store = %d, %d; want 0, %d", applied, v2, v)
		}
	}
	n, err := s.CountUsers(ctx)
	noErr(t, err, "CountUsers")
	if n != 0 {
		t.Errorf("fresh store has %d users", n)
	}
}

func testUsers(t *testing.T, s store.Store) {
	ctx := t.Context()

	n, err := s.CountUsers(ctx)
	noErr(t, err, "CountUsers")
	if n != 0 {
		t.Fatalf("CountUsers = %d, want 0", n)
	}

	u1 := store.User{ID: "user-1", Handle: "alice", AvatarURL: ptr("https://a.example/a.png"), CreatedAt: at(0), UpdatedAt: at(1)}
	u2 := store.User{ID: "user-2", Handle: "bob", DisplayName: ptr("Bob"), CreatedAt: at(2), UpdatedAt: at(2)}
	noErr(t, s.CreateUser(ctx, u1), "CreateUser u1")
	noErr(t, s.CreateUser(ctx, u2), "CreateUser u2")

	got, err := s.GetUser(ctx, "user-1")
	noErr(t, err, "GetUser")
	same(t, got, u1, "GetUser")
	got, err = s.GetUserByHandle(ctx, "bob")
	noErr(t, err, "GetUserByHandle")
	same(t, got, u2, "GetUserByHandle")

	_, err = s.GetUser(ctx, "nobody")
	isErr(t, err, store.ErrNotFound, "GetUser missing")
	_, err = s.GetUserByHandle(ctx, "nobody")
	isErr(t, err, store.ErrNotFound, "GetUserByHandle missing")

	err = s.CreateUser(ctx, store.User{ID: "user-1", Handle: "carol", CreatedAt: t0, UpdatedAt: t0})
	isErr(t, err, store.ErrConflict, "CreateUser existing id")
	err = s.CreateUser(ctx, store.User{ID: "user-3", Handle: "alice", CreatedAt: t0, UpdatedAt: t0})
	isErr(t, err, store.ErrConflict, "CreateUser existing handle")
	_, err = s.GetUser(ctx, "user-3")
	isErr(t, err, store.ErrNotFound, "user of a failed create")

	n, err = s.CountUsers(ctx)
	noErr(t, err, "CountUsers")
	if n != 2 {
		t.Errorf("CountUsers = %d, want 2", n)
	}

	// UpdateUserProfile: nil leaves a field unchanged.
	noErr(t, s.UpdateUserProfile(ctx, "user-1", ptr("Alice"), nil, at(10)), "UpdateUserProfile name")
	want := u1
	want.DisplayName = ptr("Alice")
	want.UpdatedAt = at(10)
	got, err = s.GetUser(ctx, "user-1")
	noErr(t, err, "GetUser")
	same(t, got, want, "after UpdateUserProfile(name)")

	noErr(t, s.UpdateUserProfile(ctx, "user-1", nil, ptr("https://a.example/b.png"), at(20)), "UpdateUserProfile avatar")
	want.AvatarURL = ptr("https://a.example/b.png")
	want.UpdatedAt = at(20)
	got, err = s.GetUser(ctx, "user-1")
	noErr(t, err, "GetUser")
	same(t, got, want, "after UpdateUserProfile(avatar)")

	noErr(t, s.UpdateUserProfile(ctx, "user-1", nil, nil, at(30)), "UpdateUserProfile nothing")
	want.UpdatedAt = at(30)
	got, err = s.GetUser(ctx, "user-1")
	noErr(t, err, "GetUser")
	same(t, got, want, "after UpdateUserProfile(nil, nil)")

	isErr(t, s.UpdateUserProfile(ctx, "nobody", ptr("x"), nil, at(40)), store.ErrNotFound, "UpdateUserProfile missing")

	// The other user is untouched.
	got, err = s.GetUser(ctx, "user-2")
	noErr(t, err, "GetUser")
	same(t, got, u2, "other user")
}

func testDevices(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustUser(t, s, "u1")
	mustUser(t, s, "u2")

	// Created out of order, with a created_at tie broken by id.
	dB := store.Device{ID: "dev-b", UserID: "u1", PublicKey: key32(1), Status: store.DeviceActive, Name: ptr("laptop"), CreatedAt: at(10), UpdatedAt: at(11)}
	dA := store.Device{ID: "dev-a", UserID: "u1", PublicKey: key32(2), Status: store.DeviceActive, CreatedAt: at(10), UpdatedAt: at(10)}
	dC := store.Device{ID: "dev-c", UserID: "u1", PublicKey: key32(3), Status: store.DeviceActive, CreatedAt: at(5), UpdatedAt: at(5)}
	dD := store.Device{ID: "dev-d", UserID: "u1", PublicKey: key32(4), Status: store.DeviceDiagnostic, CreatedAt: at(20), UpdatedAt: at(20)}
	dR := store.Device{ID: "dev-r", UserID: "u1", PublicKey: key32(5), Status: store.DeviceRevoked, CreatedAt: at(30), UpdatedAt: at(31), RevokedAt: ptr(at(31))}
	dX := store.Device{ID: "dev-x", UserID: "u2", PublicKey: key32(6), Status: store.DeviceActive, CreatedAt: at(1), UpdatedAt: at(1)}
	for _, d := range []store.Device{dB, dA, dC, dD, dR, dX} {
		noErr(t, s.CreateDevice(ctx, d), "CreateDevice "+d.ID)
	}

	for _, d := range []store.Device{dB, dA, dR} {
		got, err := s.GetDevice(ctx, d.ID)
		noErr(t, err, "GetDevice "+d.ID)
		same(t, got, d, "GetDevice "+d.ID)
	}
	_, err := s.GetDevice(ctx, "nope")
	isErr(t, err, store.ErrNotFound, "GetDevice missing")

	isErr(t, s.CreateDevice(ctx, store.Device{ID: "dev-a", UserID: "u2", PublicKey: key32(9), Status: store.DeviceActive, CreatedAt: t0, UpdatedAt: t0}),
		store.ErrConflict, "CreateDevice existing id")
	anyErr(t, s.CreateDevice(ctx, store.Device{ID: "dev-orphan", UserID: "no-such-user", PublicKey: key32(9), Status: store.DeviceActive, CreatedAt: t0, UpdatedAt: t0}),
		"CreateDevice of an unknown user (foreign key)")

	list, err := s.ListDevices(ctx, "u1")
	noErr(t, err, "ListDevices")
	same(t, list, []store.Device{dC, dA, dB, dD, dR}, "ListDevices order (created_at, id)")
	list, err = s.ListDevices(ctx, "nobody")
	noErr(t, err, "ListDevices unknown user")
	if len(list) != 0 {
		t.Errorf("ListDevices unknown user = %d devices", len(list))
	}

	n, err := s.CountActiveDevices(ctx, "u1")
	noErr(t, err, "CountActiveDevices")
	if n != 3 {
		t.Errorf("CountActiveDevices(u1) = %d, want 3 (revoked and diagnostic excluded)", n)
	}
	n, err = s.CountAllActiveDevices(ctx)
	noErr(t, err, "CountAllActiveDevices")
	if n != 4 {
		t.Errorf("CountAllActiveDevices = %d, want 4", n)
	}

	// SetDeviceKey.
	noErr(t, s.SetDeviceKey(ctx, "dev-a", key32(100), at(40)), "SetDeviceKey")
	wantA := dA
	wantA.PublicKey = key32(100)
	wantA.UpdatedAt = at(40)
	got, err := s.GetDevice(ctx, "dev-a")
	noErr(t, err, "GetDevice")
	same(t, got, wantA, "after SetDeviceKey")
	isErr(t, s.SetDeviceKey(ctx, "nope", key32(1), at(40)), store.ErrNotFound, "SetDeviceKey missing")

	// SetDeviceStatus: revoked sets revoked_at.
	noErr(t, s.SetDeviceStatus(ctx, "dev-b", store.DeviceRevoked, at(50)), "SetDeviceStatus revoked")
	wantB := dB
	wantB.Status = store.DeviceRevoked
	wantB.UpdatedAt = at(50)
	wantB.RevokedAt = ptr(at(50))
	got, err = s.GetDevice(ctx, "dev-b")
	noErr(t, err, "GetDevice")
	same(t, got, wantB, "after SetDeviceStatus(revoked)")
	isErr(t, s.SetDeviceStatus(ctx, "nope", store.DeviceRevoked, at(50)), store.ErrNotFound, "SetDeviceStatus missing")

	noErr(t, s.SetDeviceStatus(ctx, "dev-d", store.DeviceActive, at(60)), "SetDeviceStatus active")
	got, err = s.GetDevice(ctx, "dev-d")
	noErr(t, err, "GetDevice")
	if got.Status != store.DeviceActive || got.RevokedAt != nil || !got.UpdatedAt.Equal(at(60)) {
		t.Errorf("after SetDeviceStatus(active): %s", show(got))
	}

	n, err = s.CountActiveDevices(ctx, "u1")
	noErr(t, err, "CountActiveDevices")
	if n != 3 { // a, c, d (b revoked)
		t.Errorf("CountActiveDevices(u1) = %d, want 3", n)
	}
	n, err = s.CountActiveDevices(ctx, "nobody")
	noErr(t, err, "CountActiveDevices unknown user")
	if n != 0 {
		t.Errorf("CountActiveDevices(nobody) = %d", n)
	}
}

func testKeyEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustUser(t, s, "u1")
	mustDevice(t, s, "u1", "d1", t0)
	mustDevice(t, s, "u1", "d2", t0)

	e1 := store.KeyEvent{ID: "e1", DeviceID: "d1", PublicKey: key32(1), Action: store.KeyRegister, RecordedAt: at(0)}
	e2 := store.KeyEvent{ID: "e2", DeviceID: "d1", PublicKey: key32(2), Action: store.KeyRotate, RecordedAt: at(10)}
	e3 := store.KeyEvent{ID: "e3", DeviceID: "d1", PublicKey: key32(3), Action: store.KeyCertificate, RecordedAt: at(20)}
	e4 := store.KeyEvent{ID: "e4", DeviceID: "d1", PublicKey: key32(4), Action: store.KeyRevoke, RecordedAt: at(30)}
	// Inserted last but older: the newest by recorded_at wins.
	e5 := store.KeyEvent{ID: "e5", DeviceID: "d1", PublicKey: key32(5), Action: store.KeyRotate, RecordedAt: at(5)}
	e6 := store.KeyEvent{ID: "e6", DeviceID: "d2", PublicKey: key32(6), Action: store.KeyPair, RecordedAt: at(100)}
	for _, e := range []store.KeyEvent{e1, e2, e3, e4, e5, e6} {
		noErr(t, s.AddKeyEvent(ctx, e), "AddKeyEvent "+e.ID)
	}
	isErr(t, s.AddKeyEvent(ctx, store.KeyEvent{ID: "e1", DeviceID: "d2", PublicKey: key32(1), Action: store.KeyRegister, RecordedAt: at(0)}),
		store.ErrConflict, "AddKeyEvent existing id")

	cases := []struct {
		device  string
		actions []string
		want    *store.KeyEvent
	}{
		{"d1", []string{store.KeyRegister, store.KeyRotate, store.KeyPair}, &e2},
		{"d1", []string{store.KeyRegister}, &e1},
		{"d1", []string{store.KeyCertificate, store.KeyRegister}, &e3},
		{"d1", []string{store.KeyRevoke, store.KeyRotate}, &e4},
		{"d1", []string{store.KeyPair}, nil},
		{"d1", nil, nil},
		{"d2", []string{store.KeyPair, store.KeyRegister}, &e6},
		{"d2", []string{store.KeyRotate}, nil},
		{"d3", []string{store.KeyRegister, store.KeyRotate, store.KeyPair}, nil},
	}
	for _, c := range cases {
		got, err := s.LatestKeyEvent(ctx, c.device, c.actions)
		what := "LatestKeyEvent(" + c.device + ", " + show(c.actions) + ")"
		if c.want == nil {
			isErr(t, err, store.ErrNotFound, what)
			continue
		}
		noErr(t, err, what)
		same(t, got, *c.want, what)
	}
}

func testSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustUser(t, s, "u1")
	mustDevice(t, s, "u1", "d1", t0)

	s1 := store.Session{ID: "s1", UserID: "u1", DeviceID: "d1", NodeID: "node-a", CreatedAt: at(0), LastActiveAt: at(10)}
	noErr(t, s.CreateSession(ctx, s1), "CreateSession")
	got, err := s.GetSession(ctx, "s1")
	noErr(t, err, "GetSession")
	same(t, got, s1, "GetSession")
	_, err = s.GetSession(ctx, "nope")
	isErr(t, err, store.ErrNotFound, "GetSession missing")
	isErr(t, s.CreateSession(ctx, s1), store.ErrConflict, "CreateSession existing id")
	anyErr(t, s.CreateSession(ctx, store.Session{ID: "s-orphan", UserID: "u1", DeviceID: "no-such-device", NodeID: "n", CreatedAt: t0, LastActiveAt: t0}),
		"CreateSession of an unknown device (foreign key)")

	// TouchSession raises, never lowers.
	noErr(t, s.TouchSession(ctx, "s1", at(20)), "TouchSession up")
	noErr(t, s.TouchSession(ctx, "s1", at(15)), "TouchSession down")
	got, err = s.GetSession(ctx, "s1")
	noErr(t, err, "GetSession")
	if !got.LastActiveAt.Equal(at(20)) {
		t.Errorf("LastActiveAt = %v, want %v", got.LastActiveAt, at(20))
	}
	noErr(t, s.TouchSession(ctx, "s1", at(20)), "TouchSession same time")
	isErr(t, s.TouchSession(ctx, "nope", at(20)), store.ErrNotFound, "TouchSession missing")

	// CloseSession.
	noErr(t, s.CloseSession(ctx, "s1", at(30)), "CloseSession")
	got, err = s.GetSession(ctx, "s1")
	noErr(t, err, "GetSession")
	want := s1
	want.LastActiveAt = at(20)
	want.ClosedAt = ptr(at(30))
	same(t, got, want, "after CloseSession")
	isErr(t, s.CloseSession(ctx, "nope", at(30)), store.ErrNotFound, "CloseSession missing")

	// DeleteClosedSessions deletes sessions closed strictly before cutoff.
	s2 := store.Session{ID: "s2", UserID: "u1", DeviceID: "d1", NodeID: "node-a", CreatedAt: at(0), LastActiveAt: at(0), ClosedAt: ptr(at(100))}
	s3 := store.Session{ID: "s3", UserID: "u1", DeviceID: "d1", NodeID: "node-b", CreatedAt: at(0), LastActiveAt: at(0)}
	noErr(t, s.CreateSession(ctx, s2), "CreateSession s2")
	noErr(t, s.CreateSession(ctx, s3), "CreateSession s3")

	n, err := s.DeleteClosedSessions(ctx, at(30))
	noErr(t, err, "DeleteClosedSessions")
	if n != 0 {
		t.Errorf("DeleteClosedSessions(cutoff = closed_at) = %d, want 0", n)
	}
	n, err = s.DeleteClosedSessions(ctx, at(100))
	noErr(t, err, "DeleteClosedSessions")
	if n != 1 {
		t.Errorf("DeleteClosedSessions = %d, want 1", n)
	}
	_, err = s.GetSession(ctx, "s1")
	isErr(t, err, store.ErrNotFound, "s1 after DeleteClosedSessions")
	for _, id := range []string{"s2", "s3"} {
		_, err = s.GetSession(ctx, id)
		noErr(t, err, id+" after DeleteClosedSessions")
	}
	n, err = s.DeleteClosedSessions(ctx, at(1_000_000))
	noErr(t, err, "DeleteClosedSessions")
	if n != 1 {
		t.Errorf("DeleteClosedSessions = %d, want 1", n)
	}
	got, err = s.GetSession(ctx, "s3")
	noErr(t, err, "open session survives")
	same(t, got, s3, "open session")
}

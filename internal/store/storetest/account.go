package storetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/commucat/commucat/internal/store"
)

// Pairing codes, admin tokens, user blobs and device memberships.

func testPairingCodes(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustUser(t, s, "u1")
	mustUser(t, s, "u2")
	mustDevice(t, s, "u1", "issuer", t0)
	mustDevice(t, s, "u1", "new", t0)

	p := store.PairingCode{Code: "ABCD-EF23", UserID: "u1", IssuerDeviceID: "issuer", IssuedAt: at(0), ExpiresAt: at(600)}
	noErr(t, s.CreatePairingCode(ctx, p), "CreatePairingCode")
	got, err := s.GetPairingCode(ctx, p.Code)
	noErr(t, err, "GetPairingCode")
	same(t, got, p, "GetPairingCode")

	// A duplicate code is a conflict and changes nothing.
	dup := store.PairingCode{Code: p.Code, UserID: "u2", IssuerDeviceID: "new", IssuedAt: at(1), ExpiresAt: at(900)}
	isErr(t, s.CreatePairingCode(ctx, dup), store.ErrConflict, "CreatePairingCode existing code")
	got, err = s.GetPairingCode(ctx, p.Code)
	noErr(t, err, "GetPairingCode")
	same(t, got, p, "GetPairingCode after conflicting create")

	_, err = s.GetPairingCode(ctx, "ZZZZ-ZZZZ")
	isErr(t, err, store.ErrNotFound, "GetPairingCode missing")
	_, err = s.GetPairingCode(ctx, "abcd-ef23")
	isErr(t, err, store.ErrNotFound, "GetPairingCode is case-sensitive")
	anyErr(t, s.CreatePairingCode(ctx, store.PairingCode{Code: "QQQQ-QQQQ", UserID: "no-such-user", IssuerDeviceID: "issuer", IssuedAt: t0, ExpiresAt: t0}),
		"CreatePairingCode of an unknown user (foreign key)")

	// Attempts.
	for want := 1; want <= 2; want++ {
		n, err := s.IncrementPairingAttempts(ctx, p.Code)
		noErr(t, err, "IncrementPairingAttempts")
		if n != want {
			t.Errorf("IncrementPairingAttempts = %d, want %d", n, want)
		}
	}
	_, err = s.IncrementPairingAttempts(ctx, "ZZZZ-ZZZZ")
	isErr(t, err, store.ErrNotFound, "IncrementPairingAttempts missing")

	// Redeem sets the fields and counts an attempt.
	key := key32(77)
	noErr(t, s.RedeemPairingCode(ctx, p.Code, "new", key, at(30)), "RedeemPairingCode")
	want := p
	want.RedeemedAt = ptr(at(30))
	want.RedeemedDeviceID = ptr("new")
	want.PublicKey = &key
	want.Attempts = 3
	got, err = s.GetPairingCode(ctx, p.Code)
	noErr(t, err, "GetPairingCode")
	same(t, got, want, "after RedeemPairingCode")

	// A second redeem is a conflict and changes nothing.
	isErr(t, s.RedeemPairingCode(ctx, p.Code, "issuer", key32(1), at(40)), store.ErrConflict, "RedeemPairingCode twice")
	got, err = s.GetPairingCode(ctx, p.Code)
	noErr(t, err, "GetPairingCode")
	same(t, got, want, "after a second RedeemPairingCode")
	isErr(t, s.RedeemPairingCode(ctx, "ZZZZ-ZZZZ", "new", key, at(40)), store.ErrNotFound, "RedeemPairingCode missing")

	// Attempts still count on a redeemed code.
	n, err := s.IncrementPairingAttempts(ctx, p.Code)
	noErr(t, err, "IncrementPairingAttempts redeemed")
	if n != 4 {
		t.Errorf("IncrementPairingAttempts on a redeemed code = %d, want 4", n)
	}

	// Every field round-trips at creation.
	full := store.PairingCode{
		Code: "FULL-2345", UserID: "u2", IssuerDeviceID: "issuer", IssuedAt: at(100), ExpiresAt: at(700),
		RedeemedAt: ptr(at(150)), RedeemedDeviceID: ptr("new"), PublicKey: ptr(key32(9)), Attempts: 2,
	}
	noErr(t, s.CreatePairingCode(ctx, full), "CreatePairingCode redeemed")
	got, err = s.GetPairingCode(ctx, full.Code)
	noErr(t, err, "GetPairingCode")
	same(t, got, full, "GetPairingCode of a code created redeemed")
	isErr(t, s.RedeemPairingCode(ctx, full.Code, "new", key, at(160)), store.ErrConflict, "RedeemPairingCode of a code created redeemed")

	// A redeem rolled back with its transaction leaves the code unredeemed.
	p3 := store.PairingCode{Code: "TXTX-2345", UserID: "u1", IssuerDeviceID: "issuer", IssuedAt: at(200), ExpiresAt: at(800)}
	noErr(t, s.CreatePairingCode(ctx, p3), "CreatePairingCode")
	boom := errors.New("boom")
	err = s.Tx(ctx, func(q store.Queries) error {
		if err := q.RedeemPairingCode(ctx, p3.Code, "new", key, at(210)); err != nil {
			return err
		}
		got, err := q.GetPairingCode(ctx, p3.Code)
		if err != nil {
			return err
		}
		if got.RedeemedAt == nil || got.Attempts != 1 {
			return fmt.Errorf("redeem not visible inside Tx: %s", show(got))
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Tx = %v, want fn's error", err)
	}
	got, err = s.GetPairingCode(ctx, p3.Code)
	noErr(t, err, "GetPairingCode")
	same(t, got, p3, "code of a rolled-back redeem")

	// Purge: expires_at strictly before the cutoff (p at 600, full at 700,
	// p3 at 800).
	n64, err := s.DeletePairingCodesExpiredBefore(ctx, at(600))
	noErr(t, err, "DeletePairingCodesExpiredBefore")
	if n64 != 0 {
		t.Errorf("DeletePairingCodesExpiredBefore(cutoff = expires_at) = %d, want 0", n64)
	}
	n64, err = s.DeletePairingCodesExpiredBefore(ctx, at(700))
	noErr(t, err, "DeletePairingCodesExpiredBefore")
	if n64 != 1 {
		t.Errorf("DeletePairingCodesExpiredBefore = %d, want 1", n64)
	}
	_, err = s.GetPairingCode(ctx, p.Code)
	isErr(t, err, store.ErrNotFound, "purged code")
	for _, c := range []string{full.Code, p3.Code} {
		_, err = s.GetPairingCode(ctx, c)
		noErr(t, err, "code kept by the purge: "+c)
	}
	n64, err = s.DeletePairingCodesExpiredBefore(ctx, at(100000))
	noErr(t, err, "DeletePairingCodesExpiredBefore")
	if n64 != 2 {
		t.Errorf("DeletePairingCodesExpiredBefore = %d, want 2", n64)
	}
	// A purged code can be issued again.
	noErr(t, s.CreatePairingCode(ctx, p), "CreatePairingCode after purge")
}

func adminToken(version int, b byte) store.AdminToken {
	var salt [16]byte
	for i := range salt {
		salt[i] = b ^ byte(0xa0+i)
	}
	return store.AdminToken{
		Version: version, TokenHash: key32(b), Salt: salt,
		ValidAfter: at(version), RotatesAt: at(version + 3600), ExpiresAt: at(version).AddDate(100, 0, 0),
		CreatedAt: at(version),
	}
}

func testAdminTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	l, err := s.ListAdminTokens(ctx)
	noErr(t, err, "ListAdminTokens")
	if len(l) != 0 {
		t.Fatalf("ListAdminTokens of a fresh store = %d tokens", len(l))
	}
	a1, a2, a3 := adminToken(1, 10), adminToken(2, 20), adminToken(3, 30)
	for _, a := range []store.AdminToken{a1, a3, a2} {
		noErr(t, s.InsertAdminToken(ctx, a), fmt.Sprintf("InsertAdminToken %d", a.Version))
	}
	l, err = s.ListAdminTokens(ctx)
	noErr(t, err, "ListAdminTokens")
	same(t, l, []store.AdminToken{a3, a2, a1}, "ListAdminTokens (newest first)")

	isErr(t, s.InsertAdminToken(ctx, adminToken(2, 99)), store.ErrConflict, "InsertAdminToken existing version")
	l, err = s.ListAdminTokens(ctx)
	noErr(t, err, "ListAdminTokens")
	same(t, l, []store.AdminToken{a3, a2, a1}, "ListAdminTokens after a conflicting insert")

	noErr(t, s.DeleteAdminToken(ctx, 2), "DeleteAdminToken")
	l, err = s.ListAdminTokens(ctx)
	noErr(t, err, "ListAdminTokens")
	same(t, l, []store.AdminToken{a3, a1}, "ListAdminTokens after delete")
	noErr(t, s.DeleteAdminToken(ctx, 2), "DeleteAdminToken missing")
	noErr(t, s.DeleteAdminToken(ctx, 1000), "DeleteAdminToken never inserted")

	noErr(t, s.InsertAdminToken(ctx, a2), "InsertAdminToken again")
	l, err = s.ListAdminTokens(ctx)
	noErr(t, err, "ListAdminTokens")
	same(t, l, []store.AdminToken{a3, a2, a1}, "ListAdminTokens after re-insert")
}

func testUserBlobs(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustUser(t, s, "u1")
	mustUser(t, s, "u2")

	get := func(user, key string) (string, error) {
		t.Helper()
		return s.GetUserBlob(ctx, user, key)
	}
	_, err := get("u1", "friends")
	isErr(t, err, store.ErrNotFound, "GetUserBlob unset")

	v1 := `{"friends":[{"alias":"Bö","handle":null,"user_id":"u2"}]}`
	noErr(t, s.PutUserBlob(ctx, "u1", "friends", v1, at(0)), "PutUserBlob")
	got, err := get("u1", "friends")
	noErr(t, err, "GetUserBlob")
	if got != v1 {
		t.Errorf("GetUserBlob = %q, want %q", got, v1)
	}

	v2 := `{"friends":[]}`
	noErr(t, s.PutUserBlob(ctx, "u1", "friends", v2, at(10)), "PutUserBlob overwrite")
	got, err = get("u1", "friends")
	noErr(t, err, "GetUserBlob")
	if got != v2 {
		t.Errorf("GetUserBlob after overwrite = %q, want %q", got, v2)
	}

	// Keys and users are separate; an empty payload is a value.
	_, err = get("u1", "other")
	isErr(t, err, store.ErrNotFound, "GetUserBlob other key")
	_, err = get("u2", "friends")
	isErr(t, err, store.ErrNotFound, "GetUserBlob other user")
	noErr(t, s.PutUserBlob(ctx, "u2", "friends", "", at(20)), "PutUserBlob empty")
	got, err = get("u2", "friends")
	noErr(t, err, "GetUserBlob empty")
	if got != "" {
		t.Errorf("GetUserBlob empty = %q", got)
	}
	got, err = get("u1", "friends")
	noErr(t, err, "GetUserBlob")
	if got != v2 {
		t.Errorf("GetUserBlob(u1) changed by u2's put: %q", got)
	}
	anyErr(t, s.PutUserBlob(ctx, "no-such-user", "friends", v1, at(30)), "PutUserBlob unknown user (foreign key)")
}

func testRemoveDeviceMemberships(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustUser(t, s, "u1")
	for _, d := range []string{"d1", "d2", "d3"} {
		mustDevice(t, s, "u1", d, t0)
	}
	const remote = "r1@remote.example"
	for _, g := range []string{"g1", "g2", "g3"} {
		noErr(t, s.CreateGroup(ctx, store.Group{ID: g, OwnerDevice: "d1", CreatedAt: t0}), "CreateGroup "+g)
	}
	gm := func(g, d, role string) store.GroupMember {
		return store.GroupMember{GroupID: g, DeviceID: d, Role: role, JoinedAt: t0}
	}
	g1d2, g3d3 := gm("g1", "d2", store.RoleMember), gm("g3", "d3", store.RoleOwner)
	for _, m := range []store.GroupMember{gm("g1", "d1", store.RoleOwner), g1d2, gm("g2", "d1", store.RoleAdmin), g3d3} {
		noErr(t, s.UpsertGroupMember(ctx, m), "UpsertGroupMember")
	}
	chans := []struct {
		id      uint32
		group   *string
		members []string
	}{
		{1, ptr("g1"), []string{"d1", "d2"}}, // d2 stays
		{2, nil, []string{"d1"}},             // left empty: deleted
		{3, nil, []string{"d2", "d3"}},       // untouched
		{4, nil, nil},                        // already empty: untouched
		{5, ptr("g2"), []string{"d1", remote}},
		{6, nil, []string{"d1"}},
	}
	for _, c := range chans {
		noErr(t, s.CreateChannel(ctx, store.Channel{ID: c.id, GroupID: c.group, CreatedBy: "d1", CreatedAt: t0}, c.members, t0), "CreateChannel")
	}

	noErr(t, s.RemoveDeviceMemberships(ctx, "d1"), "RemoveDeviceMemberships")

	l, err := s.ChannelsOf(ctx, "d1")
	noErr(t, err, "ChannelsOf")
	if len(l) != 0 {
		t.Errorf("ChannelsOf(d1) after removal = %v", l)
	}
	for _, id := range []uint32{2, 6} {
		_, err = s.GetChannel(ctx, id)
		isErr(t, err, store.ErrNotFound, fmt.Sprintf("channel %d left empty", id))
	}
	for _, id := range []uint32{1, 3, 4, 5} {
		_, err = s.GetChannel(ctx, id)
		noErr(t, err, fmt.Sprintf("channel %d kept", id))
	}
	sameStrings(t, members(t, s, 1), []string{"d2"}, "channel 1 members")
	sameStrings(t, members(t, s, 3), []string{"d2", "d3"}, "channel 3 members")
	sameStrings(t, members(t, s, 4), nil, "channel 4 members")
	sameStrings(t, members(t, s, 5), []string{remote}, "channel 5 members")
	co, err := s.CoMembers(ctx, "d2")
	noErr(t, err, "CoMembers")
	sameStrings(t, co, []string{"d3"}, "CoMembers(d2)")

	for _, g := range []string{"g1", "g2", "g3"} {
		_, err := s.GetGroupMember(ctx, g, "d1")
		isErr(t, err, store.ErrNotFound, "group member d1 of "+g)
		_, err = s.GetGroup(ctx, g)
		noErr(t, err, "group "+g+" kept")
	}
	ms, err := s.GroupMembers(ctx, "g1")
	noErr(t, err, "GroupMembers")
	same(t, ms, []store.GroupMember{g1d2}, "g1 members")
	ms, err = s.GroupMembers(ctx, "g2")
	noErr(t, err, "GroupMembers")
	same(t, ms, []store.GroupMember(nil), "g2 members")
	ms, err = s.GroupMembers(ctx, "g3")
	noErr(t, err, "GroupMembers")
	same(t, ms, []store.GroupMember{g3d3}, "g3 members")

	// Idempotent, and fine for a device without memberships or unknown.
	noErr(t, s.RemoveDeviceMemberships(ctx, "d1"), "RemoveDeviceMemberships again")
	noErr(t, s.RemoveDeviceMemberships(ctx, "nobody"), "RemoveDeviceMemberships unknown device")
	sameStrings(t, members(t, s, 1), []string{"d2"}, "channel 1 members after repeated removal")

	// Inside a transaction: a remote member is removed like a device.
	noErr(t, s.Tx(ctx, func(q store.Queries) error { return q.RemoveDeviceMemberships(ctx, remote) }), "RemoveDeviceMemberships in Tx")
	_, err = s.GetChannel(ctx, 5)
	isErr(t, err, store.ErrNotFound, "channel 5 left empty")
}

// testTxAfterConflict: a call that fails with ErrConflict inside Tx does not
// spoil the transaction; fn may go on (e.g. retry a pairing code, §8.4.2)
// and commit.
func testTxAfterConflict(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustUser(t, s, "u1")
	mustDevice(t, s, "u1", "d1", t0)
	noErr(t, s.CreatePairingCode(ctx, store.PairingCode{Code: "AAAA-AAAA", UserID: "u1", IssuerDeviceID: "d1", IssuedAt: t0, ExpiresAt: at(600)}), "CreatePairingCode")
	enqueue(t, s, entry("taken", "d1", t0, []byte("x")))
	noErr(t, s.InsertNoiseKey(ctx, noiseKey(1, 1)), "InsertNoiseKey")
	noErr(t, s.InsertAdminToken(ctx, adminToken(1, 1)), "InsertAdminToken")
	noErr(t, s.CreateChannel(ctx, store.Channel{ID: 1, CreatedBy: "d1", CreatedAt: t0}, []string{"d1"}, t0), "CreateChannel")

	err := s.Tx(ctx, func(q store.Queries) error {
		check := func(err error, what string) error {
			if !errors.Is(err, store.ErrConflict) {
				return fmt.Errorf("%s: err = %v, want ErrConflict", what, err)
			}
			return nil
		}
		if err := check(q.CreateUser(ctx, store.User{ID: "u1", Handle: "x", CreatedAt: t0, UpdatedAt: t0}), "CreateUser"); err != nil {
			return err
		}
		if err := check(q.CreatePairingCode(ctx, store.PairingCode{Code: "AAAA-AAAA", UserID: "u1", IssuerDeviceID: "d1", IssuedAt: t0, ExpiresAt: at(600)}), "CreatePairingCode"); err != nil {
			return err
		}
		if err := q.CreatePairingCode(ctx, store.PairingCode{Code: "BBBB-BBBB", UserID: "u1", IssuerDeviceID: "d1", IssuedAt: t0, ExpiresAt: at(600)}); err != nil {
			return fmt.Errorf("CreatePairingCode after a conflict: %w", err)
		}
		_, err := q.EnqueueInbox(ctx, []store.InboxEntry{entry("new-1", "d1", t0, nil), entry("taken", "d1", t0, nil)})
		if err := check(err, "EnqueueInbox"); err != nil {
			return err
		}
		// A call larger than any statement chunk is undone as a whole too.
		big := make([]store.InboxEntry, 4500)
		for i := range big {
			big[i] = entry(fmt.Sprintf("big-%d", i), "d1", t0, nil)
		}
		big[len(big)-1].EnvelopeID = "taken"
		_, err = q.EnqueueInbox(ctx, big)
		if err := check(err, "EnqueueInbox (large)"); err != nil {
			return err
		}
		if l, err := q.ListInbox(ctx, "d1", 0, t0, 0); err != nil || len(l) != 1 {
			return fmt.Errorf("ListInbox in Tx after failed EnqueueInbox calls = %d entries, %v; want 1", len(l), err)
		}
		if _, err := q.EnqueueInbox(ctx, []store.InboxEntry{entry("new-2", "d1", t0, nil)}); err != nil {
			return fmt.Errorf("EnqueueInbox after a conflict: %w", err)
		}
		if err := check(q.InsertNoiseKey(ctx, noiseKey(1, 2)), "InsertNoiseKey"); err != nil {
			return err
		}
		if err := check(q.InsertAdminToken(ctx, adminToken(1, 2)), "InsertAdminToken"); err != nil {
			return err
		}
		if err := check(q.CreateChannel(ctx, store.Channel{ID: 1, CreatedBy: "d1", CreatedAt: t0}, []string{"d9"}, t0), "CreateChannel"); err != nil {
			return err
		}
		if err := q.CreateGroup(ctx, store.Group{ID: "g", OwnerDevice: "d1", CreatedAt: t0}); err != nil {
			return fmt.Errorf("CreateGroup after conflicts: %w", err)
		}
		if err := check(q.CreateGroup(ctx, store.Group{ID: "g", OwnerDevice: "d1", CreatedAt: t0}), "CreateGroup"); err != nil {
			return err
		}
		return q.CreateUser(ctx, store.User{ID: "u2", Handle: "two", CreatedAt: t0, UpdatedAt: t0})
	})
	noErr(t, err, "Tx with handled conflicts")
	_, err = s.GetUser(ctx, "u2")
	noErr(t, err, "user written after the conflicts")
	_, err = s.GetPairingCode(ctx, "BBBB-BBBB")
	noErr(t, err, "pairing code written after a conflict")
	_, err = s.GetGroup(ctx, "g")
	noErr(t, err, "group written in the Tx")
	sameStrings(t, envelopes(listAll(t, s, "d1", t0)), []string{"taken", "new-2"}, "inbox after a conflicting EnqueueInbox in Tx")
	sameStrings(t, members(t, s, 1), []string{"d1"}, "members after a conflicting CreateChannel")
	keys, err := s.ListNoiseKeys(ctx)
	noErr(t, err, "ListNoiseKeys")
	same(t, keys, []store.NoiseKey{noiseKey(1, 1)}, "noise keys after a conflicting insert")
}

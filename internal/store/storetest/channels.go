package storetest

import (
	"math"
	"slices"
	"testing"

	"github.com/commucat/commucat/internal/store"
)

func members(t *testing.T, s store.Store, id uint32) []string {
	t.Helper()
	m, err := s.ChannelMembers(t.Context(), id)
	noErr(t, err, "ChannelMembers")
	return m
}

func sameStrings(t *testing.T, got, want []string, what string) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func testChannels(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustUser(t, s, "u1")
	for _, d := range []string{"d1", "d2", "d3", "D4"} {
		mustDevice(t, s, "u1", d, t0)
	}
	const remote = "r1@remote.example"
	noErr(t, s.CreateGroup(ctx, store.Group{ID: "g1", OwnerDevice: "d1", CreatedAt: t0}), "CreateGroup")

	c7 := store.Channel{ID: 7, Relay: true, CreatedBy: "d1", CreatedAt: at(0)}
	noErr(t, s.CreateChannel(ctx, c7, []string{"d2", "d1"}, at(0)), "CreateChannel")
	got, err := s.GetChannel(ctx, 7)
	noErr(t, err, "GetChannel")
	same(t, got, c7, "GetChannel")
	sameStrings(t, members(t, s, 7), []string{"d1", "d2"}, "ChannelMembers after create")

	_, err = s.GetChannel(ctx, 8)
	isErr(t, err, store.ErrNotFound, "GetChannel missing")

	// A second create is a conflict and changes nothing.
	err = s.CreateChannel(ctx, store.Channel{ID: 7, CreatedBy: "d3", CreatedAt: at(5)}, []string{"d3"}, at(5))
	isErr(t, err, store.ErrConflict, "CreateChannel existing")
	got, err = s.GetChannel(ctx, 7)
	noErr(t, err, "GetChannel")
	same(t, got, c7, "GetChannel after conflicting create")
	sameStrings(t, members(t, s, 7), []string{"d1", "d2"}, "ChannelMembers after conflicting create")

	// AddChannelMembers adds, is idempotent, never removes; sorted bytewise.
	noErr(t, s.AddChannelMembers(ctx, 7, []string{"d2", "d3", remote, "D4"}, at(10)), "AddChannelMembers")
	want := []string{"D4", "d1", "d2", "d3", remote}
	sameStrings(t, members(t, s, 7), want, "ChannelMembers after add")
	noErr(t, s.AddChannelMembers(ctx, 7, []string{"d1"}, at(11)), "AddChannelMembers again")
	noErr(t, s.AddChannelMembers(ctx, 7, nil, at(11)), "AddChannelMembers none")
	sameStrings(t, members(t, s, 7), want, "ChannelMembers after idempotent add")
	isErr(t, s.AddChannelMembers(ctx, 8, []string{"d1"}, at(11)), store.ErrNotFound, "AddChannelMembers to a missing channel")

	for _, c := range []struct {
		id     uint32
		member string
		want   bool
	}{{7, "d1", true}, {7, remote, true}, {7, "d9", false}, {8, "d1", false}, {7, "d", false}} {
		ok, err := s.IsChannelMember(ctx, c.id, c.member)
		noErr(t, err, "IsChannelMember")
		if ok != c.want {
			t.Errorf("IsChannelMember(%d, %q) = %v, want %v", c.id, c.member, ok, c.want)
		}
	}

	// RemoveChannelMember.
	noErr(t, s.RemoveChannelMember(ctx, 7, "d3"), "RemoveChannelMember")
	isErr(t, s.RemoveChannelMember(ctx, 7, "d3"), store.ErrNotFound, "RemoveChannelMember not a member")
	isErr(t, s.RemoveChannelMember(ctx, 8, "d1"), store.ErrNotFound, "RemoveChannelMember missing channel")
	sameStrings(t, members(t, s, 7), []string{"D4", "d1", "d2", remote}, "ChannelMembers after remove")

	// More channels, including the extremes of the u32 range and a group
	// binding at creation.
	c0 := store.Channel{ID: 0, CreatedBy: "d1", CreatedAt: at(20)}
	cMax := store.Channel{ID: math.MaxUint32, GroupID: ptr("g1"), CreatedBy: "d2", CreatedAt: at(21)}
	c3 := store.Channel{ID: 3, CreatedBy: "d3", CreatedAt: at(22)}
	noErr(t, s.CreateChannel(ctx, cMax, []string{"d1", "d3"}, at(21)), "CreateChannel max")
	noErr(t, s.CreateChannel(ctx, c3, []string{"d3", "d1", remote}, at(22)), "CreateChannel 3")
	noErr(t, s.CreateChannel(ctx, c0, []string{"d1"}, at(20)), "CreateChannel 0")
	for _, c := range []store.Channel{c0, c3, cMax} {
		got, err := s.GetChannel(ctx, c.ID)
		noErr(t, err, "GetChannel")
		same(t, got, c, "GetChannel")
	}
	noErr(t, s.CreateChannel(ctx, store.Channel{ID: 9, CreatedBy: "d2", CreatedAt: at(23)}, nil, at(23)), "CreateChannel without members")
	sameStrings(t, members(t, s, 9), nil, "ChannelMembers of an empty channel")

	// ChannelsOf: ascending.
	chans, err := s.ChannelsOf(ctx, "d1")
	noErr(t, err, "ChannelsOf")
	if !slices.Equal(chans, []uint32{0, 3, 7, math.MaxUint32}) {
		t.Errorf("ChannelsOf(d1) = %v", chans)
	}
	chans, err = s.ChannelsOf(ctx, remote)
	noErr(t, err, "ChannelsOf remote")
	if !slices.Equal(chans, []uint32{3, 7}) {
		t.Errorf("ChannelsOf(remote) = %v", chans)
	}
	chans, err = s.ChannelsOf(ctx, "nobody")
	noErr(t, err, "ChannelsOf nobody")
	if len(chans) != 0 {
		t.Errorf("ChannelsOf(nobody) = %v", chans)
	}

	// CoMembers: distinct, without the member itself, sorted.
	co, err := s.CoMembers(ctx, "d1")
	noErr(t, err, "CoMembers")
	sameStrings(t, co, []string{"D4", "d2", "d3", remote}, "CoMembers(d1)")
	co, err = s.CoMembers(ctx, "d3")
	noErr(t, err, "CoMembers")
	sameStrings(t, co, []string{"d1", remote}, "CoMembers(d3)")
	co, err = s.CoMembers(ctx, remote)
	noErr(t, err, "CoMembers")
	sameStrings(t, co, []string{"D4", "d1", "d2", "d3"}, "CoMembers(remote)")
	co, err = s.CoMembers(ctx, "nobody")
	noErr(t, err, "CoMembers")
	sameStrings(t, co, nil, "CoMembers(nobody)")

	// SetChannelGroup.
	noErr(t, s.SetChannelGroup(ctx, 7, "g1"), "SetChannelGroup")
	got, err = s.GetChannel(ctx, 7)
	noErr(t, err, "GetChannel")
	wantC := c7
	wantC.GroupID = ptr("g1")
	same(t, got, wantC, "after SetChannelGroup")
	isErr(t, s.SetChannelGroup(ctx, 8, "g1"), store.ErrNotFound, "SetChannelGroup missing channel")
	anyErr(t, s.SetChannelGroup(ctx, 3, "no-such-group"), "SetChannelGroup unknown group (foreign key)")

	// DeleteChannel removes the membership.
	noErr(t, s.DeleteChannel(ctx, 7), "DeleteChannel")
	_, err = s.GetChannel(ctx, 7)
	isErr(t, err, store.ErrNotFound, "GetChannel deleted")
	sameStrings(t, members(t, s, 7), nil, "ChannelMembers deleted")
	ok, err := s.IsChannelMember(ctx, 7, "d1")
	noErr(t, err, "IsChannelMember")
	if ok {
		t.Error("IsChannelMember of a deleted channel = true")
	}
	chans, err = s.ChannelsOf(ctx, "d1")
	noErr(t, err, "ChannelsOf")
	if !slices.Equal(chans, []uint32{0, 3, math.MaxUint32}) {
		t.Errorf("ChannelsOf(d1) after delete = %v", chans)
	}
	co, err = s.CoMembers(ctx, "d1")
	noErr(t, err, "CoMembers")
	sameStrings(t, co, []string{"d3", remote}, "CoMembers(d1) after delete")
	isErr(t, s.DeleteChannel(ctx, 7), store.ErrNotFound, "DeleteChannel missing")

	// Re-created, the channel starts without the old members.
	noErr(t, s.CreateChannel(ctx, store.Channel{ID: 7, CreatedBy: "d3", CreatedAt: at(30)}, []string{"d3"}, at(30)), "CreateChannel again")
	sameStrings(t, members(t, s, 7), []string{"d3"}, "ChannelMembers of the re-created channel")
}

func testGroups(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustUser(t, s, "u1")
	for _, d := range []string{"d1", "d2", "d3", "d4"} {
		mustDevice(t, s, "u1", d, t0)
	}

	g := store.Group{ID: "g1", OwnerDevice: "d1", CreatedAt: at(0)}
	noErr(t, s.CreateGroup(ctx, g), "CreateGroup")
	got, err := s.GetGroup(ctx, "g1")
	noErr(t, err, "GetGroup")
	same(t, got, g, "GetGroup")
	isErr(t, s.CreateGroup(ctx, store.Group{ID: "g1", OwnerDevice: "d2", CreatedAt: at(1)}), store.ErrConflict, "CreateGroup existing")
	got, err = s.GetGroup(ctx, "g1")
	noErr(t, err, "GetGroup")
	same(t, got, g, "GetGroup after conflicting create")
	_, err = s.GetGroup(ctx, "nope")
	isErr(t, err, store.ErrNotFound, "GetGroup missing")
	noErr(t, s.CreateGroup(ctx, store.Group{ID: "g2", OwnerDevice: "d2", CreatedAt: at(2)}), "CreateGroup g2")

	m1 := store.GroupMember{GroupID: "g1", DeviceID: "d1", Role: store.RoleOwner, JoinedAt: at(0)}
	m3 := store.GroupMember{GroupID: "g1", DeviceID: "d3", Role: store.RoleAdmin, JoinedAt: at(2)}
	m2 := store.GroupMember{GroupID: "g1", DeviceID: "d2", Role: store.RoleMember, JoinedAt: at(1)}
	for _, m := range []store.GroupMember{m3, m1, m2} {
		noErr(t, s.UpsertGroupMember(ctx, m), "UpsertGroupMember "+m.DeviceID)
	}
	noErr(t, s.UpsertGroupMember(ctx, store.GroupMember{GroupID: "g2", DeviceID: "d4", Role: store.RoleOwner, JoinedAt: at(3)}), "UpsertGroupMember g2")

	gm, err := s.GetGroupMember(ctx, "g1", "d2")
	noErr(t, err, "GetGroupMember")
	same(t, gm, m2, "GetGroupMember")
	_, err = s.GetGroupMember(ctx, "g1", "d4")
	isErr(t, err, store.ErrNotFound, "GetGroupMember not a member")
	_, err = s.GetGroupMember(ctx, "nope", "d1")
	isErr(t, err, store.ErrNotFound, "GetGroupMember missing group")

	list, err := s.GroupMembers(ctx, "g1")
	noErr(t, err, "GroupMembers")
	same(t, list, []store.GroupMember{m1, m2, m3}, "GroupMembers sorted by device")
	list, err = s.GroupMembers(ctx, "nope")
	noErr(t, err, "GroupMembers missing group")
	if len(list) != 0 {
		t.Errorf("GroupMembers(missing) = %s", show(list))
	}

	role := func(device string) string {
		t.Helper()
		m, err := s.GetGroupMember(ctx, "g1", device)
		noErr(t, err, "GetGroupMember")
		return m.Role
	}
	upsert := func(device, r string) {
		t.Helper()
		noErr(t, s.UpsertGroupMember(ctx, store.GroupMember{GroupID: "g1", DeviceID: device, Role: r, JoinedAt: at(50)}), "UpsertGroupMember")
	}
	// Raise member → admin.
	upsert("d2", store.RoleAdmin)
	if r := role("d2"); r != store.RoleAdmin {
		t.Errorf("member upserted as admin: role %q, want admin", r)
	}
	// Never lower: owner stays owner, admin stays admin.
	upsert("d1", store.RoleMember)
	if r := role("d1"); r != store.RoleOwner {
		t.Errorf("owner upserted as member: role %q, want owner", r)
	}
	upsert("d1", store.RoleAdmin)
	if r := role("d1"); r != store.RoleOwner {
		t.Errorf("owner upserted as admin: role %q, want owner", r)
	}
	upsert("d2", store.RoleMember)
	if r := role("d2"); r != store.RoleAdmin {
		t.Errorf("admin upserted as member: role %q, want admin", r)
	}
	upsert("d3", store.RoleAdmin)
	if r := role("d3"); r != store.RoleAdmin {
		t.Errorf("admin upserted as admin: role %q", r)
	}
	// Raise admin → owner.
	upsert("d3", store.RoleOwner)
	if r := role("d3"); r != store.RoleOwner {
		t.Errorf("admin upserted as owner: role %q, want owner", r)
	}
	// Other group untouched.
	gm, err = s.GetGroupMember(ctx, "g2", "d4")
	noErr(t, err, "GetGroupMember g2")
	if gm.Role != store.RoleOwner {
		t.Errorf("g2 member role = %q", gm.Role)
	}

	anyErr(t, s.UpsertGroupMember(ctx, store.GroupMember{GroupID: "no-such-group", DeviceID: "d1", Role: store.RoleMember, JoinedAt: t0}),
		"UpsertGroupMember unknown group (foreign key)")
	anyErr(t, s.UpsertGroupMember(ctx, store.GroupMember{GroupID: "g1", DeviceID: "no-such-device", Role: store.RoleMember, JoinedAt: t0}),
		"UpsertGroupMember unknown device (foreign key)")
}

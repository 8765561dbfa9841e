package session

import (
	"context"
	"errors"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/store"
)

// groupDevice validates a device named in a group frame: groups hold local
// devices only (§6.6.2), so a remote address is Invalid Payload.
func (c *conn) groupDevice(s string) (string, *protoErr) {
	id, local, e := c.localMember(s)
	if e != nil && e.detail == "federation disabled" {
		return "", perr(ccp.TitleInvalidPayload, "groups hold local devices only")
	}
	if e != nil {
		return "", e
	}
	if !local {
		return "", perr(ccp.TitleInvalidPayload, "groups hold local devices only")
	}
	return id, nil
}

// bindChannel creates the frame's channel bound to the group, or merges the
// group into an existing channel (§6.6.2). extra members are added too.
func (c *conn) bindChannel(ctx context.Context, q store.Queries, ch uint32, groupID string, extra []string, now time.Time) *protoErr {
	gm, err := q.GroupMembers(ctx, groupID)
	if err != nil {
		return errInternal
	}
	members := append([]string(nil), extra...)
	for _, m := range gm {
		members = append(members, m.DeviceID)
	}
	members = dedupe(members)
	existing, err := q.GetChannel(ctx, ch)
	if errors.Is(err, store.ErrNotFound) {
		gid := groupID
		if err := q.CreateChannel(ctx, store.Channel{ID: ch, GroupID: &gid, CreatedBy: c.device.ID, CreatedAt: now}, members, now); err != nil {
			return errInternal
		}
		return nil
	}
	if err != nil {
		return errInternal
	}
	isMember, err := q.IsChannelMember(ctx, ch, c.device.ID)
	if err != nil {
		return errInternal
	}
	if !isMember {
		return perr(ccp.TitleForbidden, "not a member of the channel")
	}
	if existing.GroupID != nil && *existing.GroupID != groupID {
		return perr(ccp.TitleConflict, "channel is bound to another group")
	}
	if existing.GroupID == nil {
		if err := q.SetChannelGroup(ctx, ch, groupID); err != nil {
			return errInternal
		}
	}
	if err := q.AddChannelMembers(ctx, ch, members, now); err != nil {
		return errInternal
	}
	return nil
}

// normalRole maps a requested role: owner becomes admin (only the creator
// owns a group), absent or unknown becomes member.
func normalRole(r string) string {
	switch r {
	case store.RoleOwner, store.RoleAdmin:
		return store.RoleAdmin
	}
	return store.RoleMember
}

// handleGroupCreate implements GROUP_CREATE (§6.6.2).
func (c *conn) handleGroupCreate(f ccp.Frame, received time.Time) ([]byte, *protoErr) {
	obj, e := objectPayload(f)
	if e != nil {
		return nil, e
	}
	groupID, has, e := optString(obj, "group_id")
	if e != nil {
		return nil, e
	}
	if has && (len(groupID) == 0 || len(groupID) > maxGroupIDLen) {
		return nil, perr(ccp.TitleInvalidPayload, "group_id must be 1-128 bytes")
	}
	listed, e := stringList(obj, "members")
	if e != nil {
		return nil, e
	}
	if _, e := optBool(obj, "relay"); e != nil {
		return nil, e
	}
	roles := map[string]string{}
	if rv, ok := obj.Get("roles"); ok && rv.Kind != canonjson.Null {
		if rv.Kind != canonjson.Object {
			return nil, perr(ccp.TitleInvalidPayload, "roles must be an object")
		}
		for _, m := range rv.Obj {
			dev, e := c.groupDevice(m.Key)
			if e != nil {
				return nil, e
			}
			role := ""
			if m.Value.Kind == canonjson.String {
				role = m.Value.Str
			}
			roles[dev] = role
		}
	}
	var members []string
	for _, s := range listed {
		dev, e := c.groupDevice(s)
		if e != nil {
			return nil, e
		}
		members = append(members, dev)
	}
	for dev := range roles {
		members = append(members, dev)
	}
	members = dedupe(members)
	if f.Channel == 0 {
		return nil, perr(ccp.TitleInvalidPayload, detailReserved)
	}
	if !has {
		id, err := randomID(c.m.d.Rand)
		if err != nil {
			return nil, errInternal
		}
		groupID = id
	}
	// The frame the members get (needed first for the quota check).
	payload, e := c.attributed(obj)
	if e != nil {
		return nil, e
	}
	now := c.m.d.Now()
	var rcpts []string
	e = c.runTx(func(ctx context.Context, q store.Queries) *protoErr {
		others := make([]string, 0, len(members))
		for _, m := range members {
			if m != c.device.ID {
				others = append(others, m)
			}
		}
		if e := checkDevices(ctx, q, others); e != nil {
			return e
		}
		if _, err := q.GetGroup(ctx, groupID); err == nil {
			return perr(ccp.TitleConflict, "group already exists")
		} else if !errors.Is(err, store.ErrNotFound) {
			return errInternal
		}
		if err := q.CreateGroup(ctx, store.Group{ID: groupID, OwnerDevice: c.device.ID, CreatedAt: now}); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return perr(ccp.TitleConflict, "group already exists")
			}
			return errInternal
		}
		if err := q.UpsertGroupMember(ctx, store.GroupMember{GroupID: groupID, DeviceID: c.device.ID, Role: store.RoleOwner, JoinedAt: now}); err != nil {
			return errInternal
		}
		for _, m := range others {
			if err := q.UpsertGroupMember(ctx, store.GroupMember{GroupID: groupID, DeviceID: m, Role: normalRole(roles[m]), JoinedAt: now}); err != nil {
				return errInternal
			}
		}
		if e := c.bindChannel(ctx, q, f.Channel, groupID, nil, now); e != nil {
			return e
		}
		var e *protoErr
		if rcpts, e = c.recipients(ctx, q, f.Channel); e != nil {
			return e
		}
		return c.checkGroupQuota(ctx, q, rcpts, len(payload))
	})
	if e != nil {
		return nil, e
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if e := c.storeDurable(ctx, f.Type, f.Channel, payload, rcpts, received); e != nil {
		return nil, e
	}
	return ackPayload(f.Sequence, member("group_id", groupID)), nil
}

// handleGroupInvite implements GROUP_INVITE (§6.6.2).
func (c *conn) handleGroupInvite(f ccp.Frame, received time.Time) ([]byte, *protoErr) {
	obj, e := objectPayload(f)
	if e != nil {
		return nil, e
	}
	groupID, has, e := optString(obj, "group_id")
	if e != nil {
		return nil, e
	}
	devStr, hasDev, e := optString(obj, "device")
	if e != nil {
		return nil, e
	}
	if !has || !hasDev {
		return nil, perr(ccp.TitleInvalidPayload, "group_id and device are required")
	}
	role, _, e := optString(obj, "role")
	if e != nil {
		return nil, e
	}
	invitee, e := c.groupDevice(devStr)
	if e != nil {
		return nil, e
	}
	if f.Channel == 0 {
		return nil, perr(ccp.TitleInvalidPayload, detailReserved)
	}
	// The frame the members get (needed first for the quota check).
	payload, e := c.attributed(obj)
	if e != nil {
		return nil, e
	}
	now := c.m.d.Now()
	var rcpts []string
	e = c.runTx(func(ctx context.Context, q store.Queries) *protoErr {
		if _, err := q.GetGroup(ctx, groupID); errors.Is(err, store.ErrNotFound) {
			return perr(ccp.TitleNotFound, "unknown group")
		} else if err != nil {
			return errInternal
		}
		if e := checkDevices(ctx, q, []string{invitee}); e != nil {
			return e
		}
		me, err := q.GetGroupMember(ctx, groupID, c.device.ID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && me.Role != store.RoleOwner && me.Role != store.RoleAdmin) {
			return perr(ccp.TitleForbidden, "only a group owner or admin may invite")
		}
		if err != nil {
			return errInternal
		}
		if err := q.UpsertGroupMember(ctx, store.GroupMember{GroupID: groupID, DeviceID: invitee, Role: normalRole(role), JoinedAt: now}); err != nil {
			return errInternal
		}
		if e := c.bindChannel(ctx, q, f.Channel, groupID, []string{invitee}, now); e != nil {
			return e
		}
		var e *protoErr
		if rcpts, e = c.recipients(ctx, q, f.Channel); e != nil {
			return e
		}
		return c.checkGroupQuota(ctx, q, rcpts, len(payload))
	})
	if e != nil {
		return nil, e
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if e := c.storeDurable(ctx, f.Type, f.Channel, payload, rcpts, received); e != nil {
		return nil, e
	}
	return ackPayload(f.Sequence, member("device", invitee), member("group_id", groupID)), nil
}

package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/commucat/commucat/internal/store"
)

// Tables channels, channel_members, groups and group_members.

func (q *queries) GetChannel(ctx context.Context, id uint32) (store.Channel, error) {
	var (
		c   store.Channel
		cid int64
	)
	err := q.db.QueryRow(ctx,
		`SELECT channel_id, group_id, relay, created_by, created_at FROM channels WHERE channel_id = $1`, int64(id)).
		Scan(&cid, &c.GroupID, &c.Relay, &c.CreatedBy, &c.CreatedAt)
	if err != nil {
		return store.Channel{}, wrap("get channel", err)
	}
	c.ID = uint32(cid)
	c.CreatedAt = utc(c.CreatedAt)
	return c, nil
}

func (q *queries) CreateChannel(ctx context.Context, c store.Channel, members []string, now time.Time) error {
	return q.atomic(ctx, func(db querier) error {
		if err := insertOne(ctx, db, "create channel",
			`INSERT INTO channels (channel_id, group_id, relay, created_by, created_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT DO NOTHING`,
			int64(c.ID), c.GroupID, c.Relay, c.CreatedBy, c.CreatedAt); err != nil {
			return err
		}
		return insertMembers(ctx, db, c.ID, members, now)
	})
}

// AddChannelMembers returns ErrNotFound when the channel does not exist.
// The channel row is share-locked so that it cannot be deleted meanwhile.
func (q *queries) AddChannelMembers(ctx context.Context, id uint32, members []string, now time.Time) error {
	return q.atomic(ctx, func(db querier) error {
		var one int
		err := db.QueryRow(ctx, `SELECT 1 FROM channels WHERE channel_id = $1 FOR KEY SHARE`, int64(id)).Scan(&one)
		if err != nil {
			return wrap("add channel members", err)
		}
		return insertMembers(ctx, db, id, members, now)
	})
}

// insertMembers adds the members that are not members yet (one statement).
func insertMembers(ctx context.Context, db querier, id uint32, members []string, now time.Time) error {
	if len(members) == 0 {
		return nil
	}
	_, err := exec(ctx, db, "add channel members",
		`INSERT INTO channel_members (channel_id, member, joined_at)
		SELECT $1::bigint, m, $3::timestamptz FROM unnest($2::text[]) AS u (m)
		ON CONFLICT (channel_id, member) DO NOTHING`,
		int64(id), members, now)
	return err
}

func (q *queries) RemoveChannelMember(ctx context.Context, id uint32, member string) error {
	return q.execOne(ctx, "remove channel member",
		`DELETE FROM channel_members WHERE channel_id = $1 AND member = $2`, int64(id), member)
}

// DeleteChannel deletes the channel and (by cascade) its membership.
func (q *queries) DeleteChannel(ctx context.Context, id uint32) error {
	return q.execOne(ctx, "delete channel", `DELETE FROM channels WHERE channel_id = $1`, int64(id))
}

func (q *queries) SetChannelGroup(ctx context.Context, id uint32, groupID string) error {
	return q.execOne(ctx, "set channel group",
		`UPDATE channels SET group_id = $1 WHERE channel_id = $2`, groupID, int64(id))
}

func (q *queries) ChannelMembers(ctx context.Context, id uint32) ([]string, error) {
	return q.strings(ctx, "channel members",
		`SELECT member FROM channel_members WHERE channel_id = $1 ORDER BY member`, int64(id))
}

func (q *queries) IsChannelMember(ctx context.Context, id uint32, member string) (bool, error) {
	var ok bool
	err := q.db.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM channel_members WHERE channel_id = $1 AND member = $2)`, int64(id), member).Scan(&ok)
	return ok, wrap("is channel member", err)
}

func (q *queries) ChannelsOf(ctx context.Context, member string) ([]uint32, error) {
	rows, err := q.db.Query(ctx,
		`SELECT channel_id FROM channel_members WHERE member = $1 ORDER BY channel_id`, member)
	if err != nil {
		return nil, wrap("channels of", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, wrap("channels of", err)
	}
	var out []uint32
	for _, id := range ids {
		out = append(out, uint32(id))
	}
	return out, nil
}

func (q *queries) CoMembers(ctx context.Context, member string) ([]string, error) {
	return q.strings(ctx, "co-members",
		`SELECT DISTINCT other.member
		FROM channel_members AS self
		JOIN channel_members AS other ON other.channel_id = self.channel_id
		WHERE self.member = $1 AND other.member <> self.member
		ORDER BY other.member`, member)
}

// RemoveDeviceMemberships (§6.11) removes the device from every channel and
// group in one transaction. Channels whose only member is the device are
// deleted; channels that were already empty are left alone. The device's
// channels are locked first (FOR UPDATE), so a member added concurrently
// either is seen (the channel is kept) or waits and then fails on the
// deleted channel.
func (q *queries) RemoveDeviceMemberships(ctx context.Context, deviceID string) error {
	const op = "remove device memberships"
	return q.atomic(ctx, func(db querier) error {
		rows, err := db.Query(ctx,
			`SELECT channel_id FROM channels
			WHERE channel_id IN (SELECT channel_id FROM channel_members WHERE member = $1)
			ORDER BY channel_id
			FOR UPDATE`, deviceID)
		if err != nil {
			return wrap(op, err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return wrap(op, err)
		}
		if _, err := exec(ctx, db, op, `DELETE FROM channel_members WHERE member = $1`, deviceID); err != nil {
			return err
		}
		if len(ids) > 0 {
			if _, err := exec(ctx, db, op,
				`DELETE FROM channels AS c
				WHERE c.channel_id = ANY ($1::bigint[])
				AND NOT EXISTS (SELECT 1 FROM channel_members AS m WHERE m.channel_id = c.channel_id)`,
				ids); err != nil {
				return err
			}
		}
		_, err = exec(ctx, db, op, `DELETE FROM group_members WHERE device_id = $1`, deviceID)
		return err
	})
}

func (q *queries) CreateGroup(ctx context.Context, g store.Group) error {
	return insertOne(ctx, q.db, "create group",
		`INSERT INTO groups (group_id, owner_device, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		g.ID, g.OwnerDevice, g.CreatedAt)
}

func (q *queries) GetGroup(ctx context.Context, id string) (store.Group, error) {
	var g store.Group
	err := q.db.QueryRow(ctx,
		`SELECT group_id, owner_device, created_at FROM groups WHERE group_id = $1`, id).
		Scan(&g.ID, &g.OwnerDevice, &g.CreatedAt)
	if err != nil {
		return store.Group{}, wrap("get group", err)
	}
	g.CreatedAt = utc(g.CreatedAt)
	return g, nil
}

// roleRank is store.RoleRank in SQL, applied to the role expression expr.
func roleRank(expr string) string {
	return `(CASE ` + expr + ` WHEN 'owner' THEN 3 WHEN 'admin' THEN 2 WHEN 'member' THEN 1 ELSE 0 END)`
}

// UpsertGroupMember keeps the joined_at of an existing membership.
func (q *queries) UpsertGroupMember(ctx context.Context, m store.GroupMember) error {
	_, err := exec(ctx, q.db, "upsert group member",
		`INSERT INTO group_members (group_id, device_id, role, joined_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (group_id, device_id) DO UPDATE SET role = excluded.role
		WHERE `+roleRank("excluded.role")+` > `+roleRank("group_members.role"),
		m.GroupID, m.DeviceID, m.Role, m.JoinedAt)
	return err
}

const groupMemberColumns = `group_id, device_id, role, joined_at`

func scanGroupMember(row pgx.Row) (store.GroupMember, error) {
	var m store.GroupMember
	if err := row.Scan(&m.GroupID, &m.DeviceID, &m.Role, &m.JoinedAt); err != nil {
		return store.GroupMember{}, err
	}
	m.JoinedAt = utc(m.JoinedAt)
	return m, nil
}

func (q *queries) GetGroupMember(ctx context.Context, groupID, deviceID string) (store.GroupMember, error) {
	m, err := scanGroupMember(q.db.QueryRow(ctx,
		`SELECT `+groupMemberColumns+` FROM group_members WHERE group_id = $1 AND device_id = $2`,
		groupID, deviceID))
	return m, wrap("get group member", err)
}

func (q *queries) GroupMembers(ctx context.Context, groupID string) ([]store.GroupMember, error) {
	rows, err := q.db.Query(ctx,
		`SELECT `+groupMemberColumns+` FROM group_members WHERE group_id = $1 ORDER BY device_id`, groupID)
	if err != nil {
		return nil, wrap("group members", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.GroupMember, error) { return scanGroupMember(r) })
	return out, wrap("group members", err)
}

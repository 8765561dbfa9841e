package sqlite

import (
	"context"

	"github.com/commucat/commucat/internal/store"
)

// Tables groups and group_members.

func (q *queries) CreateGroup(ctx context.Context, g store.Group) error {
	_, err := q.exec(ctx, q.w, "create group",
		`INSERT INTO groups (group_id, owner_device, created_at) VALUES (?, ?, ?)`,
		g.ID, g.OwnerDevice, toMicros(g.CreatedAt))
	return err
}

func (q *queries) GetGroup(ctx context.Context, id string) (store.Group, error) {
	var (
		g       store.Group
		created int64
	)
	err := q.r.QueryRowContext(ctx,
		`SELECT group_id, owner_device, created_at FROM groups WHERE group_id = ?`, id).
		Scan(&g.ID, &g.OwnerDevice, &created)
	if err != nil {
		return store.Group{}, wrap("get group", err)
	}
	g.CreatedAt = fromMicros(created)
	return g, nil
}

// roleRank is store.RoleRank in SQL, applied to the role expression expr.
func roleRank(expr string) string {
	return `(CASE ` + expr + ` WHEN 'owner' THEN 3 WHEN 'admin' THEN 2 WHEN 'member' THEN 1 ELSE 0 END)`
}

// UpsertGroupMember keeps the joined_at of an existing membership.
func (q *queries) UpsertGroupMember(ctx context.Context, m store.GroupMember) error {
	_, err := q.exec(ctx, q.w, "upsert group member",
		`INSERT INTO group_members (group_id, device_id, role, joined_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (group_id, device_id) DO UPDATE SET role = excluded.role
		WHERE `+roleRank("excluded.role")+` > `+roleRank("group_members.role"),
		m.GroupID, m.DeviceID, m.Role, toMicros(m.JoinedAt))
	return err
}

const groupMemberColumns = `group_id, device_id, role, joined_at`

func scanGroupMember(sc scanner) (store.GroupMember, error) {
	var (
		m      store.GroupMember
		joined int64
	)
	if err := sc.Scan(&m.GroupID, &m.DeviceID, &m.Role, &joined); err != nil {
		return store.GroupMember{}, err
	}
	m.JoinedAt = fromMicros(joined)
	return m, nil
}

func (q *queries) GetGroupMember(ctx context.Context, groupID, deviceID string) (store.GroupMember, error) {
	m, err := scanGroupMember(q.r.QueryRowContext(ctx,
		`SELECT `+groupMemberColumns+` FROM group_members WHERE group_id = ? AND device_id = ?`,
		groupID, deviceID))
	return m, wrap("get group member", err)
}

func (q *queries) GroupMembers(ctx context.Context, groupID string) ([]store.GroupMember, error) {
	rows, err := q.r.QueryContext(ctx,
		`SELECT `+groupMemberColumns+` FROM group_members WHERE group_id = ? ORDER BY device_id`, groupID)
	if err != nil {
		return nil, wrap("group members", err)
	}
	defer rows.Close()
	var out []store.GroupMember
	for rows.Next() {
		m, err := scanGroupMember(rows)
		if err != nil {
			return nil, wrap("group members", err)
		}
		out = append(out, m)
	}
	return out, wrap("group members", rows.Err())
}

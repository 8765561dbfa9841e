package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// Tables channels and channel_members.

// memberChunk bounds the rows of one multi-row channel_members insert
// (3 variables a row).
const memberChunk = 500

func (q *queries) GetChannel(ctx context.Context, id uint32) (store.Channel, error) {
	var (
		c       store.Channel
		group   sql.NullString
		relay   int
		created int64
	)
	err := q.r.QueryRowContext(ctx,
		`SELECT channel_id, group_id, relay, created_by, created_at FROM channels WHERE channel_id = ?`, id).
		Scan(&c.ID, &group, &relay, &c.CreatedBy, &created)
	if err != nil {
		return store.Channel{}, wrap("get channel", err)
	}
	c.GroupID = fromNullString(group)
	c.Relay = relay != 0
	c.CreatedAt = fromMicros(created)
	return c, nil
}

func (q *queries) CreateChannel(ctx context.Context, c store.Channel, members []string, now time.Time) error {
	defer q.membersChanged(false, c.ID)
	return q.atomic(ctx, func(ex execer) error {
		if _, err := q.exec(ctx, ex, "create channel",
			`INSERT INTO channels (channel_id, group_id, relay, created_by, created_at) VALUES (?, ?, ?, ?, ?)`,
			c.ID, toNullString(c.GroupID), boolInt(c.Relay), c.CreatedBy, toMicros(c.CreatedAt)); err != nil {
			return err
		}
		return q.insertMembers(ctx, ex, c.ID, members, now)
	})
}

// AddChannelMembers returns ErrNotFound when the channel does not exist.
func (q *queries) AddChannelMembers(ctx context.Context, id uint32, members []string, now time.Time) error {
	defer q.membersChanged(false, id)
	return q.atomic(ctx, func(ex execer) error {
		var one int
		err := ex.QueryRowContext(ctx, `SELECT 1 FROM channels WHERE channel_id = ?`, id).Scan(&one)
		if err != nil {
			return wrap("add channel members", err)
		}
		return q.insertMembers(ctx, ex, id, members, now)
	})
}

// insertMembers adds the members that are not members yet.
func (q *queries) insertMembers(ctx context.Context, ex execer, id uint32, members []string, now time.Time) error {
	t := toMicros(now)
	for len(members) > 0 {
		n := min(len(members), memberChunk)
		args := make([]any, 0, 3*n)
		for _, m := range members[:n] {
			args = append(args, id, m, t)
		}
		// The text varies with n: not a cached prepared statement.
		if _, err := q.exec(ctx, unprepared(ex), "add channel members",
			`INSERT INTO channel_members (channel_id, member, joined_at) VALUES `+placeholders(n, 3)+`
			ON CONFLICT (channel_id, member) DO NOTHING`, args...); err != nil {
			return err
		}
		members = members[n:]
	}
	return nil
}

func (q *queries) RemoveChannelMember(ctx context.Context, id uint32, member string) error {
	defer q.membersChanged(false, id)
	return q.execOne(ctx, "remove channel member",
		`DELETE FROM channel_members WHERE channel_id = ? AND member = ?`, id, member)
}

// DeleteChannel deletes the channel and (by cascade) its membership.
func (q *queries) DeleteChannel(ctx context.Context, id uint32) error {
	defer q.membersChanged(false, id)
	return q.execOne(ctx, "delete channel", `DELETE FROM channels WHERE channel_id = ?`, id)
}

func (q *queries) SetChannelGroup(ctx context.Context, id uint32, groupID string) error {
	return q.execOne(ctx, "set channel group",
		`UPDATE channels SET group_id = ? WHERE channel_id = ?`, groupID, id)
}

// ChannelMembers is served from the membership cache outside Tx
// (membercache.go); inside Tx it reads the transaction's own view.
func (q *queries) ChannelMembers(ctx context.Context, id uint32) ([]string, error) {
	const query = `SELECT member FROM channel_members WHERE channel_id = ? ORDER BY member`
	if q.tc != nil {
		return q.strings(ctx, "channel members", query, id)
	}
	if l, ok := q.sh.members.get(id); ok {
		return l, nil
	}
	gen := q.sh.members.generation()
	l, err := q.strings(ctx, "channel members", query, id)
	if err != nil {
		return nil, err
	}
	q.sh.members.put(id, l, gen)
	return l, nil
}

func (q *queries) IsChannelMember(ctx context.Context, id uint32, member string) (bool, error) {
	if q.tc == nil {
		if is, known := q.sh.members.contains(id, member); known {
			return is, nil
		}
	}
	var ok bool
	err := q.r.QueryRowContext(ctx,
		`SELECT EXISTS (SELECT 1 FROM channel_members WHERE channel_id = ? AND member = ?)`, id, member).Scan(&ok)
	return ok, wrap("is channel member", err)
}

func (q *queries) ChannelsOf(ctx context.Context, member string) ([]uint32, error) {
	rows, err := q.r.QueryContext(ctx,
		`SELECT channel_id FROM channel_members WHERE member = ? ORDER BY channel_id`, member)
	if err != nil {
		return nil, wrap("channels of", err)
	}
	defer rows.Close()
	var out []uint32
	for rows.Next() {
		var id uint32
		if err := rows.Scan(&id); err != nil {
			return nil, wrap("channels of", err)
		}
		out = append(out, id)
	}
	return out, wrap("channels of", rows.Err())
}

func (q *queries) CoMembers(ctx context.Context, member string) ([]string, error) {
	return q.strings(ctx, "co-members",
		`SELECT DISTINCT other.member
		FROM channel_members AS self
		JOIN channel_members AS other ON other.channel_id = self.channel_id
		WHERE self.member = ? AND other.member <> self.member
		ORDER BY other.member`, member)
}

// strings runs a read query of one text column.
func (q *queries) strings(ctx context.Context, op, query string, args ...any) ([]string, error) {
	rows, err := q.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

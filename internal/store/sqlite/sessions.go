package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// Table sessions.

func (q *queries) CreateSession(ctx context.Context, s store.Session) error {
	_, err := q.exec(ctx, q.w, "create session",
		`INSERT INTO sessions (session_id, user_id, device_id, node_id, created_at, last_active_at, closed_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`,
		s.ID, s.UserID, s.DeviceID, s.NodeID,
		toMicros(s.CreatedAt), toMicros(s.LastActiveAt), toNullMicros(s.ClosedAt))
	return err
}

func (q *queries) GetSession(ctx context.Context, id string) (store.Session, error) {
	var (
		s               store.Session
		created, active int64
		closed          sql.NullInt64
	)
	err := q.r.QueryRowContext(ctx,
		`SELECT session_id, user_id, device_id, node_id, created_at, last_active_at, closed_at
		FROM sessions WHERE session_id = ?`, id).
		Scan(&s.ID, &s.UserID, &s.DeviceID, &s.NodeID, &created, &active, &closed)
	if err != nil {
		return store.Session{}, wrap("get session", err)
	}
	s.CreatedAt = fromMicros(created)
	s.LastActiveAt = fromMicros(active)
	s.ClosedAt = fromNullMicros(closed)
	return s, nil
}

func (q *queries) TouchSession(ctx context.Context, id string, t time.Time) error {
	return q.execOne(ctx, "touch session",
		`UPDATE sessions SET last_active_at = max(last_active_at, ?) WHERE session_id = ?`,
		toMicros(t), id)
}

func (q *queries) CloseSession(ctx context.Context, id string, t time.Time) error {
	return q.execOne(ctx, "close session",
		`UPDATE sessions SET closed_at = ? WHERE session_id = ?`, toMicros(t), id)
}

func (q *queries) DeleteClosedSessions(ctx context.Context, cutoff time.Time) (int64, error) {
	return q.exec(ctx, q.w, "delete closed sessions",
		`DELETE FROM sessions WHERE closed_at IS NOT NULL AND closed_at < ?`, toMicros(cutoff))
}

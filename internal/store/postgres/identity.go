package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/commucat/commucat/internal/store"
)

// Tables users, devices, device_key_events and sessions.

const userColumns = `user_id, handle, display_name, avatar_url, created_at, updated_at`

func scanUser(row pgx.Row) (store.User, error) {
	var u store.User
	if err := row.Scan(&u.ID, &u.Handle, &u.DisplayName, &u.AvatarURL, &u.CreatedAt, &u.UpdatedAt); err != nil {
		return store.User{}, err
	}
	u.CreatedAt, u.UpdatedAt = utc(u.CreatedAt), utc(u.UpdatedAt)
	return u, nil
}

func (q *queries) CreateUser(ctx context.Context, u store.User) error {
	return insertOne(ctx, q.db, "create user",
		`INSERT INTO users (`+userColumns+`) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
		u.ID, u.Handle, u.DisplayName, u.AvatarURL, u.CreatedAt, u.UpdatedAt)
}

func (q *queries) GetUser(ctx context.Context, id string) (store.User, error) {
	u, err := scanUser(q.db.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE user_id = $1`, id))
	return u, wrap("get user", err)
}

func (q *queries) GetUserByHandle(ctx context.Context, handle string) (store.User, error) {
	u, err := scanUser(q.db.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE handle = $1`, handle))
	return u, wrap("get user by handle", err)
}

func (q *queries) UpdateUserProfile(ctx context.Context, id string, displayName, avatarURL *string, now time.Time) error {
	return q.execOne(ctx, "update user profile",
		`UPDATE users SET
			display_name = coalesce($1::text, display_name),
			avatar_url = coalesce($2::text, avatar_url),
			updated_at = $3
		WHERE user_id = $4`,
		displayName, avatarURL, now, id)
}

func (q *queries) CountUsers(ctx context.Context) (int, error) {
	var n int
	err := q.db.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n)
	return n, wrap("count users", err)
}

const deviceColumns = `device_id, user_id, public_key, status, device_name, created_at, updated_at, revoked_at`

func scanDevice(row pgx.Row) (store.Device, error) {
	var (
		d   store.Device
		key []byte
	)
	if err := row.Scan(&d.ID, &d.UserID, &key, &d.Status, &d.Name, &d.CreatedAt, &d.UpdatedAt, &d.RevokedAt); err != nil {
		return store.Device{}, err
	}
	if err := fixed(d.PublicKey[:], key, "devices.public_key"); err != nil {
		return store.Device{}, err
	}
	d.CreatedAt, d.UpdatedAt, d.RevokedAt = utc(d.CreatedAt), utc(d.UpdatedAt), utcPtr(d.RevokedAt)
	return d, nil
}

func (q *queries) CreateDevice(ctx context.Context, d store.Device) error {
	return insertOne(ctx, q.db, "create device",
		`INSERT INTO devices (`+deviceColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
		d.ID, d.UserID, d.PublicKey[:], d.Status, d.Name, d.CreatedAt, d.UpdatedAt, d.RevokedAt)
}

func (q *queries) GetDevice(ctx context.Context, id string) (store.Device, error) {
	d, err := scanDevice(q.db.QueryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE device_id = $1`, id))
	return d, wrap("get device", err)
}

func (q *queries) ListDevices(ctx context.Context, userID string) ([]store.Device, error) {
	rows, err := q.db.Query(ctx,
		`SELECT `+deviceColumns+` FROM devices WHERE user_id = $1 ORDER BY created_at, device_id`, userID)
	if err != nil {
		return nil, wrap("list devices", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Device, error) { return scanDevice(r) })
	return out, wrap("list devices", err)
}

func (q *queries) SetDeviceKey(ctx context.Context, id string, key [32]byte, now time.Time) error {
	return q.execOne(ctx, "set device key",
		`UPDATE devices SET public_key = $1, updated_at = $2 WHERE device_id = $3`, key[:], now, id)
}

// SetDeviceStatus sets revoked_at to now when the device becomes revoked
// (a device already revoked keeps its revoked_at); other transitions leave
// revoked_at unchanged.
func (q *queries) SetDeviceStatus(ctx context.Context, id, status string, now time.Time) error {
	return q.execOne(ctx, "set device status",
		`UPDATE devices SET
			revoked_at = CASE
				WHEN $1::text = 'revoked' AND (status <> 'revoked' OR revoked_at IS NULL) THEN $2::timestamptz
				ELSE revoked_at END,
			status = $1::text,
			updated_at = $2::timestamptz
		WHERE device_id = $3`,
		status, now, id)
}

func (q *queries) CountActiveDevices(ctx context.Context, userID string) (int, error) {
	var n int
	err := q.db.QueryRow(ctx,
		`SELECT count(*) FROM devices WHERE user_id = $1 AND status = 'active'`, userID).Scan(&n)
	return n, wrap("count active devices", err)
}

func (q *queries) CountAllActiveDevices(ctx context.Context) (int, error) {
	var n int
	err := q.db.QueryRow(ctx, `SELECT count(*) FROM devices WHERE status = 'active'`).Scan(&n)
	return n, wrap("count all active devices", err)
}

func (q *queries) AddKeyEvent(ctx context.Context, e store.KeyEvent) error {
	return insertOne(ctx, q.db, "add key event",
		`INSERT INTO device_key_events (event_id, device_id, public_key, action, recorded_at)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
		e.ID, e.DeviceID, e.PublicKey[:], e.Action, e.RecordedAt)
}

// LatestKeyEvent orders by recorded_at, then by insertion order.
func (q *queries) LatestKeyEvent(ctx context.Context, deviceID string, actions []string) (store.KeyEvent, error) {
	if len(actions) == 0 {
		return store.KeyEvent{}, wrap("latest key event", pgx.ErrNoRows)
	}
	var (
		e   store.KeyEvent
		key []byte
	)
	err := q.db.QueryRow(ctx,
		`SELECT event_id, device_id, public_key, action, recorded_at
		FROM device_key_events
		WHERE device_id = $1 AND action = ANY ($2::text[])
		ORDER BY recorded_at DESC, event_seq DESC
		LIMIT 1`, deviceID, actions).Scan(&e.ID, &e.DeviceID, &key, &e.Action, &e.RecordedAt)
	if err != nil {
		return store.KeyEvent{}, wrap("latest key event", err)
	}
	if err := fixed(e.PublicKey[:], key, "device_key_events.public_key"); err != nil {
		return store.KeyEvent{}, err
	}
	e.RecordedAt = utc(e.RecordedAt)
	return e, nil
}

func (q *queries) CreateSession(ctx context.Context, s store.Session) error {
	return insertOne(ctx, q.db, "create session",
		`INSERT INTO sessions (session_id, user_id, device_id, node_id, created_at, last_active_at, closed_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
		s.ID, s.UserID, s.DeviceID, s.NodeID, s.CreatedAt, s.LastActiveAt, s.ClosedAt)
}

func (q *queries) GetSession(ctx context.Context, id string) (store.Session, error) {
	var s store.Session
	err := q.db.QueryRow(ctx,
		`SELECT session_id, user_id, device_id, node_id, created_at, last_active_at, closed_at
		FROM sessions WHERE session_id = $1`, id).
		Scan(&s.ID, &s.UserID, &s.DeviceID, &s.NodeID, &s.CreatedAt, &s.LastActiveAt, &s.ClosedAt)
	if err != nil {
		return store.Session{}, wrap("get session", err)
	}
	s.CreatedAt, s.LastActiveAt, s.ClosedAt = utc(s.CreatedAt), utc(s.LastActiveAt), utcPtr(s.ClosedAt)
	return s, nil
}

func (q *queries) TouchSession(ctx context.Context, id string, t time.Time) error {
	return q.execOne(ctx, "touch session",
		`UPDATE sessions SET last_active_at = greatest(last_active_at, $1) WHERE session_id = $2`, t, id)
}

func (q *queries) CloseSession(ctx context.Context, id string, t time.Time) error {
	return q.execOne(ctx, "close session",
		`UPDATE sessions SET closed_at = $1 WHERE session_id = $2`, t, id)
}

func (q *queries) DeleteClosedSessions(ctx context.Context, cutoff time.Time) (int64, error) {
	return exec(ctx, q.db, "delete closed sessions",
		`DELETE FROM sessions WHERE closed_at IS NOT NULL AND closed_at < $1`, cutoff)
}

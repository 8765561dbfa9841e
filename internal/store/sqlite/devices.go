package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// Table devices.

const deviceColumns = `device_id, user_id, public_key, status, device_name, created_at, updated_at, revoked_at`

func scanDevice(sc scanner) (store.Device, error) {
	var (
		d                store.Device
		key              []byte
		name             sql.NullString
		created, updated int64
		revoked          sql.NullInt64
	)
	if err := sc.Scan(&d.ID, &d.UserID, &key, &d.Status, &name, &created, &updated, &revoked); err != nil {
		return store.Device{}, err
	}
	if err := fixed(d.PublicKey[:], key, "devices.public_key"); err != nil {
		return store.Device{}, err
	}
	d.Name = fromNullString(name)
	d.CreatedAt = fromMicros(created)
	d.UpdatedAt = fromMicros(updated)
	d.RevokedAt = fromNullMicros(revoked)
	return d, nil
}

func (q *queries) CreateDevice(ctx context.Context, d store.Device) error {
	_, err := q.exec(ctx, q.w, "create device",
		`INSERT INTO devices (`+deviceColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.UserID, d.PublicKey[:], d.Status, toNullString(d.Name),
		toMicros(d.CreatedAt), toMicros(d.UpdatedAt), toNullMicros(d.RevokedAt))
	return err
}

func (q *queries) GetDevice(ctx context.Context, id string) (store.Device, error) {
	d, err := scanDevice(q.r.QueryRowContext(ctx,
		`SELECT `+deviceColumns+` FROM devices WHERE device_id = ?`, id))
	return d, wrap("get device", err)
}

func (q *queries) ListDevices(ctx context.Context, userID string) ([]store.Device, error) {
	rows, err := q.r.QueryContext(ctx,
		`SELECT `+deviceColumns+` FROM devices WHERE user_id = ? ORDER BY created_at, device_id`, userID)
	if err != nil {
		return nil, wrap("list devices", err)
	}
	defer rows.Close()
	var out []store.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, wrap("list devices", err)
		}
		out = append(out, d)
	}
	return out, wrap("list devices", rows.Err())
}

func (q *queries) SetDeviceKey(ctx context.Context, id string, key [32]byte, now time.Time) error {
	return q.execOne(ctx, "set device key",
		`UPDATE devices SET public_key = ?, updated_at = ? WHERE device_id = ?`,
		key[:], toMicros(now), id)
}

// SetDeviceStatus sets revoked_at to now when the device becomes revoked
// (a device already revoked keeps its revoked_at); other transitions leave
// revoked_at unchanged.
func (q *queries) SetDeviceStatus(ctx context.Context, id, status string, now time.Time) error {
	t := toMicros(now)
	return q.execOne(ctx, "set device status",
		`UPDATE devices SET
			revoked_at = CASE
				WHEN ? = 'revoked' AND (status <> 'revoked' OR revoked_at IS NULL) THEN ?
				ELSE revoked_at END,
			status = ?,
			updated_at = ?
		WHERE device_id = ?`,
		status, t, status, t, id)
}

func (q *queries) CountActiveDevices(ctx context.Context, userID string) (int, error) {
	var n int
	err := q.r.QueryRowContext(ctx,
		`SELECT count(*) FROM devices WHERE user_id = ? AND status = 'active'`, userID).Scan(&n)
	return n, wrap("count active devices", err)
}

func (q *queries) CountAllActiveDevices(ctx context.Context) (int, error) {
	var n int
	err := q.r.QueryRowContext(ctx,
		`SELECT count(*) FROM devices WHERE status = 'active'`).Scan(&n)
	return n, wrap("count all active devices", err)
}

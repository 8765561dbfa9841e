package sqlite

import (
	"context"

	"github.com/commucat/commucat/internal/store"
)

// Table device_key_events.

func (q *queries) AddKeyEvent(ctx context.Context, e store.KeyEvent) error {
	_, err := q.exec(ctx, q.w, "add key event",
		`INSERT INTO device_key_events (event_id, device_id, public_key, action, recorded_at)
		VALUES (?, ?, ?, ?, ?)`,
		e.ID, e.DeviceID, e.PublicKey[:], e.Action, toMicros(e.RecordedAt))
	return err
}

// LatestKeyEvent orders by recorded_at, then by insertion order.
func (q *queries) LatestKeyEvent(ctx context.Context, deviceID string, actions []string) (store.KeyEvent, error) {
	if len(actions) == 0 {
		return store.KeyEvent{}, wrap("latest key event", store.ErrNotFound)
	}
	args := make([]any, 0, 1+len(actions))
	args = append(args, deviceID)
	for _, a := range actions {
		args = append(args, a)
	}
	var (
		e   store.KeyEvent
		key []byte
		at  int64
	)
	err := q.r.QueryRowContext(ctx,
		`SELECT event_id, device_id, public_key, action, recorded_at
		FROM device_key_events
		WHERE device_id = ? AND action IN (`+list(len(actions))+`)
		ORDER BY recorded_at DESC, rowid DESC
		LIMIT 1`, args...).Scan(&e.ID, &e.DeviceID, &key, &e.Action, &at)
	if err != nil {
		return store.KeyEvent{}, wrap("latest key event", err)
	}
	if err := fixed(e.PublicKey[:], key, "device_key_events.public_key"); err != nil {
		return store.KeyEvent{}, err
	}
	e.RecordedAt = fromMicros(at)
	return e, nil
}

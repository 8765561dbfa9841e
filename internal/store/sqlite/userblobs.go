package sqlite

import (
	"context"
	"time"
)

// Table user_blobs (§8.4.6).

func (q *queries) GetUserBlob(ctx context.Context, userID, key string) (string, error) {
	var payload string
	err := q.r.QueryRowContext(ctx,
		`SELECT payload FROM user_blobs WHERE user_id = ? AND key = ?`, userID, key).Scan(&payload)
	if err != nil {
		return "", wrap("get user blob", err)
	}
	return payload, nil
}

// PutUserBlob inserts or replaces the blob; an unknown user is refused
// (foreign key).
func (q *queries) PutUserBlob(ctx context.Context, userID, key, payload string, now time.Time) error {
	_, err := q.exec(ctx, q.w, "put user blob",
		`INSERT INTO user_blobs (user_id, key, payload, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id, key) DO UPDATE SET payload = excluded.payload, updated_at = excluded.updated_at`,
		userID, key, payload, toMicros(now))
	return err
}

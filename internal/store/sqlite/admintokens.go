package sqlite

import (
	"context"

	"github.com/commucat/commucat/internal/store"
)

// Table admin_tokens (§10.4).

func (q *queries) ListAdminTokens(ctx context.Context) ([]store.AdminToken, error) {
	rows, err := q.r.QueryContext(ctx,
		`SELECT version, token_hash, salt, valid_after, rotates_at, expires_at, created_at
		FROM admin_tokens ORDER BY version DESC`)
	if err != nil {
		return nil, wrap("list admin tokens", err)
	}
	defer rows.Close()
	var out []store.AdminToken
	for rows.Next() {
		var (
			t                                 store.AdminToken
			hash, salt                        []byte
			valid, rotates, expires, creation int64
		)
		if err := rows.Scan(&t.Version, &hash, &salt, &valid, &rotates, &expires, &creation); err != nil {
			return nil, wrap("list admin tokens", err)
		}
		if err := fixed(t.TokenHash[:], hash, "admin_tokens.token_hash"); err != nil {
			return nil, err
		}
		if err := fixed(t.Salt[:], salt, "admin_tokens.salt"); err != nil {
			return nil, err
		}
		t.ValidAfter = fromMicros(valid)
		t.RotatesAt = fromMicros(rotates)
		t.ExpiresAt = fromMicros(expires)
		t.CreatedAt = fromMicros(creation)
		out = append(out, t)
	}
	return out, wrap("list admin tokens", rows.Err())
}

func (q *queries) InsertAdminToken(ctx context.Context, t store.AdminToken) error {
	_, err := q.exec(ctx, q.w, "insert admin token",
		`INSERT INTO admin_tokens (version, token_hash, salt, valid_after, rotates_at, expires_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`,
		t.Version, t.TokenHash[:], t.Salt[:],
		toMicros(t.ValidAfter), toMicros(t.RotatesAt), toMicros(t.ExpiresAt), toMicros(t.CreatedAt))
	return err
}

// DeleteAdminToken is idempotent: deleting a missing version is not an
// error (nodes prune the table concurrently, §10.4).
func (q *queries) DeleteAdminToken(ctx context.Context, version int) error {
	_, err := q.exec(ctx, q.w, "delete admin token", `DELETE FROM admin_tokens WHERE version = ?`, version)
	return err
}

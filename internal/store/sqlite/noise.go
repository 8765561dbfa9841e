package sqlite

import (
	"context"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// Tables noise_keys and noise_config (§10.4).

func (q *queries) ListNoiseKeys(ctx context.Context) ([]store.NoiseKey, error) {
	rows, err := q.r.QueryContext(ctx,
		`SELECT version, private_key, public_key, kem_seed, valid_after, rotates_at, expires_at, created_at
		FROM noise_keys ORDER BY version DESC`)
	if err != nil {
		return nil, wrap("list noise keys", err)
	}
	defer rows.Close()
	var out []store.NoiseKey
	for rows.Next() {
		var (
			k                                 store.NoiseKey
			priv, pub, seed                   []byte
			valid, rotates, expires, creation int64
		)
		if err := rows.Scan(&k.Version, &priv, &pub, &seed, &valid, &rotates, &expires, &creation); err != nil {
			return nil, wrap("list noise keys", err)
		}
		if err := fixed(k.Private[:], priv, "noise_keys.private_key"); err != nil {
			return nil, err
		}
		if err := fixed(k.Public[:], pub, "noise_keys.public_key"); err != nil {
			return nil, err
		}
		if err := fixed(k.KEMSeed[:], seed, "noise_keys.kem_seed"); err != nil {
			return nil, err
		}
		k.ValidAfter = fromMicros(valid)
		k.RotatesAt = fromMicros(rotates)
		k.ExpiresAt = fromMicros(expires)
		k.CreatedAt = fromMicros(creation)
		out = append(out, k)
	}
	return out, wrap("list noise keys", rows.Err())
}

func (q *queries) InsertNoiseKey(ctx context.Context, k store.NoiseKey) error {
	_, err := q.exec(ctx, q.w, "insert noise key",
		`INSERT INTO noise_keys (version, private_key, public_key, kem_seed, valid_after, rotates_at, expires_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		k.Version, k.Private[:], k.Public[:], k.KEMSeed[:],
		toMicros(k.ValidAfter), toMicros(k.RotatesAt), toMicros(k.ExpiresAt), toMicros(k.CreatedAt))
	return err
}

// DeleteNoiseKey is idempotent: deleting a missing version is not an error
// (nodes prune the table concurrently, §10.4).
func (q *queries) DeleteNoiseKey(ctx context.Context, version int) error {
	_, err := q.exec(ctx, q.w, "delete noise key", `DELETE FROM noise_keys WHERE version = ?`, version)
	return err
}

func (q *queries) NoiseConfig(ctx context.Context) ([32]byte, error) {
	var (
		out [32]byte
		pub []byte
	)
	if err := q.r.QueryRowContext(ctx, `SELECT public_key FROM noise_config WHERE id = 1`).Scan(&pub); err != nil {
		return out, wrap("noise config", err)
	}
	err := fixed(out[:], pub, "noise_config.public_key")
	return out, err
}

func (q *queries) SetNoiseConfig(ctx context.Context, public [32]byte, now time.Time) error {
	_, err := q.exec(ctx, q.w, "set noise config",
		`INSERT INTO noise_config (id, public_key, recorded_at) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key, recorded_at = excluded.recorded_at`,
		public[:], toMicros(now))
	return err
}

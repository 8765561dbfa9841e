package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/commucat/commucat/internal/store"
)

// Tables noise_keys, noise_config, admin_tokens (§10.4), pairing_codes
// (§8.4.2, §8.4.3) and user_blobs (§8.4.6).

func (q *queries) ListNoiseKeys(ctx context.Context) ([]store.NoiseKey, error) {
	rows, err := q.db.Query(ctx,
		`SELECT version, private_key, public_key, kem_seed, valid_after, rotates_at, expires_at, created_at
		FROM noise_keys ORDER BY version DESC`)
	if err != nil {
		return nil, wrap("list noise keys", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.NoiseKey, error) {
		var (
			k               store.NoiseKey
			priv, pub, seed []byte
		)
		if err := r.Scan(&k.Version, &priv, &pub, &seed, &k.ValidAfter, &k.RotatesAt, &k.ExpiresAt, &k.CreatedAt); err != nil {
			return k, err
		}
		if err := fixed(k.Private[:], priv, "noise_keys.private_key"); err != nil {
			return k, err
		}
		if err := fixed(k.Public[:], pub, "noise_keys.public_key"); err != nil {
			return k, err
		}
		if err := fixed(k.KEMSeed[:], seed, "noise_keys.kem_seed"); err != nil {
			return k, err
		}
		k.ValidAfter, k.RotatesAt, k.ExpiresAt, k.CreatedAt = utc(k.ValidAfter), utc(k.RotatesAt), utc(k.ExpiresAt), utc(k.CreatedAt)
		return k, nil
	})
	if err != nil {
		return nil, wrap("list noise keys", err)
	}
	return out, nil
}

func (q *queries) InsertNoiseKey(ctx context.Context, k store.NoiseKey) error {
	return insertOne(ctx, q.db, "insert noise key",
		`INSERT INTO noise_keys (version, private_key, public_key, kem_seed, valid_after, rotates_at, expires_at, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
		k.Version, k.Private[:], k.Public[:], k.KEMSeed[:], k.ValidAfter, k.RotatesAt, k.ExpiresAt, k.CreatedAt)
}

// DeleteNoiseKey is idempotent: deleting a missing version is not an error
// (nodes prune the table concurrently, §10.4).
func (q *queries) DeleteNoiseKey(ctx context.Context, version int) error {
	_, err := exec(ctx, q.db, "delete noise key", `DELETE FROM noise_keys WHERE version = $1`, version)
	return err
}

func (q *queries) NoiseConfig(ctx context.Context) ([32]byte, error) {
	var (
		out [32]byte
		pub []byte
	)
	if err := q.db.QueryRow(ctx, `SELECT public_key FROM noise_config WHERE id = 1`).Scan(&pub); err != nil {
		return out, wrap("noise config", err)
	}
	err := fixed(out[:], pub, "noise_config.public_key")
	return out, err
}

func (q *queries) SetNoiseConfig(ctx context.Context, public [32]byte, now time.Time) error {
	_, err := exec(ctx, q.db, "set noise config",
		`INSERT INTO noise_config (id, public_key, recorded_at) VALUES (1, $1, $2)
		ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key, recorded_at = excluded.recorded_at`,
		public[:], now)
	return err
}

func (q *queries) ListAdminTokens(ctx context.Context) ([]store.AdminToken, error) {
	rows, err := q.db.Query(ctx,
		`SELECT version, token_hash, salt, valid_after, rotates_at, expires_at, created_at
		FROM admin_tokens ORDER BY version DESC`)
	if err != nil {
		return nil, wrap("list admin tokens", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.AdminToken, error) {
		var (
			t          store.AdminToken
			hash, salt []byte
		)
		if err := r.Scan(&t.Version, &hash, &salt, &t.ValidAfter, &t.RotatesAt, &t.ExpiresAt, &t.CreatedAt); err != nil {
			return t, err
		}
		if err := fixed(t.TokenHash[:], hash, "admin_tokens.token_hash"); err != nil {
			return t, err
		}
		if err := fixed(t.Salt[:], salt, "admin_tokens.salt"); err != nil {
			return t, err
		}
		t.ValidAfter, t.RotatesAt, t.ExpiresAt, t.CreatedAt = utc(t.ValidAfter), utc(t.RotatesAt), utc(t.ExpiresAt), utc(t.CreatedAt)
		return t, nil
	})
	if err != nil {
		return nil, wrap("list admin tokens", err)
	}
	return out, nil
}

func (q *queries) InsertAdminToken(ctx context.Context, t store.AdminToken) error {
	return insertOne(ctx, q.db, "insert admin token",
		`INSERT INTO admin_tokens (version, token_hash, salt, valid_after, rotates_at, expires_at, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
		t.Version, t.TokenHash[:], t.Salt[:], t.ValidAfter, t.RotatesAt, t.ExpiresAt, t.CreatedAt)
}

// DeleteAdminToken is idempotent: deleting a missing version is not an
// error (nodes prune the table concurrently, §10.4).
func (q *queries) DeleteAdminToken(ctx context.Context, version int) error {
	_, err := exec(ctx, q.db, "delete admin token", `DELETE FROM admin_tokens WHERE version = $1`, version)
	return err
}

const pairingColumns = `pair_code, user_id, issuer_device_id, issued_at, expires_at, redeemed_at, redeemed_device_id, public_key, attempts`

// CreatePairingCode stores every field of p (a code is normally created
// unredeemed with zero attempts).
func (q *queries) CreatePairingCode(ctx context.Context, p store.PairingCode) error {
	var key []byte
	if p.PublicKey != nil {
		key = p.PublicKey[:]
	}
	return insertOne(ctx, q.db, "create pairing code",
		`INSERT INTO pairing_codes (`+pairingColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT DO NOTHING`,
		p.Code, p.UserID, p.IssuerDeviceID, p.IssuedAt, p.ExpiresAt, p.RedeemedAt, p.RedeemedDeviceID, key, p.Attempts)
}

func (q *queries) GetPairingCode(ctx context.Context, code string) (store.PairingCode, error) {
	var (
		p   store.PairingCode
		key []byte
	)
	err := q.db.QueryRow(ctx, `SELECT `+pairingColumns+` FROM pairing_codes WHERE pair_code = $1`, code).
		Scan(&p.Code, &p.UserID, &p.IssuerDeviceID, &p.IssuedAt, &p.ExpiresAt, &p.RedeemedAt, &p.RedeemedDeviceID, &key, &p.Attempts)
	if err != nil {
		return store.PairingCode{}, wrap("get pairing code", err)
	}
	p.IssuedAt, p.ExpiresAt, p.RedeemedAt = utc(p.IssuedAt), utc(p.ExpiresAt), utcPtr(p.RedeemedAt)
	if key != nil {
		var k [32]byte
		if err := fixed(k[:], key, "pairing_codes.public_key"); err != nil {
			return store.PairingCode{}, err
		}
		p.PublicKey = &k
	}
	return p, nil
}

// IncrementPairingAttempts returns ErrNotFound for an unknown code.
func (q *queries) IncrementPairingAttempts(ctx context.Context, code string) (int, error) {
	var n int
	err := q.db.QueryRow(ctx,
		`UPDATE pairing_codes SET attempts = attempts + 1 WHERE pair_code = $1 RETURNING attempts`, code).Scan(&n)
	if err != nil {
		return 0, wrap("increment pairing attempts", err)
	}
	return n, nil
}

// RedeemPairingCode returns ErrNotFound for an unknown code. Of concurrent
// redeems one wins, the others get ErrConflict. The device must exist
// (foreign key): create it first in the same transaction.
func (q *queries) RedeemPairingCode(ctx context.Context, code, deviceID string, key [32]byte, at time.Time) error {
	const op = "redeem pairing code"
	return q.atomic(ctx, func(db querier) error {
		n, err := exec(ctx, db, op,
			`UPDATE pairing_codes SET redeemed_at = $1, redeemed_device_id = $2, public_key = $3, attempts = attempts + 1
			WHERE pair_code = $4 AND redeemed_at IS NULL`,
			at, deviceID, key[:], code)
		if err != nil || n == 1 {
			return err
		}
		var one int
		if err := db.QueryRow(ctx, `SELECT 1 FROM pairing_codes WHERE pair_code = $1`, code).Scan(&one); err != nil {
			return wrap(op, err)
		}
		return errorf(op, "already redeemed: %w", store.ErrConflict)
	})
}

func (q *queries) DeletePairingCodesExpiredBefore(ctx context.Context, cutoff time.Time) (int64, error) {
	return exec(ctx, q.db, "delete expired pairing codes", `DELETE FROM pairing_codes WHERE expires_at < $1`, cutoff)
}

func (q *queries) GetUserBlob(ctx context.Context, userID, key string) (string, error) {
	var payload string
	err := q.db.QueryRow(ctx, `SELECT payload FROM user_blobs WHERE user_id = $1 AND key = $2`, userID, key).Scan(&payload)
	if err != nil {
		return "", wrap("get user blob", err)
	}
	return payload, nil
}

// PutUserBlob inserts or replaces the blob; an unknown user is refused
// (foreign key).
func (q *queries) PutUserBlob(ctx context.Context, userID, key, payload string, now time.Time) error {
	_, err := exec(ctx, q.db, "put user blob",
		`INSERT INTO user_blobs (user_id, key, payload, updated_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, key) DO UPDATE SET payload = excluded.payload, updated_at = excluded.updated_at`,
		userID, key, payload, now)
	return err
}

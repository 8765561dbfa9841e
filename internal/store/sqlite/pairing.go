package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// Table pairing_codes (§8.4.2, §8.4.3).

const pairingColumns = `pair_code, user_id, issuer_device_id, issued_at, expires_at, redeemed_at, redeemed_device_id, public_key, attempts`

// CreatePairingCode stores every field of p (a code is normally created
// unredeemed with zero attempts).
func (q *queries) CreatePairingCode(ctx context.Context, p store.PairingCode) error {
	var key []byte
	if p.PublicKey != nil {
		key = p.PublicKey[:]
	}
	_, err := q.exec(ctx, q.w, "create pairing code",
		`INSERT INTO pairing_codes (`+pairingColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.Code, p.UserID, p.IssuerDeviceID, toMicros(p.IssuedAt), toMicros(p.ExpiresAt),
		toNullMicros(p.RedeemedAt), toNullString(p.RedeemedDeviceID), key, p.Attempts)
	return err
}

func (q *queries) GetPairingCode(ctx context.Context, code string) (store.PairingCode, error) {
	var (
		p               store.PairingCode
		issued, expires int64
		redeemed        sql.NullInt64
		redeemedDevice  sql.NullString
		key             []byte
	)
	err := q.r.QueryRowContext(ctx,
		`SELECT `+pairingColumns+` FROM pairing_codes WHERE pair_code = ?`, code).
		Scan(&p.Code, &p.UserID, &p.IssuerDeviceID, &issued, &expires, &redeemed, &redeemedDevice, &key, &p.Attempts)
	if err != nil {
		return store.PairingCode{}, wrap("get pairing code", err)
	}
	p.IssuedAt = fromMicros(issued)
	p.ExpiresAt = fromMicros(expires)
	p.RedeemedAt = fromNullMicros(redeemed)
	p.RedeemedDeviceID = fromNullString(redeemedDevice)
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
	err := q.w.QueryRowContext(ctx,
		`UPDATE pairing_codes SET attempts = attempts + 1 WHERE pair_code = ? RETURNING attempts`, code).Scan(&n)
	if err != nil {
		return 0, wrap("increment pairing attempts", err)
	}
	return n, nil
}

// RedeemPairingCode returns ErrNotFound for an unknown code. The device
// must exist (foreign key): create it first in the same transaction.
func (q *queries) RedeemPairingCode(ctx context.Context, code, deviceID string, key [32]byte, at time.Time) error {
	return q.atomic(ctx, func(ex execer) error {
		n, err := q.exec(ctx, ex, "redeem pairing code",
			`UPDATE pairing_codes SET redeemed_at = ?, redeemed_device_id = ?, public_key = ?, attempts = attempts + 1
			WHERE pair_code = ? AND redeemed_at IS NULL`,
			toMicros(at), deviceID, key[:], code)
		if err != nil || n == 1 {
			return err
		}
		var one int
		if err := ex.QueryRowContext(ctx, `SELECT 1 FROM pairing_codes WHERE pair_code = ?`, code).Scan(&one); err != nil {
			return wrap("redeem pairing code", err)
		}
		return fmt.Errorf("sqlite: redeem pairing code: already redeemed: %w", store.ErrConflict)
	})
}

func (q *queries) DeletePairingCodesExpiredBefore(ctx context.Context, cutoff time.Time) (int64, error) {
	return q.exec(ctx, q.w, "delete expired pairing codes",
		`DELETE FROM pairing_codes WHERE expires_at < ?`, toMicros(cutoff))
}

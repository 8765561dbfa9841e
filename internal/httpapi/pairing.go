package httpapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"filippo.io/edwards25519"
	"lukechampine.com/blake3"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/store"
)

// Pairing constants (§8.4.2, §8.4.3).
const (
	// PairAlphabet is the 31-symbol alphabet of pairing codes.
	PairAlphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
	// MinPairingTTL and MaxPairingTTL clamp the effective TTL.
	MinPairingTTL = 60 * time.Second
	MaxPairingTTL = 3600 * time.Second
	// MaxPairAttempts: a code with this many attempts is dead.
	MaxPairAttempts = 5
	// pairCodeTries bounds the uniqueness retries.
	pairCodeTries = 16
	// maxDeviceName is the limit of device_name in characters.
	maxDeviceName = 64
)

// 400 details of §8.4.2 and §8.4.3.
const (
	detailTTLPositive       = "ttl must be positive"
	detailPairCodeRequired  = "pair_code is required"
	detailDeviceNameTooLong = "device_name too long"
	detailPairInvalid       = "pairing code invalid or expired"
	detailSignatureRequired = "signature is required"
	detailInvalidDevicePub  = "invalid device_public"
	detailInvalidSignature  = "invalid signature"
	detailDevicePubRequired = "device_public is required"
)

// pairResponse is the answer of POST /api/pair.
type pairResponse struct {
	DeviceCAPublic string `json:"device_ca_public"`
	DeviceSeed     string `json:"device_seed"`
	ExpiresAt      string `json:"expires_at"`
	IssuedAt       string `json:"issued_at"`
	IssuerDeviceID string `json:"issuer_device_id"`
	PairCode       string `json:"pair_code"`
	TTL            int64  `json:"ttl"`
}

// pair is POST /api/pair (§8.4.2).
func (a *API) pair(c *call) (any, error) {
	ttl := a.d.PairingTTL
	if v, ok := member(c.body, "ttl"); ok {
		n, res := intValue(v)
		if res == notInteger {
			return nil, badRequest(detailInvalidJSON)
		}
		if n <= 0 {
			return nil, badRequest(detailTTLPositive)
		}
		if n < int64(ttl/time.Second) {
			ttl = time.Duration(n) * time.Second
		}
	}
	ttl = min(max(ttl, MinPairingTTL), MaxPairingTTL)
	ttl = ttl.Truncate(time.Second)

	issued := micro(c.now)
	p := store.PairingCode{
		UserID:         c.auth.user.ID,
		IssuerDeviceID: c.auth.device.ID,
		IssuedAt:       issued,
		ExpiresAt:      issued.Add(ttl),
	}
	created := false
	for range pairCodeTries {
		code, err := newPairCode(a.d.Rand)
		if err != nil {
			return nil, err
		}
		p.Code = code
		err = a.d.Store.CreatePairingCode(c.ctx, p)
		if err == nil {
			created = true
			break
		}
		if !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
	}
	if !created {
		return nil, errors.New("no unique pairing code after 16 attempts")
	}
	seed, err := a.randomHex(32)
	if err != nil {
		return nil, err
	}
	return pairResponse{
		DeviceCAPublic: a.caPubHex,
		DeviceSeed:     seed,
		ExpiresAt:      canonjson.FormatTime(p.ExpiresAt),
		IssuedAt:       canonjson.FormatTime(p.IssuedAt),
		IssuerDeviceID: p.IssuerDeviceID,
		PairCode:       p.Code,
		TTL:            int64(ttl / time.Second),
	}, nil
}

// newPairCode draws 8 symbols uniformly from PairAlphabet by rejection
// sampling (a byte is used when it is below 248 = 8 × 31) and writes them
// XXXX-XXXX.
func newPairCode(r io.Reader) (string, error) {
	const limit = 256 - 256%len(PairAlphabet) // 248
	var out [9]byte
	out[4] = '-'
	n := 0
	var buf [16]byte
	for n < 8 {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return "", err
		}
		for _, b := range buf {
			if int(b) >= limit {
				continue
			}
			pos := n
			if n >= 4 {
				pos++
			}
			out[pos] = PairAlphabet[int(b)%len(PairAlphabet)]
			n++
			if n == 8 {
				break
			}
		}
	}
	return string(out[:]), nil
}

// NormalizePairCode trims and upper-cases a pairing code (§8.4.3).
func NormalizePairCode(s string) string { return strings.ToUpper(strings.TrimSpace(s)) }

// claimResponse is the answer of POST /api/pair/claim.
type claimResponse struct {
	DeviceCAPublic    string                 `json:"device_ca_public"`
	DeviceCertificate identity.Certificate   `json:"device_certificate"`
	DeviceID          string                 `json:"device_id"`
	DeviceName        *string                `json:"device_name,omitempty"`
	IssuerDeviceID    string                 `json:"issuer_device_id"`
	PrivateKey        string                 `json:"private_key,omitempty"`
	PublicKey         string                 `json:"public_key"`
	Seed              string                 `json:"seed,omitempty"`
	User              noiseconn.UserSnapshot `json:"user"`
	UserID            string                 `json:"user_id"`
}

// errCodeGone aborts the claim transaction when the code became invalid.
var errCodeGone = errors.New("pairing code invalid or expired")

// pairClaim is POST /api/pair/claim (§8.4.3).
func (a *API) pairClaim(c *call) (any, error) {
	codeIn, err := optString(c.body, "pair_code")
	if err != nil {
		return nil, err
	}
	if codeIn == nil || strings.TrimSpace(*codeIn) == "" {
		return nil, badRequest(detailPairCodeRequired)
	}
	code := NormalizePairCode(*codeIn)
	name, err := optString(c.body, "device_name")
	if err != nil {
		return nil, err
	}
	if name != nil && utf8.RuneCountInString(*name) > maxDeviceName {
		return nil, badRequest(detailDeviceNameTooLong)
	}

	pc, err := a.d.Store.GetPairingCode(c.ctx, code)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, errNotFound
		}
		return nil, err
	}
	if !pairCodeUsable(pc, c.now) {
		return nil, a.failAttempt(c.ctx, code, detailPairInvalid)
	}

	var (
		pub        [32]byte
		seedHex    string
		privateHex string
	)
	if pv, ok := member(c.body, "device_public"); ok {
		sv, ok := member(c.body, "signature")
		if !ok {
			return nil, badRequest(detailSignatureRequired)
		}
		if pub, ok = parseDevicePublic(pv); !ok {
			return nil, badRequest(detailInvalidDevicePub)
		}
		var sig [64]byte
		if sv.Kind == canonjson.String {
			sig, err = identity.DecodeHex64(sv.Str)
		}
		if sv.Kind != canonjson.String || err != nil ||
			!ed25519.Verify(ed25519.PublicKey(pub[:]), identity.PairClaimMessage(code, pub), sig[:]) {
			return nil, a.failAttempt(c.ctx, code, detailInvalidSignature)
		}
	} else {
		if !a.d.AllowServerKeys {
			return nil, badRequest(detailDevicePubRequired)
		}
		var seed [32]byte
		if _, err := io.ReadFull(a.d.Rand, seed[:]); err != nil {
			return nil, err
		}
		priv, err := identity.FromSeed(seed[:])
		if err != nil {
			return nil, err
		}
		pub = identity.PublicKey32(priv)
		secret := blake3.Sum256(seed[:]) // = priv.Seed()
		seedHex = hex.EncodeToString(seed[:])
		privateHex = hex.EncodeToString(secret[:])
	}

	deviceID, err := a.randomHex(32)
	if err != nil {
		return nil, err
	}
	eventID, err := a.randomHex(32)
	if err != nil {
		return nil, err
	}
	var serialBytes [8]byte
	if _, err := io.ReadFull(a.d.Rand, serialBytes[:]); err != nil {
		return nil, err
	}
	now := micro(c.now)
	var (
		user store.User
		cert identity.Certificate
	)
	err = a.d.Store.Tx(c.ctx, func(q store.Queries) error {
		// Re-check inside the transaction: a concurrent claim may have
		// redeemed the code or used up its attempts.
		cur, err := q.GetPairingCode(c.ctx, code)
		if err != nil {
			return err
		}
		if !pairCodeUsable(cur, c.now) {
			return errCodeGone
		}
		if user, err = q.GetUser(c.ctx, cur.UserID); err != nil {
			return err
		}
		if err := q.CreateDevice(c.ctx, store.Device{
			ID: deviceID, UserID: cur.UserID, PublicKey: pub, Status: store.DeviceActive,
			Name: name, CreatedAt: now, UpdatedAt: now,
		}); err != nil {
			return err
		}
		if err := q.RedeemPairingCode(c.ctx, code, deviceID, pub, now); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return errCodeGone
			}
			return err
		}
		if err := q.AddKeyEvent(c.ctx, store.KeyEvent{
			ID: eventID, DeviceID: deviceID, PublicKey: pub, Action: store.KeyPair, RecordedAt: now,
		}); err != nil {
			return err
		}
		cert = identity.IssueCertificate(a.d.CA, binary.LittleEndian.Uint64(serialBytes[:]), cur.UserID, deviceID, pub, c.now.Unix())
		return nil
	})
	if errors.Is(err, errCodeGone) {
		return nil, a.failAttempt(c.ctx, code, detailPairInvalid)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNotFound // the code (or its user) vanished meanwhile
	}
	if err != nil {
		return nil, err
	}

	a.ledgerRecord(c.ctx, pub, map[string]any{
		"action":                 store.KeyPair,
		"certificate_expires_at": cert.ExpiresAt,
		"certificate_issued_at":  cert.IssuedAt,
		"certificate_serial":     cert.Serial,
		"device":                 deviceID,
		"source":                 "pair-claim",
		"user":                   user.ID,
	})
	a.log.Info("device paired", "user", user.ID, "device", deviceID, "server_key", seedHex != "")

	return claimResponse{
		DeviceCAPublic:    a.caPubHex,
		DeviceCertificate: cert,
		DeviceID:          deviceID,
		DeviceName:        name,
		IssuerDeviceID:    pc.IssuerDeviceID,
		PrivateKey:        privateHex,
		PublicKey:         hex.EncodeToString(pub[:]),
		Seed:              seedHex,
		User:              snapshot(user),
		UserID:            user.ID,
	}, nil
}

// pairCodeUsable: not expired, not redeemed, fewer than 5 attempts.
func pairCodeUsable(p store.PairingCode, now time.Time) bool {
	return now.Before(p.ExpiresAt) && p.RedeemedAt == nil && p.Attempts < MaxPairAttempts
}

// failAttempt counts a failed attempt and returns the 400 with detail.
func (a *API) failAttempt(ctx context.Context, code, detail string) error {
	if _, err := a.d.Store.IncrementPairingAttempts(ctx, code); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return badRequest(detail)
}

// parseDevicePublic decodes an Ed25519 device key: hex32 that decodes as
// an edwards25519 point outside the small-order subgroup.
func parseDevicePublic(v canonjson.Value) ([32]byte, bool) {
	if v.Kind != canonjson.String {
		return [32]byte{}, false
	}
	pub, err := identity.DecodeHex32(v.Str)
	if err != nil {
		return pub, false
	}
	p, err := new(edwards25519.Point).SetBytes(pub[:])
	if err != nil || identity.SmallOrder(p) || !bytes.Equal(p.Bytes(), pub[:]) {
		return pub, false // not a point, small order, or a non-canonical encoding
	}
	return pub, true
}

// snapshot is the user snapshot of §8.1.
func snapshot(u store.User) noiseconn.UserSnapshot {
	return noiseconn.UserSnapshot{AvatarURL: u.AvatarURL, DisplayName: u.DisplayName, Handle: u.Handle, ID: u.ID, UserID: u.ID}
}

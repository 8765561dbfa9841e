package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/commucat/commucat/internal/canonjson"
)

// CertificateLifetime is the validity of certificates the server issues:
// expires_at = issued_at + 30 days (§4.8), in seconds.
const CertificateLifetime = 2592000

// MaxIssuedAtSkew is how far in the future (seconds) a certificate's
// issued_at may lie and still verify (§4.8).
const MaxIssuedAtSkew = 300

// MaxCertificateSize bounds the input of ParseCertificate.
const MaxCertificateSize = 64 << 10

// ErrCertificate is wrapped by every error of Certificate.Verify; the message
// names the rule of §4.8 that failed.
var ErrCertificate = errors.New("identity: certificate invalid")

// ErrMalformedCertificate is wrapped by every error of ParseCertificate (a
// missing member, a wrong type, bad hex or a wrong length).
var ErrMalformedCertificate = errors.New("identity: malformed certificate")

// Certificate is a device certificate (§4.8).
type Certificate struct {
	Serial    uint64
	UserID    string
	DeviceID  string
	PublicKey [32]byte // Ed25519 device key
	Issuer    [32]byte // device CA public key
	IssuedAt  int64    // Unix seconds
	ExpiresAt int64    // Unix seconds
	Signature [64]byte // Ed25519 by the device CA over SignedBytes
}

// SignedBytes returns the bytes the device CA signs (§4.8): the compact JSON
// object of exactly the seven data members in the fixed order serial,
// user_id, device_id, public_key, issuer, issued_at, expires_at.
func (c *Certificate) SignedBytes() []byte {
	b := make([]byte, 0, 256+len(c.UserID)+len(c.DeviceID))
	b = append(b, `{"serial":`...)
	b = strconv.AppendUint(b, c.Serial, 10)
	b = append(b, `,"user_id":`...)
	b = canonjson.AppendString(b, c.UserID)
	b = append(b, `,"device_id":`...)
	b = canonjson.AppendString(b, c.DeviceID)
	b = append(b, `,"public_key":"`...)
	b = appendHex(b, c.PublicKey[:])
	b = append(b, `","issuer":"`...)
	b = appendHex(b, c.Issuer[:])
	b = append(b, `","issued_at":`...)
	b = strconv.AppendInt(b, c.IssuedAt, 10)
	b = append(b, `,"expires_at":`...)
	b = strconv.AppendInt(b, c.ExpiresAt, 10)
	return append(b, '}')
}

// IssueCertificate issues a certificate signed by the device CA ca for the
// device key devicePublic: issuer is the CA public key and expires_at is
// issuedAt + CertificateLifetime. serial should be a uniformly random u64.
func IssueCertificate(ca ed25519.PrivateKey, serial uint64, userID, deviceID string, devicePublic [32]byte, issuedAt int64) Certificate {
	c := Certificate{
		Serial:    serial,
		UserID:    userID,
		DeviceID:  deviceID,
		PublicKey: devicePublic,
		Issuer:    PublicKey32(ca),
		IssuedAt:  issuedAt,
		ExpiresAt: issuedAt + CertificateLifetime,
	}
	copy(c.Signature[:], ed25519.Sign(ca, c.SignedBytes()))
	return c
}

// Verify applies every verification rule of §4.8 with the server's device
// CA key caPublic, the expected device and owner, and the current Unix time
// now. The error wraps ErrCertificate and names the failed rule.
func (c *Certificate) Verify(caPublic [32]byte, deviceID, userID string, now int64) error {
	if err := c.VerifySignature(caPublic); err != nil {
		return err
	}
	return c.CheckClaims(deviceID, userID, now)
}

// VerifySignature applies the first rules of Verify: the issuer is the
// device CA and the signature verifies.
func (c *Certificate) VerifySignature(caPublic [32]byte) error {
	switch {
	case c.Issuer != caPublic:
		return certErr("issuer is not the device CA")
	case !ed25519.Verify(caPublic[:], c.SignedBytes(), c.Signature[:]):
		return certErr("signature does not verify")
	}
	return nil
}

// CheckClaims applies the rules of Verify that follow the signature: the
// device, the owner and the validity period. Alone it proves nothing; it is
// for a certificate whose VerifySignature already succeeded.
func (c *Certificate) CheckClaims(deviceID, userID string, now int64) error {
	switch {
	case c.DeviceID != deviceID:
		return certErr("device_id does not match")
	case c.UserID != userID:
		return certErr("user_id does not match")
	case c.IssuedAt >= c.ExpiresAt:
		return certErr("issued_at is not before expires_at")
	case c.ExpiresAt <= now:
		return certErr("expired")
	case c.IssuedAt > now && uint64(c.IssuedAt)-uint64(now) > MaxIssuedAtSkew:
		// Unsigned subtraction gives the exact difference without overflow.
		return certErr("issued_at is in the future")
	}
	return nil
}

func certErr(reason string) error {
	return fmt.Errorf("%w: %s", ErrCertificate, reason)
}

// MarshalJSON returns the certificate as canonical JSON (§1.2): members
// sorted by key, hex lowercase, numbers as plain decimal integers.
func (c Certificate) MarshalJSON() ([]byte, error) {
	return c.AppendCanonical(nil), nil
}

// AppendCanonical appends the canonical JSON of c (see MarshalJSON) to dst.
func (c *Certificate) AppendCanonical(dst []byte) []byte {
	dst = append(dst, `{"device_id":`...)
	dst = canonjson.AppendString(dst, c.DeviceID)
	dst = append(dst, `,"expires_at":`...)
	dst = strconv.AppendInt(dst, c.ExpiresAt, 10)
	dst = append(dst, `,"issued_at":`...)
	dst = strconv.AppendInt(dst, c.IssuedAt, 10)
	dst = append(dst, `,"issuer":"`...)
	dst = appendHex(dst, c.Issuer[:])
	dst = append(dst, `","public_key":"`...)
	dst = appendHex(dst, c.PublicKey[:])
	dst = append(dst, `","serial":`...)
	dst = strconv.AppendUint(dst, c.Serial, 10)
	dst = append(dst, `,"signature":"`...)
	dst = appendHex(dst, c.Signature[:])
	dst = append(dst, `","user_id":`...)
	dst = canonjson.AppendString(dst, c.UserID)
	return append(dst, '}')
}

// UnmarshalJSON implements json.Unmarshaler with ParseCertificate. Following
// the encoding/json convention, the literal null is a no-op (null means
// "absent", §1.2); callers that need the certificate to be present must
// check for that themselves or call ParseCertificate.
func (c *Certificate) UnmarshalJSON(data []byte) error {
	if string(bytes.TrimSpace(data)) == "null" {
		return nil
	}
	parsed, err := ParseCertificate(data)
	if err != nil {
		return err
	}
	*c = parsed
	return nil
}

const (
	memberSerial = 1 << iota
	memberUserID
	memberDeviceID
	memberPublicKey
	memberIssuer
	memberIssuedAt
	memberExpiresAt
	memberSignature
	memberAll = 1<<iota - 1
)

// ParseCertificate parses a certificate JSON object (§4.8). All eight
// members are required with their exact types: serial an integer literal in
// 0..2^64-1 (parsed exactly, never through a float), issued_at and expires_at
// integer literals in the i64 range, user_id and device_id strings,
// public_key and issuer hex32, signature hex64 (hex in either case). null for
// any of them, a duplicate of any of them, trailing data or an input above
// MaxCertificateSize is an error; unknown members are ignored. Errors wrap
// ErrMalformedCertificate. The signature is not checked (see Verify).
func ParseCertificate(data []byte) (Certificate, error) {
	var c Certificate
	if len(data) > MaxCertificateSize {
		return c, malformed("too large")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return c, malformed("invalid JSON")
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return c, malformed("not a JSON object")
	}
	seen := 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Certificate{}, malformed("invalid JSON")
		}
		key, ok := tok.(string)
		if !ok { // unreachable: the decoder only yields string keys
			return Certificate{}, malformed("invalid JSON")
		}
		bit := memberBit(key)
		if bit == 0 {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return Certificate{}, malformed("invalid JSON")
			}
			continue
		}
		if seen&bit != 0 {
			return Certificate{}, malformed("duplicate member " + strconv.Quote(key))
		}
		seen |= bit
		val, err := dec.Token()
		if err != nil {
			return Certificate{}, malformed("invalid JSON")
		}
		if err := c.setMember(bit, key, val); err != nil {
			return Certificate{}, err
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return Certificate{}, malformed("invalid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return Certificate{}, malformed("trailing data after the object")
	}
	if seen != memberAll {
		for _, name := range memberNames {
			if seen&memberBit(name) == 0 {
				return Certificate{}, malformed("missing member " + strconv.Quote(name))
			}
		}
	}
	return c, nil
}

var memberNames = [...]string{"serial", "user_id", "device_id", "public_key", "issuer", "issued_at", "expires_at", "signature"}

func memberBit(key string) int {
	switch key {
	case "serial":
		return memberSerial
	case "user_id":
		return memberUserID
	case "device_id":
		return memberDeviceID
	case "public_key":
		return memberPublicKey
	case "issuer":
		return memberIssuer
	case "issued_at":
		return memberIssuedAt
	case "expires_at":
		return memberExpiresAt
	case "signature":
		return memberSignature
	}
	return 0
}

// setMember stores the scalar token val (a json.Delim when the value is an
// object or array) into the member identified by bit.
func (c *Certificate) setMember(bit int, key string, val json.Token) error {
	var err error
	switch bit {
	case memberSerial:
		n, ok := val.(json.Number)
		if !ok {
			return malformed(key + " must be an integer")
		}
		if c.Serial, err = strconv.ParseUint(string(n), 10, 64); err != nil {
			return malformed(key + " must be an integer in 0..18446744073709551615")
		}
	case memberIssuedAt, memberExpiresAt:
		n, ok := val.(json.Number)
		if !ok {
			return malformed(key + " must be an integer")
		}
		v, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			return malformed(key + " must be a 64-bit signed integer")
		}
		if bit == memberIssuedAt {
			c.IssuedAt = v
		} else {
			c.ExpiresAt = v
		}
	case memberUserID, memberDeviceID:
		s, ok := val.(string)
		if !ok {
			return malformed(key + " must be a string")
		}
		if bit == memberUserID {
			c.UserID = s
		} else {
			c.DeviceID = s
		}
	case memberPublicKey, memberIssuer:
		s, ok := val.(string)
		if !ok {
			return malformed(key + " must be a hex32 string")
		}
		v, err := DecodeHex32(s)
		if err != nil {
			return malformed(key + " must be hex32")
		}
		if bit == memberPublicKey {
			c.PublicKey = v
		} else {
			c.Issuer = v
		}
	case memberSignature:
		s, ok := val.(string)
		if !ok {
			return malformed(key + " must be a hex64 string")
		}
		if c.Signature, err = DecodeHex64(s); err != nil {
			return malformed(key + " must be hex64")
		}
	}
	return nil
}

func malformed(reason string) error {
	return fmt.Errorf("%w: %s", ErrMalformedCertificate, reason)
}

package noiseconn

import (
	"encoding/hex"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
)

// Noise patterns (§4.2).
const (
	PatternXK = "XK"
	PatternIK = "IK"
)

// Limits of the HELLO (§4.3).
const (
	MaxDeviceIDLen    = 128
	MaxCapabilities   = 64
	MaxHandleChars    = 64
	pqPublicHexLen    = 2368
	pqCiphertextBytes = 1088
	pqKEMName         = "ML-KEM-768"
)

// UserHint holds the optional `user` member of a HELLO (§4.3). A nil field
// was absent or null.
type UserHint struct {
	ID          *string // `id` or `user_id` (they must agree when both are given)
	Handle      *string
	DisplayName *string
	AvatarURL   *string
}

// Hello is a validated HELLO payload (§4.3).
type Hello struct {
	Pattern        string
	DeviceID       string
	Msg1           []byte
	ClientStatic   [32]byte
	DevicePublic   [32]byte
	Proof          identity.Proof
	Capabilities   []string
	User           UserHint
	Certificate    *identity.Certificate
	DeviceCAPublic string // as sent; the server ignores it

	// Canonical JSON of the HELLO's supported_versions and capabilities
	// arrays (nil when absent), for the echo check of §4.6.
	echoVersions []byte
	echoCaps     []byte
}

// ValidDeviceID reports whether id is 1-128 bytes of printable ASCII
// (0x21-0x7e) without '@' (§4.3).
func ValidDeviceID(id string) bool {
	if len(id) == 0 || len(id) > MaxDeviceIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c < 0x21 || c > 0x7e || c == '@' {
			return false
		}
	}
	return true
}

// ValidHandle reports whether h satisfies the users.handle rule of §9.2:
// 1-64 characters, no control characters.
func ValidHandle(h string) bool {
	if !utf8.ValidString(h) {
		return false
	}
	n := utf8.RuneCountInString(h)
	if n < 1 || n > MaxHandleChars {
		return false
	}
	for _, r := range h {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// decodeHexN decodes hex of exactly n bytes, in either case.
func decodeHexN(s string, n int) ([]byte, error) {
	if len(s) != 2*n {
		return nil, fmt.Errorf("want %d hex characters, got %d", 2*n, len(s))
	}
	return hex.DecodeString(s)
}

func decodeHex32(s string) ([32]byte, error) {
	var out [32]byte
	b, err := decodeHexN(s, 32)
	if err != nil {
		return out, err
	}
	copy(out[:], b)
	return out, nil
}

// member returns a present, non-null member of an object.
func member(obj canonjson.Value, key string) (canonjson.Value, bool) {
	v, ok := obj.Get(key)
	if !ok || v.Kind == canonjson.Null {
		return canonjson.Value{}, false
	}
	return v, true
}

func stringMember(obj canonjson.Value, key string, required bool) (string, bool, error) {
	v, ok := member(obj, key)
	if !ok {
		if required {
			return "", false, fmt.Errorf("%s is required", key)
		}
		return "", false, nil
	}
	if v.Kind != canonjson.String {
		return "", false, fmt.Errorf("%s must be a string", key)
	}
	return v.Str, true, nil
}

func hex32Member(obj canonjson.Value, key string) ([32]byte, error) {
	s, _, err := stringMember(obj, key, true)
	if err != nil {
		return [32]byte{}, err
	}
	b, err := decodeHex32(s)
	if err != nil {
		return b, fmt.Errorf("%s: %v", key, err)
	}
	return b, nil
}

// parseHelloObject parses a HELLO payload into a JSON object; anything else
// is Invalid Handshake (the "JSON shape" check of §4.5).
func parseHelloObject(payload []byte) (canonjson.Value, *HandshakeError) {
	v, err := canonjson.Parse(payload)
	if err != nil {
		return v, invalidHandshake("HELLO payload: " + err.Error())
	}
	if v.Kind != canonjson.Object {
		return v, invalidHandshake("HELLO payload is not a JSON object")
	}
	return v, nil
}

// validateHello checks the members of §4.3 (after version negotiation).
func validateHello(obj canonjson.Value) (*Hello, *HandshakeError) {
	h, err := validateHelloMembers(obj)
	if err != nil {
		return nil, invalidHandshake("HELLO: " + err.Error())
	}
	return h, nil
}

func validateHelloMembers(obj canonjson.Value) (*Hello, error) {
	h := &Hello{}
	var err error
	if h.Pattern, _, err = stringMember(obj, "pattern", true); err != nil {
		return nil, err
	}
	if h.Pattern != PatternXK && h.Pattern != PatternIK {
		return nil, errors.New("pattern must be XK or IK")
	}
	if h.DeviceID, _, err = stringMember(obj, "device_id", true); err != nil {
		return nil, err
	}
	if !ValidDeviceID(h.DeviceID) {
		return nil, errors.New("device_id must be 1-128 printable ASCII characters without @")
	}
	msg1, _, err := stringMember(obj, "handshake", true)
	if err != nil {
		return nil, err
	}
	if h.Msg1, err = hex.DecodeString(msg1); err != nil {
		return nil, errors.New("handshake is not hex")
	}
	if h.ClientStatic, err = hex32Member(obj, "client_static"); err != nil {
		return nil, err
	}
	if h.DevicePublic, err = hex32Member(obj, "device_public"); err != nil {
		return nil, err
	}
	zkp, ok := member(obj, "zkp")
	if !ok {
		return nil, errors.New("zkp is required")
	}
	if zkp.Kind != canonjson.Object {
		return nil, errors.New("zkp must be an object")
	}
	if h.Proof.Commitment, err = hex32Member(zkp, "commitment"); err != nil {
		return nil, fmt.Errorf("zkp: %w", err)
	}
	if h.Proof.Response, err = hex32Member(zkp, "response"); err != nil {
		return nil, fmt.Errorf("zkp: %w", err)
	}
	if sv, ok := member(obj, "supported_versions"); ok {
		h.echoVersions = sv.Canonical()
	}
	if caps, ok := member(obj, "capabilities"); ok {
		if caps.Kind != canonjson.Array {
			return nil, errors.New("capabilities must be an array")
		}
		if len(caps.Arr) > MaxCapabilities {
			return nil, fmt.Errorf("more than %d capabilities", MaxCapabilities)
		}
		h.Capabilities = make([]string, 0, len(caps.Arr))
		for _, c := range caps.Arr {
			if c.Kind != canonjson.String {
				return nil, errors.New("capabilities entries must be strings")
			}
			h.Capabilities = append(h.Capabilities, c.Str)
		}
		h.echoCaps = caps.Canonical()
	}
	if u, ok := member(obj, "user"); ok {
		if u.Kind != canonjson.Object {
			return nil, errors.New("user must be an object")
		}
		if h.User, err = parseUserHint(u); err != nil {
			return nil, err
		}
	}
	if c, ok := member(obj, "certificate"); ok {
		if c.Kind != canonjson.Object {
			return nil, errors.New("certificate must be an object")
		}
		cert, err := identity.ParseCertificate(c.Canonical())
		if err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
		h.Certificate = &cert
	}
	if s, ok := member(obj, "device_ca_public"); ok && s.Kind == canonjson.String {
		h.DeviceCAPublic = s.Str
	}
	return h, nil
}

func parseUserHint(u canonjson.Value) (UserHint, error) {
	var hint UserHint
	get := func(key string) (*string, error) {
		s, ok, err := stringMember(u, key, false)
		if err != nil || !ok {
			return nil, err
		}
		return &s, nil
	}
	id, err := get("id")
	if err != nil {
		return hint, fmt.Errorf("user: %w", err)
	}
	uid, err := get("user_id")
	if err != nil {
		return hint, fmt.Errorf("user: %w", err)
	}
	if id != nil && uid != nil && *id != *uid {
		return hint, errors.New("user: id and user_id differ")
	}
	hint.ID = id
	if hint.ID == nil {
		hint.ID = uid
	}
	if hint.Handle, err = get("handle"); err != nil {
		return hint, fmt.Errorf("user: %w", err)
	}
	if hint.Handle != nil && !ValidHandle(*hint.Handle) {
		return hint, errors.New("user: invalid handle")
	}
	if hint.DisplayName, err = get("display_name"); err != nil {
		return hint, fmt.Errorf("user: %w", err)
	}
	if hint.AvatarURL, err = get("avatar_url"); err != nil {
		return hint, fmt.Errorf("user: %w", err)
	}
	return hint, nil
}

// UserSnapshot is the user snapshot of §8.1: `id` and `user_id` are equal.
type UserSnapshot struct {
	AvatarURL   *string `json:"avatar_url"`
	DisplayName *string `json:"display_name"`
	Handle      string  `json:"handle"`
	ID          string  `json:"id"`
	UserID      string  `json:"user_id"`
}

// msg2Payload is the Noise msg2 payload of §4.10.
type msg2Payload struct {
	AcceptedCapabilities []string     `json:"accepted_capabilities"`
	Domain               string       `json:"domain"`
	PQCiphertext         string       `json:"pq_ciphertext,omitempty"`
	ProtocolVersion      int          `json:"protocol_version"`
	Session              string       `json:"session"`
	User                 UserSnapshot `json:"user"`
	UserID               string       `json:"user_id"`
}

// ServerAuth is the server's AUTH payload (§4.11).
type ServerAuth struct {
	AcceptedCapabilities []string `json:"accepted_capabilities"`
	DeviceID             string   `json:"device_id"`
	Handshake            string   `json:"handshake"`
	ProtocolVersion      int      `json:"protocol_version"`
	ServerStatic         string   `json:"server_static"`
	Session              string   `json:"session"`
	SupportedVersions    []int    `json:"supported_versions"`
}

// clientAuth is the client's AUTH payload (§4.12).
type clientAuth struct {
	Handshake string `json:"handshake"`
}

// NoiseKeyInfo is one entry of the Noise key catalog (§4.13, §8.4.1).
type NoiseKeyInfo struct {
	ExpiresAt  string `json:"expires_at"`
	Public     string `json:"public"`
	RotatesAt  string `json:"rotates_at"`
	ValidAfter string `json:"valid_after"`
	Version    int    `json:"version"`
}

// CertificateSummary is the `certificate` member of the handshake ACK.
type CertificateSummary struct {
	ExpiresAt int64  `json:"expires_at"`
	IssuedAt  int64  `json:"issued_at"`
	Serial    uint64 `json:"serial"`
}

// HandshakeAck is the payload of the handshake ACK (§4.13).
type HandshakeAck struct {
	Certificate       CertificateSummary   `json:"certificate"`
	DeviceCAPublic    string               `json:"device_ca_public"`
	DeviceCertificate identity.Certificate `json:"device_certificate"`
	Handshake         string               `json:"handshake"`
	KeepaliveInterval int                  `json:"keepalive_interval"`
	NoiseExpiresAt    string               `json:"noise_expires_at"`
	NoiseKeyVersion   int                  `json:"noise_key_version"`
	NoiseKeys         []NoiseKeyInfo       `json:"noise_keys"`
	NoisePublic       string               `json:"noise_public"`
	NoiseRotatesAt    string               `json:"noise_rotates_at"`
	PairingRequired   bool                 `json:"pairing_required"`
	Session           string               `json:"session"`
	User              UserSnapshot         `json:"user"`
	UserID            string               `json:"user_id"`
}

// Marshal returns the canonical JSON of the ACK.
func (a *HandshakeAck) Marshal() ([]byte, error) { return canonjson.Marshal(a) }

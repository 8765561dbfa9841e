package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/noiseconn"
)

// Certificate is a device certificate issued by the server's device CA
// (§4.8). It marshals to and from the JSON form of the spec.
type Certificate = identity.Certificate

// Identity is a device's long-term keys, persisted by the application (for
// example as a JSON state file, see MarshalJSON).
//
// Dial and Client update Certificate after every successful handshake with
// the device_certificate of the handshake ACK (§4.13) and present it in the
// next HELLO. Those updates are made under an internal lock; applications
// that read the certificate while a Client runs should use
// CurrentCertificate (or MarshalJSON, which takes the same lock).
type Identity struct {
	DeviceID    string
	DeviceSeed  [32]byte     // Ed25519 device key = from_seed(DeviceSeed) (§1.2)
	StaticKey   [32]byte     // X25519 Noise static private key
	Certificate *Certificate // last device_certificate from the server (nil at first)
}

// identityMu guards Identity.Certificate against the updates made by
// Dial and Client. One lock for all identities keeps Identity copyable.
var identityMu sync.Mutex

// NewIdentity creates a device identity with fresh random keys read from
// rnd (nil means crypto/rand).
func NewIdentity(deviceID string, rnd io.Reader) (*Identity, error) {
	if !noiseconn.ValidDeviceID(deviceID) {
		return nil, fmt.Errorf("client: invalid device id %q (1-128 printable ASCII bytes without '@')", deviceID)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	id := &Identity{DeviceID: deviceID}
	if _, err := io.ReadFull(rnd, id.DeviceSeed[:]); err != nil {
		return nil, fmt.Errorf("client: reading randomness: %w", err)
	}
	if _, err := io.ReadFull(rnd, id.StaticKey[:]); err != nil {
		return nil, fmt.Errorf("client: reading randomness: %w", err)
	}
	return id, nil
}

// DeviceKey returns the Ed25519 device key, from_seed(DeviceSeed).
func (id *Identity) DeviceKey() ed25519.PrivateKey {
	k, err := identity.FromSeed(id.DeviceSeed[:])
	if err != nil { // unreachable: the seed is 32 bytes
		panic(err)
	}
	return k
}

// DevicePublic returns the Ed25519 device public key (HELLO device_public).
func (id *Identity) DevicePublic() [32]byte {
	return identity.PublicKey32(id.DeviceKey())
}

// StaticPublic returns the X25519 public key of StaticKey (HELLO
// client_static).
func (id *Identity) StaticPublic() [32]byte {
	pub, err := identity.X25519Public(id.StaticKey)
	if err != nil { // unreachable for a 32-byte scalar
		panic(err)
	}
	return pub
}

// CurrentCertificate returns a copy of the stored certificate (nil when
// none), safe to call while a Client updates it.
func (id *Identity) CurrentCertificate() *Certificate {
	identityMu.Lock()
	defer identityMu.Unlock()
	if id.Certificate == nil {
		return nil
	}
	c := *id.Certificate
	return &c
}

// setCertificate stores c and reports whether it differs from the stored one.
func (id *Identity) setCertificate(c Certificate) bool {
	identityMu.Lock()
	defer identityMu.Unlock()
	if id.Certificate != nil && *id.Certificate == c {
		return false
	}
	id.Certificate = &c
	return true
}

type identityJSON struct {
	DeviceID    string          `json:"device_id"`
	DeviceSeed  string          `json:"device_seed"`
	StaticKey   string          `json:"static_key"`
	Certificate json.RawMessage `json:"certificate"`
}

// MarshalJSON encodes the identity for a state file:
// {"certificate":{...}|null,"device_id":...,"device_seed":hex32,"static_key":hex32}.
// The result contains the private keys: store it with restrictive
// permissions.
func (id *Identity) MarshalJSON() ([]byte, error) {
	cert := id.CurrentCertificate()
	j := identityJSON{
		DeviceID:    id.DeviceID,
		DeviceSeed:  hex.EncodeToString(id.DeviceSeed[:]),
		StaticKey:   hex.EncodeToString(id.StaticKey[:]),
		Certificate: json.RawMessage("null"),
	}
	if cert != nil {
		b, err := cert.MarshalJSON()
		if err != nil {
			return nil, err
		}
		j.Certificate = b
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes the form written by MarshalJSON. Hex is accepted
// in either case.
func (id *Identity) UnmarshalJSON(data []byte) error {
	var j identityJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("client: identity: %w", err)
	}
	if !noiseconn.ValidDeviceID(j.DeviceID) {
		return errors.New("client: identity: invalid device_id")
	}
	seed, err := identity.DecodeHex32(j.DeviceSeed)
	if err != nil {
		return fmt.Errorf("client: identity: device_seed: %w", err)
	}
	static, err := identity.DecodeHex32(j.StaticKey)
	if err != nil {
		return fmt.Errorf("client: identity: static_key: %w", err)
	}
	var cert *Certificate
	if len(j.Certificate) > 0 && string(j.Certificate) != "null" {
		c, err := identity.ParseCertificate(j.Certificate)
		if err != nil {
			return fmt.Errorf("client: identity: %w", err)
		}
		cert = &c
	}
	identityMu.Lock()
	id.DeviceID, id.DeviceSeed, id.StaticKey, id.Certificate = j.DeviceID, seed, static, cert
	identityMu.Unlock()
	return nil
}

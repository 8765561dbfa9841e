package noiseconn

import (
	"bytes"
	"crypto/ed25519"
	"crypto/mlkem"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/flynn/noise"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
)

// ClientConfig describes the client side of a handshake.
type ClientConfig struct {
	Pattern      string             // PatternXK or PatternIK
	DeviceID     string             // the device id
	DeviceKey    ed25519.PrivateKey // the Ed25519 device key
	StaticKey    [32]byte           // the X25519 static private key
	ServerStatic [32]byte           // the server's Noise public key (from server-info)
	Domain       string             // server.domain, bound into the ZKP
	Prologue     []byte             // crypto.prologue

	// Versions is sent as supported_versions (e.g. [1, 2]). With
	// LegacyVersion the HELLO carries protocol_version instead, as the
	// original terminal client does.
	Versions      []int
	LegacyVersion int

	Capabilities []string
	// PQ requests the ML-KEM-768 hybrid (version 2 only): the HELLO offers
	// pq.mlkem768 and msg1 carries pq_kem and pq_public.
	PQ bool

	User           *UserHint
	Certificate    *identity.Certificate
	DeviceCAPublic *[32]byte

	// Rand is the randomness for the ZKP, the Noise ephemeral and the
	// ML-KEM key; nil means crypto/rand.
	Rand io.Reader

	// testMsg1Payload, when set, rewrites the msg1 payload (tests only).
	testMsg1Payload func([]byte) []byte
	// testHello, when set, rewrites the HELLO object before it is
	// serialised (tests only).
	testHello func(map[string]any)
	// testDH, when set, replaces the per-handshake x25519DH (tests only).
	testDH noise.DHFunc
}

// ClientHandshake is the client side of a handshake.
type ClientHandshake struct {
	cfg      ClientConfig
	hs       *noise.HandshakeState
	pqKey    *mlkem.DecapsulationKey768
	offered2 bool

	// Filled by ReadAuth.
	Auth    ServerAuth
	Session string
	UserID  string
	User    UserSnapshot
	result  *Session
}

func (c *ClientConfig) rand() io.Reader {
	if c.Rand != nil {
		return c.Rand
	}
	return rand.Reader
}

// NewClientHandshake prepares a handshake and returns the HELLO payload.
func NewClientHandshake(cfg ClientConfig) (*ClientHandshake, []byte, error) {
	if cfg.Pattern != PatternXK && cfg.Pattern != PatternIK {
		return nil, nil, errors.New("noiseconn: pattern must be XK or IK")
	}
	if !ValidDeviceID(cfg.DeviceID) {
		return nil, nil, errors.New("noiseconn: invalid device id")
	}
	if len(cfg.DeviceKey) != ed25519.PrivateKeySize {
		return nil, nil, errors.New("noiseconn: missing device key")
	}
	c := &ClientHandshake{cfg: cfg}
	// Parsing the static key derives its public key; the x25519DH keeps
	// the parsed key for the handshake's DHs with it.
	xdh := new(x25519DH)
	staticKey, err := xdh.prepare(cfg.StaticKey[:])
	if err != nil {
		return nil, nil, err
	}
	staticPub := [32]byte(staticKey.PublicKey().Bytes())
	var dh noise.DHFunc = xdh
	if cfg.testDH != nil {
		dh = cfg.testDH
	}
	caps := slices.Clone(cfg.Capabilities)
	if cfg.PQ && !HasCapability(caps, CapPQ) {
		caps = append(caps, CapPQ)
	}
	c.offered2 = slices.Contains(cfg.Versions, Version2) || cfg.LegacyVersion == Version2

	// msg1 payload (§4.6): echoes, and the ML-KEM key when PQ is wanted.
	m1 := map[string]any{}
	if cfg.LegacyVersion == 0 {
		m1["supported_versions"] = cfg.Versions
	}
	if caps != nil {
		m1["capabilities"] = caps
	}
	if cfg.PQ {
		seed := make([]byte, mlkem.SeedSize)
		if _, err := io.ReadFull(cfg.rand(), seed); err != nil {
			return nil, nil, err
		}
		if c.pqKey, err = mlkem.NewDecapsulationKey768(seed); err != nil {
			return nil, nil, err
		}
		m1["pq_kem"] = pqKEMName
		m1["pq_public"] = hex.EncodeToString(c.pqKey.EncapsulationKey().Bytes())
	}
	payload, err := canonjson.Marshal(m1)
	if err != nil {
		return nil, nil, err
	}
	if cfg.testMsg1Payload != nil {
		payload = cfg.testMsg1Payload(payload)
	}

	ncfg := noise.Config{
		CipherSuite:   newCipherSuite(dh),
		Random:        cfg.rand(),
		Pattern:       noisePattern(cfg.Pattern),
		Initiator:     true,
		Prologue:      cfg.Prologue,
		StaticKeypair: noise.DHKey{Private: cfg.StaticKey[:], Public: staticPub[:]},
		PeerStatic:    cfg.ServerStatic[:],
	}
	// The ZKP is drawn before the Noise ephemeral so that a recorded
	// transcript depends only on the order of reads from Rand.
	devPub := [32]byte(cfg.DeviceKey.Public().(ed25519.PublicKey))
	proof, err := identity.Prove(cfg.DeviceKey, cfg.Domain, cfg.DeviceID, staticPub, cfg.rand())
	if err != nil {
		return nil, nil, err
	}
	if c.hs, err = noise.NewHandshakeState(ncfg); err != nil {
		return nil, nil, err
	}
	msg1, _, _, err := c.hs.WriteMessage(nil, payload)
	if err != nil {
		return nil, nil, err
	}

	hello := map[string]any{
		"pattern":       cfg.Pattern,
		"device_id":     cfg.DeviceID,
		"handshake":     hex.EncodeToString(msg1),
		"client_static": hex.EncodeToString(staticPub[:]),
		"device_public": hex.EncodeToString(devPub[:]),
		"zkp": map[string]string{
			"commitment": hex.EncodeToString(proof.Commitment[:]),
			"response":   hex.EncodeToString(proof.Response[:]),
		},
	}
	if cfg.LegacyVersion != 0 {
		hello["protocol_version"] = cfg.LegacyVersion
	} else {
		hello["supported_versions"] = cfg.Versions
	}
	if caps != nil {
		hello["capabilities"] = caps
	}
	if u := cfg.User; u != nil {
		hint := map[string]any{}
		for k, v := range map[string]*string{"id": u.ID, "handle": u.Handle, "display_name": u.DisplayName, "avatar_url": u.AvatarURL} {
			if v != nil {
				hint[k] = *v
			}
		}
		hello["user"] = hint
	}
	if cfg.Certificate != nil {
		hello["certificate"] = cfg.Certificate
	}
	if cfg.DeviceCAPublic != nil {
		hello["device_ca_public"] = hex.EncodeToString(cfg.DeviceCAPublic[:])
	}
	if cfg.testHello != nil {
		cfg.testHello(hello)
	}
	out, err := canonjson.Marshal(hello)
	if err != nil {
		return nil, nil, err
	}
	return c, out, nil
}

// ErrServerAuth is wrapped by every failure of ReadAuth: the client must
// abort the connection.
var ErrServerAuth = errors.New("noiseconn: server AUTH rejected")

// ReadAuth processes the server's AUTH payload (§4.10, §4.11) and returns
// the payload of the client's AUTH frame (§4.12).
func (c *ClientHandshake) ReadAuth(payload []byte) ([]byte, error) {
	fail := func(format string, args ...any) ([]byte, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrServerAuth}, args...)...)
	}
	if c.result != nil {
		return fail("handshake already complete")
	}
	if err := json.Unmarshal(payload, &c.Auth); err != nil {
		return fail("AUTH payload: %v", err)
	}
	msg2, err := hex.DecodeString(c.Auth.Handshake)
	if err != nil {
		return fail("AUTH handshake is not hex")
	}
	plain, cs1, cs2, err := c.hs.ReadMessage(nil, msg2)
	if err != nil {
		return fail("msg2 does not read: %v", err)
	}
	var m2 msg2Payload
	dec := json.NewDecoder(bytes.NewReader(plain))
	if err := dec.Decode(&m2); err != nil {
		return fail("msg2 payload: %v", err)
	}
	// The unauthenticated AUTH frame must agree with the authenticated msg2.
	if m2.ProtocolVersion != c.Auth.ProtocolVersion || !slices.Equal(m2.AcceptedCapabilities, c.Auth.AcceptedCapabilities) {
		return fail("AUTH frame and msg2 disagree on version or capabilities")
	}
	if c.offered2 && slices.Contains(c.Auth.SupportedVersions, Version2) && m2.ProtocolVersion == Version1 {
		return fail("downgrade to version 1 although both sides support version 2")
	}
	if m2.ProtocolVersion != Version1 && m2.ProtocolVersion != Version2 {
		return fail("unknown protocol version %d", m2.ProtocolVersion)
	}
	if m2.ProtocolVersion == Version2 && !c.offered2 {
		return fail("server chose version 2, which was not offered")
	}
	pq := HasCapability(m2.AcceptedCapabilities, CapPQ)
	var ss []byte
	if c.pqKey != nil && m2.ProtocolVersion == Version2 {
		if !pq || m2.PQCiphertext == "" {
			return fail("PQ requested but not accepted")
		}
		ct, err := hex.DecodeString(m2.PQCiphertext)
		if err != nil || len(ct) != pqCiphertextBytes {
			return fail("bad pq_ciphertext")
		}
		if ss, err = c.pqKey.Decapsulate(ct); err != nil {
			return fail("pq decapsulation: %v", err)
		}
	} else if pq {
		return fail("server accepted PQ that was not requested")
	}
	c.Session, c.UserID, c.User = m2.Session, m2.UserID, m2.User

	var msg []byte
	if c.cfg.Pattern == PatternXK {
		msg, cs1, cs2, err = c.hs.WriteMessage(nil, nil)
		if err != nil {
			return fail("write msg3: %v", err)
		}
	}
	if cs1 == nil || cs2 == nil {
		return fail("Noise handshake incomplete")
	}
	h := c.hs.ChannelBinding()
	c2s, s2c := transportKeys(h, cs1, cs2, ss != nil, ss)
	res := &Session{Version: m2.ProtocolVersion, PQ: ss != nil, Accepted: m2.AcceptedCapabilities, HandshakeHash: h}
	if c.cfg.Pattern == PatternIK {
		msg = ConfirmMessage(c2s)
		res.SendCounter = 1
	}
	if res.Version == Version2 {
		res.SendKey, res.RecvKey = c2s, s2c
	} else {
		res.SendCounter = 0
	}
	c.result = res
	return canonjson.Marshal(clientAuth{Handshake: hex.EncodeToString(msg)})
}

// Result returns the session after a successful ReadAuth.
func (c *ClientHandshake) Result() *Session { return c.result }

// ParseHandshakeAck parses the handshake ACK payload (§4.13) and checks the
// success marker.
func ParseHandshakeAck(payload []byte) (*HandshakeAck, error) {
	var a HandshakeAck
	if err := json.Unmarshal(payload, &a); err != nil {
		return nil, fmt.Errorf("noiseconn: handshake ACK: %w", err)
	}
	if a.Handshake != "ok" {
		return nil, errors.New("noiseconn: handshake ACK without handshake=ok")
	}
	return &a, nil
}

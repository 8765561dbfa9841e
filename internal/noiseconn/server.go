package noiseconn

import (
	"bytes"
	"crypto/ecdh"
	"crypto/mlkem"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flynn/noise"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
)

// Protocol flow (§4.1), server side:
//
//	client                                   server
//	HELLO {pattern, device_id, handshake=msg1, client_static,
//	       device_public, zkp, supported_versions, capabilities, ...}
//	                    ───────────────────►  ReadHello: version (§4.4), keys (§4.3),
//	                                          ZKP (§4.7), msg1 under each Noise key,
//	                                          IK static check, msg1 payload (§4.6)
//	                                          ... admission decision by the caller ...
//	                    ◄───────────────────  AUTH {handshake=msg2, ...}   (WriteAuth)
//	AUTH {handshake=msg3 | IK confirm}
//	                    ───────────────────►  ReadClientAuth: XK msg3 + static check,
//	                                          or IK confirm; transport keys (§5.2, §5.3)
//	                    ◄───────────────────  ACK (channel 0, sequence 2), built by the caller
//
// After the ACK, a version 2 connection carries records (§5) both ways.

func noisePattern(name string) noise.HandshakePattern {
	if name == PatternIK {
		return noise.HandshakeIK
	}
	return noise.HandshakeXK
}

// ServerKey is one Noise static key of the server (§10.4).
type ServerKey struct {
	Version    int
	Private    [32]byte
	Public     [32]byte
	ValidAfter time.Time
	RotatesAt  time.Time
	ExpiresAt  time.Time

	parsed *ecdh.PrivateKey // set by Prepared; nil: parsed per handshake
}

// Prepared returns k with its X25519 private key parsed once: handshakes
// with the result skip that parse, a full scalar multiplication (deriving
// the public key) per handshake. An unprepared key works the same, only
// slower. A Private that does not parse is left unprepared (and fails in
// the handshake as before).
func (k ServerKey) Prepared() ServerKey {
	if pk, err := ecdh.X25519().NewPrivateKey(k.Private[:]); err == nil {
		k.parsed = pk
	}
	return k
}

// Info returns the catalog entry of the key (§4.13).
func (k ServerKey) Info() NoiseKeyInfo {
	return NoiseKeyInfo{
		ExpiresAt:  canonjson.FormatTime(k.ExpiresAt),
		Public:     hex.EncodeToString(k.Public[:]),
		RotatesAt:  canonjson.FormatTime(k.RotatesAt),
		ValidAfter: canonjson.FormatTime(k.ValidAfter),
		Version:    k.Version,
	}
}

// ServerConfig holds what the server side of a handshake needs besides the
// keys, which rotate and are passed per handshake.
type ServerConfig struct {
	Domain   string
	Prologue []byte
	// Versions is the supported list S of §4.4: [1, 2], or [2] with
	// security.require_encrypted_frames.
	Versions []int
	Features ServerFeatures
	// Rand is the randomness for Noise ephemerals; nil means crypto/rand.
	Rand io.Reader
	// Encapsulate overrides ML-KEM-768 encapsulation (known-answer tests
	// inject a derandomized one); nil means ek.Encapsulate.
	Encapsulate func(ek *mlkem.EncapsulationKey768) (sharedKey, ciphertext []byte)

	// testDH, when set, replaces the per-handshake x25519DH (tests only).
	testDH noise.DHFunc
}

func (c *ServerConfig) rand() io.Reader {
	if c.Rand != nil {
		return c.Rand
	}
	return rand.Reader
}

// ServerHandshake is a handshake between the HELLO and the client's AUTH.
type ServerHandshake struct {
	cfg *ServerConfig

	Hello    *Hello
	Version  int
	Key      ServerKey // the Noise key that read msg1
	PQ       bool      // PQ hybrid keys in effect (§4.6)
	Accepted []string  // accepted_capabilities (§1.5)

	hs           *noise.HandshakeState
	pqShared     []byte
	pqCiphertext []byte
	session      string

	// Set once the Noise handshake is complete (IK after msg2).
	done   bool
	csI2R  *noise.CipherState
	csR2I  *noise.CipherState
	hsHash []byte
}

// Session is the outcome of a completed handshake: the negotiated version
// and, for version 2, the record-layer keys and first counters.
type Session struct {
	Version  int
	PQ       bool
	Accepted []string
	// SendKey/RecvKey and their first counters are set for version 2 only
	// (in version 1 the transport keys are discarded, §4.12).
	SendKey, RecvKey         [32]byte
	SendCounter, RecvCounter uint64
	// HandshakeHash is the Noise handshake hash h.
	HandshakeHash []byte
}

// ReadHello processes the first frame of a stream in the order of §4.5, up
// to and excluding the admission decision. keys are the non-expired Noise
// keys, newest first.
func (c *ServerConfig) ReadHello(f ccp.Frame, keys []ServerKey) (*ServerHandshake, *HandshakeError) {
	if f.Type != ccp.Hello {
		return nil, invalidHandshake("first frame is " + f.Type.String() + ", not HELLO")
	}
	obj, herr := parseHelloObject(f.Payload)
	if herr != nil {
		return nil, herr
	}
	version, herr := NegotiateVersion(obj, c.Versions)
	if herr != nil {
		return nil, herr
	}
	hello, herr := validateHello(obj)
	if herr != nil {
		return nil, herr
	}
	if err := identity.VerifyProof(hello.Proof, c.Domain, hello.DeviceID, hello.DevicePublic, hello.ClientStatic); err != nil {
		return nil, authFailed("device-key proof: " + err.Error())
	}
	s := &ServerHandshake{cfg: c, Hello: hello, Version: version}
	var payload []byte
	found := false
	// One x25519DH serves every key tried: it keeps the parsed static keys
	// and, later, the ephemeral of msg2.
	var dh noise.DHFunc = new(x25519DH)
	if c.testDH != nil {
		dh = c.testDH
	}
	suite := newCipherSuite(dh)
	xdh, _ := dh.(*x25519DH)
	for _, k := range keys {
		if xdh != nil && k.parsed != nil {
			xdh.remember(k.Private, k.parsed)
		}
		hs, err := noise.NewHandshakeState(noise.Config{
			CipherSuite:   suite,
			Random:        c.rand(),
			Pattern:       noisePattern(hello.Pattern),
			Initiator:     false,
			Prologue:      c.Prologue,
			StaticKeypair: noise.DHKey{Private: k.Private[:], Public: k.Public[:]},
		})
		if err != nil {
			return nil, authFailed("noise state: " + err.Error())
		}
		p, _, _, err := hs.ReadMessage(nil, hello.Msg1)
		if err != nil {
			continue
		}
		s.hs, s.Key, payload, found = hs, k, p, true
		break
	}
	if !found {
		return nil, authFailed("no Noise key reads msg1")
	}
	if hello.Pattern == PatternIK && !bytes.Equal(s.hs.PeerStatic(), hello.ClientStatic[:]) {
		return nil, authFailed("IK initiator static differs from client_static")
	}
	if herr := s.readMsg1Payload(payload); herr != nil {
		return nil, herr
	}
	s.Accepted = c.Features.AcceptCapabilities(hello.Capabilities, version, s.PQ)
	return s, nil
}

// readMsg1Payload implements §4.6.
func (s *ServerHandshake) readMsg1Payload(p []byte) *HandshakeError {
	if len(p) == 0 {
		return nil
	}
	obj, err := canonjson.Parse(p)
	if err != nil || obj.Kind != canonjson.Object {
		if s.Version == Version1 {
			return nil
		}
		return invalidHandshake("msg1 payload is not a JSON object")
	}
	echo := func(key string, helloArr []byte) *HandshakeError {
		v, ok := member(obj, key)
		if !ok {
			return nil
		}
		if helloArr == nil || !bytes.Equal(v.Canonical(), helloArr) {
			return authFailed("msg1 echo of " + key + " differs from the HELLO")
		}
		return nil
	}
	if herr := echo("supported_versions", s.Hello.echoVersions); herr != nil {
		return herr
	}
	if herr := echo("capabilities", s.Hello.echoCaps); herr != nil {
		return herr
	}
	kem, _ := member(obj, "pq_kem")
	if s.Version != Version2 || !HasCapability(s.Hello.Capabilities, CapPQ) || kem.Kind != canonjson.String || kem.Str != pqKEMName {
		return nil
	}
	pub, ok := member(obj, "pq_public")
	if !ok || pub.Kind != canonjson.String || len(pub.Str) != pqPublicHexLen {
		return authFailed("pq_public missing or of the wrong length")
	}
	raw, err := hex.DecodeString(pub.Str)
	if err != nil {
		return authFailed("pq_public is not hex")
	}
	ek, err := mlkem.NewEncapsulationKey768(raw)
	if err != nil {
		return authFailed("pq_public fails the FIPS 203 input check")
	}
	if s.cfg.Encapsulate != nil {
		s.pqShared, s.pqCiphertext = s.cfg.Encapsulate(ek)
	} else {
		s.pqShared, s.pqCiphertext = ek.Encapsulate()
	}
	s.PQ = true
	return nil
}

// AuthInfo is what the caller decided during admission and puts into msg2.
type AuthInfo struct {
	Session string
	UserID  string
	User    UserSnapshot
}

// WriteAuth writes msg2 with the payload of §4.10 and returns the payload
// of the server's AUTH frame (§4.11).
func (s *ServerHandshake) WriteAuth(info AuthInfo) ([]byte, error) {
	if s.session != "" {
		return nil, errors.New("noiseconn: WriteAuth called twice")
	}
	m2 := msg2Payload{
		AcceptedCapabilities: s.Accepted,
		Domain:               s.cfg.Domain,
		ProtocolVersion:      s.Version,
		Session:              info.Session,
		User:                 info.User,
		UserID:               info.UserID,
	}
	if s.PQ {
		m2.PQCiphertext = hex.EncodeToString(s.pqCiphertext)
	}
	payload, err := canonjson.Marshal(m2)
	if err != nil {
		return nil, err
	}
	msg2, cs1, cs2, err := s.hs.WriteMessage(nil, payload)
	if err != nil {
		return nil, fmt.Errorf("noiseconn: write msg2: %w", err)
	}
	if cs1 != nil {
		s.done, s.csI2R, s.csR2I, s.hsHash = true, cs1, cs2, s.hs.ChannelBinding()
	}
	s.session = info.Session
	return canonjson.Marshal(ServerAuth{
		AcceptedCapabilities: s.Accepted,
		DeviceID:             s.Hello.DeviceID,
		Handshake:            hex.EncodeToString(msg2),
		ProtocolVersion:      s.Version,
		ServerStatic:         hex.EncodeToString(s.Key.Public[:]),
		Session:              info.Session,
		SupportedVersions:    s.cfg.Versions,
	})
}

// parseClientAuth extracts the `handshake` bytes of a client AUTH frame.
func parseClientAuth(f ccp.Frame) ([]byte, *HandshakeError) {
	if f.Type != ccp.Auth {
		return nil, invalidHandshake("second frame is " + f.Type.String() + ", not AUTH")
	}
	obj, err := canonjson.Parse(f.Payload)
	if err != nil || obj.Kind != canonjson.Object {
		return nil, invalidHandshake("client AUTH is not a JSON object")
	}
	hs, ok := member(obj, "handshake")
	if !ok || hs.Kind != canonjson.String {
		return nil, invalidHandshake("client AUTH without a handshake string")
	}
	b, err := hex.DecodeString(hs.Str)
	if err != nil {
		return nil, invalidHandshake("client AUTH handshake is not hex")
	}
	return b, nil
}

// ReadClientAuth completes the handshake with the client's AUTH (§4.12).
func (s *ServerHandshake) ReadClientAuth(f ccp.Frame) (*Session, *HandshakeError) {
	if s.session == "" {
		return nil, invalidHandshake("AUTH before the server AUTH")
	}
	msg, herr := parseClientAuth(f)
	if herr != nil {
		return nil, herr
	}
	if s.Hello.Pattern == PatternXK {
		_, cs1, cs2, err := s.hs.ReadMessage(nil, msg)
		if err != nil || cs1 == nil {
			return nil, authFailed("XK msg3 does not read")
		}
		if !bytes.Equal(s.hs.PeerStatic(), s.Hello.ClientStatic[:]) {
			return nil, authFailed("XK msg3 static differs from client_static")
		}
		s.done, s.csI2R, s.csR2I, s.hsHash = true, cs1, cs2, s.hs.ChannelBinding()
	}
	if !s.done {
		return nil, authFailed("Noise handshake incomplete")
	}
	c2s, s2c := transportKeys(s.hsHash, s.csI2R, s.csR2I, s.PQ, s.pqShared)
	sess := &Session{Version: s.Version, PQ: s.PQ, Accepted: s.Accepted, HandshakeHash: s.hsHash}
	if s.Hello.Pattern == PatternIK {
		if !CheckConfirm(c2s, msg) {
			return nil, authFailed("IK confirm message does not decrypt")
		}
		sess.RecvCounter = 1
	}
	if s.Version == Version2 {
		sess.SendKey, sess.RecvKey = s2c, c2s
	} else {
		sess.RecvCounter = 0
	}
	clear(s.pqShared)
	return sess, nil
}

// transportKeys returns k_c2s and k_s2c: the Split keys (§5.2) or, with PQ,
// the hybrid keys (§5.3).
func transportKeys(h []byte, i2r, r2i *noise.CipherState, pq bool, ss []byte) (c2s, s2c [32]byte) {
	ki, kr := i2r.UnsafeKey(), r2i.UnsafeKey()
	if !pq {
		return ki, kr
	}
	var shared [32]byte
	copy(shared[:], ss)
	c2s, s2c = HybridKeys(h, ki, kr, shared)
	clear(shared[:])
	return c2s, s2c
}

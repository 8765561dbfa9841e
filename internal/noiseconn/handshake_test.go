package noiseconn

import (
	"bytes"
	"crypto/mlkem"
	"crypto/mlkem/mlkemtest"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
)

var update = flag.Bool("update", false, "rewrite testdata/transcripts")

// detRand returns a deterministic randomness source for known-answer runs.
func detRand(seed byte) *rand.ChaCha8 {
	var s [32]byte
	for i := range s {
		s[i] = seed
	}
	return rand.NewChaCha8(s)
}

func seq32(start byte) []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

type fixture struct {
	t      *testing.T
	srv    ServerConfig
	keys   []ServerKey
	client ClientConfig
	info   AuthInfo
	// tamper hooks on the frames in transit
	tamperHello      func([]byte) []byte
	tamperServerAuth func([]byte) []byte
	tamperClientAuth func([]byte) []byte
}

func serverKey(t testing.TB, version int, seed byte) ServerKey {
	t.Helper()
	var priv [32]byte
	copy(priv[:], bytes.Repeat([]byte{seed}, 32))
	pub, err := identity.X25519Public(priv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return ServerKey{Version: version, Private: priv, Public: pub, ValidAfter: now, RotatesAt: now.Add(168 * time.Hour), ExpiresAt: now.Add(216 * time.Hour)}
}

func newFixture(t *testing.T, pattern string, versions []int) *fixture {
	t.Helper()
	key := serverKey(t, 1, 0x77)
	dev, err := identity.FromSeed(seq32(0x20))
	if err != nil {
		t.Fatal(err)
	}
	var static [32]byte
	copy(static[:], seq32(0x40))
	handle := "alice"
	return &fixture{
		t: t,
		srv: ServerConfig{
			Domain:   "commucat.local",
			Prologue: []byte("commucat"),
			Versions: []int{1, 2},
			Features: ServerFeatures{V2: true},
			Rand:     detRand(1),
			Encapsulate: func(ek *mlkem.EncapsulationKey768) ([]byte, []byte) {
				ss, ct, err := mlkemtest.Encapsulate768(ek, bytes.Repeat([]byte{0x55}, 32))
				if err != nil {
					t.Fatal(err)
				}
				return ss, ct
			},
		},
		keys: []ServerKey{key},
		client: ClientConfig{
			Pattern:      pattern,
			DeviceID:     "device-1",
			DeviceKey:    dev,
			StaticKey:    static,
			ServerStatic: key.Public,
			Domain:       "commucat.local",
			Prologue:     []byte("commucat"),
			Versions:     versions,
			User:         &UserHint{Handle: &handle},
			Rand:         detRand(2),
		},
		info: AuthInfo{Session: strings.Repeat("ab", 32), UserID: strings.Repeat("cd", 32), User: UserSnapshot{Handle: "alice", ID: strings.Repeat("cd", 32), UserID: strings.Repeat("cd", 32)}},
	}
}

// transcript records the frames of one handshake.
type transcript struct {
	Hello      string `json:"hello"`
	ServerAuth string `json:"server_auth"`
	ClientAuth string `json:"client_auth"`
	C2S        string `json:"k_c2s,omitempty"`
	S2C        string `json:"k_s2c,omitempty"`
}

// frameTrip encodes a frame and decodes it again with the handshake (v1)
// rules, as a real stream would.
func frameTrip(t *testing.T, typ ccp.FrameType, ch, seq uint32, payload []byte) ccp.Frame {
	t.Helper()
	b, err := ccp.AppendFrame(nil, ccp.Frame{Type: typ, Channel: ch, Sequence: seq, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := ccp.Decode(b, ccp.V1)
	if err != nil {
		t.Fatalf("handshake frame does not decode: %v", err)
	}
	return f
}

type outcome struct {
	client, server *Session
	serverHS       *ServerHandshake
	clientHS       *ClientHandshake
	herr           *HandshakeError // server-side failure
	clientErr      error           // client-side failure
	tr             transcript
}

func (fx *fixture) run() outcome {
	t := fx.t
	t.Helper()
	var o outcome
	ch, hello, err := NewClientHandshake(fx.client)
	if err != nil {
		t.Fatalf("NewClientHandshake: %v", err)
	}
	o.clientHS = ch
	if fx.tamperHello != nil {
		hello = fx.tamperHello(hello)
	}
	o.tr.Hello = hex.EncodeToString(hello)
	sh, herr := fx.srv.ReadHello(frameTrip(t, ccp.Hello, 0, 1, hello), fx.keys)
	if herr != nil {
		o.herr = herr
		return o
	}
	o.serverHS = sh
	auth, err := sh.WriteAuth(fx.info)
	if err != nil {
		t.Fatalf("WriteAuth: %v", err)
	}
	if fx.tamperServerAuth != nil {
		auth = fx.tamperServerAuth(auth)
	}
	o.tr.ServerAuth = hex.EncodeToString(auth)
	reply, err := ch.ReadAuth(frameTrip(t, ccp.Auth, 0, 1, auth).Payload)
	if err != nil {
		o.clientErr = err
		return o
	}
	if fx.tamperClientAuth != nil {
		reply = fx.tamperClientAuth(reply)
	}
	o.tr.ClientAuth = hex.EncodeToString(reply)
	o.server, o.herr = sh.ReadClientAuth(frameTrip(t, ccp.Auth, 0, 2, reply))
	o.client = ch.Result()
	if o.server != nil && o.server.Version == Version2 {
		o.tr.C2S = hex.EncodeToString(o.server.RecvKey[:])
		o.tr.S2C = hex.EncodeToString(o.server.SendKey[:])
	}
	return o
}

func (o outcome) mustSucceed(t *testing.T) {
	t.Helper()
	if o.herr != nil {
		t.Fatalf("server failed: %v", o.herr)
	}
	if o.clientErr != nil {
		t.Fatalf("client failed: %v", o.clientErr)
	}
	if o.client == nil || o.server == nil {
		t.Fatal("handshake incomplete")
	}
}

func (o outcome) mustFail(t *testing.T, title, detail string) {
	t.Helper()
	if o.herr == nil {
		t.Fatalf("want %s, handshake succeeded (client error %v)", title, o.clientErr)
	}
	if o.herr.Title != title || o.herr.Detail != detail {
		t.Fatalf("got %q / %q (%v), want %q / %q", o.herr.Title, o.herr.Detail, o.herr.Cause, title, detail)
	}
	p := o.herr.Problem()
	if p.Error != ccp.ClassHandshake || p.Title != title || p.Status == 0 {
		t.Fatalf("problem %+v", p)
	}
	if o.server != nil {
		t.Fatal("failed handshake returned a session")
	}
}

// checkRecords sends one frame each way through the record layer with the
// two sides' keys.
func checkRecords(t *testing.T, client, server *Session) {
	t.Helper()
	if client.SendKey != server.RecvKey || client.RecvKey != server.SendKey || client.SendCounter != server.RecvCounter || client.RecvCounter != server.SendCounter {
		t.Fatalf("keys or counters disagree: client %+v server %+v", client, server)
	}
	if client.SendKey == ([32]byte{}) || client.SendKey == client.RecvKey {
		t.Fatal("degenerate transport keys")
	}
	for _, dir := range []struct{ from, to *Session }{{client, server}, {server, client}} {
		data := []byte("frame bytes")
		rec, err := NewSealer(dir.from.SendKey, dir.from.SendCounter, PaddingNone).AppendRecords(nil, data)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := NewOpener(dir.to.RecvKey, dir.to.RecvCounter).OpenRecord(rec)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("record does not open: %v", err)
		}
	}
}

func TestHandshakeMatrix(t *testing.T) {
	for _, pattern := range []string{PatternXK, PatternIK} {
		for _, tc := range []struct {
			name     string
			versions []int
			pq       bool
			want     int
			wantPQ   bool
		}{
			{"v1", []int{1}, false, 1, false},
			{"v2", []int{1, 2}, false, 2, false},
			{"v2-pq", []int{1, 2}, true, 2, true},
			{"v1-pq-ignored", []int{1}, true, 1, false},
		} {
			t.Run(pattern+"/"+tc.name, func(t *testing.T) {
				fx := newFixture(t, pattern, tc.versions)
				// In "v1-pq-ignored" the client offers pq.mlkem768 and sends
				// pq_kem and pq_public, but version 1 is negotiated: PQ stays
				// off and pq_public is ignored (§4.6).
				fx.client.PQ = tc.pq
				o := fx.run()
				o.mustSucceed(t)
				if o.server.Version != tc.want || o.client.Version != tc.want {
					t.Fatalf("version server %d client %d, want %d", o.server.Version, o.client.Version, tc.want)
				}
				if o.server.PQ != tc.wantPQ || o.client.PQ != tc.wantPQ {
					t.Fatalf("PQ server %v client %v, want %v", o.server.PQ, o.client.PQ, tc.wantPQ)
				}
				if HasCapability(o.server.Accepted, CapPQ) != tc.wantPQ {
					t.Fatalf("accepted %v", o.server.Accepted)
				}
				if tc.want == Version2 {
					checkRecords(t, o.client, o.server)
					wantCounter := uint64(0)
					if pattern == PatternIK {
						wantCounter = 1 // the confirm consumed counter 0 (§4.12)
					}
					if o.client.SendCounter != wantCounter {
						t.Fatalf("client send counter %d, want %d", o.client.SendCounter, wantCounter)
					}
				} else if o.server.SendKey != ([32]byte{}) || o.client.SendKey != ([32]byte{}) {
					t.Fatal("version 1 must discard the transport keys")
				}
				if o.clientHS.Session != fx.info.Session || o.clientHS.UserID != fx.info.UserID {
					t.Fatalf("msg2 session %q user %q", o.clientHS.Session, o.clientHS.UserID)
				}
				// §14 item 27: msg2's version and capabilities equal the AUTH frame's.
				var auth ServerAuth
				if err := json.Unmarshal(mustHex(t, o.tr.ServerAuth), &auth); err != nil {
					t.Fatal(err)
				}
				if auth.ProtocolVersion != tc.want || auth.ServerStatic != hex.EncodeToString(fx.keys[0].Public[:]) || auth.DeviceID != "device-1" {
					t.Fatalf("AUTH %+v", auth)
				}
				checkTranscript(t, pattern+"_"+tc.name, o.tr)
			})
		}
	}
}

// checkTranscript compares a deterministic handshake with the recorded
// one in testdata/transcripts (rewrite with -update).
func checkTranscript(t *testing.T, name string, tr transcript) {
	t.Helper()
	path := filepath.Join("testdata", "transcripts", name+".json")
	if *update {
		b, _ := json.MarshalIndent(tr, "", " ")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to record)", err)
	}
	var want transcript
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if want != tr {
		t.Fatalf("transcript %s differs from the recording", name)
	}
}

// The original terminal client: XK, protocol_version 1, capabilities
// ["noise","zstd"], device_ca_public, and no msg1 payload.
func TestOriginalClientHandshake(t *testing.T) {
	fx := newFixture(t, PatternXK, nil)
	fx.client.LegacyVersion = 1
	fx.client.Capabilities = []string{"noise", "zstd"}
	ca := [32]byte{1}
	fx.client.DeviceCAPublic = &ca
	fx.client.testMsg1Payload = func([]byte) []byte { return nil }
	o := fx.run()
	o.mustSucceed(t)
	if o.server.Version != 1 {
		t.Fatalf("version %d", o.server.Version)
	}
	if got := strings.Join(o.server.Accepted, ","); got != "noise,presence.push" {
		t.Fatalf("accepted %s", got)
	}
}

func TestAcceptedCapabilitiesOrder(t *testing.T) {
	fx := newFixture(t, PatternXK, []int{1, 2})
	fx.client.Capabilities = []string{"delivery.ack", "media.opus", "unknown.thing", "noise"}
	o := fx.run()
	o.mustSucceed(t)
	if got := strings.Join(o.server.Accepted, ","); got != "noise,ccp.v2,delivery.ack" {
		t.Fatalf("accepted %s", got)
	}
	f := ServerFeatures{V2: true, Opus: true}
	got := f.AcceptCapabilities([]string{"media.raw-audio", "media.opus", "media.vp8", "presence.push"}, 2, true)
	if strings.Join(got, ",") != "noise,ccp.v2,pq.mlkem768,media.opus,media.raw-audio,presence.push,delivery.ack" {
		t.Fatalf("got %v", got)
	}
	if s := strings.Join(f.SupportedCapabilities(), ","); s != "noise,ccp.v2,pq.mlkem768,media.opus,media.raw-audio,presence.push,delivery.ack" {
		t.Fatalf("supported %s", s)
	}
}

func TestKeyRotationAcceptsOlderKey(t *testing.T) {
	fx := newFixture(t, PatternXK, []int{1, 2})
	older := fx.keys[0]
	newer := serverKey(t, 2, 0x78)
	fx.keys = []ServerKey{newer, older} // newest first; the client still uses the older one
	o := fx.run()
	o.mustSucceed(t)
	if o.serverHS.Key.Version != 1 {
		t.Fatalf("key version %d read msg1, want 1", o.serverHS.Key.Version)
	}
	fx = newFixture(t, PatternIK, []int{2})
	fx.keys = []ServerKey{newer, older}
	fx.client.ServerStatic = newer.Public
	o = fx.run()
	o.mustSucceed(t)
	if o.serverHS.Key.Version != 2 {
		t.Fatalf("key version %d", o.serverHS.Key.Version)
	}
}

// rewriteHello changes members of the HELLO JSON in transit.
func rewriteHello(t *testing.T, f func(m map[string]any)) func([]byte) []byte {
	return func(b []byte) []byte {
		var m map[string]any
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			t.Fatal(err)
		}
		f(m)
		out, err := canonjson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

func TestHandshakeFailures(t *testing.T) {
	const (
		invalid = ccp.TitleInvalidHandshake
		authF   = ccp.TitleAuthenticationFailed
		req     = DetailInvalidRequest
		crypto  = DetailCryptoFailure
	)
	otherStatic := func() [32]byte {
		var k [32]byte
		copy(k[:], bytes.Repeat([]byte{0x99}, 32))
		return k
	}
	cases := []struct {
		name    string
		pattern string
		setup   func(fx *fixture)
		title   string
		detail  string
	}{
		{"bad zkp", PatternXK, func(fx *fixture) {
			fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) {
				z := m["zkp"].(map[string]any)
				r := z["response"].(string)
				z["response"] = "00" + r[2:]
			})
		}, authF, crypto},
		{"zkp for another domain", PatternXK, func(fx *fixture) { fx.client.Domain = "evil.example" }, authF, crypto},
		{"wrong prologue", PatternXK, func(fx *fixture) { fx.client.Prologue = []byte("other") }, authF, crypto},
		{"wrong prologue IK", PatternIK, func(fx *fixture) { fx.client.Prologue = []byte("other") }, authF, crypto},
		{"wrong server key", PatternXK, func(fx *fixture) { fx.client.ServerStatic = otherStatic() }, authF, crypto},
		{"wrong server key IK", PatternIK, func(fx *fixture) { fx.client.ServerStatic = otherStatic() }, authF, crypto},
		{"static mismatch XK", PatternXK, func(fx *fixture) { announceOtherStatic(fx) }, authF, crypto},
		{"static mismatch IK", PatternIK, func(fx *fixture) { announceOtherStatic(fx) }, authF, crypto},
		{"unsupported version", PatternXK, func(fx *fixture) { fx.client.Versions = []int{3} }, ccp.TitleProtocolVersionMismatch,
			"protocol negotiation failed: no common protocol version; peer=[3]; supported=[1, 2]"},
		{"v1 refused when encryption required", PatternXK, func(fx *fixture) { fx.client.LegacyVersion = 1; fx.srv.Versions = []int{2} },
			ccp.TitleProtocolVersionMismatch, "protocol negotiation failed: unsupported protocol version 1; supported=[2]"},
		{"no zkp", PatternXK, func(fx *fixture) {
			fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) { delete(m, "zkp") })
		}, invalid, req},
		{"bad pattern", PatternXK, func(fx *fixture) {
			fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) { m["pattern"] = "xk" })
		}, invalid, req},
		{"short client_static", PatternXK, func(fx *fixture) {
			fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) { m["client_static"] = "abcd" })
		}, invalid, req},
		{"non-hex device_public", PatternXK, func(fx *fixture) {
			fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) { m["device_public"] = strings.Repeat("zz", 32) })
		}, invalid, req},
		{"device id with @", PatternXK, func(fx *fixture) {
			fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) { m["device_id"] = "a@b" })
		}, invalid, req},
		{"65 capabilities", PatternXK, func(fx *fixture) {
			fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) {
				caps := make([]any, 65)
				for i := range caps {
					caps[i] = "x"
				}
				m["capabilities"] = caps
			})
		}, invalid, req},
		{"non-string capability", PatternXK, func(fx *fixture) {
			fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) { m["capabilities"] = []any{1} })
		}, invalid, req},
		{"handle with control character", PatternXK, func(fx *fixture) {
			fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) { m["user"] = map[string]any{"handle": "a\nb"} })
		}, invalid, req},
		{"id and user_id differ", PatternXK, func(fx *fixture) {
			fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) { m["user"] = map[string]any{"id": "a", "user_id": "b"} })
		}, invalid, req},
		{"malformed certificate", PatternXK, func(fx *fixture) {
			fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) { m["certificate"] = map[string]any{"serial": 1.5} })
		}, invalid, req},
		{"duplicate member", PatternXK, func(fx *fixture) {
			fx.tamperHello = func(b []byte) []byte { return append([]byte(`{"pattern":"XK",`), b[1:]...) }
		}, invalid, req},
		{"hello array", PatternXK, func(fx *fixture) { fx.tamperHello = func([]byte) []byte { return []byte(`[1]`) } }, invalid, req},
		{"capabilities echo differs", PatternXK, func(fx *fixture) {
			fx.client.Capabilities = []string{"noise"}
			fx.client.testMsg1Payload = func([]byte) []byte { return []byte(`{"capabilities":["noise","delivery.ack"]}`) }
		}, authF, crypto},
		{"versions echo without HELLO array", PatternXK, func(fx *fixture) {
			fx.client.LegacyVersion = 2
			fx.client.testMsg1Payload = func([]byte) []byte { return []byte(`{"supported_versions":[2]}`) }
		}, authF, crypto},
		{"versions tampered in transit", PatternIK, func(fx *fixture) {
			fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) { m["supported_versions"] = []any{1} })
		}, authF, crypto},
		{"pq_public wrong length", PatternXK, func(fx *fixture) {
			fx.client.PQ = true
			fx.client.testMsg1Payload = func(b []byte) []byte { return setPQPublic(fx.t, b, "abcd") }
		}, authF, crypto},
		{"pq_public missing", PatternXK, func(fx *fixture) {
			fx.client.PQ = true
			fx.client.testMsg1Payload = func([]byte) []byte { return []byte(`{"pq_kem":"ML-KEM-768"}`) }
		}, authF, crypto},
		{"pq_public fails FIPS 203 check", PatternIK, func(fx *fixture) {
			fx.client.PQ = true
			fx.client.testMsg1Payload = func(b []byte) []byte { return setPQPublic(fx.t, b, strings.Repeat("ff", 1184)) }
		}, authF, crypto},
		{"v2 msg1 payload not an object", PatternXK, func(fx *fixture) {
			fx.client.testMsg1Payload = func([]byte) []byte { return []byte(`[1]`) }
		}, invalid, req},
		{"msg3 garbage", PatternXK, func(fx *fixture) {
			fx.tamperClientAuth = func(b []byte) []byte { return []byte(`{"handshake":"` + strings.Repeat("00", 64) + `"}`) }
		}, authF, crypto},
		{"IK confirm wrong", PatternIK, func(fx *fixture) {
			fx.tamperClientAuth = func(b []byte) []byte { return []byte(`{"handshake":"` + strings.Repeat("00", 16) + `"}`) }
		}, authF, crypto},
		{"client AUTH without hex", PatternXK, func(fx *fixture) {
			fx.tamperClientAuth = func(b []byte) []byte { return []byte(`{"handshake":"xyz"}`) }
		}, invalid, req},
		{"client AUTH without handshake", PatternXK, func(fx *fixture) {
			fx.tamperClientAuth = func(b []byte) []byte { return []byte(`{}`) }
		}, invalid, req},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fx := newFixture(t, c.pattern, []int{1, 2})
			c.setup(fx)
			fx.run().mustFail(t, c.title, c.detail)
		})
	}
}

// announceOtherStatic makes the HELLO carry a client_static (with a valid
// ZKP over it) that is not the static key used in Noise.
func announceOtherStatic(fx *fixture) {
	var other [32]byte
	copy(other[:], bytes.Repeat([]byte{0x42}, 32))
	pub, _ := identity.X25519Public(other)
	proof, err := identity.Prove(fx.client.DeviceKey, fx.client.Domain, fx.client.DeviceID, pub, detRand(9))
	if err != nil {
		fx.t.Fatal(err)
	}
	fx.tamperHello = rewriteHello(fx.t, func(m map[string]any) {
		m["client_static"] = hex.EncodeToString(pub[:])
		m["zkp"] = map[string]any{"commitment": hex.EncodeToString(proof.Commitment[:]), "response": hex.EncodeToString(proof.Response[:])}
	})
}

func setPQPublic(t *testing.T, payload []byte, pub string) []byte {
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	m["pq_public"] = pub
	out, _ := canonjson.Marshal(m)
	return out
}

func TestFirstFrameNotHello(t *testing.T) {
	srv := newFixture(t, PatternXK, nil).srv
	_, herr := srv.ReadHello(ccp.Frame{Type: ccp.Join, Payload: []byte(`{}`)}, nil)
	if herr == nil || herr.Title != ccp.TitleInvalidHandshake {
		t.Fatalf("got %v", herr)
	}
}

func TestSecondFrameNotAuth(t *testing.T) {
	fx := newFixture(t, PatternXK, []int{2})
	_, hello, err := NewClientHandshake(fx.client)
	if err != nil {
		t.Fatal(err)
	}
	sh, herr := fx.srv.ReadHello(frameTrip(t, ccp.Hello, 0, 1, hello), fx.keys)
	if herr != nil {
		t.Fatal(herr)
	}
	if _, err := sh.WriteAuth(fx.info); err != nil {
		t.Fatal(err)
	}
	_, herr = sh.ReadClientAuth(ccp.Frame{Type: ccp.Msg, Channel: 1, Sequence: 2, Payload: []byte("x")})
	if herr == nil || herr.Title != ccp.TitleInvalidHandshake || herr.Detail != DetailInvalidRequest {
		t.Fatalf("got %v", herr)
	}
}

func TestClientDetectsTamperedAuth(t *testing.T) {
	// AUTH frame altered in transit: msg2 (authenticated) disagrees.
	fx := newFixture(t, PatternXK, []int{1, 2})
	fx.tamperServerAuth = func(b []byte) []byte {
		var a ServerAuth
		_ = json.Unmarshal(b, &a)
		a.AcceptedCapabilities = []string{"noise"}
		out, _ := canonjson.Marshal(a)
		return out
	}
	if o := fx.run(); !errors.Is(o.clientErr, ErrServerAuth) {
		t.Fatalf("client accepted a tampered AUTH: %v", o.clientErr)
	}
	// Downgrade: the HELLO's versions are stripped to [1] in transit and the
	// client sent no echo, so the server negotiates 1 although both sides
	// support 2. The client must abort (§4.10).
	fx = newFixture(t, PatternXK, []int{1, 2})
	fx.client.testMsg1Payload = func([]byte) []byte { return nil }
	fx.tamperHello = rewriteHello(t, func(m map[string]any) { m["supported_versions"] = []any{1} })
	if o := fx.run(); !errors.Is(o.clientErr, ErrServerAuth) || o.herr != nil {
		t.Fatalf("client accepted a downgrade: client %v server %v", o.clientErr, o.herr)
	}
}

func TestCheckCertificate(t *testing.T) {
	ca, _ := identity.DeviceCA(seq32(0))
	caPub := identity.PublicKey32(ca)
	dev, _ := identity.FromSeed(seq32(0x20))
	devPub := identity.PublicKey32(dev)
	now := int64(1_800_000_000)
	good := identity.IssueCertificate(ca, 7, "user-1", "device-1", devPub, now-10)
	if herr := CheckCertificate(&good, caPub, "device-1", "user-1", now); herr != nil {
		t.Fatalf("valid certificate: %v", herr)
	}
	other, _ := identity.DeviceCA(seq32(1))
	forged := identity.IssueCertificate(other, 7, "user-1", "device-1", devPub, now-10)
	forged.Issuer = caPub
	expired := identity.IssueCertificate(ca, 7, "user-1", "device-1", devPub, now-identity.CertificateLifetime-1)
	for name, c := range map[string]identity.Certificate{"forged": forged, "expired": expired} {
		herr := CheckCertificate(&c, caPub, "device-1", "user-1", now)
		if herr == nil || herr.Title != ccp.TitleAuthenticationFailed || herr.Detail != DetailCryptoFailure {
			t.Errorf("%s: %v", name, herr)
		}
	}
}

func TestNegotiateVersionReasons(t *testing.T) {
	cases := []struct {
		hello     string
		supported []int
		want      int
		reason    string
	}{
		{`{"supported_versions":[1,2]}`, []int{1, 2}, 2, ""},
		{`{"supported_versions":[2,1,7]}`, []int{1, 2}, 2, ""},
		{`{"supported_versions":[1]}`, []int{1, 2}, 1, ""},
		{`{"protocol_version":2}`, []int{1, 2}, 2, ""},
		{`{}`, []int{1, 2}, 1, ""},
		{`{"supported_versions":null,"protocol_version":1}`, []int{1, 2}, 1, ""},
		{`{"supported_versions":"1"}`, []int{1, 2}, 0, "supported_versions must be an array"},
		{`{"supported_versions":[1,-1]}`, []int{1, 2}, 0, "supported_versions entries must be unsigned integers"},
		{`{"supported_versions":[1.5]}`, []int{1, 2}, 0, "supported_versions entries must be unsigned integers"},
		{`{"supported_versions":["1"]}`, []int{1, 2}, 0, "supported_versions entries must be unsigned integers"},
		{`{"supported_versions":[65536]}`, []int{1, 2}, 0, "protocol version 65536 out of range"},
		{`{"supported_versions":[]}`, []int{1, 2}, 0, "supported_versions cannot be empty"},
		{`{"supported_versions":[3,4]}`, []int{1, 2}, 0, "no common protocol version; peer=[3, 4]; supported=[1, 2]"},
		{`{"supported_versions":[1]}`, []int{2}, 0, "no common protocol version; peer=[1]; supported=[2]"},
		{`{"protocol_version":"2"}`, []int{1, 2}, 0, "protocol_version must be an unsigned integer"},
		{`{"protocol_version":-2}`, []int{1, 2}, 0, "protocol_version must be an unsigned integer"},
		{`{"protocol_version":70000}`, []int{1, 2}, 0, "protocol version 70000 out of range"},
		{`{"protocol_version":3}`, []int{1, 2}, 0, "unsupported protocol version 3; supported=[1, 2]"},
		{`{}`, []int{2}, 0, "unsupported protocol version 1; supported=[2]"},
	}
	for _, c := range cases {
		v, err := canonjson.Parse([]byte(c.hello))
		if err != nil {
			t.Fatal(err)
		}
		got, herr := NegotiateVersion(v, c.supported)
		if c.reason == "" {
			if herr != nil || got != c.want {
				t.Errorf("%s: %d %v, want %d", c.hello, got, herr, c.want)
			}
			continue
		}
		if herr == nil || herr.Title != ccp.TitleProtocolVersionMismatch || herr.Detail != "protocol negotiation failed: "+c.reason {
			t.Errorf("%s: got %v, want reason %q", c.hello, herr, c.reason)
		}
	}
}

func TestHandshakeAckRoundTrip(t *testing.T) {
	ca, _ := identity.DeviceCA(seq32(0))
	dev, _ := identity.FromSeed(seq32(0x20))
	cert := identity.IssueCertificate(ca, 12345678901234567890, "u", "d", identity.PublicKey32(dev), 1700000000)
	k := serverKey(t, 3, 5)
	ack := HandshakeAck{
		Certificate:       CertificateSummary{ExpiresAt: cert.ExpiresAt, IssuedAt: cert.IssuedAt, Serial: cert.Serial},
		DeviceCAPublic:    hex.EncodeToString(cert.Issuer[:]),
		DeviceCertificate: cert,
		Handshake:         "ok",
		KeepaliveInterval: 30,
		NoiseKeyVersion:   3,
		NoiseKeys:         []NoiseKeyInfo{k.Info()},
		NoisePublic:       k.Info().Public,
		NoiseRotatesAt:    k.Info().RotatesAt,
		NoiseExpiresAt:    k.Info().ExpiresAt,
		Session:           "s",
		UserID:            "u",
		User:              UserSnapshot{Handle: "h", ID: "u", UserID: "u"},
	}
	b, err := ack.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"serial":12345678901234567890`) || !strings.Contains(string(b), `"avatar_url":null`) {
		t.Fatalf("ACK %s", b)
	}
	back, err := ParseHandshakeAck(b)
	if err != nil || back.DeviceCertificate != cert || back.Certificate.Serial != cert.Serial {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := ParseHandshakeAck([]byte(`{"handshake":"no"}`)); err == nil {
		t.Fatal("ACK without ok accepted")
	}
}

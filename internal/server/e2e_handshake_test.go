package server_test

// §14 "Handshake", items 25-47.

import (
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/metrics"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/servertest"
	"github.com/commucat/commucat/internal/store"
)

// countRows runs a COUNT(*) query on the server's database.
func countRows(t *testing.T, s *servertest.Server, query string, args ...any) int {
	t.Helper()
	db, err := sql.Open("sqlite", s.Config.Storage.SQLitePath+"?_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// nothingCreated checks that no device, no user with handle and no session
// of the device exist.
func nothingCreated(t *testing.T, s *servertest.Server, deviceID, handle string) {
	t.Helper()
	if n := countRows(t, s, "SELECT count(*) FROM devices WHERE device_id = ?", deviceID); n != 0 {
		t.Fatalf("device %s was created", deviceID)
	}
	if handle != "" {
		if n := countRows(t, s, "SELECT count(*) FROM users WHERE handle = ?", handle); n != 0 {
			t.Fatalf("user %s was created", handle)
		}
	}
	if n := countRows(t, s, "SELECT count(*) FROM sessions WHERE device_id = ?", deviceID); n != 0 {
		t.Fatalf("a session of %s was created", deviceID)
	}
}

// helloJSON returns a valid HELLO payload for cfg as a JSON object to edit.
func helloJSON(t *testing.T, cfg noiseconn.ClientConfig) map[string]any {
	t.Helper()
	_, hello, err := noiseconn.NewClientHandshake(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(hello, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// counterValue returns the value of a counter in s's registry (the sum of
// its series).
func counterValue(t *testing.T, s *servertest.Server, name string) float64 {
	t.Helper()
	return counterSeries(t, s, name, "", "")
}

// counterSeries sums the series of counter name whose label has value
// (every series when label is ""); it fails the test when none matches.
func counterSeries(t *testing.T, s *servertest.Server, name, label, value string) float64 {
	t.Helper()
	mfs, err := s.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	found := false
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				match = match || (lp.GetName() == label && lp.GetValue() == value)
			}
			if match {
				v += m.GetCounter().GetValue()
				found = true
			}
		}
	}
	if !found && label == "" {
		t.Fatalf("metric %s not found", name)
	}
	if !found {
		t.Fatalf("metric %s{%s=%q} not found", name, label, value)
	}
	return v
}

// Item 25: The original terminal client's handshake (XK,
// `protocol_version` 1, `capabilities` `["noise","zstd"]`) completes: AUTH on
// the HELLO's channel with sequence 1, then ACK on channel 0 with sequence 2
// and `handshake` `"ok"`.
func TestItem25OriginalClientHandshake(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, tc := range []struct {
		name string
		ws   bool
		ch   uint32
	}{{"h2-channel-0", false, 0}, {"h2-channel-12", false, 12}, {"websocket-channel-0", true, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r *rawConn
			if tc.ws {
				r, _ = openRawWS(t, s)
			} else {
				r = openRawHTTP(t, s, true)
			}
			cfg := r.legacyConfig(newIdentity(t, "orig"), uniqueHandle("orig"))
			hs, f := r.hello(cfg, tc.ch)
			if f.Type != ccp.Auth || f.Channel != tc.ch || f.Sequence != 1 {
				t.Fatalf("got %v %s, want AUTH on channel %d sequence 1", f, f.Payload, tc.ch)
			}
			reply, err := hs.ReadAuth(f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if v := hs.Result().Version; v != 1 {
				t.Fatalf("version %d", v)
			}
			r.send(ccp.Auth, tc.ch, 2, reply)
			f = r.frame(wait)
			if f.Type != ccp.Ack || f.Channel != 0 || f.Sequence != 2 {
				t.Fatalf("got %v %s, want ACK on channel 0 sequence 2", f, f.Payload)
			}
			if m := jsonObject(t, f.Payload); m["handshake"] != "ok" {
				t.Fatalf("ACK %s", f.Payload)
			}
			ch := freshChannel()
			seq := r.next(ccp.Join, ch, []byte(`{}`))
			r.expectAck(ch, seq)
		})
	}
}

// Item 26: An IK handshake whose client AUTH carries the 16-byte confirm
// message completes.
func TestItem26IKHandshake(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			r := openRawHTTP(t, s, true)
			cfg := r.clientConfig(newIdentity(t, "ik"), uniqueHandle("ik"), []int{v}, nil)
			cfg.Pattern = noiseconn.PatternIK
			hs, f := r.hello(cfg, 0)
			if f.Type != ccp.Auth {
				t.Fatalf("got %v %s", f, f.Payload)
			}
			reply, err := hs.ReadAuth(f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			var a struct{ Handshake string }
			if err := json.Unmarshal(reply, &a); err != nil {
				t.Fatal(err)
			}
			if confirm, err := hex.DecodeString(a.Handshake); err != nil || len(confirm) != 16 {
				t.Fatalf("client AUTH %s is not a 16-byte confirm", reply)
			}
			sess := hs.Result()
			r.mu.Lock()
			r.seq = 2
			if v == 2 {
				r.v2, r.recvKey, r.sendKey, r.sendCtr = true, sess.RecvKey, sess.SendKey, sess.SendCounter
			}
			r.mu.Unlock()
			r.send(ccp.Auth, 0, 2, reply)
			r.mu.Lock()
			r.sealing = v == 2
			r.mu.Unlock()
			f = r.frame(wait)
			if f.Type != ccp.Ack || f.Sequence != 2 {
				t.Fatalf("got %v %s, want the handshake ACK", f, f.Payload)
			}
			ch := freshChannel()
			seq := r.next(ccp.Join, ch, []byte(`{}`))
			r.expectAck(ch, seq)
		})
	}
	t.Run("sdk", func(t *testing.T) {
		t.Parallel()
		c := dial(t, s, newIdentity(t, "ik-sdk"), uniqueHandle("ik-sdk"), withPattern(client.PatternIK))
		if _, err := c.Join(ctxWait(t), freshChannel(), nil, ""); err != nil {
			t.Fatal(err)
		}
	})
}

// manualAuth sends a hand-made HELLO and returns the AUTH frame, its fields
// and the decrypted msg2 payload.
func manualAuth(t *testing.T, r *rawConn, m manualHello) (ccp.Frame, authFields, []byte, *noise.HandshakeState, [2]*noise.CipherState) {
	t.Helper()
	hello, hs := m.build(t, r.info)
	r.send(ccp.Hello, 0, 1, hello)
	f := r.frame(wait)
	if f.Type != ccp.Auth {
		t.Fatalf("got %v %s, want AUTH", f, f.Payload)
	}
	var a authFields
	if err := json.Unmarshal(f.Payload, &a); err != nil {
		t.Fatal(err)
	}
	msg2, err := hex.DecodeString(a.Handshake)
	if err != nil {
		t.Fatal(err)
	}
	plain, cs1, cs2, err := hs.ReadMessage(nil, msg2)
	if err != nil {
		t.Fatalf("msg2: %v", err)
	}
	return f, a, plain, hs, [2]*noise.CipherState{cs1, cs2}
}

// Item 27: The msg2 payload's `protocol_version` and
// `accepted_capabilities` equal those of the AUTH frame.
func TestItem27Msg2MatchesAuth(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, tc := range []struct {
		pattern  string
		versions []int
	}{{"XK", []int{1, 2}}, {"IK", []int{1, 2}}, {"XK", []int{1}}} {
		t.Run(fmt.Sprintf("%s-%v", tc.pattern, tc.versions), func(t *testing.T) {
			t.Parallel()
			r := openRawHTTP(t, s, true)
			id := newIdentity(t, "m2")
			m := manualFor(id, tc.pattern, uniqueHandle("m2"))
			caps := []string{"noise", "ccp.v2", "presence.push", "delivery.ack", "unknown.cap"}
			m.members["supported_versions"] = tc.versions
			m.members["capabilities"] = caps
			m.msg1Payload = marshal(t, map[string]any{"supported_versions": tc.versions, "capabilities": caps})
			_, a, plain, _, _ := manualAuth(t, r, m)
			var p struct {
				AcceptedCapabilities []string `json:"accepted_capabilities"`
				ProtocolVersion      *int     `json:"protocol_version"`
			}
			if err := json.Unmarshal(plain, &p); err != nil {
				t.Fatalf("msg2 payload %q: %v", plain, err)
			}
			if p.ProtocolVersion == nil || *p.ProtocolVersion != a.ProtocolVersion {
				t.Fatalf("msg2 protocol_version %v, AUTH %d", p.ProtocolVersion, a.ProtocolVersion)
			}
			if !slices.Equal(p.AcceptedCapabilities, a.AcceptedCapabilities) || a.AcceptedCapabilities == nil {
				t.Fatalf("msg2 accepted_capabilities %v, AUTH %v", p.AcceptedCapabilities, a.AcceptedCapabilities)
			}
			if want := slices.Max(tc.versions); a.ProtocolVersion != want {
				t.Fatalf("negotiated %d, want %d", a.ProtocolVersion, want)
			}
		})
	}
}

// Item 28: A HELLO whose zkp does not verify gets ERROR titled
// `Authentication Failed` (401, `error` `handshake`), the stream ends, and
// no user, device or session is created.
func TestItem28BadZKP(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	r := openRawHTTP(t, s, true)
	id := newIdentity(t, "zkp")
	handle := uniqueHandle("zkp")
	h := helloJSON(t, r.clientConfig(id, handle, []int{1, 2}, nil))
	// A proof made for another device id does not verify for this one.
	other, err := identity.Prove(id.DeviceKey(), r.info.Domain, id.DeviceID+"-other", id.StaticPublic(), nil)
	if err != nil {
		t.Fatal(err)
	}
	h["zkp"] = map[string]string{"commitment": hex.EncodeToString(other.Commitment[:]), "response": hex.EncodeToString(other.Response[:])}
	r.send(ccp.Hello, 0, 1, marshal(t, h))
	p := expectHandshakeError(t, r, 1, ccp.TitleAuthenticationFailed, ccp.ClassHandshake, "crypto failure")
	if p.Status != 401 {
		t.Fatalf("status %d", p.Status)
	}
	nothingCreated(t, s, id.DeviceID, handle)
}

// Item 29: An XK msg3 revealing a static key different from
// `client_static` gets `Authentication Failed` and creates no device.
func TestItem29XKStaticMismatch(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	r := openRawHTTP(t, s, true)
	id := newIdentity(t, "xk")
	handle := uniqueHandle("xk")
	m := manualFor(id, "XK", handle)
	if _, err := rand.Read(m.noiseStatic[:]); err != nil {
		t.Fatal(err)
	}
	_, _, _, hs, _ := manualAuth(t, r, m)
	msg3, _, _, err := hs.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.send(ccp.Auth, 0, 2, marshal(t, map[string]string{"handshake": hex.EncodeToString(msg3)}))
	expectHandshakeError(t, r, 2, ccp.TitleAuthenticationFailed, ccp.ClassHandshake, "crypto failure")
	nothingCreated(t, s, id.DeviceID, handle)
}

// Item 30: An IK msg1 whose static differs from `client_static` gets
// `Authentication Failed`.
func TestItem30IKStaticMismatch(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	r := openRawHTTP(t, s, true)
	id := newIdentity(t, "ik")
	handle := uniqueHandle("ik")
	m := manualFor(id, "IK", handle)
	if _, err := rand.Read(m.noiseStatic[:]); err != nil {
		t.Fatal(err)
	}
	hello, _ := m.build(t, r.info)
	r.send(ccp.Hello, 0, 1, hello)
	expectHandshakeError(t, r, 1, ccp.TitleAuthenticationFailed, ccp.ClassHandshake, "crypto failure")
	nothingCreated(t, s, id.DeviceID, handle)
}

// Item 31: `supported_versions: [3]` gets `Protocol Version Mismatch` with
// detail `protocol negotiation failed: no common protocol version; peer=[3];
// supported=[1, 2]`.
func TestItem31NoCommonVersion(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	r := openRawHTTP(t, s, true)
	cfg := r.clientConfig(newIdentity(t, "v3"), uniqueHandle("v3"), []int{3}, nil)
	_, f := r.hello(cfg, 0)
	if f.Channel != 0 || f.Sequence != 1 {
		t.Fatalf("ERROR on channel %d sequence %d", f.Channel, f.Sequence)
	}
	p := wantProblem(t, f, ccp.TitleProtocolVersionMismatch, 400, ccp.ClassHandshake)
	if want := "protocol negotiation failed: no common protocol version; peer=[3]; supported=[1, 2]"; p.Detail != want {
		t.Fatalf("detail %q, want %q", p.Detail, want)
	}
	r.expectEOF(wait)
}

// Item 32: With `security.require_encrypted_frames = true`,
// `protocol_version: 1` gets `Protocol Version Mismatch`.
func TestItem32RequireEncryptedFrames(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *config.Config) { c.Security.RequireEncryptedFrames = true })
	r := openRawHTTP(t, s, true)
	_, hello, err := noiseconn.NewClientHandshake(r.legacyConfig(newIdentity(t, "legacy"), uniqueHandle("legacy")))
	if err != nil {
		t.Fatal(err)
	}
	r.send(ccp.Hello, 0, 1, hello)
	expectHandshakeError(t, r, 1, ccp.TitleProtocolVersionMismatch, ccp.ClassHandshake, "")
}

// Item 33: `supported_versions: [1, 2]` negotiates 2 and
// `accepted_capabilities` contains `noise`, `ccp.v2` and `delivery.ack` in
// table order.
func TestItem33NegotiatesV2(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	order := []string{"noise", "ccp.v2", "pq.mlkem768", "media.opus", "media.vp8", "media.raw-audio", "media.raw-video", "presence.push", "delivery.ack"}
	for _, caps := range [][]string{nil, {"delivery.ack", "presence.push", "noise", "x-unknown"}} {
		t.Run(fmt.Sprintf("caps=%v", caps), func(t *testing.T) {
			t.Parallel()
			r := openRawHTTP(t, s, true)
			res := r.connect(r.clientConfig(newIdentity(t, "neg"), uniqueHandle("neg"), []int{1, 2}, caps))
			var a authFields
			if err := json.Unmarshal(res.auth.Payload, &a); err != nil {
				t.Fatal(err)
			}
			if a.ProtocolVersion != 2 || res.sess.Version != 2 {
				t.Fatalf("negotiated %d", a.ProtocolVersion)
			}
			for _, c := range []string{"noise", "ccp.v2", "delivery.ack"} {
				if !slices.Contains(a.AcceptedCapabilities, c) {
					t.Fatalf("accepted_capabilities %v lack %q", a.AcceptedCapabilities, c)
				}
			}
			last := -1
			for _, c := range a.AcceptedCapabilities {
				i := slices.Index(order, c)
				if i <= last {
					t.Fatalf("accepted_capabilities %v are not in table order", a.AcceptedCapabilities)
				}
				last = i
			}
		})
	}
}

// Item 34: A first frame other than HELLO, or a HELLO without `zkp`, gets
// `Invalid Handshake` and the stream ends.
func TestItem34InvalidHandshake(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	t.Run("first-frame-join", func(t *testing.T) {
		t.Parallel()
		r := openRawHTTP(t, s, true)
		r.send(ccp.Join, 1, 1, []byte(`{}`))
		expectHandshakeError(t, r, 1, ccp.TitleInvalidHandshake, ccp.ClassHandshake, "invalid request")
	})
	t.Run("hello-without-zkp", func(t *testing.T) {
		t.Parallel()
		r := openRawHTTP(t, s, true)
		id := newIdentity(t, "nozkp")
		h := helloJSON(t, r.clientConfig(id, uniqueHandle("nozkp"), []int{1, 2}, nil))
		delete(h, "zkp")
		r.send(ccp.Hello, 0, 1, marshal(t, h))
		expectHandshakeError(t, r, 1, ccp.TitleInvalidHandshake, ccp.ClassHandshake, "invalid request")
	})
}

// Item 35: A client that sends only a HELLO gets ERROR `Handshake Timeout`
// 10 s after the stream started, then the stream ends.
func TestItem35HandshakeTimeout(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	if s.Config.Server.HandshakeTimeout != 10*time.Second {
		t.Fatalf("default handshake_timeout is %v", s.Config.Server.HandshakeTimeout)
	}
	start := time.Now() // at or before the moment the server sends the headers
	r := openRawHTTP(t, s, true)
	_, f := r.hello(r.clientConfig(newIdentity(t, "slow"), uniqueHandle("slow"), []int{1, 2}, nil), 0)
	if f.Type != ccp.Auth {
		t.Fatalf("got %v %s", f, f.Payload)
	}
	got := r.expectEOF(20 * time.Second)
	elapsed := time.Since(start)
	if len(got) != 1 {
		t.Fatalf("frames %v, want one ERROR then the end", got)
	}
	p := wantProblem(t, got[0], ccp.TitleHandshakeTimeout, 408, ccp.ClassHandshake)
	if got[0].Channel != 0 || got[0].Sequence != 2 {
		t.Fatalf("ERROR on channel %d sequence %d (%s)", got[0].Channel, got[0].Sequence, p.Detail)
	}
	if elapsed < 10*time.Second || elapsed > 15*time.Second {
		t.Fatalf("Handshake Timeout after %v, want 10 s after the stream started", elapsed)
	}
}

// Item 36: An unknown device with `auto_approve_devices = false` gets ERROR
// titled `PairingRequired` with `"pairing_required":true`, and no user or
// device is created.
func TestItem36PairingRequired(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *config.Config) { c.Server.AutoApproveDevices = false })
	r := openRawHTTP(t, s, true)
	id := newIdentity(t, "new")
	handle := uniqueHandle("new")
	_, f := r.hello(r.clientConfig(id, handle, []int{1, 2}, nil), 0)
	got := append([]ccp.Frame{f}, r.expectEOF(wait)...)
	if len(got) != 1 {
		t.Fatalf("frames %v, want one ERROR then the end", got)
	}
	p := wantProblem(t, got[0], ccp.TitlePairingRequired, 403, ccp.ClassHandshake)
	if m := jsonObject(t, got[0].Payload); m["pairing_required"] != true || !p.PairingRequired {
		t.Fatalf("ERROR %s lacks \"pairing_required\":true", got[0].Payload)
	}
	nothingCreated(t, s, id.DeviceID, handle)
}

// Item 37: With auto-approval and `max_auto_devices_per_user = 1`, a new
// handle's first device is admitted and a second new device for it gets
// `PairingRequired`; with 0 both are admitted.
func TestItem37DeviceLimit(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{1, 0} {
		t.Run(fmt.Sprintf("max=%d", limit), func(t *testing.T) {
			t.Parallel()
			s := startServer(t, func(c *config.Config) {
				c.Server.AutoApproveDevices = true
				c.Server.MaxAutoDevicesPerUser = limit
			})
			handle := uniqueHandle("limited")
			first := dial(t, s, newIdentity(t, "first"), handle)
			second, err := dialErr(t, s, newIdentity(t, "second"), handle)
			if limit == 0 {
				if err != nil {
					t.Fatalf("second device refused: %v", err)
				}
				if second.UserID() != first.UserID() {
					t.Fatal("the second device got another user")
				}
				return
			}
			ef := requestProblem(t, err, ccp.TitlePairingRequired)
			if !ef.Problem.PairingRequired {
				t.Fatalf("ERROR %+v lacks pairing_required", ef.Problem)
			}
		})
	}
}

// Item 38: A known device presenting a different `device_public` without a
// matching certificate gets `Forbidden` with detail `device key mismatch`.
func TestItem38DeviceKeyMismatch(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	id := newIdentity(t, "keyed")
	handle := uniqueHandle("keyed")
	register(t, s, id, handle)
	other, err := client.NewIdentity(id.DeviceID, nil) // same device id, new keys, no certificate
	if err != nil {
		t.Fatal(err)
	}
	_, err = dialErr(t, s, other, handle)
	ef := requestProblem(t, err, ccp.TitleForbidden)
	if ef.Problem.Detail != "device key mismatch" {
		t.Fatalf("detail %q", ef.Problem.Detail)
	}
}

// Item 39: A revoked device gets `Forbidden` with detail `device is not
// active`.
//
// The revocation endpoint (§8.4.5) is not served yet, so the device is
// revoked directly in the server's database.
func TestItem39RevokedDevice(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	id := newIdentity(t, "revoked")
	handle := uniqueHandle("revoked")
	register(t, s, id, handle)
	st := openStore(t, s)
	if err := st.SetDeviceStatus(context.Background(), id.DeviceID, store.DeviceRevoked, time.Now()); err != nil {
		t.Fatal(err)
	}
	_, err := dialErr(t, s, id, handle)
	ef := requestProblem(t, err, ccp.TitleForbidden)
	if ef.Problem.Detail != "device is not active" {
		t.Fatalf("detail %q", ef.Problem.Detail)
	}
}

// Item 40: The handshake ACK carries every member of §4.13; its
// `device_certificate` verifies under `device_ca_public` with the signed
// bytes of §4.8 and spans 2 592 000 s.
func TestItem40HandshakeAck(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	r := openRawHTTP(t, s, true)
	id := newIdentity(t, "ack")
	res := r.connect(r.clientConfig(id, uniqueHandle("ack"), []int{1, 2}, nil))
	m := jsonObject(t, res.ack.Payload)
	for _, k := range []string{"handshake", "session", "user_id", "user", "pairing_required", "device_ca_public",
		"noise_public", "noise_key_version", "noise_rotates_at", "noise_expires_at", "noise_keys",
		"certificate", "device_certificate", "keepalive_interval"} {
		if _, ok := m[k]; !ok {
			t.Errorf("handshake ACK lacks %q", k)
		}
	}
	if m["handshake"] != "ok" {
		t.Fatalf("handshake %v", m["handshake"])
	}
	caHex, _ := m["device_ca_public"].(string)
	ca, err := hex.DecodeString(caHex)
	if err != nil || len(ca) != 32 {
		t.Fatalf("device_ca_public %q", caHex)
	}
	cert, ok := m["device_certificate"].(map[string]any)
	if !ok {
		t.Fatalf("device_certificate %v", m["device_certificate"])
	}
	str := func(k string) string {
		v, ok := cert[k].(string)
		if !ok {
			t.Fatalf("device_certificate.%s = %v", k, cert[k])
		}
		return v
	}
	num := func(k string) json.Number {
		v, ok := cert[k].(json.Number)
		if !ok {
			t.Fatalf("device_certificate.%s = %v", k, cert[k])
		}
		return v
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	signed := `{"serial":` + num("serial").String() + `,"user_id":` + q(str("user_id")) + `,"device_id":` + q(str("device_id")) +
		`,"public_key":"` + str("public_key") + `","issuer":"` + str("issuer") + `","issued_at":` + num("issued_at").String() +
		`,"expires_at":` + num("expires_at").String() + `}`
	sig, err := hex.DecodeString(str("signature"))
	if err != nil || len(sig) != 64 {
		t.Fatalf("signature %q", str("signature"))
	}
	if !ed25519.Verify(ca, []byte(signed), sig) {
		t.Fatalf("device_certificate does not verify under device_ca_public (signed bytes %s)", signed)
	}
	if str("issuer") != caHex || str("device_id") != id.DeviceID || str("user_id") != m["user_id"] {
		t.Fatalf("certificate %v does not name this device, owner and CA", cert)
	}
	if pub := id.DevicePublic(); str("public_key") != hex.EncodeToString(pub[:]) {
		t.Fatalf("certificate public_key %s", str("public_key"))
	}
	issued, _ := num("issued_at").Int64()
	expires, _ := num("expires_at").Int64()
	if expires-issued != 2592000 {
		t.Fatalf("certificate spans %d s", expires-issued)
	}
	summary, _ := m["certificate"].(map[string]any)
	if summary["serial"] != num("serial") || summary["issued_at"] != num("issued_at") || summary["expires_at"] != num("expires_at") {
		t.Fatalf("certificate summary %v does not match %v", summary, cert)
	}
}

// Item 41: A certificate signed by another key, or expired, gets
// `Authentication Failed`.
func TestItem41BadCertificate(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	ca, err := identity.DeviceCA(s.Config.Crypto.FederationSeed)
	if err != nil {
		t.Fatal(err)
	}
	_, otherCA, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	for _, tc := range []struct {
		name  string
		issue func(userID, deviceID string, pub [32]byte) identity.Certificate
	}{
		{"other-signer", func(u, d string, pub [32]byte) identity.Certificate {
			return identity.IssueCertificate(otherCA, 7, u, d, pub, now)
		}},
		{"expired", func(u, d string, pub [32]byte) identity.Certificate {
			return identity.IssueCertificate(ca, 8, u, d, pub, now-31*24*3600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := newIdentity(t, "cert")
			handle := uniqueHandle("cert")
			c := dial(t, s, id, handle)
			userID := c.UserID()
			c.CloseAbruptly()
			r := openRawHTTP(t, s, true)
			cfg := r.clientConfig(id, "", []int{1, 2}, nil)
			cert := tc.issue(userID, id.DeviceID, id.DevicePublic())
			cfg.Certificate = &cert
			_, hello, err := noiseconn.NewClientHandshake(cfg)
			if err != nil {
				t.Fatal(err)
			}
			r.send(ccp.Hello, 0, 1, hello)
			expectHandshakeError(t, r, 1, ccp.TitleAuthenticationFailed, ccp.ClassHandshake, "crypto failure")
		})
	}
}

// Item 42: Presenting the stored `device_certificate` on the next connect
// returns the same serial.
func TestItem42CertificateReused(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	id := newIdentity(t, "reuse")
	handle := uniqueHandle("reuse")
	c := dial(t, s, id, handle)
	first := c.Ack().Certificate.Serial
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if id.CurrentCertificate() == nil || id.CurrentCertificate().Serial != first {
		t.Fatal("the SDK did not store the certificate")
	}
	c = dial(t, s, id, handle) // presents the stored certificate
	if got := c.Ack().Certificate.Serial; got != first {
		t.Fatalf("serial %d, want the presented %d", got, first)
	}
	if c.Ack().DeviceCertificate != *id.CurrentCertificate() {
		t.Fatal("device_certificate changed")
	}
}

// Item 43: A msg1 payload whose `capabilities` echo differs from the HELLO
// gets `Authentication Failed`.
func TestItem43CapabilitiesEcho(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	r := openRawHTTP(t, s, true)
	id := newIdentity(t, "echo")
	m := manualFor(id, "XK", uniqueHandle("echo"))
	m.members["capabilities"] = []string{"noise", "presence.push"}
	m.msg1Payload = marshal(t, map[string]any{"supported_versions": []int{1, 2}, "capabilities": []string{"noise"}})
	hello, _ := m.build(t, r.info)
	r.send(ccp.Hello, 0, 1, hello)
	expectHandshakeError(t, r, 1, ccp.TitleAuthenticationFailed, ccp.ClassHandshake, "crypto failure")
}

// pqHello returns a manual v2 XK HELLO offering pq.mlkem768 with the given
// msg1 pq_public.
func pqHello(t *testing.T, id *client.Identity, pqPublic string) manualHello {
	m := manualFor(id, "XK", uniqueHandle("pq"))
	caps := []string{"noise", "ccp.v2", "pq.mlkem768"}
	m.members["capabilities"] = caps
	m.msg1Payload = marshal(t, map[string]any{
		"supported_versions": []int{1, 2}, "capabilities": caps,
		"pq_kem": "ML-KEM-768", "pq_public": pqPublic,
	})
	return m
}

// Item 44: A v2 handshake offering `pq.mlkem768` with `pq_kem`
// `"ML-KEM-768"` and a valid `pq_public` returns `pq_ciphertext`, accepts
// `pq.mlkem768`, uses the keys of §5.3, and raises `commucat_security_pq`
// by one.
func TestItem44PQHybrid(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	before := counterValue(t, s, "commucat_security_pq")
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		t.Fatal(err)
	}
	r := openRawHTTP(t, s, true)
	id := newIdentity(t, "pq")
	f, a, plain, hs, _ := manualAuth(t, r, pqHello(t, id, hex.EncodeToString(dk.EncapsulationKey().Bytes())))
	if a.ProtocolVersion != 2 || !slices.Contains(a.AcceptedCapabilities, "pq.mlkem768") {
		t.Fatalf("AUTH %s: want version 2 accepting pq.mlkem768", f.Payload)
	}
	var m2 struct {
		PQCiphertext string `json:"pq_ciphertext"`
	}
	if err := json.Unmarshal(plain, &m2); err != nil {
		t.Fatal(err)
	}
	if len(m2.PQCiphertext) != 2176 {
		t.Fatalf("pq_ciphertext of %d hex characters", len(m2.PQCiphertext))
	}
	ct, err := hex.DecodeString(m2.PQCiphertext)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := dk.Decapsulate(ct)
	if err != nil {
		t.Fatal(err)
	}
	msg3, cs1, cs2, err := hs.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// §5.3: okm = HKDF-SHA256(salt = h, IKM = k_i2r || k_r2i || ss_mlkem,
	// info = "commucat/ccp2/pq-hybrid", L = 64).
	ki, kr := cs1.UnsafeKey(), cs2.UnsafeKey()
	ikm := append(append(append([]byte(nil), ki[:]...), kr[:]...), ss...)
	okm, err := hkdf.Key(sha256.New, ikm, hs.ChannelBinding(), "commucat/ccp2/pq-hybrid", 64)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.seq, r.v2 = 2, true
	copy(r.sendKey[:], okm[:32])
	copy(r.recvKey[:], okm[32:])
	r.mu.Unlock()
	r.send(ccp.Auth, 0, 2, marshal(t, map[string]string{"handshake": hex.EncodeToString(msg3)}))
	r.mu.Lock()
	r.sealing = true
	r.mu.Unlock()
	ack := r.frame(wait)
	if ack.Type != ccp.Ack || ack.Sequence != 2 {
		t.Fatalf("got %v %s, want the handshake ACK", ack, ack.Payload)
	}
	// A record sealed with k_c2s is read, and the answer opens with k_s2c.
	ch := freshChannel()
	seq := r.next(ccp.Join, ch, []byte(`{}`))
	r.expectAck(ch, seq)
	if after := counterValue(t, s, "commucat_security_pq"); after != before+1 {
		t.Fatalf("commucat_security_pq went from %v to %v", before, after)
	}
}

// Item 45: With `pq.mlkem768` offered and `pq_kem` `"ML-KEM-768"`, a
// `pq_public` of the wrong length gets `Authentication Failed`.
func TestItem45PQPublicWrongLength(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		t.Fatal(err)
	}
	short := hex.EncodeToString(dk.EncapsulationKey().Bytes()[:1183])
	r := openRawHTTP(t, s, true)
	hello, _ := pqHello(t, newIdentity(t, "pqbad"), short).build(t, r.info)
	r.send(ccp.Hello, 0, 1, hello)
	expectHandshakeError(t, r, 1, ccp.TitleAuthenticationFailed, ccp.ClassHandshake, "crypto failure")
}

// Item 46: A frame written in the same request-body write as the client's
// final AUTH is processed without further input.
func TestItem46FrameWithFinalAuth(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, tc := range []struct {
		name string
		h2   bool
		v    int
	}{{"h2-v1", true, 1}, {"h2-v2", true, 2}, {"http1-v1", false, 1}, {"http1-v2", false, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := openRawHTTP(t, s, tc.h2)
			ch := freshChannel()
			r.connect(r.clientConfig(newIdentity(t, "same"), uniqueHandle("same"), []int{tc.v}, nil),
				ccp.Frame{Type: ccp.Join, Channel: ch, Sequence: 3, Payload: []byte(`{}`)})
			// Nothing more is written: the JOIN must be answered.
			r.expectAck(ch, 3)
		})
	}
}

// Item 47: A HELLO sent after the handshake gets `Unexpected Frame` and the
// connection stays open.
func TestItem47HelloAfterHandshake(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			c := dial(t, s, newIdentity(t, "again"), uniqueHandle("again"), withVersions(v))
			_, err := c.Request(ctxWait(t), ccp.Hello, 0, []byte(`{}`))
			requestProblem(t, err, ccp.TitleUnexpectedFrame)
			if _, err := c.Join(ctxWait(t), freshChannel(), nil, ""); err != nil {
				t.Fatalf("connection no longer works: %v", err)
			}
		})
	}
}

// TestTLSResumption: the server resumes TLS sessions (session tickets,
// RFC 8446 §2.2), and commucat_tls_handshakes counts full, resumed and
// failed TLS handshakes. The second dial of a client that keeps a TLS
// session cache resumes; bytes that are not a ClientHello count as failed.
func TestTLSResumption(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	const name = metrics.NameTLSHandshakes
	cache := tls.NewLRUClientSessionCache(0)
	withCache := func(o *client.Options) {
		o.Transport = client.HTTP1 // a TLS connection per stream
		o.TLSConfig = o.TLSConfig.Clone()
		o.TLSConfig.ClientSessionCache = cache
	}
	id := newIdentity(t, "resume")
	handle := uniqueHandle("resume")
	// The first dial makes a full TLS handshake (its server-info request;
	// the /connect connection may already resume that session).
	dial(t, s, id, handle, withCache).Close()
	full, resumed := counterSeries(t, s, name, "result", "full"), counterSeries(t, s, name, "result", "resumed")
	if full != 1 {
		t.Fatalf("after the first dial: full %v (want 1), resumed %v", full, resumed)
	}
	// The second dial resumes every connection it opens, and its handshake
	// (Noise and the ACK) completes on a resumed connection.
	dial(t, s, id, handle, withCache).Close()
	if f, r := counterSeries(t, s, name, "result", "full"), counterSeries(t, s, name, "result", "resumed"); f != full || r <= resumed {
		t.Fatalf("second dial: full %v → %v, resumed %v → %v; want only resumed handshakes", full, f, resumed, r)
	}

	if got := counterSeries(t, s, name, "result", "failed"); got != 0 {
		t.Fatalf("failed = %v before any failure", got)
	}
	raw, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = raw.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	_, _ = io.Copy(io.Discard, raw) // the server closes the connection
	raw.Close()
	deadline := time.Now().Add(10 * time.Second)
	for counterSeries(t, s, name, "result", "failed") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("a plaintext request on the TLS port was not counted as a failed TLS handshake")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package httpapi

import (
	"crypto/ed25519"
	"crypto/mlkem"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
)

func TestSecurityStats(t *testing.T) {
	e := newEnv(t, nil)
	wantUnauthorized(t, e.do("GET", "/api/security-stats", "", ""))
	wantUnauthorized(t, e.do("GET", "/api/security-stats", "Bearer wrong-token", ""))
	w := e.do("GET", "/api/security-stats", bearer(e.tok), "")
	okJSON(t, w)
	const zero = `{"average_paths":0,"censorship_deflections":0,"fec_packets":0,"multipath_sessions":0,"noise_handshakes":0,"pq_handshakes":0}`
	if w.Body.String() != zero {
		t.Fatal(w.Body.String())
	}
	m := e.metrics
	m.CensorshipDeflections.Add(3)
	m.SecurityFECPackets.Add(40)
	m.MultipathSessions.Add(2)
	m.MultipathPaths.Add(5)
	m.SecurityNoise.Add(7)
	m.SecurityPQ.Add(4)
	for _, auth := range []string{bearer(e.tok), bearer(adminToken), adminToken, "bearer " + adminToken} {
		w = e.do("GET", "/api/security-stats", auth, "")
		okJSON(t, w)
		if w.Body.String() != `{"average_paths":2.5,"censorship_deflections":3,"fec_packets":40,"multipath_sessions":2,"noise_handshakes":7,"pq_handshakes":4}` {
			t.Fatal(w.Body.String())
		}
	}
	m.MultipathSessions.Add(1)
	m.MultipathPaths.Add(1)
	if w = e.do("GET", "/api/security-stats", bearer(e.tok), ""); !strings.HasPrefix(w.Body.String(), `{"average_paths":2,`) {
		t.Fatal(w.Body.String())
	}
	m.MultipathSessions.Add(3)
	m.MultipathPaths.Add(1) // 7/6
	if w = e.do("GET", "/api/security-stats", bearer(e.tok), ""); !strings.HasPrefix(w.Body.String(), `{"average_paths":1.1666666666666667,`) {
		t.Fatal(w.Body.String())
	}
	// A revoked device's token: 403.
	dev := e.mkDevice(e.user.ID, "dev-b", nil)
	tok := e.mkSession(e.user.ID, dev.ID)
	okJSON(t, e.do("POST", "/api/devices/revoke", bearer(e.tok), `{"device_id":"dev-b"}`))
	wantForbidden(t, e.do("GET", "/api/security-stats", bearer(tok), ""))
	// Expired session: 401.
	e.clock.Advance(2 * time.Hour)
	wantUnauthorized(t, e.do("GET", "/api/security-stats", bearer(e.tok), ""))
	okJSON(t, e.do("GET", "/api/security-stats", bearer(adminToken), ""))
}

func TestP2PAssistDefaults(t *testing.T) {
	for _, body := range []string{
		`{"peer_hint":null,"paths":null,"prefer_reality":null,"fec":null,"min_paths":null}`,
		``,
		`{}`,
		`{"paths":[],"fec":{"mtu":null,"repair_overhead":null}}`,
	} {
		e := newEnv(t, nil)
		w := e.do("POST", "/api/p2p/assist", bearer(e.tok), body)
		m := okJSON(t, w)
		wantMembers(t, m, "multipath", "noise", "obfuscation", "pq", "security", "transports")
		newest := e.keys[0]
		newestHex := hex.EncodeToString(newest.Public[:])
		caHex := hex.EncodeToString(e.ca.Public().(ed25519.PublicKey))

		noise := m["noise"].(map[string]any)
		wantMembers(t, noise, "device_seed_hex", "key_version", "pattern", "prologue_hex", "static_public_hex")
		if noise["static_public_hex"] != newestHex || noise["key_version"].(interface{ String() string }).String() != "3" ||
			noise["pattern"] != "Xk" || noise["prologue_hex"] != hex.EncodeToString([]byte("commucat")) || len(noise["device_seed_hex"].(string)) != 64 {
			t.Fatalf("noise %v", noise)
		}

		pq := m["pq"].(map[string]any)
		wantMembers(t, pq, "identity_public_hex", "kem_public_hex", "signature_hex", "signature_public_hex", "signed_prekey_public_hex")
		kemHex := pq["kem_public_hex"].(string)
		if len(kemHex) != 2368 || pq["identity_public_hex"] != caHex || pq["signature_public_hex"] != caHex || pq["signed_prekey_public_hex"] != newestHex {
			t.Fatalf("pq %v", pq)
		}
		dk, _ := mlkem.NewDecapsulationKey768(newest.KEMSeed[:])
		if kemHex != hex.EncodeToString(dk.EncapsulationKey().Bytes()) {
			t.Fatal("kem_public_hex is not the newest key's encapsulation key")
		}
		kem, _ := hex.DecodeString(kemHex)
		sig, _ := hex.DecodeString(pq["signature_hex"].(string))
		if !ed25519.Verify(e.ca.Public().(ed25519.PublicKey), identity.PQBundleMessage(newest.Public, kem), sig) {
			t.Fatal("signature_hex does not verify")
		}
		// The key encapsulates.
		if ek, err := mlkem.NewEncapsulationKey768(kem); err != nil {
			t.Fatal(err)
		} else if ss, ct := ek.Encapsulate(); len(ct) != 1088 || len(ss) != 32 {
			t.Fatal("encapsulate")
		}

		mp := m["multipath"].(map[string]any)
		if mp["primary_path"] != "primary" {
			t.Fatalf("multipath %v", mp)
		}
		v, _ := canonjson.Parse(w.Body.Bytes())
		mpv, _ := v.Get("multipath")
		if got := string(mpv.Canonical()); got != `{"fec_mtu":1200,"fec_overhead":0.25,"primary_path":"primary","sample_segments":{"backup":{"repair":14,"total":69},"primary":{"repair":14,"total":69}}}` {
			t.Fatalf("multipath %s", got)
		}
		tv, _ := v.Get("transports")
		wantT := `[{"latency":"Medium","path_id":"primary","resistance":"Basic","throughput":"High","transport":"Http2"},` +
			`{"latency":"Medium","path_id":"primary","resistance":"Basic","throughput":"High","transport":"Http1"},` +
			`{"latency":"Medium","path_id":"primary","resistance":"Basic","throughput":"Medium","transport":"WebSocket"},` +
			`{"latency":"Medium","path_id":"backup","resistance":"Basic","throughput":"High","transport":"Http2"},` +
			`{"latency":"Medium","path_id":"backup","resistance":"Basic","throughput":"High","transport":"Http1"},` +
			`{"latency":"Medium","path_id":"backup","resistance":"Basic","throughput":"Medium","transport":"WebSocket"}]`
		if got := string(tv.Canonical()); got != wantT {
			t.Fatalf("transports %s", got)
		}
		ov, _ := v.Get("obfuscation")
		if got := string(ov.Canonical()); got != `{"domain_fronting":false,"protocol_mimicry":false,"reality_fingerprint_hex":null,"tor_bridge":false}` {
			t.Fatalf("obfuscation %s", got)
		}
		sv, _ := v.Get("security")
		if got := string(sv.Canonical()); got != `{"pq_kem":"ML-KEM-768","protocol_versions":[1,2],"require_encrypted_frames":false,"tls_min_version":"1.3"}` {
			t.Fatalf("security %s", got)
		}
		if counter(e.metrics.MultipathSessions) != 1 || counter(e.metrics.MultipathPaths) != 2 || counter(e.metrics.CensorshipDeflections) != 0 {
			t.Fatal("counters")
		}
	}
}

func TestP2PAssistPaths(t *testing.T) {
	fp1 := strings.Repeat("AB", 32)
	fp2 := strings.Repeat("cd", 32)
	e := newEnv(t, func(d *Deps) {
		d.WebSocket = false
		d.RealityCert = "/etc/reality.pem"
		d.Versions = []int{2}
		d.RequireEncryptedFrames = true
	})
	e.rtt["http2"] = 99 * time.Millisecond
	e.rtt["http1"] = 300 * time.Millisecond
	body := `{"prefer_reality":true,"min_paths":8,"fec":{"mtu":256,"repair_overhead":0.10},"paths":[` +
		`{"address":"a.example","priority":5},` +
		`{"address":"b.example","id":"bee","port":8443,"server_name":"sni","priority":-3,"reality_fingerprint":"` + fp1 + `"},` +
		`{"address":"c.example","priority":5,"reality_fingerprint":"` + fp2 + `","reality_pem":"PEM"},` +
		`{"address":"d.example"}]}`
	w := e.do("POST", "/api/p2p/assist", bearer(e.tok), body)
	okJSON(t, w)
	v, _ := canonjson.Parse(w.Body.Bytes())
	tv, _ := v.Get("transports")
	var b strings.Builder
	for _, id := range []string{"bee", "path-1", "path-3", "path-4"} {
		b.WriteString(`{"latency":"Low","path_id":"` + id + `","resistance":"Basic","throughput":"High","transport":"Http2"},`)
		b.WriteString(`{"latency":"High","path_id":"` + id + `","resistance":"Basic","throughput":"High","transport":"Http1"},`)
	}
	if got, want := string(tv.Canonical()), "["+strings.TrimSuffix(b.String(), ",")+"]"; got != want {
		t.Fatalf("transports\n%s\nwant\n%s", got, want)
	}
	mpv, _ := v.Get("multipath")
	// 256-byte MTU: 256 source segments, ⌈256 × 0.1⌉ = 26 repair.
	seg := `{"repair":26,"total":282}`
	if got := string(mpv.Canonical()); got != `{"fec_mtu":256,"fec_overhead":0.1,"primary_path":"bee","sample_segments":{"bee":`+seg+`,"path-1":`+seg+`,"path-3":`+seg+`,"path-4":`+seg+`}}` {
		t.Fatalf("multipath %s", got)
	}
	ov, _ := v.Get("obfuscation")
	if got := string(ov.Canonical()); got != `{"domain_fronting":false,"protocol_mimicry":false,"reality_fingerprint_hex":"`+strings.ToLower(fp1)+`","tor_bridge":false}` {
		t.Fatalf("obfuscation %s", got)
	}
	sv, _ := v.Get("security")
	if got := string(sv.Canonical()); got != `{"pq_kem":"ML-KEM-768","protocol_versions":[2],"require_encrypted_frames":true,"tls_min_version":"1.3"}` {
		t.Fatalf("security %s", got)
	}
	if counter(e.metrics.MultipathSessions) != 1 || counter(e.metrics.MultipathPaths) != 4 || counter(e.metrics.CensorshipDeflections) != 1 {
		t.Fatal("counters")
	}

	// One path: no multipath session; the configured fingerprint is
	// advertised; prefer_reality counts it.
	fp := [32]byte{1, 2, 3}
	e2 := newEnv(t, func(d *Deps) { d.RealityCert = "/x.pem"; d.RealityFingerprint = &fp })
	e2.rtt["websocket"] = 5 * time.Second
	w = e2.do("POST", "/api/p2p/assist", bearer(e2.tok), `{"paths":[{"address":"x","id":"only","port":1}],"prefer_reality":true,"fec":{"mtu":65535,"repair_overhead":1}}`)
	okJSON(t, w)
	v, _ = canonjson.Parse(w.Body.Bytes())
	mpv, _ = v.Get("multipath")
	if got := string(mpv.Canonical()); got != `{"fec_mtu":65535,"fec_overhead":1,"primary_path":"only","sample_segments":{"only":{"repair":2,"total":4}}}` {
		t.Fatalf("multipath %s", got)
	}
	tv, _ = v.Get("transports")
	if !strings.Contains(string(tv.Canonical()), `{"latency":"High","path_id":"only","resistance":"Basic","throughput":"Medium","transport":"WebSocket"}`) {
		t.Fatal(string(tv.Canonical()))
	}
	ov, _ = v.Get("obfuscation")
	if r, _ := ov.Get("reality_fingerprint_hex"); r.Str != hex.EncodeToString(fp[:]) {
		t.Fatal(string(ov.Canonical()))
	}
	if counter(e2.metrics.MultipathSessions) != 0 || counter(e2.metrics.MultipathPaths) != 1 || counter(e2.metrics.CensorshipDeflections) != 1 {
		t.Fatal("counters")
	}
	// Without prefer_reality, no deflection.
	okJSON(t, e2.do("POST", "/api/p2p/assist", bearer(e2.tok), `{}`))
	if counter(e2.metrics.CensorshipDeflections) != 1 || counter(e2.metrics.MultipathSessions) != 1 || counter(e2.metrics.MultipathPaths) != 3 {
		t.Fatal("counters")
	}
	// Peer hint for the backup: accepted, not echoed.
	okJSON(t, e2.do("POST", "/api/p2p/assist", bearer(e2.tok), `{"peer_hint":"peer.example"}`))
	// Small overheads echo in the shortest round-trip form.
	for in, out := range map[string]string{"0.000001": "0.000001", "1e-7": "1e-7", "0.3333333333333333333": "0.3333333333333333", "0": "0", "-0": "0", "0.5e0": "0.5"} {
		w = e2.do("POST", "/api/p2p/assist", bearer(e2.tok), `{"fec":{"repair_overhead":`+in+`}}`)
		okJSON(t, w)
		if !strings.Contains(w.Body.String(), `"fec_overhead":`+out+`,`) {
			t.Fatalf("%s: %s", in, w.Body.String())
		}
	}
}

func TestP2PAssistErrors(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	cases := []struct{ name, body, detail string }{
		{"paths not an array", `{"paths":{}}`, "invalid JSON payload"},
		{"path not an object", `{"paths":["a"]}`, "invalid JSON payload"},
		{"peer_hint not a string", `{"peer_hint":1}`, "invalid JSON payload"},
		{"prefer_reality not a bool", `{"prefer_reality":"yes"}`, "invalid JSON payload"},
		{"id not a string", `{"paths":[{"address":"a","id":1}]}`, "invalid JSON payload"},
		{"server_name not a string", `{"paths":[{"address":"a","server_name":[]}]}`, "invalid JSON payload"},
		{"reality_pem not a string", `{"paths":[{"address":"a","reality_pem":false}]}`, "invalid JSON payload"},
		{"address missing", `{"paths":[{"port":443}]}`, "path address is required"},
		{"address null", `{"paths":[{"address":null}]}`, "path address is required"},
		{"address blank", `{"paths":[{"address":" "}]}`, "path address is required"},
		{"address not a string", `{"paths":[{"address":5}]}`, "path address is required"},
		{"second address missing", `{"paths":[{"address":"a"},{}]}`, "path address is required"},
		{"port 0", `{"paths":[{"address":"a","port":0}]}`, "invalid port"},
		{"port 65536", `{"paths":[{"address":"a","port":65536}]}`, "invalid port"},
		{"port negative", `{"paths":[{"address":"a","port":-1}]}`, "invalid port"},
		{"port string", `{"paths":[{"address":"a","port":"443"}]}`, "invalid port"},
		{"port fraction", `{"paths":[{"address":"a","port":443.5}]}`, "invalid port"},
		{"priority fraction", `{"paths":[{"address":"a","priority":1.5}]}`, "invalid priority"},
		{"priority string", `{"paths":[{"address":"a","priority":"1"}]}`, "invalid priority"},
		{"priority huge", `{"paths":[{"address":"a","priority":99999999999999999999}]}`, "invalid priority"},
		{"priority bool", `{"paths":[{"address":"a","priority":true}]}`, "invalid priority"},
		{"duplicate explicit ids", `{"paths":[{"address":"a","id":"x"},{"address":"b","id":"x"}]}`, "duplicate path id"},
		{"explicit id equals a default", `{"paths":[{"address":"a","id":"path-2"},{"address":"b"}]}`, "duplicate path id"},
		{"default id equals a later explicit", `{"paths":[{"address":"a"},{"address":"b","id":"path-1"}]}`, "duplicate path id"},
		{"min_paths 0", `{"min_paths":0}`, "invalid min_paths"},
		{"min_paths 9", `{"min_paths":9}`, "invalid min_paths"},
		{"min_paths string", `{"min_paths":"2"}`, "invalid min_paths"},
		{"min_paths fraction", `{"min_paths":2.5}`, "invalid min_paths"},
		{"fingerprint short", `{"paths":[{"address":"a","reality_fingerprint":"abcd","reality_pem":"p"}]}`, "invalid reality fingerprint"},
		{"fingerprint not hex", `{"paths":[{"address":"a","reality_fingerprint":"` + strings.Repeat("zz", 32) + `","reality_pem":"p"}]}`, "invalid reality fingerprint"},
		{"fingerprint number", `{"paths":[{"address":"a","reality_fingerprint":1}]}`, "invalid reality fingerprint"},
		{"fingerprint without pem", `{"paths":[{"address":"a","reality_fingerprint":"` + fp + `"}]}`, "reality certificate missing"},
		{"fingerprint with blank pem", `{"paths":[{"address":"a","reality_fingerprint":"` + fp + `","reality_pem":""}]}`, "reality certificate missing"},
		{"fec not an object", `{"fec":5}`, "invalid fec parameters"},
		{"mtu 255", `{"fec":{"mtu":255}}`, "invalid fec parameters"},
		{"mtu 65536", `{"fec":{"mtu":65536}}`, "invalid fec parameters"},
		{"mtu fraction", `{"fec":{"mtu":1200.5}}`, "invalid fec parameters"},
		{"overhead negative", `{"fec":{"repair_overhead":-0.1}}`, "invalid fec parameters"},
		{"overhead above 1", `{"fec":{"repair_overhead":1.0000001}}`, "invalid fec parameters"},
		{"overhead string", `{"fec":{"repair_overhead":"0.2"}}`, "invalid fec parameters"},
		{"overhead huge", `{"fec":{"repair_overhead":1e999}}`, "invalid fec parameters"},
		// Order: the listed details are checked in the order of §8.4.8.
		{"address before port", `{"paths":[{"address":"a","port":0},{"port":1}]}`, "path address is required"},
		{"port before priority", `{"paths":[{"address":"a","priority":"x"},{"address":"b","port":0}]}`, "invalid port"},
		{"priority before duplicate", `{"paths":[{"address":"a","id":"x"},{"address":"b","id":"x","priority":1.5}]}`, "invalid priority"},
		{"duplicate before min_paths", `{"min_paths":0,"paths":[{"address":"a","id":"x"},{"address":"b","id":"x"}]}`, "duplicate path id"},
		{"min_paths before fingerprint", `{"min_paths":0,"paths":[{"address":"a","reality_fingerprint":"x"}]}`, "invalid min_paths"},
		{"fingerprint before missing cert", `{"paths":[{"address":"a","reality_fingerprint":"` + fp + `"},{"address":"b","reality_fingerprint":"x"}]}`, "invalid reality fingerprint"},
		{"missing cert before fec", `{"fec":{"mtu":1},"paths":[{"address":"a","reality_fingerprint":"` + fp + `"}]}`, "reality certificate missing"},
		{"type errors first", `{"fec":{"mtu":1},"peer_hint":2}`, "invalid JSON payload"},
	}
	e := newEnv(t, nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantBadRequest(t, e.do("POST", "/api/p2p/assist", bearer(e.tok), c.body), c.detail)
		})
	}
	if counter(e.metrics.MultipathPaths) != 0 || counter(e.metrics.MultipathSessions) != 0 {
		t.Fatal("counters moved on errors")
	}
	// With transport.reality_cert set, a path fingerprint needs no PEM.
	e2 := newEnv(t, func(d *Deps) { d.RealityCert = "/r.pem"; fpv := [32]byte{9}; d.RealityFingerprint = &fpv })
	okJSON(t, e2.do("POST", "/api/p2p/assist", bearer(e2.tok), `{"paths":[{"address":"a","reality_fingerprint":"`+fp+`"}]}`))
	wantUnauthorized(t, e.do("POST", "/api/p2p/assist", "", `{}`))
}

func TestLatencyBucket(t *testing.T) {
	cases := []struct {
		d    time.Duration
		ok   bool
		want string
	}{
		{0, false, "Medium"}, {time.Hour, false, "Medium"}, {0, true, "Low"}, {99 * time.Millisecond, true, "Low"},
		{100 * time.Millisecond, true, "Medium"}, {299 * time.Millisecond, true, "Medium"}, {300 * time.Millisecond, true, "High"},
	}
	for _, c := range cases {
		if got := latencyBucket(c.d, c.ok); got != c.want {
			t.Errorf("%v %v: %s", c.d, c.ok, got)
		}
	}
}

func TestBundleCacheFollowsNewestKey(t *testing.T) {
	e := newEnv(t, nil)
	first := okJSON(t, e.do("POST", "/api/p2p/assist", bearer(e.tok), ""))["pq"].(map[string]any)
	// Rotation: a new newest key.
	k := e.keys[0]
	k.Version = 4
	k.Public[0] ^= 0xff
	k.KEMSeed[0] ^= 0xff
	e.mu.Lock()
	e.keys = append(e.keys[:0:0], k, e.keys[0])
	e.mu.Unlock()
	m := okJSON(t, e.do("POST", "/api/p2p/assist", bearer(e.tok), ""))
	pq := m["pq"].(map[string]any)
	if pq["kem_public_hex"] == first["kem_public_hex"] || pq["signed_prekey_public_hex"] != hex.EncodeToString(k.Public[:]) ||
		m["noise"].(map[string]any)["static_public_hex"] != hex.EncodeToString(k.Public[:]) {
		t.Fatal("stale bundle")
	}
}

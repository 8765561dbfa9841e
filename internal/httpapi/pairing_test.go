package httpapi

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/store"
)

var pairCodeRE = regexp.MustCompile(`^[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{4}-[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{4}$`)

func TestPair(t *testing.T) {
	cases := []struct {
		name    string
		cfg     time.Duration
		body    string
		wantTTL int64
	}{
		{"default", 300 * time.Second, "", 300},
		{"empty object", 300 * time.Second, "{}", 300},
		{"null ttl", 300 * time.Second, `{"ttl":null}`, 300},
		{"shorter", 300 * time.Second, `{"ttl":100}`, 100},
		{"clamped up", 300 * time.Second, `{"ttl":1}`, 60},
		{"configured wins", 300 * time.Second, `{"ttl":1000}`, 300},
		{"huge", 3600 * time.Second, `{"ttl":99999999999999999999999}`, 3600},
		{"max", 3600 * time.Second, `{"ttl":5000}`, 3600},
		{"unknown members", 300 * time.Second, `{"ttl":120,"x":[1,{"y":null}]}`, 120},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(d *Deps) { d.PairingTTL = c.cfg })
			m := okJSON(t, e.do("POST", "/api/pair", bearer(e.tok), c.body))
			code, _ := m["pair_code"].(string)
			if !pairCodeRE.MatchString(code) {
				t.Fatalf("code %q", code)
			}
			if ttl, _ := m["ttl"].(interface{ Int64() (int64, error) }).Int64(); ttl != c.wantTTL {
				t.Fatalf("ttl %d, want %d", ttl, c.wantTTL)
			}
			issued, err := canonjson.ParseTime(m["issued_at"].(string))
			if err != nil || !issued.Equal(t0) || m["issued_at"] != "2025-01-01T00:00:00+00:00" {
				t.Fatalf("issued_at %v", m["issued_at"])
			}
			expires, _ := canonjson.ParseTime(m["expires_at"].(string))
			if expires.Sub(issued) != time.Duration(c.wantTTL)*time.Second {
				t.Fatalf("expires_at %v", m["expires_at"])
			}
			if m["issuer_device_id"] != e.dev.ID || m["device_ca_public"] != hex.EncodeToString(e.ca.Public().(ed25519.PublicKey)) {
				t.Fatalf("%v", m)
			}
			if s, _ := m["device_seed"].(string); len(s) != 64 {
				t.Fatalf("device_seed %q", s)
			}
			p, err := e.st.GetPairingCode(t.Context(), code)
			if err != nil || p.UserID != e.user.ID || p.IssuerDeviceID != e.dev.ID || !p.ExpiresAt.Equal(expires) || p.Attempts != 0 || p.RedeemedAt != nil {
				t.Fatalf("stored %+v %v", p, err)
			}
		})
	}
	e := newEnv(t, nil)
	for _, b := range []string{`{"ttl":0}`, `{"ttl":-1}`, `{"ttl":-99999999999999999999999}`} {
		wantBadRequest(t, e.do("POST", "/api/pair", bearer(e.tok), b), "ttl must be positive")
	}
	for _, b := range []string{`{"ttl":"60"}`, `{"ttl":60.5}`, `{"ttl":1e2}`, `{"ttl":true}`, `{"ttl":[60]}`} {
		wantBadRequest(t, e.do("POST", "/api/pair", bearer(e.tok), b), "invalid JSON payload")
	}
	wantUnauthorized(t, e.do("POST", "/api/pair", "", ""))
}

// zeroReader always reads zero bytes: every code is AAAA-AAAA.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestPairUniqueness(t *testing.T) {
	e := newEnv(t, func(d *Deps) { d.Rand = zeroReader{} })
	m := okJSON(t, e.do("POST", "/api/pair", bearer(e.tok), ""))
	if m["pair_code"] != "AAAA-AAAA" {
		t.Fatalf("%v", m["pair_code"])
	}
	wantProblem(t, e.do("POST", "/api/pair", bearer(e.tok), ""), 500, "InternalError", "internal server error")
}

func TestNewPairCodeRejectionSampling(t *testing.T) {
	// 248..255 are rejected; b % 31 indexes the alphabet.
	in := []byte{255, 248, 0, 1, 30, 31, 249, 247, 62, 250, 93, 124, 251, 252, 253, 254}
	code, err := newPairCode(bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if code != "AB9A-9AAA" {
		t.Fatalf("code %q", code)
	}
	// Uniformity over many draws: every symbol appears, nothing else.
	seen := map[rune]int{}
	r := bytes.NewReader(bytes.Repeat([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 200, 248, 255}, 64))
	for range 100 {
		c, err := newPairCode(r)
		if err != nil {
			break
		}
		if !pairCodeRE.MatchString(c) {
			t.Fatalf("code %q", c)
		}
		for _, ch := range strings.ReplaceAll(c, "-", "") {
			seen[ch]++
		}
	}
	if len(seen) != 31 {
		t.Fatalf("%d symbols", len(seen))
	}
}

// vectorKey is the device key of §4.7: from_seed(0x20..0x3f).
func vectorKey(t testing.TB) ed25519.PrivateKey {
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = 0x20 + byte(i)
	}
	k, err := identity.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (e *env) mkCode(code string, expires time.Time, attempts int) {
	e.t.Helper()
	if err := e.st.CreatePairingCode(e.t.Context(), store.PairingCode{
		Code: code, UserID: e.user.ID, IssuerDeviceID: e.dev.ID, IssuedAt: t0, ExpiresAt: expires, Attempts: attempts,
	}); err != nil {
		e.t.Fatal(err)
	}
}

func claimBody(t testing.TB, code string, key ed25519.PrivateKey, name *string) string {
	pub := identity.PublicKey32(key)
	sig := ed25519.Sign(key, identity.PairClaimMessage(NormalizePairCode(code), pub))
	m := map[string]any{"pair_code": code, "device_public": hex.EncodeToString(pub[:]), "signature": hex.EncodeToString(sig)}
	if name != nil {
		m["device_name"] = *name
	}
	return mustJSON(t, m)
}

func TestPairClaimVector(t *testing.T) {
	e := newEnv(t, nil)
	key := vectorKey(t)
	pub := identity.PublicKey32(key)
	if hex.EncodeToString(pub[:]) != "4edf7c43ea7810633a5ce4f6d1ace00f94ec937ab75c56bf9675f48c112895d2" {
		t.Fatalf("device_public %x", pub)
	}
	msg := identity.PairClaimMessage("ABCD-EF23", pub)
	if hex.EncodeToString(msg) != "636f6d6d756361743a706169722d636c61696d3a763100414243442d454632334edf7c43ea7810633a5ce4f6d1ace00f94ec937ab75c56bf9675f48c112895d2" {
		t.Fatalf("M %x", msg)
	}
	sig := ed25519.Sign(key, msg)
	const wantSig = "f01638cab9dabf9f78c3bee4ccd16f1e86b2a360c1ec828aa48effefcba9f349f5a5a2fcd572f2db8a88180433144e6d1c3e6fef647d225fdb28cc70dd877e0e"
	if hex.EncodeToString(sig) != wantSig {
		t.Fatalf("signature %x", sig)
	}

	e.mkCode("ABCD-EF23", t0.Add(5*time.Minute), 0)
	e.clock.Advance(10 * time.Second)
	// Lower case, surrounding blanks and upper-case hex are accepted.
	body := `{"pair_code":"  abcd-ef23 ","device_public":"` + strings.ToUpper(hex.EncodeToString(pub[:])) +
		`","signature":"` + wantSig + `","device_name":"Laptop"}`
	w := e.do("POST", "/api/pair/claim", "", body)
	m := okJSON(t, w)
	devID, _ := m["device_id"].(string)
	if len(devID) != 64 || strings.ToLower(devID) != devID {
		t.Fatalf("device_id %q", devID)
	}
	if _, err := hex.DecodeString(devID); err != nil {
		t.Fatal(err)
	}
	if m["public_key"] != hex.EncodeToString(pub[:]) || m["device_name"] != "Laptop" || m["user_id"] != e.user.ID ||
		m["issuer_device_id"] != e.dev.ID || m["device_ca_public"] != hex.EncodeToString(e.ca.Public().(ed25519.PublicKey)) {
		t.Fatalf("%v", m)
	}
	for _, k := range []string{"private_key", "seed"} {
		if _, ok := m[k]; ok {
			t.Fatalf("%s present", k)
		}
	}
	user := m["user"].(map[string]any)
	if user["id"] != e.user.ID || user["user_id"] != e.user.ID || user["handle"] != "alice" || user["display_name"] != nil {
		t.Fatalf("user %v", user)
	}
	wantMembers(t, m, "device_ca_public", "device_certificate", "device_id", "device_name", "issuer_device_id", "public_key", "user", "user_id")

	// The certificate verifies and spans 30 days.
	v, _ := canonjson.Parse(w.Body.Bytes())
	cv, _ := v.Get("device_certificate")
	cert, err := identity.ParseCertificate(cv.Canonical())
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	if err := cert.Verify(identity.PublicKey32(e.ca), devID, e.user.ID, now.Unix()); err != nil {
		t.Fatal(err)
	}
	if cert.IssuedAt != now.Unix() || cert.ExpiresAt-cert.IssuedAt != 2592000 || cert.PublicKey != pub {
		t.Fatalf("%+v", cert)
	}

	// Storage: device, code, key event.
	ctx := t.Context()
	d, err := e.st.GetDevice(ctx, devID)
	if err != nil || d.Status != store.DeviceActive || d.UserID != e.user.ID || d.PublicKey != pub || d.Name == nil || *d.Name != "Laptop" {
		t.Fatalf("device %+v %v", d, err)
	}
	p, _ := e.st.GetPairingCode(ctx, "ABCD-EF23")
	if p.RedeemedAt == nil || !p.RedeemedAt.Equal(now) || p.RedeemedDeviceID == nil || *p.RedeemedDeviceID != devID || p.PublicKey == nil || *p.PublicKey != pub || p.Attempts != 1 {
		t.Fatalf("code %+v", p)
	}
	ev, err := e.st.LatestKeyEvent(ctx, devID, []string{store.KeyRegister, store.KeyRotate, store.KeyPair, store.KeyCertificate, store.KeyRevoke})
	if err != nil || ev.Action != store.KeyPair || ev.PublicKey != pub || !ev.RecordedAt.Equal(now) || len(ev.ID) != 64 {
		t.Fatalf("event %+v %v", ev, err)
	}
	// Ledger record.
	recs := e.ledger.all()
	if len(recs) != 1 || recs[0].digest != pub {
		t.Fatalf("ledger %+v", recs)
	}
	wantMeta := `{"action":"pair","certificate_expires_at":` + itoa(int(cert.ExpiresAt)) + `,"certificate_issued_at":` + itoa(int(cert.IssuedAt)) +
		`,"certificate_serial":` + string(canonjson.AppendUint(nil, cert.Serial)) + `,"device":"` + devID + `","source":"pair-claim","user":"` + e.user.ID + `"}`
	if recs[0].meta != wantMeta {
		t.Fatalf("ledger metadata %s\nwant %s", recs[0].meta, wantMeta)
	}
	// The device shows up in GET /api/devices.
	devs := okJSON(t, e.do("GET", "/api/devices", bearer(e.tok), ""))["devices"].([]any)
	if len(devs) != 2 || devs[1].(map[string]any)["device_id"] != devID {
		t.Fatalf("%v", devs)
	}
	// A second claim of the same code: redeemed.
	wantBadRequest(t, e.do("POST", "/api/pair/claim", "", body), "pairing code invalid or expired")
	if p, _ := e.st.GetPairingCode(ctx, "ABCD-EF23"); p.Attempts != 2 {
		t.Fatalf("attempts %d", p.Attempts)
	}
}

func wantMembers(t testing.TB, m map[string]any, keys ...string) {
	t.Helper()
	if len(m) != len(keys) {
		t.Fatalf("members %v, want %v", m, keys)
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Fatalf("member %s missing in %v", k, m)
		}
	}
}

func TestPairClaimErrors(t *testing.T) {
	key := vectorKey(t)
	pub := identity.PublicKey32(key)
	pubHex := hex.EncodeToString(pub[:])
	goodSig := hex.EncodeToString(ed25519.Sign(key, identity.PairClaimMessage("ABCD-EF23", pub)))
	otherSig := hex.EncodeToString(ed25519.Sign(key, identity.PairClaimMessage("ABCD-EF24", pub)))
	identityPoint := "01" + strings.Repeat("00", 31)
	notPoint := "02" + strings.Repeat("00", 31) // y = 2 is not on the curve
	// The identity point with a non-canonical y (p + 1).
	nonCanonical := "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"
	long := strings.Repeat("é", 65)

	type tc struct {
		name         string
		body         string
		noServerKeys bool
		status       int
		detail       string
		attempts     int // attempts of ABCD-EF23 afterwards
	}
	cases := []tc{
		{"missing code", `{}`, false, 400, "pair_code is required", 0},
		{"null code", `{"pair_code":null}`, false, 400, "pair_code is required", 0},
		{"blank code", `{"pair_code":" \t "}`, false, 400, "pair_code is required", 0},
		{"code not a string", `{"pair_code":12345678}`, false, 400, "invalid JSON payload", 0},
		{"device_name too long", `{"pair_code":"ABCD-EF23","device_name":"` + long + `"}`, false, 400, "device_name too long", 0},
		{"device_name not a string", `{"pair_code":"ABCD-EF23","device_name":5}`, false, 400, "invalid JSON payload", 0},
		{"unknown code", `{"pair_code":"ZZZZ-ZZZZ"}`, false, 404, "resource not found", 0},
		{"signature missing", `{"pair_code":"ABCD-EF23","device_public":"` + pubHex + `"}`, false, 400, "signature is required", 0},
		{"signature null", `{"pair_code":"ABCD-EF23","device_public":"` + pubHex + `","signature":null}`, false, 400, "signature is required", 0},
		{"device_public bad hex", `{"pair_code":"ABCD-EF23","device_public":"zz","signature":"` + goodSig + `"}`, false, 400, "invalid device_public", 0},
		{"device_public short", `{"pair_code":"ABCD-EF23","device_public":"` + pubHex[:62] + `","signature":"` + goodSig + `"}`, false, 400, "invalid device_public", 0},
		{"device_public not a string", `{"pair_code":"ABCD-EF23","device_public":1,"signature":"` + goodSig + `"}`, false, 400, "invalid device_public", 0},
		{"device_public not a point", `{"pair_code":"ABCD-EF23","device_public":"` + notPoint + `","signature":"` + goodSig + `"}`, false, 400, "invalid device_public", 0},
		{"device_public small order", `{"pair_code":"ABCD-EF23","device_public":"` + identityPoint + `","signature":"` + goodSig + `"}`, false, 400, "invalid device_public", 0},
		{"device_public non-canonical", `{"pair_code":"ABCD-EF23","device_public":"` + nonCanonical + `","signature":"` + goodSig + `"}`, false, 400, "invalid device_public", 0},
		{"wrong signature", `{"pair_code":"ABCD-EF23","device_public":"` + pubHex + `","signature":"` + otherSig + `"}`, false, 400, "invalid signature", 1},
		{"malformed signature", `{"pair_code":"ABCD-EF23","device_public":"` + pubHex + `","signature":"abcd"}`, false, 400, "invalid signature", 1},
		{"signature not a string", `{"pair_code":"ABCD-EF23","device_public":"` + pubHex + `","signature":7}`, false, 400, "invalid signature", 1},
		{"legacy disabled", `{"pair_code":"ABCD-EF23"}`, true, 400, "device_public is required", 0},
		{"legacy disabled, signature only", `{"pair_code":"ABCD-EF23","signature":"` + goodSig + `"}`, true, 400, "device_public is required", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(d *Deps) { d.AllowServerKeys = !c.noServerKeys })
			e.mkCode("ABCD-EF23", t0.Add(5*time.Minute), 0)
			w := e.do("POST", "/api/pair/claim", "", c.body)
			titles := map[int]string{400: "BadRequest", 404: "NotFound"}
			wantProblem(t, w, c.status, titles[c.status], c.detail)
			p, _ := e.st.GetPairingCode(t.Context(), "ABCD-EF23")
			if p.Attempts != c.attempts || p.RedeemedAt != nil {
				t.Fatalf("attempts %d, want %d", p.Attempts, c.attempts)
			}
		})
	}

	// device_name of exactly 64 characters (128 bytes) is accepted.
	e := newEnv(t, nil)
	e.mkCode("ABCD-EF23", t0.Add(5*time.Minute), 0)
	name := strings.Repeat("é", 64)
	m := okJSON(t, e.do("POST", "/api/pair/claim", "", claimBody(t, "ABCD-EF23", key, &name)))
	if m["device_name"] != name {
		t.Fatal(m["device_name"])
	}
}

func TestPairClaimDeadCodes(t *testing.T) {
	key := vectorKey(t)
	cases := []struct {
		name     string
		expires  time.Duration
		attempts int
	}{
		{"expired", 0, 0},
		{"expired long ago", -time.Hour, 0},
		{"five attempts", 5 * time.Minute, 5},
		{"nine attempts", 5 * time.Minute, 9},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.mkCode("ABCD-EF23", t0.Add(c.expires), c.attempts)
			// Both a correct signed claim and a legacy claim are refused.
			wantBadRequest(t, e.do("POST", "/api/pair/claim", "", claimBody(t, "ABCD-EF23", key, nil)), "pairing code invalid or expired")
			wantBadRequest(t, e.do("POST", "/api/pair/claim", "", `{"pair_code":"ABCD-EF23"}`), "pairing code invalid or expired")
			p, _ := e.st.GetPairingCode(t.Context(), "ABCD-EF23")
			if p.Attempts != c.attempts+2 {
				t.Fatalf("attempts %d", p.Attempts)
			}
		})
	}
	// Expiry with the clock: valid one second before, dead at expires_at.
	e := newEnv(t, nil)
	okJSON(t, e.do("POST", "/api/pair", bearer(e.tok), `{"ttl":60}`))
	codes := okJSON(t, e.do("POST", "/api/pair", bearer(e.tok), `{"ttl":60}`))
	code := codes["pair_code"].(string)
	e.clock.Advance(60 * time.Second)
	wantBadRequest(t, e.do("POST", "/api/pair/claim", "", claimBody(t, code, key, nil)), "pairing code invalid or expired")
}

func TestPairClaimFiveAttempts(t *testing.T) {
	e := newEnv(t, nil)
	key := vectorKey(t)
	pub := identity.PublicKey32(key)
	e.mkCode("ABCD-EF23", t0.Add(5*time.Minute), 0)
	bad := hex.EncodeToString(ed25519.Sign(key, []byte("something else")))
	body := `{"pair_code":"ABCD-EF23","device_public":"` + hex.EncodeToString(pub[:]) + `","signature":"` + bad + `"}`
	for range MaxPairAttempts {
		wantBadRequest(t, e.do("POST", "/api/pair/claim", "", body), "invalid signature")
	}
	wantBadRequest(t, e.do("POST", "/api/pair/claim", "", claimBody(t, "ABCD-EF23", key, nil)), "pairing code invalid or expired")
	p, _ := e.st.GetPairingCode(t.Context(), "ABCD-EF23")
	if p.Attempts != 6 || p.RedeemedAt != nil {
		t.Fatalf("%+v", p)
	}
	// Four failures still leave one good attempt.
	e.mkCode("ABCD-EF24", t0.Add(5*time.Minute), 0)
	body = strings.Replace(body, "ABCD-EF23", "ABCD-EF24", 1)
	for range MaxPairAttempts - 1 {
		wantBadRequest(t, e.do("POST", "/api/pair/claim", "", body), "invalid signature")
	}
	okJSON(t, e.do("POST", "/api/pair/claim", "", claimBody(t, "ABCD-EF24", key, nil)))
	if p, _ := e.st.GetPairingCode(t.Context(), "ABCD-EF24"); p.Attempts != 5 || p.RedeemedAt == nil {
		t.Fatalf("%+v", p)
	}
}

func TestPairClaimLegacy(t *testing.T) {
	e := newEnv(t, nil)
	m := okJSON(t, e.do("POST", "/api/pair", bearer(e.tok), ""))
	code := m["pair_code"].(string)
	m = okJSON(t, e.do("POST", "/api/pair/claim", "", `{"pair_code":"`+strings.ToLower(code)+`","device_public":null,"signature":null}`))
	wantMembers(t, m, "device_ca_public", "device_certificate", "device_id", "issuer_device_id", "private_key", "public_key", "seed", "user", "user_id")
	seed, err := hex.DecodeString(m["seed"].(string))
	if err != nil || len(seed) != 32 {
		t.Fatal(m["seed"])
	}
	priv, err := identity.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	pub := identity.PublicKey32(priv)
	if m["public_key"] != hex.EncodeToString(pub[:]) {
		t.Fatalf("public_key %v, from_seed gives %x", m["public_key"], pub)
	}
	if m["private_key"] != hex.EncodeToString(priv.Seed()) {
		t.Fatal("private_key is not BLAKE3(seed)")
	}
	d, err := e.st.GetDevice(t.Context(), m["device_id"].(string))
	if err != nil || d.PublicKey != pub || d.Name != nil {
		t.Fatalf("%+v %v", d, err)
	}
	if recs := e.ledger.all(); len(recs) != 1 || !strings.Contains(recs[0].meta, `"source":"pair-claim"`) {
		t.Fatalf("%+v", recs)
	}
}

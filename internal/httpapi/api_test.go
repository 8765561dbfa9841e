package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/metrics"
	"github.com/commucat/commucat/internal/ratelimit"
	"github.com/commucat/commucat/internal/store"
)

func TestUnknownRoutes(t *testing.T) {
	e := newEnv(t, nil)
	cases := []struct{ method, path string }{
		{"GET", "/api/pair"},
		{"PUT", "/api/pair"},
		{"GET", "/api/pair/claim"},
		{"POST", "/api/devices"},
		{"HEAD", "/api/devices"},
		{"GET", "/api/devices/revoke"},
		{"DELETE", "/api/friends"},
		{"POST", "/api/friends"},
		{"POST", "/api/security-stats"},
		{"GET", "/api/p2p/assist"},
		{"POST", "/api/server-info"},
		{"POST", "/openapi.json"},
		{"GET", "/api/unknown"},
		{"GET", "/api/devices/"},
		{"GET", "/api"},
		{"GET", "/API/devices"},
		{"POST", "/federation/v1/events"},
		{"GET", "/healthz"},
		{"OPTIONS", "/api/friends"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			wantRouteNotFound(t, e.do(c.method, c.path, bearer(e.tok), "{}"))
		})
	}
}

func TestQueryIgnored(t *testing.T) {
	e := newEnv(t, nil)
	okJSON(t, e.do("GET", "/api/devices?x=1&y", bearer(e.tok), ""))
	okJSON(t, e.do("GET", "/api/server-info?devices", "", ""))
}

func TestHandles(t *testing.T) {
	for _, p := range []string{"/openapi.json", "/api/server-info", "/api/pair", "/api/pair/claim", "/api/devices",
		"/api/devices/revoke", "/api/friends", "/api/security-stats", "/api/p2p/assist"} {
		if !Handles(p) {
			t.Errorf("Handles(%q) = false", p)
		}
	}
	for _, p := range []string{"/", "/healthz", "/readyz", "/metrics", "/connect", "/federation/v1/events", "/api/x", "/api/"} {
		if Handles(p) {
			t.Errorf("Handles(%q) = true", p)
		}
	}
	// Every served path is a route label value (§13).
	for _, r := range Routes() {
		if metrics.RouteLabel(r[1]) != r[1] {
			t.Errorf("%s is not a route label", r[1])
		}
	}
}

func TestServerInfo(t *testing.T) {
	e := newEnv(t, nil)
	m := okJSON(t, e.do("GET", "/api/server-info", "", ""))
	if m["domain"] != "commucat.local" {
		t.Fatalf("%v", m)
	}
}

func TestOpenAPI(t *testing.T) {
	e := newEnv(t, nil)
	w := e.do("GET", "/openapi.json", "", "")
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q", w.Code, w.Header().Get("Content-Type"))
	}
	if !bytes.Equal(w.Body.Bytes(), OpenAPI()) {
		t.Fatal("served document differs from the embedded file")
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	methods := []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}
	var inDoc []string
	for path, item := range doc.Paths {
		for m := range item {
			if slices.Contains(methods, m) {
				inDoc = append(inDoc, strings.ToUpper(m)+" "+path)
			}
		}
	}
	var served []string
	for _, r := range Routes() {
		served = append(served, r[0]+" "+r[1])
	}
	slices.Sort(inDoc)
	slices.Sort(served)
	if !slices.Equal(inDoc, served) {
		t.Fatalf("document routes %v\nserved routes %v", inDoc, served)
	}
	if _, ok := doc.Paths["/federation/v1/events"]; ok {
		t.Fatal("federation route documented")
	}
	// Every route the API serves answers something other than the
	// unknown-route 404.
	for _, r := range Routes() {
		w := e.do(r[0], r[1], bearer(e.tok), "{}")
		if w.Code == 404 && strings.Contains(w.Body.String(), `"Not Found"`) {
			t.Errorf("%s %s: unknown-route 404", r[0], r[1])
		}
	}
}

func TestSessionAuthentication(t *testing.T) {
	e := newEnv(t, nil)
	ok := func(auth string) {
		t.Helper()
		okJSON(t, e.do("GET", "/api/devices", auth, ""))
	}
	ok("Bearer " + e.tok)
	ok("bearer " + e.tok)
	ok("BEARER " + e.tok)
	ok("  Bearer   " + e.tok + "  ")
	ok(e.tok)
	ok(" \t" + e.tok + " ")

	cases := map[string]string{
		"missing":       "",
		"empty bearer":  "Bearer ",
		"unknown":       "Bearer " + strings.Repeat("ab", 32),
		"other scheme":  "Basic " + e.tok,
		"no space":      "Bearer" + e.tok,
		"admin token":   "Bearer " + adminToken,
		"token + extra": "Bearer " + e.tok + " x",
	}
	for name, auth := range cases {
		t.Run(name, func(t *testing.T) {
			for _, r := range Routes() {
				if r[1] == "/openapi.json" || r[1] == "/api/server-info" || r[1] == "/api/pair/claim" {
					continue
				}
				if name == "admin token" && r[1] == "/api/security-stats" {
					continue
				}
				wantUnauthorized(t, e.do(r[0], r[1], auth, "{}"))
			}
		})
	}
	if ParseAuthorization("  bEaReR  tok ") != "tok" || ParseAuthorization("tok") != "tok" || ParseAuthorization("Basic x") != "Basic x" {
		t.Fatal("ParseAuthorization")
	}
}

func TestRevokedDeviceToken403(t *testing.T) {
	e := newEnv(t, nil)
	dev := e.mkDevice(e.user.ID, "dev-b", nil)
	tok := e.mkSession(e.user.ID, dev.ID)
	okJSON(t, e.do("GET", "/api/devices", bearer(tok), ""))
	okJSON(t, e.do("POST", "/api/devices/revoke", bearer(e.tok), `{"device_id":"dev-b"}`))
	for _, r := range Routes() {
		if r[1] == "/openapi.json" || r[1] == "/api/server-info" || r[1] == "/api/pair/claim" {
			continue
		}
		wantForbidden(t, e.do(r[0], r[1], bearer(tok), "{}"))
	}
	// Still 403 once it would have expired.
	e.clock.Advance(3 * time.Hour)
	wantForbidden(t, e.do("GET", "/api/devices", bearer(tok), ""))
}

func TestSessionExpiry(t *testing.T) {
	e := newEnv(t, nil) // session_ttl 1 h: coalescing 60 s
	ctx := t.Context()
	// The connection ended at t0.
	if err := e.st.CloseSession(ctx, e.tok, t0); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(59*time.Minute + 59*time.Second)
	okJSON(t, e.do("GET", "/api/devices", bearer(e.tok), "")) // last use: t0+59:59
	s, _ := e.st.GetSession(ctx, e.tok)
	if !s.LastActiveAt.Equal(t0.Add(59*time.Minute + 59*time.Second)) {
		t.Fatalf("last_active_at %v", s.LastActiveAt)
	}
	// A request 30 s later is coalesced (not written) but still counts on
	// this node.
	e.clock.Advance(30 * time.Second)
	okJSON(t, e.do("GET", "/api/devices", bearer(e.tok), "")) // last use: t0+1:00:29
	s, _ = e.st.GetSession(ctx, e.tok)
	if !s.LastActiveAt.Equal(t0.Add(59*time.Minute + 59*time.Second)) {
		t.Fatalf("coalesced write happened: %v", s.LastActiveAt)
	}
	e.clock.Advance(time.Hour - time.Second) // one second before expiry
	okJSON(t, e.do("GET", "/api/devices", bearer(e.tok), ""))
	s, _ = e.st.GetSession(ctx, e.tok)
	last := t0.Add(2*time.Hour + 28*time.Second)
	if !s.LastActiveAt.Equal(last) {
		t.Fatalf("last_active_at %v, want %v", s.LastActiveAt, last)
	}
	e.clock.Advance(time.Hour) // exactly session_ttl after the last use
	wantUnauthorized(t, e.do("GET", "/api/devices", bearer(e.tok), ""))
	wantUnauthorized(t, e.do("POST", "/api/p2p/assist", bearer(e.tok), ""))
	// A fresh API (another node) reads the stored value only.
	e2 := New(e.deps)
	w := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/devices", nil)
	req.Header.Set("Authorization", bearer(e.tok))
	e2.ServeHTTP(w, req)
	wantUnauthorized(t, w)
}

func TestSessionLiveNeverExpires(t *testing.T) {
	e := newEnv(t, nil)
	e.setLive(e.tok, true)
	e.clock.Advance(48 * time.Hour)
	okJSON(t, e.do("GET", "/api/devices", bearer(e.tok), ""))
	e.setLive(e.tok, false)
	okJSON(t, e.do("GET", "/api/devices", bearer(e.tok), "")) // refreshed by the previous request
	e.clock.Advance(time.Hour)
	wantUnauthorized(t, e.do("GET", "/api/devices", bearer(e.tok), ""))
}

func TestCoalescingShortTTL(t *testing.T) {
	e := newEnv(t, func(d *Deps) { d.SessionTTL = 60 * time.Second }) // coalescing 6 s
	ctx := t.Context()
	okJSON(t, e.do("GET", "/api/devices", bearer(e.tok), ""))
	e.clock.Advance(5 * time.Second)
	okJSON(t, e.do("GET", "/api/devices", bearer(e.tok), ""))
	if s, _ := e.st.GetSession(ctx, e.tok); !s.LastActiveAt.Equal(t0) {
		t.Fatalf("%v", s.LastActiveAt)
	}
	e.clock.Advance(time.Second)
	okJSON(t, e.do("GET", "/api/devices", bearer(e.tok), ""))
	if s, _ := e.st.GetSession(ctx, e.tok); !s.LastActiveAt.Equal(t0.Add(6 * time.Second)) {
		t.Fatalf("%v", s.LastActiveAt)
	}
}

func TestTouchCacheSweep(t *testing.T) {
	var c touchCache
	now := t0
	for i := range 10 {
		c.hit(itoa(i), now, time.Second, time.Minute)
	}
	now = now.Add(2 * time.Minute)
	c.hit("x", now, time.Second, time.Minute)
	if len(c.m) != 1 {
		t.Fatalf("%d entries after sweep", len(c.m))
	}
}

func TestPayloadTooLarge(t *testing.T) {
	e := newEnv(t, nil) // max 4096 bytes
	big := `{"pair_code":"` + strings.Repeat("A", 5000) + `"}`
	wantProblem(t, e.do("POST", "/api/pair/claim", "", big), 413, "PayloadTooLarge", "request body too large")
	wantProblem(t, e.do("POST", "/api/pair", bearer(e.tok), big), 413, "PayloadTooLarge", "request body too large")
	wantProblem(t, e.do("PUT", "/api/friends", bearer(e.tok), big), 413, "PayloadTooLarge", "request body too large")
	wantProblem(t, e.do("POST", "/api/p2p/assist", bearer(e.tok), big), 413, "PayloadTooLarge", "request body too large")
	wantProblem(t, e.do("POST", "/api/devices/revoke", bearer(e.tok), big), 413, "PayloadTooLarge", "request body too large")
	// Exactly the limit is fine (here: a valid JSON object of 4096 bytes).
	exact := `{"x":"` + strings.Repeat("a", 4096-8) + `"}`
	if len(exact) != 4096 {
		t.Fatal(len(exact))
	}
	okJSON(t, e.do("POST", "/api/p2p/assist", bearer(e.tok), exact))
	// Unknown length (chunked): MaxBytesReader stops it.
	req := httptest.NewRequest("POST", "/api/pair/claim", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	w := httptest.NewRecorder()
	e.api.ServeHTTP(w, req)
	wantProblem(t, w, 413, "PayloadTooLarge", "request body too large")
	// A GET route announcing a large body.
	req = httptest.NewRequest("GET", "/api/devices", strings.NewReader(big))
	req.Header.Set("Authorization", bearer(e.tok))
	w = httptest.NewRecorder()
	e.api.ServeHTTP(w, req)
	wantProblem(t, w, 413, "PayloadTooLarge", "request body too large")
}

func TestInvalidJSONBodies(t *testing.T) {
	e := newEnv(t, nil)
	bodies := []string{"null", "[]", "1", `"x"`, "true", "{", `{"a":1,"a":2}`, `{"a":{"b":1,"b":2}}`, "{}x", "\xff", `{"a":"\ud800"`}
	routes := [][2]string{{"POST", "/api/pair"}, {"POST", "/api/pair/claim"}, {"POST", "/api/devices/revoke"}, {"PUT", "/api/friends"}, {"POST", "/api/p2p/assist"}}
	for _, r := range routes {
		for _, b := range bodies {
			wantBadRequest(t, e.do(r[0], r[1], bearer(e.tok), b), "invalid JSON payload")
		}
	}
	// Required bodies: empty is invalid.
	for _, r := range routes[1:4] {
		wantBadRequest(t, e.do(r[0], r[1], bearer(e.tok), ""), "invalid JSON payload")
	}
	// Optional bodies: empty (or whitespace) equals {}.
	for _, b := range []string{"", " \r\n\t"} {
		okJSON(t, e.do("POST", "/api/pair", bearer(e.tok), b))
		okJSON(t, e.do("POST", "/api/p2p/assist", bearer(e.tok), b))
	}
	// Authentication comes before body parsing.
	wantUnauthorized(t, e.do("POST", "/api/pair", "", "nonsense"))
}

func TestPairingZone(t *testing.T) {
	e := newEnv(t, nil)
	e.deps.Pairing = ratelimit.New(ratelimit.Config{Burst: 5, Window: time.Minute, Penalty: 2 * time.Minute}, e.clock.Now)
	e.api = New(e.deps)
	before := counter(e.metrics.RateLimitHTTP)
	for range 5 {
		wantNotFound(t, e.do("POST", "/api/pair/claim", "", `{"pair_code":"AAAA-AAAA"}`))
	}
	w := e.do("POST", "/api/pair/claim", "", `{"pair_code":"AAAA-AAAA"}`)
	wantProblem(t, w, 429, "Too Many Requests", "")
	if ra := w.Header().Get("Retry-After"); ra != "120" {
		t.Fatalf("retry-after %q", ra)
	}
	if counter(e.metrics.RateLimitHTTP) != before+1 {
		t.Fatal("rate_limit_http not incremented")
	}
	// Other routes are not in the pairing zone.
	okJSON(t, e.do("POST", "/api/pair", bearer(e.tok), ""))
	// Another client is unaffected.
	req := httptest.NewRequest("POST", "/api/pair/claim", strings.NewReader(`{"pair_code":"AAAA-AAAA"}`))
	req.RemoteAddr = "198.51.100.7:1234"
	w = httptest.NewRecorder()
	e.api.ServeHTTP(w, req)
	wantNotFound(t, w)
}

func TestInternalError(t *testing.T) {
	e := newEnv(t, nil)
	e.deps.NoiseKeys = func() []store.NoiseKey { return nil }
	e.api = New(e.deps)
	wantProblem(t, e.do("POST", "/api/p2p/assist", bearer(e.tok), ""), 500, "InternalError", "internal server error")
}

func TestNewDefaults(t *testing.T) {
	e := newEnv(t, nil)
	a := New(Deps{Store: e.st, CA: e.ca, Live: func(store.Session) bool { return true }})
	w := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/devices", nil)
	req.Header.Set("Authorization", e.tok)
	a.ServeHTTP(w, req)
	okJSON(t, w)
}

package httpapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/metrics"
	"github.com/commucat/commucat/internal/ratelimit"
	"github.com/commucat/commucat/internal/store"
	"github.com/commucat/commucat/internal/store/sqlite"
)

// t0 is the start of the fake clock.
var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type ledgerRec struct {
	digest [32]byte
	meta   string
}

type fakeLedger struct {
	mu   sync.Mutex
	recs []ledgerRec
}

func (l *fakeLedger) Record(_ context.Context, digest [32]byte, meta any) error {
	b, err := canonjson.Marshal(meta)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.recs = append(l.recs, ledgerRec{digest, string(b)})
	l.mu.Unlock()
	return nil
}

func (l *fakeLedger) Close() error { return nil }

func (l *fakeLedger) all() []ledgerRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]ledgerRec(nil), l.recs...)
}

// env is one API on a fresh SQLite store with a user "alice" whose device
// "dev-a" holds the session token tok.
type env struct {
	t       testing.TB
	st      *sqlite.Store
	api     *API
	deps    Deps
	clock   *fakeClock
	metrics *metrics.Metrics
	ledger  *fakeLedger
	ca      ed25519.PrivateKey
	keys    []store.NoiseKey
	rtt     map[string]time.Duration

	mu      sync.Mutex
	revoked []string
	live    map[string]bool

	user store.User
	dev  store.Device
	tok  string
}

const adminToken = "admin-token-0123456789"

func newEnv(t testing.TB, mutate func(*Deps)) *env {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "db", "commucat.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, _, err := st.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	ca, err := identity.DeviceCA(seed)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		t: t, st: st, clock: &fakeClock{now: t0}, ledger: &fakeLedger{}, ca: ca,
		metrics: metrics.New(prometheus.NewRegistry()), live: map[string]bool{},
		rtt: map[string]time.Duration{},
	}
	for v := 3; v >= 2; v-- {
		k := store.NoiseKey{Version: v, ValidAfter: t0, RotatesAt: t0.Add(time.Hour), ExpiresAt: t0.Add(2 * time.Hour), CreatedAt: t0}
		for i := range k.Public {
			k.Public[i] = byte(v*16 + i)
			k.Private[i] = byte(v*32 + i)
		}
		for i := range k.KEMSeed {
			k.KEMSeed[i] = byte(v + i)
		}
		e.keys = append(e.keys, k)
	}
	e.deps = Deps{
		Store: st, Now: e.clock.Now, Rand: rand.Reader,
		Domain: "commucat.local", SessionTTL: time.Hour, PairingTTL: 300 * time.Second, AllowServerKeys: true,
		MaxRequestBody: 4096, WebSocket: true, Versions: []int{1, 2}, Prologue: "commucat",
		CA: ca, RealityCert: "", RealityFingerprint: nil,
		NoiseKeys: func() []store.NoiseKey {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.keys
		},
		Live: func(s store.Session) bool {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.live[s.ID]
		},
		Revoke: func(id string) {
			e.mu.Lock()
			e.revoked = append(e.revoked, id)
			e.mu.Unlock()
		},
		Ledger: e.ledger, Metrics: e.metrics,
		TransportRTT: func(kind string) (time.Duration, bool) {
			e.mu.Lock()
			defer e.mu.Unlock()
			d, ok := e.rtt[kind]
			return d, ok
		},
		Admin:      func(tok string) bool { return tok == adminToken },
		Pairing:    ratelimit.New(ratelimit.Config{Burst: 1 << 20, Window: time.Minute}, e.clock.Now),
		ServerInfo: func() any { return map[string]any{"domain": "commucat.local", "supported_versions": []int{1, 2}} },
	}
	if mutate != nil {
		mutate(&e.deps)
	}
	e.api = New(e.deps)
	e.user = e.mkUser("alice")
	e.dev = e.mkDevice(e.user.ID, "dev-a", nil)
	e.tok = e.mkSession(e.user.ID, e.dev.ID)
	return e
}

func (e *env) mkUser(handle string) store.User {
	e.t.Helper()
	u := store.User{ID: "user-" + handle, Handle: handle, CreatedAt: t0, UpdatedAt: t0}
	if err := e.st.CreateUser(e.t.Context(), u); err != nil {
		e.t.Fatal(err)
	}
	return u
}

func (e *env) mkDevice(userID, id string, name *string) store.Device {
	e.t.Helper()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	d := store.Device{ID: id, UserID: userID, Status: store.DeviceActive, Name: name, CreatedAt: e.clock.Now(), UpdatedAt: e.clock.Now()}
	copy(d.PublicKey[:], pub)
	if err := e.st.CreateDevice(e.t.Context(), d); err != nil {
		e.t.Fatal(err)
	}
	return d
}

func (e *env) mkSession(userID, deviceID string) string {
	e.t.Helper()
	var b [32]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	now := e.clock.Now()
	if err := e.st.CreateSession(e.t.Context(), store.Session{ID: id, UserID: userID, DeviceID: deviceID, NodeID: "n1", CreatedAt: now, LastActiveAt: now}); err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) setLive(session string, live bool) {
	e.mu.Lock()
	e.live[session] = live
	e.mu.Unlock()
}

func (e *env) revokedCalls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.revoked...)
}

// do sends one request; auth "" sends no Authorization header.
func (e *env) do(method, path, auth, body string) *httptest.ResponseRecorder {
	e.t.Helper()
	return serve(e.api, e.t.Context(), method, path, auth, body)
}

func serve(a *API, ctx context.Context, method, path, auth, body string) *httptest.ResponseRecorder {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r).WithContext(ctx)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	a.ServeHTTP(w, req)
	return w
}

func bearer(tok string) string { return "Bearer " + tok }

// okJSON checks a 200 canonical JSON answer and decodes it.
func okJSON(t testing.TB, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d, body %s", w.Code, w.Body.String())
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content-type %q", ct)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("cache-control %q", cc)
	}
	v, err := canonjson.Parse(w.Body.Bytes())
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if c := v.Canonical(); !bytes.Equal(c, w.Body.Bytes()) {
		t.Fatalf("not canonical:\n%s\n%s", w.Body.Bytes(), c)
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(w.Body.Bytes()))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// wantProblem checks a problem+json answer with the exact body of §8.1.
func wantProblem(t testing.TB, w *httptest.ResponseRecorder, status int, title, detail string) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d; body %s", w.Code, status, w.Body.String())
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content-type %q", ct)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("cache-control %q", cc)
	}
	var want string
	if detail == "" {
		want = `{"status":` + itoa(status) + `,"title":` + string(canonjson.AppendString(nil, title)) + `,"type":"about:blank"}`
	} else {
		want = `{"detail":` + string(canonjson.AppendString(nil, detail)) + `,"status":` + itoa(status) + `,"title":` + string(canonjson.AppendString(nil, title)) + `,"type":"about:blank"}`
	}
	if got := w.Body.String(); got != want {
		t.Fatalf("body %s, want %s", got, want)
	}
}

func itoa(n int) string { return string(canonjson.AppendInt(nil, int64(n))) }

func wantBadRequest(t testing.TB, w *httptest.ResponseRecorder, detail string) {
	t.Helper()
	wantProblem(t, w, 400, "BadRequest", detail)
}

func wantUnauthorized(t testing.TB, w *httptest.ResponseRecorder) {
	t.Helper()
	wantProblem(t, w, 401, "Unauthorized", "authorization required")
}

func wantForbidden(t testing.TB, w *httptest.ResponseRecorder) {
	t.Helper()
	wantProblem(t, w, 403, "Forbidden", "access denied")
}

func wantNotFound(t testing.TB, w *httptest.ResponseRecorder) {
	t.Helper()
	wantProblem(t, w, 404, "NotFound", "resource not found")
}

func wantRouteNotFound(t testing.TB, w *httptest.ResponseRecorder) {
	t.Helper()
	wantProblem(t, w, 404, "Not Found", "")
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func counter(c prometheus.Counter) float64 { return counterValue(c) }

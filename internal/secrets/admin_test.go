package secrets

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/store"
	"github.com/commucat/commucat/internal/store/sqlite"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	t       *testing.T
	st      *sqlite.Store
	clock   *clock
	logs    *syncBuffer
	counter prometheus.Counter
	file    string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "db", "commucat.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, _, err := st.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return &fixture{
		t: t, st: st, clock: &clock{now: t0}, logs: &syncBuffer{},
		counter: prometheus.NewCounter(prometheus.CounterOpts{Name: "commucat_secret_rotations_admin", Help: "x"}),
		file:    filepath.Join(dir, "secrets", "admin.token"),
	}
}

func (f *fixture) tokens(policy config.RotationPolicy, configured string) *AdminTokens {
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return NewAdminTokens(f.st, f.clock.Now, rand.Reader, policy, configured, f.file, log, f.counter)
}

func (f *fixture) rows() []store.AdminToken {
	f.t.Helper()
	rows, err := f.st.ListAdminTokens(f.t.Context())
	if err != nil {
		f.t.Fatal(err)
	}
	return rows
}

func (f *fixture) fileToken() string {
	f.t.Helper()
	b, err := os.ReadFile(f.file)
	if err != nil {
		f.t.Fatal(err)
	}
	s := string(b)
	if !strings.HasSuffix(s, "\n") || len(s) != 65 {
		f.t.Fatalf("token file %q", s)
	}
	fi, err := os.Stat(f.file)
	if err != nil {
		f.t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		f.t.Fatalf("mode %v", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(f.file))
	if len(entries) != 1 {
		f.t.Fatalf("leftover files %v", entries)
	}
	return strings.TrimSuffix(s, "\n")
}

func (f *fixture) count() float64 {
	var m dto.Metric
	if err := f.counter.Write(&m); err != nil {
		f.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

var (
	rotationOff = config.RotationPolicy{Enabled: false, Interval: 168 * time.Hour, Grace: 72 * time.Hour, MaxVersions: 2}
	rotationOn  = config.RotationPolicy{Enabled: true, Interval: 168 * time.Hour, Grace: 72 * time.Hour, MaxVersions: 2}
)

const configured = "configured-admin-token-1"

func TestVector(t *testing.T) {
	var salt [16]byte
	for i := range salt {
		salt[i] = byte(i)
	}
	h := identity.AdminTokenHash(salt, "metrics-token-1")
	if hex.EncodeToString(h[:]) != "159e8bb78f49dfae8fb6b208e309c5bb93c3b5a7576f647d44b39b098757a85c" {
		t.Fatalf("%x", h)
	}
	f := newFixture(t)
	if err := f.st.InsertAdminToken(t.Context(), store.AdminToken{
		Version: 1, TokenHash: h, Salt: salt, ValidAfter: t0, RotatesAt: t0.Add(time.Hour), ExpiresAt: t0.Add(2 * time.Hour), CreatedAt: t0,
	}); err != nil {
		t.Fatal(err)
	}
	a := f.tokens(rotationOn, "")
	a.tokenFile = f.file
	if err := a.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !a.Check("metrics-token-1") || !a.Exists() {
		t.Fatal("vector token refused")
	}
	for _, bad := range []string{"", "metrics-token-2", "metrics-token-1 ", "Metrics-token-1"} {
		if a.Check(bad) {
			t.Fatalf("%q accepted", bad)
		}
	}
	// Expiry applies without a reload.
	f.clock.Advance(2 * time.Hour)
	if a.Check("metrics-token-1") || a.Exists() {
		t.Fatal("expired token accepted")
	}
}

func TestRotationOff(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	// Leftovers of earlier runs: another token and an expired one.
	for v, tok := range map[int]string{1: "old-token-aaaaaaaaaa", 2: "older-token-bbbbbbbbbb"} {
		var salt [16]byte
		salt[0] = byte(v)
		if err := f.st.InsertAdminToken(ctx, store.AdminToken{Version: v, Salt: salt, TokenHash: identity.AdminTokenHash(salt, tok),
			ValidAfter: t0, RotatesAt: t0.Add(time.Hour), ExpiresAt: t0.Add(time.Duration(v-1) * time.Hour), CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	a := f.tokens(rotationOff, configured)
	if err := a.Init(ctx); err != nil {
		t.Fatal(err)
	}
	rows := f.rows()
	if len(rows) != 1 || rows[0].Version != 3 || !rows[0].ExpiresAt.Equal(t0.Add(FarFuture)) || !rows[0].RotatesAt.Equal(t0.Add(FarFuture)) || !rows[0].ValidAfter.Equal(t0) {
		t.Fatalf("%+v", rows)
	}
	if !a.Check(configured) || a.Check("old-token-aaaaaaaaaa") || !a.Exists() {
		t.Fatal("check")
	}
	// Restart with the same token: unchanged.
	a = f.tokens(rotationOff, configured)
	if err := a.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if rows := f.rows(); len(rows) != 1 || rows[0].Version != 3 {
		t.Fatalf("%+v", rows)
	}
	// Ticks do nothing but reload.
	f.clock.Advance(365 * 24 * time.Hour)
	if err := a.Tick(ctx); err != nil || !a.Check(configured) || len(f.rows()) != 1 || f.count() != 0 {
		t.Fatal("tick with rotation off")
	}
	// A changed token replaces the old one.
	a = f.tokens(rotationOff, "another-configured-token")
	if err := a.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if rows := f.rows(); len(rows) != 1 || rows[0].Version != 4 || a.Check(configured) || !a.Check("another-configured-token") {
		t.Fatalf("%+v", rows)
	}
	// No token: none exists.
	a = f.tokens(rotationOff, "")
	if err := a.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if len(f.rows()) != 0 || a.Exists() || a.Check("another-configured-token") || a.Check("") {
		t.Fatal("tokens left")
	}
	if _, err := os.Stat(f.file); !os.IsNotExist(err) {
		t.Fatal("token file written with rotation off")
	}
	if f.count() != 0 {
		t.Fatal("counter moved")
	}
}

func TestRotationOffReplacesRotatedVersion(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	on := f.tokens(rotationOn, configured)
	if err := on.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if rows := f.rows(); len(rows) != 1 || !rows[0].RotatesAt.Equal(t0.Add(168*time.Hour)) || !rows[0].ExpiresAt.Equal(t0.Add(240*time.Hour)) {
		t.Fatalf("%+v", rows)
	}
	off := f.tokens(rotationOff, configured)
	if err := off.Init(ctx); err != nil {
		t.Fatal(err)
	}
	rows := f.rows()
	if len(rows) != 1 || rows[0].Version != 2 || !rows[0].ExpiresAt.Equal(t0.Add(FarFuture)) || !off.Check(configured) {
		t.Fatalf("%+v", rows)
	}
	// And back: rotation on drops the far-future version, re-inserts the
	// configured token with rotation times.
	on = f.tokens(rotationOn, configured)
	if err := on.Init(ctx); err != nil {
		t.Fatal(err)
	}
	rows = f.rows()
	if len(rows) != 1 || rows[0].Version != 3 || !rows[0].ExpiresAt.Equal(t0.Add(240*time.Hour)) || !on.Check(configured) {
		t.Fatalf("%+v", rows)
	}
	if _, err := os.Stat(f.file); !os.IsNotExist(err) {
		t.Fatal("token file written although a token was configured")
	}
}

func TestRotationOnGenerates(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	a := f.tokens(rotationOn, "")
	if err := a.Init(ctx); err != nil {
		t.Fatal(err)
	}
	tok1 := f.fileToken()
	if _, err := hex.DecodeString(tok1); err != nil {
		t.Fatal(err)
	}
	if !a.Check(tok1) || !a.Exists() || f.count() != 0 {
		t.Fatal("generated token")
	}
	rows := f.rows()
	if len(rows) != 1 || !rows[0].ValidAfter.Equal(t0) || !rows[0].RotatesAt.Equal(t0.Add(168*time.Hour)) || !rows[0].ExpiresAt.Equal(t0.Add(240*time.Hour)) {
		t.Fatalf("%+v", rows)
	}
	// Restart: the stored token is still valid, nothing generated.
	a = f.tokens(rotationOn, "")
	if err := a.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if f.fileToken() != tok1 || len(f.rows()) != 1 {
		t.Fatal("regenerated")
	}
	// Not due yet.
	f.clock.Advance(168*time.Hour - time.Minute)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if f.fileToken() != tok1 || f.count() != 0 {
		t.Fatal("rotated early")
	}
	// Due: rotated; the old one stays valid during the grace period.
	f.clock.Advance(time.Minute)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	tok2 := f.fileToken()
	if tok2 == tok1 || !a.Check(tok1) || !a.Check(tok2) || f.count() != 1 {
		t.Fatal("rotation")
	}
	// Second rotation: max_versions 2 drops tok1 even before it expires.
	f.clock.Advance(168 * time.Hour)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	tok3 := f.fileToken()
	if a.Check(tok1) || !a.Check(tok2) || !a.Check(tok3) || f.count() != 2 || len(f.rows()) != 2 {
		t.Fatalf("rows %+v", f.rows())
	}
	// tok2 expires at the end of its grace, even between ticks.
	f.clock.Advance(72*time.Hour - time.Second)
	if !a.Check(tok2) {
		t.Fatal("tok2 expired early")
	}
	f.clock.Advance(time.Second)
	if a.Check(tok2) || !a.Check(tok3) {
		t.Fatal("tok2 still valid")
	}
	// A tick deletes the expired row.
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if rows := f.rows(); len(rows) != 1 {
		t.Fatalf("%+v", rows)
	}

	// Every token ever written stays out of the logs.
	logs := f.logs.String()
	for _, tok := range []string{tok1, tok2, tok3} {
		if strings.Contains(logs, tok) {
			t.Fatalf("token in logs: %s", logs)
		}
	}
	if !strings.Contains(logs, "rotated the admin token") {
		t.Fatalf("logs %s", logs)
	}
}

func TestRotationOnConfigured(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	a := f.tokens(rotationOn, configured)
	if err := a.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if !a.Check(configured) || len(f.rows()) != 1 {
		t.Fatal("configured token")
	}
	if _, err := os.Stat(f.file); !os.IsNotExist(err) {
		t.Fatal("file written")
	}
	f.clock.Advance(168 * time.Hour)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	gen := f.fileToken()
	if !a.Check(configured) || !a.Check(gen) || f.count() != 1 {
		t.Fatal("rotation of the configured token")
	}
	// After the grace period the configured token is gone; a restart
	// inserts it again as the newest version (§10.4).
	f.clock.Advance(72 * time.Hour)
	if a.Check(configured) {
		t.Fatal("configured token outlived its grace")
	}
	a = f.tokens(rotationOn, configured)
	if err := a.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if !a.Check(configured) || !a.Check(gen) {
		t.Fatal("restart")
	}
	if rows := f.rows(); rows[0].Version != 3 {
		t.Fatalf("%+v", rows)
	}
	logs := f.logs.String()
	if strings.Contains(logs, configured) || strings.Contains(logs, gen) {
		t.Fatalf("token in logs: %s", logs)
	}
}

func TestTwoNodesRotateOnce(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	a := f.tokens(rotationOn, "")
	if err := a.Init(ctx); err != nil {
		t.Fatal(err)
	}
	b := f.tokens(rotationOn, "")
	b.tokenFile = filepath.Join(t.TempDir(), "node-b.token")
	if err := b.Init(ctx); err != nil {
		t.Fatal(err)
	}
	tok1 := f.fileToken()
	if !b.Check(tok1) {
		t.Fatal("node b does not see the token")
	}
	f.clock.Advance(168 * time.Hour)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	tok2 := f.fileToken()
	if f.count() != 1 || len(f.rows()) != 2 || !b.Check(tok2) {
		t.Fatalf("count %v rows %+v", f.count(), f.rows())
	}
	if _, err := os.Stat(b.tokenFile); !os.IsNotExist(err) {
		t.Fatal("node b rotated too")
	}
}

func TestReload(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	a := f.tokens(rotationOff, configured)
	if err := a.Init(ctx); err != nil {
		t.Fatal(err)
	}
	var salt [16]byte
	if err := f.st.InsertAdminToken(ctx, store.AdminToken{Version: 9, Salt: salt, TokenHash: identity.AdminTokenHash(salt, "inserted-elsewhere"),
		ValidAfter: t0, RotatesAt: t0.Add(time.Hour), ExpiresAt: t0.Add(time.Hour), CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if a.Check("inserted-elsewhere") {
		t.Fatal("seen before reload")
	}
	if err := a.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if !a.Check("inserted-elsewhere") || !a.Check(configured) {
		t.Fatal("reload")
	}
}

func TestInitErrors(t *testing.T) {
	f := newFixture(t)
	a := NewAdminTokens(f.st, f.clock.Now, rand.Reader, rotationOn, "", "", nil, nil)
	if err := a.Init(t.Context()); err == nil {
		t.Fatal("rotation without token file accepted")
	}
	// An unwritable token file: nothing is stored, Init fails.
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	a = NewAdminTokens(f.st, f.clock.Now, rand.Reader, rotationOn, "", filepath.Join(blocker, "admin.token"), slog.New(slog.NewTextHandler(f.logs, nil)), f.counter)
	if err := a.Init(t.Context()); err == nil {
		t.Fatal("unwritable file accepted")
	}
	if len(f.rows()) != 0 || a.Exists() {
		t.Fatal("version kept although the file was not written")
	}
}

func TestCheckAllVersions(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	toks := []string{"token-one-xxxxxxxx", "token-two-xxxxxxxx", "token-three-xxxxxx"}
	for i, tok := range toks {
		var salt [16]byte
		rand.Read(salt[:])
		if err := f.st.InsertAdminToken(ctx, store.AdminToken{Version: i + 1, Salt: salt, TokenHash: identity.AdminTokenHash(salt, tok),
			ValidAfter: t0, RotatesAt: t0.Add(time.Hour), ExpiresAt: t0.Add(time.Duration(i+1) * time.Hour), CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	a := f.tokens(rotationOn, "")
	if err := a.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if !a.Check(tok) {
			t.Fatalf("%s refused", tok)
		}
	}
	f.clock.Advance(90 * time.Minute)
	if a.Check(toks[0]) || !a.Check(toks[1]) || !a.Check(toks[2]) {
		t.Fatal("expiry per version")
	}
	// Concurrent use with reloads (run with -race).
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				a.Check(toks[2])
				a.Exists()
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			_ = a.Reload(context.Background())
		}
	})
	wg.Wait()
}

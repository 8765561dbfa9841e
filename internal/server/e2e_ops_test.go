package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/server"
	"github.com/commucat/commucat/internal/servertest"
)

func getText(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// /readyz keeps the one-word body of §3.7; ?verbose adds one line per
// dependency.
func TestReadyzVerbose(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	hc := httpClientFor(t, s, true)
	if code, body := getText(t, hc, s.URL+"/readyz"); code != 200 || body != "ready" {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	code, body := getText(t, hc, s.URL+"/readyz?verbose")
	if want := "ready\nstorage=ok\nredis=none\ndraining=false\n"; code != 200 || body != want {
		t.Fatalf("/readyz?verbose = %d %q, want %q", code, body, want)
	}
}

// SIGHUP's action: rate-limit zones change without a restart.
func TestReloadAppliesRateLimits(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	hc := httpClientFor(t, s, true)
	for i := 0; i < 5; i++ {
		if code, _ := getText(t, hc, s.URL+"/api/server-info"); code != 200 {
			t.Fatalf("request %d before reload: %d", i, code)
		}
	}
	next := *s.Config
	// The 5 hits above stay in the new, longer window: burst 8 leaves 3.
	next.Security.RateLimit.HTTP = config.RateLimit{Burst: 8, Window: time.Hour, Penalty: time.Hour}
	level := new(slog.LevelVar)
	next.Log.Level = slog.LevelDebug
	if err := s.Srv.Reload(context.Background(), &next, level); err != nil {
		t.Fatal(err)
	}
	if level.Level() != slog.LevelDebug {
		t.Errorf("log level after reload = %v", level.Level())
	}
	codes := []int{}
	for i := 0; i < 4; i++ {
		code, _ := getText(t, hc, s.URL+"/api/server-info")
		codes = append(codes, code)
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 200 || codes[3] != http.StatusTooManyRequests {
		t.Fatalf("after reload to burst 8: %v", codes)
	}
	// Probes are outside the http zone (§8.3).
	if code, _ := getText(t, hc, s.URL+"/readyz"); code != 200 {
		t.Fatalf("/readyz while the http zone denies: %d", code)
	}
}

// syncBuffer is a log sink safe for concurrent writes.
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

// A PostgreSQL that does not answer at start is retried with backoff and
// a logged error until StartupWait, then reported naming the key but not
// the DSN's password.
func TestStartupRetriesUnavailablePostgres(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	dir := t.TempDir()
	c, _ := servertest.Config(t, dir)
	c.Storage.PostgresDSN = "postgres://u:sekrit-pw@" + addr + "/db?sslmode=disable&connect_timeout=1"
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	_, err = server.New(context.Background(), server.Options{Config: c, Logger: log, StartupWait: 2500 * time.Millisecond})
	if err == nil {
		t.Fatal("New succeeded without a database")
	}
	if !strings.Contains(err.Error(), "storage.postgres_dsn") || strings.Contains(err.Error(), "sekrit-pw") {
		t.Errorf("error %q: want the key named and no password", err)
	}
	out := logs.String()
	if n := strings.Count(out, "storage unavailable at start; retrying"); n < 1 {
		t.Errorf("no retry logged:\n%s", out)
	}
	if strings.Contains(out, "sekrit-pw") {
		t.Errorf("the password reached the log:\n%s", out)
	}
}

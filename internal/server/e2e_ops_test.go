package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/metrics"
	"github.com/commucat/commucat/internal/server"
	"github.com/commucat/commucat/internal/servertest"
	"github.com/commucat/commucat/internal/testenv"
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
	var logs testenv.Buffer
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

// Conformance items 9 and 10 (§3.7, §8.2, §13): /metrics with and without
// an admin token, and values that move with traffic.
func TestItem9And10Metrics(t *testing.T) {
	t.Parallel()
	t.Run("admin token", func(t *testing.T) {
		t.Parallel()
		const token = "metrics-admin-token-0123456789"
		s := startServer(t, func(c *config.Config) { c.Admin.Token = token })
		hc := httpClientFor(t, s, true)
		code, body := getText(t, hc, s.URL+"/metrics")
		if code != http.StatusUnauthorized || body != `{"status":401,"title":"Unauthorized","type":"about:blank"}` {
			t.Fatalf("without token: %d %s", code, body)
		}
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer wrong-token")
		if resp, err := hc.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
		scrape := func() string {
			req, _ := http.NewRequest(http.MethodGet, s.URL+"/metrics", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != metrics.ContentType {
				t.Fatalf("with token: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			return string(b)
		}
		text := scrape()
		for _, name := range []string{
			metrics.NameConnectionsActive, metrics.NameFramesIngress, metrics.NameFramesEgress, metrics.NameRelayEnqueued,
			metrics.NameSecurityNoise, metrics.NameSecurityPQ, metrics.NameSecurityFECPackets, metrics.NameMultipathSessions,
			metrics.NameMultipathPaths, metrics.NameCensorshipDeflections, metrics.NameCallsActive, metrics.NameCallsTotal,
			metrics.NameCallVoiceFrames, metrics.NameCallVideoFrames, metrics.NameRateLimitHTTP, metrics.NameRateLimitConnect,
			metrics.NameSecretRotationsNoise, metrics.NameSecretRotationsAdmin, metrics.NameRateLimitFrames, metrics.NameRelayExpired,
			metrics.NameRelayEarlyAcked, metrics.NameRelayInboxFull, metrics.NameTLSHandshakes, metrics.NameBusRefused,
		} {
			if !strings.Contains(text, "# HELP "+name+" ") || !strings.Contains(text, "# TYPE "+name+" ") {
				t.Errorf("%s lacks HELP or TYPE", name)
			}
		}
		// Values move: a connection and a relayed message.
		ida, idb := newIdentity(t, "metrics-a"), newIdentity(t, "metrics-b")
		a := dial(t, s, ida, uniqueHandle("metrics-a"))
		b := dial(t, s, idb, uniqueHandle("metrics-b"))
		ch := freshChannel()
		if _, err := a.Request(ctxWait(t), ccp.Join, ch, []byte(`{"members":["`+b.Ack().DeviceCertificate.DeviceID+`"]}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Request(ctxWait(t), ccp.Msg, ch, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		recvUntil(t, b, 10*time.Second, "MSG", func(f ccp.Frame) bool { return f.Type == ccp.Msg })
		text = scrape()
		if want := metrics.NameConnectionsActive + " 2"; !strings.Contains(text, "\n"+want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
		// The entry is written, or not written because b acknowledged the
		// early delivery before the commit took it (§6.7 early delivery):
		// exactly one of the two counts it.
		enq, early := counterValue(t, s, metrics.NameRelayEnqueued), counterValue(t, s, metrics.NameRelayEarlyAcked)
		if enq+early != 1 {
			t.Errorf("relay_enqueued %v + relay_early_acked %v, want 1 in all", enq, early)
		}
	})
	t.Run("no admin token", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, func(c *config.Config) {
			// The test's own connections come from 127.0.0.1; trusting it
			// as a proxy lets X-Forwarded-For name a non-loopback client.
			c.Server.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		})
		hc := httpClientFor(t, s, true)
		if code, _ := getText(t, hc, s.URL+"/metrics"); code != 200 {
			t.Fatalf("loopback client: %d", code)
		}
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/metrics", nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || string(b) != `{"status":403,"title":"Forbidden","type":"about:blank"}` {
			t.Fatalf("non-loopback client: %d %s", resp.StatusCode, b)
		}
	})
}

// Graceful shutdown (§6.13, issue 7): a live client gets ERROR "Server
// Shutting Down" and its stream ends; every message the server
// acknowledged before stopping is delivered after a restart.
func TestGracefulShutdownKeepsAcknowledgedMessages(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, pool := servertest.Config(t, dir)
	s := servertest.StartWith(t, c, pool, dir)
	ida, idb := newIdentity(t, "drain-a"), newIdentity(t, "drain-b")
	ha, hb := uniqueHandle("drain-a"), uniqueHandle("drain-b")
	b := dial(t, s, idb, hb)
	bDevice := b.Ack().DeviceCertificate.DeviceID
	b.Close()
	a := dial(t, s, ida, ha)
	ch := freshChannel()
	if _, err := a.Request(ctxWait(t), ccp.Join, ch, []byte(`{"members":["`+bDevice+`"]}`)); err != nil {
		t.Fatal(err)
	}
	// a sends until the server stops; the ACKed ones are counted.
	var acked []string
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		for i := 0; ; i++ {
			p := fmt.Sprintf("d%05d", i)
			if _, err := a.Request(context.Background(), ccp.Msg, ch, []byte(p)); err != nil {
				return
			}
			acked = append(acked, p)
		}
	}()
	time.Sleep(300 * time.Millisecond) // let some traffic flow; not an assertion
	s.Stop(t)
	select {
	case <-sendDone:
	case <-time.After(20 * time.Second):
		t.Fatal("sender still running after shutdown")
	}
	select {
	case <-a.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("a's stream did not end")
	}
	var ef *client.ErrorFrame
	if err := a.Err(); !errors.As(err, &ef) || ef.Problem.Title != ccp.TitleServerShuttingDown {
		t.Fatalf("a ended with %v, want ERROR %q", err, ccp.TitleServerShuttingDown)
	}
	if len(acked) == 0 {
		t.Fatal("no message was acknowledged before the shutdown")
	}
	s2 := servertest.StartWith(t, c, pool, dir)
	b = dial(t, s2, idb, hb)
	for i, want := range acked {
		f := recvUntil(t, b, 20*time.Second, "MSG", func(f ccp.Frame) bool { return f.Type == ccp.Msg })
		if string(f.Payload) != want {
			t.Fatalf("message %d = %q, want %q", i, f.Payload, want)
		}
	}
	t.Logf("%d acknowledged messages delivered after the restart", len(acked))
}

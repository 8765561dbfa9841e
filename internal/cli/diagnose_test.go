package cli

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/servertest"
	"github.com/commucat/commucat/internal/store"
	"github.com/commucat/commucat/internal/store/sqlite"
)

// The lines of §12.2 in order (status= comes last, after the extras).
var diagSpecKeys = []string{"config", "storage", "storage_status", "redis", "schema_version",
	"noise_key_version", "noise_public", "noise_rotates_at", "admin_tokens", "users",
	"devices_active", "relay_queue", "ledger_mode"}

// diagnose runs diagnose and returns its lines, stderr and exit code.
func (n *testNode) diagnose(t *testing.T, args ...string) (*kv, string, int) {
	t.Helper()
	out, errOut, code := n.run(t, append([]string{"diagnose"}, args...)...)
	return parseKV(t, out), errOut, code
}

// checkDiagKeys checks that the spec's lines come first in order, then
// exactly the extras, then status=.
func checkDiagKeys(t *testing.T, r *kv, extras ...string) {
	t.Helper()
	want := append(append(append([]string(nil), diagSpecKeys...), extras...), "status")
	if !reflect.DeepEqual(r.keys, want) {
		t.Errorf("keys\n got %v\nwant %v", r.keys, want)
	}
}

// A fresh database after init and migrate: healthy, no stored key yet,
// repeatable, and nothing is written.
func TestDiagnoseFresh(t *testing.T) {
	n := newNode(t, true)
	first, errOut, code := n.diagnose(t)
	if code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	checkDiagKeys(t, first, "relay_oldest_at", "tls", "server", "handshake", "server_versions")
	want := map[string]string{
		"config": "ok", "storage": "sqlite", "storage_status": "ok", "redis": "none", "schema_version": strconv.Itoa(sqlite.LatestVersion()),
		"noise_key_version": "none", "noise_public": n.init["noise_public"], "noise_rotates_at": "none",
		"admin_tokens": "0", "users": "0", "devices_active": "0", "relay_queue": "0", "ledger_mode": "null",
		"relay_oldest_at": "none", "tls": "ok",
		// Nothing listens on the configured port: normal for diagnose.
		"server": "unreachable", "handshake": "skipped", "server_versions": "none",
		"status": "ok",
	}
	if !reflect.DeepEqual(first.m, want) {
		t.Errorf("got  %v\nwant %v", first.m, want)
	}
	if !strings.HasPrefix(errOut, "warning: server https://"+n.bind+": ") || strings.Contains(errOut, "error:") {
		t.Errorf("stderr %q", errOut)
	}

	// Repeatable (§14 item 108), and read-only: no rows appear.
	for range 2 {
		again, _, code := n.diagnose(t)
		if code != ExitOK || !reflect.DeepEqual(again.m, first.m) {
			t.Errorf("second run: exit %d, %v", code, again.m)
		}
	}
	st := n.store(t)
	ctx := context.Background()
	if keys, err := st.ListNoiseKeys(ctx); err != nil || len(keys) != 0 {
		t.Errorf("noise keys written: %d %v", len(keys), err)
	}
	if toks, err := st.ListAdminTokens(ctx); err != nil || len(toks) != 0 {
		t.Errorf("admin tokens written: %d %v", len(toks), err)
	}

	// Data shows up: a user, an active device and a queued entry.
	n.ok(t, "register-user", "alice")
	dev := n.ok(t, "rotate-keys", "--handle", "alice", "phone").get("device_id")
	created := time.Date(2025, 3, 4, 5, 6, 7, 123000000, time.UTC)
	if _, err := st.EnqueueInbox(ctx, []store.InboxEntry{{
		EnvelopeID: strings.Repeat("ab", 32), Recipient: dev, Sender: "someone", Channel: 7, FrameType: 5,
		Payload: []byte("x"), CreatedAt: created, ExpiresAt: time.Now().Add(time.Hour),
	}}); err != nil {
		t.Fatal(err)
	}
	n.ok(t, "rotate-noise")
	r, _, code := n.diagnose(t)
	if code != ExitOK || r.get("users") != "1" || r.get("devices_active") != "1" || r.get("relay_queue") != "1" ||
		r.get("relay_oldest_at") != canonjson.FormatTime(created) || r.get("noise_key_version") != "1" ||
		r.get("noise_public") == n.init["noise_public"] {
		t.Errorf("exit %d, %v", code, r.m)
	}
	keys, _ := st.ListNoiseKeys(ctx)
	if len(keys) != 1 || r.get("noise_rotates_at") != canonjson.FormatTime(keys[0].RotatesAt) {
		t.Errorf("noise_rotates_at=%s", r.get("noise_rotates_at"))
	}
}

// init without migrate: the database does not exist, diagnose is
// degraded and does not create it.
func TestDiagnoseMissingDatabase(t *testing.T) {
	n := newNode(t, false)
	dbPath := n.config(t).Storage.SQLitePath
	for range 2 {
		r, errOut, code := n.diagnose(t)
		if code != ExitFail || r.get("status") != "degraded" || r.get("storage_status") != "error" {
			t.Errorf("exit %d, %v", code, r.m)
		}
		checkDiagKeys(t, r, "tls", "server", "handshake", "server_versions")
		for _, k := range []string{"schema_version", "noise_key_version", "noise_public", "noise_rotates_at", "admin_tokens", "users", "devices_active", "relay_queue"} {
			if r.get(k) != "unknown" {
				t.Errorf("%s=%s", k, r.get(k))
			}
		}
		if !strings.Contains(errOut, "error: storage: database "+dbPath+" does not exist (run commucat-cli migrate)\n") {
			t.Errorf("stderr %q", errOut)
		}
		if _, err := os.Stat(dbPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("diagnose created the database: %v", err)
		}
	}
}

// A database without the schema, and a file that is not a database.
func TestDiagnoseBrokenStorage(t *testing.T) {
	n := newNode(t, false)
	dbPath := n.config(t).Storage.SQLitePath
	st, err := sqlite.Open(context.Background(), dbPath) // creates it, no migrations
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	r, errOut, code := n.diagnose(t)
	if code != ExitFail || r.get("status") != "degraded" || r.get("storage_status") != "ok" || r.get("schema_version") != "0" ||
		r.get("users") != "unknown" || !strings.Contains(errOut, "error: schema version 0: migrations are pending (run commucat-cli migrate)\n") {
		t.Errorf("unmigrated: exit %d, %v, %q", code, r.m, errOut)
	}
	// Still not migrated: diagnose applied nothing.
	if r, _, _ := n.diagnose(t); r.get("schema_version") != "0" {
		t.Errorf("second run: schema_version=%s", r.get("schema_version"))
	}

	for _, f := range []string{dbPath, dbPath + "-wal", dbPath + "-shm"} {
		os.Remove(f)
	}
	if err := os.WriteFile(dbPath, []byte(strings.Repeat("this is not an SQLite database\n", 20)), 0o600); err != nil {
		t.Fatal(err)
	}
	r, errOut, code = n.diagnose(t)
	if code != ExitFail || r.get("status") != "degraded" || r.get("storage_status") != "error" || !strings.Contains(errOut, "error: storage: ") {
		t.Errorf("garbage file: exit %d, %v, %q", code, r.m, errOut)
	}

	// The database path is a directory.
	n.edit(t, `sqlite_path = "data/commucat.db"`, `sqlite_path = "data"`)
	r, errOut, code = n.diagnose(t)
	if code != ExitFail || r.get("storage_status") != "error" || !strings.Contains(errOut, "is not a regular file") {
		t.Errorf("directory: exit %d, %v, %q", code, r.m, errOut)
	}
}

func TestDiagnoseLedgerAndTLS(t *testing.T) {
	n := newNode(t, true)
	p := n.setLedgerFile(t)
	r, _, code := n.diagnose(t)
	if code != ExitOK || r.get("ledger_mode") != "file" || r.get("ledger_status") != "missing" {
		t.Errorf("missing ledger: exit %d, %v", code, r.m)
	}
	checkDiagKeys(t, r, "relay_oldest_at", "ledger_status", "tls", "server", "handshake", "server_versions")
	if err := os.WriteFile(p, []byte(ledgerVector), 0o600); err != nil {
		t.Fatal(err)
	}
	if r, _, code := n.diagnose(t); code != ExitOK || r.get("ledger_status") != "ok" {
		t.Errorf("good ledger: exit %d, %v", code, r.m)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(ledgerVector, "user-1", "user-2", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	r, errOut, code := n.diagnose(t)
	if code != ExitFail || r.get("ledger_status") != "broken" || r.get("status") != "degraded" ||
		!strings.Contains(errOut, "error: ledger "+p+": line 1: hash does not match the record") {
		t.Errorf("broken ledger: exit %d, %v, %q", code, r.m, errOut)
	}
	os.Remove(p)

	// An expired TLS certificate (config.Load already rejects one that
	// does not load).
	certPEM, keyPEM, err := selfSignedCert("commucat.local", time.Now().Add(-400*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for f, b := range map[string][]byte{"server.crt": certPEM, "server.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(n.dir, "certs", f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, errOut, code = n.diagnose(t)
	if code != ExitFail || r.get("tls") != "error" || r.get("status") != "degraded" || !strings.Contains(errOut, "error: tls: certificate expired at ") {
		t.Errorf("expired certificate: exit %d, %v, %q", code, r.m, errOut)
	}
	// A key that does not load is a configuration error.
	if err := os.WriteFile(filepath.Join(n.dir, "certs", "server.key"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, errOut, code = n.diagnose(t)
	if code != ExitFail || r.get("config") != "error" || r.get("status") != "degraded" || !strings.Contains(errOut, "error: server.tls_key: ") {
		t.Errorf("bad key: exit %d, %v, %q", code, r.m, errOut)
	}
}

func TestDiagnoseBadConfigAndUsage(t *testing.T) {
	dir := t.TempDir()
	out, errOut, code := run(t, "", "--config", filepath.Join(dir, "missing.toml"), "diagnose")
	if code != ExitFail || out != "config=error\nserver=skipped\nhandshake=skipped\nserver_versions=none\nstatus=degraded\n" || !strings.HasPrefix(errOut, "error: ") {
		t.Errorf("missing config: exit %d, %q, %q", code, out, errOut)
	}
	for _, args := range [][]string{{"extra"}, {"--server", "http://127.0.0.1:1"}, {"--server", "127.0.0.1:1"}, {"--server"}, {"--ca"}, {"--verbose"}} {
		out, errOut, code := run(t, "", append([]string{"diagnose"}, args...)...)
		if code != ExitUsage || out != "" || !strings.HasPrefix(errOut, diagnoseUsage+" (") {
			t.Errorf("%v: exit %d, %q, %q", args, code, out, errOut)
		}
	}
}

// writeCertPEM writes the certificate of an httptest server for --ca.
func writeCertPEM(t *testing.T, c *x509.Certificate) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The handshake verdict against a fake server: ERRORs that a working
// server gives a throw-away device are ok, others and HTTP failures are
// errors.
func TestDiagnoseHandshakeVerdicts(t *testing.T) {
	n := newNode(t, true)
	info := `{"device_ca_public":"` + n.init["device_ca_public"] + `","domain":"commucat.local","noise_public":"` +
		n.init["noise_public"] + `","supported_versions":[2]}`
	cases := []struct {
		name     string
		connect  func(w http.ResponseWriter)
		verdict  string
		detail   string
		degraded bool
	}{
		{"pairing required", errorFrameReply(ccp.TitlePairingRequired, 403), "ok", "PairingRequired", false},
		{"invalid handshake", errorFrameReply(ccp.TitleInvalidHandshake, 400), "ok", "Invalid Handshake", false},
		{"authentication failed", errorFrameReply(ccp.TitleAuthenticationFailed, 401), "error", "Authentication Failed", true},
		{"internal error", errorFrameReply(ccp.TitleInternalError, 500), "error", "Internal Error", true},
		{"HTTP 503", func(w http.ResponseWriter) { http.Error(w, "down", http.StatusServiceUnavailable) }, "error", "", true},
	}
	for _, c := range cases {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/api/server-info":
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(info))
			case "/connect":
				c.connect(w)
			default:
				http.NotFound(w, r)
			}
		}))
		srv.EnableHTTP2 = true
		srv.StartTLS()
		ca := writeCertPEM(t, srv.Certificate())
		r, errOut, code := n.diagnose(t, "--server", srv.URL, "--ca", ca)
		srv.Close()
		if r.get("server") != "ok" || r.get("server_versions") != "2" || r.get("handshake") != c.verdict {
			t.Errorf("%s: %v", c.name, r.m)
		}
		if c.detail != "" && r.get("handshake_detail") != c.detail {
			t.Errorf("%s: handshake_detail=%q", c.name, r.get("handshake_detail"))
		}
		if c.detail == "" && !strings.Contains(r.get("handshake_detail"), "HTTP 503") {
			t.Errorf("%s: handshake_detail=%q", c.name, r.get("handshake_detail"))
		}
		wantCode, wantStatus := ExitOK, "ok"
		if c.degraded {
			wantCode, wantStatus = ExitFail, "degraded"
			if !strings.Contains(errOut, "error: handshake: ") {
				t.Errorf("%s: stderr %q", c.name, errOut)
			}
		}
		if code != wantCode || r.get("status") != wantStatus {
			t.Errorf("%s: exit %d, status %s", c.name, code, r.get("status"))
		}
		checkDiagKeys(t, r, "relay_oldest_at", "tls", "server", "handshake", "handshake_detail", "server_versions")
	}

	// An explicit server that does not trust the given CA is unreachable
	// and degraded.
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused TLS handshake
	srv.StartTLS()
	defer srv.Close()
	r, errOut, code := n.diagnose(t, "--server", srv.URL, "--ca", n.init["tls_cert"])
	if code != ExitFail || r.get("server") != "unreachable" || r.get("handshake") != "skipped" || !strings.Contains(errOut, "error: server "+srv.URL+": ") {
		t.Errorf("untrusted: exit %d, %v, %q", code, r.m, errOut)
	}
}

// errorFrameReply answers /connect with one handshake ERROR frame.
func errorFrameReply(title string, status int) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		p, _ := canonjson.Marshal(map[string]any{"detail": "test", "error": "handshake", "status": status, "title": title, "type": "about:blank"})
		f, _ := ccp.AppendFrame(nil, ccp.Frame{Type: ccp.Error, Channel: 0, Sequence: 1, Payload: p})
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		w.Write(f)
	}
}

// Against a real running server started from the init configuration.
func TestDiagnoseRunningServer(t *testing.T) {
	n := newNode(t, false)
	ledgerPath := n.setLedgerFile(t)
	cfg := n.config(t)
	cfg.Server.Bind = "127.0.0.1:0"
	cfg.Server.AutoApproveDevices = true
	cfg.Server.MaxAutoDevicesPerUser = 0
	pool := x509.NewCertPool()
	certPEM, err := os.ReadFile(n.init["tls_cert"])
	if err != nil || !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("reading the init certificate", err)
	}
	srv := servertest.StartWith(t, cfg, pool, n.dir)

	// Explicit --server and --ca.
	r, errOut, code := n.diagnose(t, "--server", srv.URL, "--ca", n.init["tls_cert"])
	if code != ExitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q, %v", code, errOut, r.m)
	}
	checkDiagKeys(t, r, "relay_oldest_at", "ledger_status", "tls", "server", "handshake", "handshake_detail", "server_versions")
	want := map[string]string{
		"config": "ok", "storage": "sqlite", "storage_status": "ok", "redis": "none", "schema_version": strconv.Itoa(sqlite.LatestVersion()),
		// The server inserted the configured key as version 1 and the
		// configured admin token.
		"noise_key_version": "1", "noise_public": n.init["noise_public"],
		"admin_tokens": "1", "users": "0", "devices_active": "0", "relay_queue": "0", "ledger_mode": "file",
		"relay_oldest_at": "none", "ledger_status": "ok", "tls": "ok",
		"server": "ok", "handshake": "ok", "handshake_detail": "Invalid Handshake", "server_versions": "1,2",
		"status": "ok",
	}
	got := r.m
	if _, err := canonjson.ParseTime(got["noise_rotates_at"]); err != nil {
		t.Errorf("noise_rotates_at=%q", got["noise_rotates_at"])
	}
	delete(got, "noise_rotates_at")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}

	// Derived from server.bind (0.0.0.0 → 127.0.0.1) with the configured
	// certificate; twice, with the same result, and nothing written.
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "https://"))
	n.edit(t, `bind = "`+n.bind+`"`, `bind = "0.0.0.0:`+port+`"`)
	first, errOut, code := n.diagnose(t)
	if code != ExitOK || errOut != "" || first.get("server") != "ok" || first.get("handshake") != "ok" || first.get("users") != "0" {
		t.Errorf("derived URL: exit %d, %q, %v", code, errOut, first.m)
	}
	if second, _, code := n.diagnose(t); code != ExitOK || !reflect.DeepEqual(second.m, first.m) {
		t.Errorf("second run: exit %d, %v", code, second.m)
	}

	// A real device connects (auto-approval): counted, and the server
	// writes ledger records.
	id, err := client.NewIdentity("laptop-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := client.Dial(ctx, client.Options{URL: srv.URL, TLSConfig: srv.TLS(), Identity: id, Handle: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if r, _, code := n.diagnose(t); code != ExitOK || r.get("users") != "1" || r.get("devices_active") != "1" {
		t.Errorf("after a handshake: exit %d, %v", code, r.m)
	}

	n.ok(t, "rotate-keys", "--handle", "carol", "laptop-2")
	rn := n.ok(t, "rotate-noise")

	srv.Stop(t)
	// Stopped: normal without --server, degraded with it.
	r, errOut, code = n.diagnose(t)
	if code != ExitOK || r.get("server") != "unreachable" || r.get("handshake") != "skipped" || r.get("status") != "ok" || strings.Contains(errOut, "error:") {
		t.Errorf("stopped: exit %d, %v, %q", code, r.m, errOut)
	}
	r, errOut, code = n.diagnose(t, "--server", srv.URL, "--ca", n.init["tls_cert"])
	if code != ExitFail || r.get("server") != "unreachable" || r.get("status") != "degraded" || !strings.Contains(errOut, "error: server "+srv.URL) {
		t.Errorf("stopped, explicit: exit %d, %v, %q", code, r.m, errOut)
	}

	// The ledger the server and the CLI wrote verifies (§14 item 109):
	// register and session start from the handshake, register from
	// rotate-keys.
	v := n.ok(t, "ledger", "verify")
	if v.get("ledger_status") != "ok" || v.int(t, "ledger_records") != 3 {
		t.Errorf("ledger verify %v", v.m)
	}
	data, _ := os.ReadFile(ledgerPath)
	if !strings.Contains(string(data), `"device":"laptop-2"`) || !strings.Contains(string(data), `"source":"cli"`) {
		t.Error("the rotate-keys record is missing")
	}
	// One edited record breaks it (exit 3).
	if err := os.WriteFile(ledgerPath, []byte(strings.Replace(string(data), `"laptop-1"`, `"laptop-9"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, code := n.run(t, "ledger", "verify")
	if b := parseKV(t, out); code != ExitLedger || b.get("ledger_status") != "broken" || b.get("ledger_error_line") != "1" {
		t.Errorf("edited ledger: exit %d, %v", code, b.m)
	}

	// Restart on the same configuration and state (the ledger restored):
	// the server advertises the key of rotate-noise (the unchanged
	// configured key is not inserted again, §10.4), and the diagnose
	// handshake with it reaches admission, so the server reads msg1 with
	// the CLI's key.
	if err := os.WriteFile(ledgerPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg2 := n.config(t)
	cfg2.Server.Bind = "127.0.0.1:0"
	srv2 := servertest.StartWith(t, cfg2, pool, n.dir)
	r, errOut, code = n.diagnose(t, "--server", srv2.URL, "--ca", n.init["tls_cert"])
	if code != ExitOK || r.get("handshake") != "ok" || r.get("handshake_detail") != "Invalid Handshake" ||
		r.get("noise_key_version") != "2" || r.get("noise_public") != rn.get("noise_public") {
		t.Errorf("after restart: exit %d, %v, %q", code, r.m, errOut)
	}
}

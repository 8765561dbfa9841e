package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/ledger"
	"github.com/commucat/commucat/internal/server"
	"github.com/commucat/commucat/internal/store"
)

const diagnoseUsage = "usage: commucat-cli diagnose [--server URL] [--ca FILE]"

// Time limits of the individual checks.
const (
	diagStorageTimeout   = 10 * time.Second
	diagRedisTimeout     = 3 * time.Second
	diagServerTimeout    = 5 * time.Second
	diagHandshakeTimeout = 10 * time.Second
)

// unknown is printed for a value that could not be read.
const unknown = "unknown"

// diagnosis collects the output lines of `diagnose` and whether anything
// makes the node degraded.
type diagnosis struct {
	env      *Env
	lines    [][2]string
	degraded bool
	now      time.Time
}

func (d *diagnosis) line(k, v string) { d.lines = append(d.lines, [2]string{k, oneLine(v)}) }

// fail records a problem that makes the status degraded; the reason goes
// to stderr as an error line.
func (d *diagnosis) fail(format string, args ...any) {
	d.degraded = true
	d.env.errorf(format, args...)
}

// warn reports a condition that does not degrade the status.
func (d *diagnosis) warn(format string, args ...any) {
	fmt.Fprintf(d.env.Stderr, "warning: "+format+"\n", args...)
}

// runDiagnose implements `commucat-cli diagnose` (§12.2). Decisions:
//
//   - It is strictly read-only, so it can run any number of times next to
//     a running server: it never applies migrations (schema_version comes
//     from store.Migrator.SchemaVersion; pending migrations are degraded),
//     never creates the SQLite file (a missing database is
//     storage_status=error rather than a new empty file) and never writes
//     a row (the handshake check below is refused before admission
//     commits anything).
//   - The lines of §12.2 come first, in the spec's order, except status=,
//     which stays last. Values that cannot be read (storage down, schema
//     missing) print as "unknown". Extra lines follow ledger_mode=:
//     relay_oldest_at= (oldest queued inbox entry, or none);
//     presence_online= only with Redis, where presence lives in
//     presence:<device> keys (without Redis presence is in the server's
//     memory, which no store exposes, so the line is omitted);
//     ledger_status= in file mode (ledger.Verify of ledger.target; a
//     missing file is "missing", normal before the first start); tls= (the
//     configured certificate and key load and the certificate is not
//     expired); then the running-server checks server=, handshake=,
//     handshake_detail= and server_versions=.
//   - Running server: GET /api/server-info at --server URL, else at
//     https://<server.bind> with 0.0.0.0 (or an empty host) replaced by
//     127.0.0.1 and :: by ::1, verifying the name server.domain. Trusted
//     roots: --ca FILE, else the system roots plus server.tls_cert. A
//     stopped server is normal for diagnose, so server=unreachable is
//     degraded only when --server was given. A bind port of 0 (chosen at
//     start) cannot be derived: server=skipped.
//   - Handshake: client.Dial with a throw-away identity and no user hints.
//     The server then answers Invalid Handshake (unknown device, nothing to
//     go on) after it has read Noise msg1 with its key and taken the
//     admission decision, or PairingRequired / Forbidden; such an ERROR
//     proves the handshake path works: handshake=ok with
//     handshake_detail=<title>. Any other ERROR (Authentication Failed
//     means the advertised Noise key does not read msg1; Internal Error,
//     Protocol Version Mismatch, ...) or a transport failure is
//     handshake=error, which is degraded.
//   - Degraded (exit 1): configuration not loadable, storage_status=error,
//     redis=error, schema not current or unreadable, a storage query
//     failing, ledger_status=broken|error, tls=error, server=unreachable
//     with --server, handshake=error. No stored Noise key
//     (noise_key_version=none, before the first server start) is normal.
func runDiagnose(env *Env, args []string) int {
	var serverURL, caFile string
	pos, msg := parseArgs(args, map[string]*string{"--server": &serverURL, "--ca": &caFile}, nil)
	if msg == "" && len(pos) > 0 {
		msg = "unknown argument " + pos[0]
	}
	if msg == "" && serverURL != "" {
		if u, err := url.Parse(serverURL); err != nil || u.Scheme != "https" || u.Host == "" {
			msg = "--server must be https://host[:port]"
		}
	}
	if msg != "" {
		fmt.Fprintf(env.Stderr, "%s (%s)\n", diagnoseUsage, msg)
		return ExitUsage
	}
	d := &diagnosis{env: env, now: time.Now()}
	ctx := context.Background()

	cfg, err := env.loadConfig()
	if err != nil {
		d.line("config", "error")
		d.fail("%v", err)
	} else {
		d.line("config", "ok")
		d.checkState(ctx, cfg)
	}
	d.checkServer(ctx, cfg, serverURL, caFile)
	if d.degraded {
		d.line("status", "degraded")
	} else {
		d.line("status", "ok")
	}
	for _, kv := range d.lines {
		fmt.Fprintf(env.Stdout, "%s=%s\n", kv[0], kv[1])
	}
	if d.degraded {
		return ExitFail
	}
	return ExitOK
}

// checkState prints every line from storage= to tls=.
func (d *diagnosis) checkState(ctx context.Context, cfg *config.Config) {
	kind := "sqlite"
	if cfg.Storage.PostgresDSN != "" {
		kind = "postgres"
	}
	d.line("storage", kind)
	st := d.openStorage(ctx, cfg)
	if st != nil {
		defer st.Close()
		d.line("storage_status", "ok")
	} else {
		d.line("storage_status", "error")
	}

	var redis *goredis.Client
	if cfg.Storage.RedisURL == "" {
		d.line("redis", "none")
	} else if redis = d.openRedis(ctx, cfg.Storage.RedisURL); redis != nil {
		defer redis.Close()
		d.line("redis", "ok")
	} else {
		d.line("redis", "error")
	}

	// Schema: read, never migrated.
	queryable := false
	if st == nil {
		d.line("schema_version", unknown)
	} else {
		sctx, cancel := context.WithTimeout(ctx, diagStorageTimeout)
		v, pending, err := st.SchemaVersion(sctx)
		cancel()
		switch {
		case err != nil && errors.Is(err, store.ErrSchemaTooNew):
			d.line("schema_version", strconv.Itoa(v))
			d.fail("%v", err)
		case err != nil:
			d.line("schema_version", unknown)
			d.fail("schema version: %v", err)
		default:
			d.line("schema_version", strconv.Itoa(v))
			if pending {
				d.fail("schema version %d: migrations are pending (run commucat-cli migrate)", v)
			}
			// Version 0 has no tables to count.
			queryable = v > 0
		}
	}

	var q store.Store
	if queryable {
		q = st
	}
	d.checkNoise(ctx, q, cfg)
	d.checkCounts(ctx, q)
	d.line("ledger_mode", string(cfg.Ledger.Mode))
	if q != nil {
		d.checkRelayOldest(ctx, q)
	}
	if redis != nil {
		d.checkPresence(ctx, redis)
	}
	if cfg.Ledger.Mode == config.LedgerFile {
		d.checkLedger(cfg.Ledger.Target)
	}
	d.checkTLS(cfg)
}

// openStorage opens the configured storage without creating anything and
// pings it; nil when that failed (the reason is reported).
func (d *diagnosis) openStorage(ctx context.Context, cfg *config.Config) interface {
	store.Store
	store.Migrator
} {
	if cfg.Storage.PostgresDSN == "" {
		// sqlite.Open would create a missing database (and its
		// directory): check first, so that diagnose never writes.
		fi, err := os.Stat(cfg.Storage.SQLitePath)
		switch {
		case errors.Is(err, os.ErrNotExist):
			d.fail("storage: database %s does not exist (run commucat-cli migrate)", cfg.Storage.SQLitePath)
			return nil
		case err != nil:
			d.fail("storage: %v", err)
			return nil
		case !fi.Mode().IsRegular():
			d.fail("storage: %s is not a regular file", cfg.Storage.SQLitePath)
			return nil
		}
	}
	sctx, cancel := context.WithTimeout(ctx, diagStorageTimeout)
	defer cancel()
	st, err := server.OpenStore(sctx, cfg)
	if err != nil {
		d.fail("storage: %v", err)
		return nil
	}
	if err := st.Ping(sctx); err != nil {
		st.Close()
		d.fail("storage: %v", err)
		return nil
	}
	return st
}

// openRedis connects to storage.redis_url and pings it; nil on failure.
func (d *diagnosis) openRedis(ctx context.Context, rawURL string) *goredis.Client {
	o, err := goredis.ParseURL(rawURL)
	if err != nil {
		// The URL may hold a password: name the key, not the value.
		d.fail("storage.redis_url: invalid URL")
		return nil
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout = diagRedisTimeout, diagRedisTimeout, diagRedisTimeout
	o.MaxRetries = -1
	c := goredis.NewClient(o)
	rctx, cancel := context.WithTimeout(ctx, diagRedisTimeout)
	defer cancel()
	if err := c.Ping(rctx).Err(); err != nil {
		c.Close()
		d.fail("redis: %v", err)
		return nil
	}
	return c
}

// checkNoise prints the newest non-expired Noise key (§10.4), or "none"
// with the configured public key when none is stored.
func (d *diagnosis) checkNoise(ctx context.Context, st store.Store, cfg *config.Config) {
	if st == nil {
		d.line("noise_key_version", unknown)
		d.line("noise_public", unknown)
		d.line("noise_rotates_at", unknown)
		return
	}
	qctx, cancel := context.WithTimeout(ctx, diagStorageTimeout)
	defer cancel()
	rows, err := st.ListNoiseKeys(qctx) // newest first
	if err != nil {
		d.fail("noise keys: %v", err)
		d.line("noise_key_version", unknown)
		d.line("noise_public", unknown)
		d.line("noise_rotates_at", unknown)
		return
	}
	for _, r := range rows {
		if d.now.Before(r.ExpiresAt) {
			d.line("noise_key_version", strconv.Itoa(r.Version))
			d.line("noise_public", hex.EncodeToString(r.Public[:]))
			d.line("noise_rotates_at", canonjson.FormatTime(r.RotatesAt))
			return
		}
	}
	d.line("noise_key_version", "none")
	d.line("noise_public", hex.EncodeToString(cfg.Crypto.NoisePublic[:]))
	d.line("noise_rotates_at", "none")
}

// checkCounts prints admin_tokens=, users=, devices_active= and
// relay_queue=.
func (d *diagnosis) checkCounts(ctx context.Context, st store.Store) {
	count := func(key string, f func(ctx context.Context) (int64, error)) {
		if st == nil {
			d.line(key, unknown)
			return
		}
		qctx, cancel := context.WithTimeout(ctx, diagStorageTimeout)
		defer cancel()
		n, err := f(qctx)
		if err != nil {
			d.fail("%s: %v", key, err)
			d.line(key, unknown)
			return
		}
		d.line(key, strconv.FormatInt(n, 10))
	}
	count("admin_tokens", func(ctx context.Context) (int64, error) {
		toks, err := st.ListAdminTokens(ctx)
		var n int64
		for _, t := range toks {
			if d.now.Before(t.ExpiresAt) {
				n++
			}
		}
		return n, err
	})
	count("users", func(ctx context.Context) (int64, error) {
		n, err := st.CountUsers(ctx)
		return int64(n), err
	})
	count("devices_active", func(ctx context.Context) (int64, error) {
		n, err := st.CountAllActiveDevices(ctx)
		return int64(n), err
	})
	count("relay_queue", func(ctx context.Context) (int64, error) {
		n, _, err := st.InboxStats(ctx)
		return n, err
	})
}

// checkRelayOldest prints relay_oldest_at= (store.Queries.InboxStats).
func (d *diagnosis) checkRelayOldest(ctx context.Context, st store.Store) {
	qctx, cancel := context.WithTimeout(ctx, diagStorageTimeout)
	defer cancel()
	n, oldest, err := st.InboxStats(qctx)
	switch {
	case err != nil:
		d.fail("relay queue: %v", err)
		d.line("relay_oldest_at", unknown)
	case n == 0 || oldest.IsZero():
		d.line("relay_oldest_at", "none")
	default:
		d.line("relay_oldest_at", canonjson.FormatTime(oldest))
	}
}

// checkPresence prints presence_online=: the presence:<device> entries
// (§9.4) that are unexpired and not offline (§6.8). Servers use no key
// prefix in production.
func (d *diagnosis) checkPresence(ctx context.Context, c *goredis.Client) {
	rctx, cancel := context.WithTimeout(ctx, diagStorageTimeout)
	defer cancel()
	n := 0
	it := c.Scan(rctx, 0, "presence:*", 1000).Iterator()
	for it.Next(rctx) {
		b, err := c.Get(rctx, it.Val()).Bytes()
		if errors.Is(err, goredis.Nil) {
			continue // expired meanwhile
		}
		if err != nil {
			d.fail("redis presence: %v", err)
			d.line("presence_online", unknown)
			return
		}
		var e struct {
			State     string `json:"state"`
			ExpiresAt string `json:"expires_at"`
		}
		if json.Unmarshal(b, &e) != nil || e.State == "offline" {
			continue
		}
		if exp, err := canonjson.ParseTime(e.ExpiresAt); err == nil && d.now.Before(exp) {
			n++
		}
	}
	if err := it.Err(); err != nil {
		d.fail("redis presence: %v", err)
		d.line("presence_online", unknown)
		return
	}
	d.line("presence_online", strconv.Itoa(n))
}

// checkLedger prints ledger_status= for a file ledger.
func (d *diagnosis) checkLedger(path string) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		// The server creates it at start.
		d.line("ledger_status", "missing")
		return
	}
	if err != nil {
		d.fail("ledger: %v", err)
		d.line("ledger_status", "error")
		return
	}
	defer f.Close()
	res, err := ledger.Verify(f)
	switch {
	case !res.OK():
		d.fail("ledger %s: line %d: %s (see commucat-cli ledger verify)", path, res.Line, res.Reason)
		d.line("ledger_status", "broken")
	case err != nil:
		d.fail("ledger: %v", err)
		d.line("ledger_status", "error")
	default:
		d.line("ledger_status", "ok")
	}
}

// checkTLS prints tls=: the configured certificate and key load and the
// certificate is currently valid.
func (d *diagnosis) checkTLS(cfg *config.Config) {
	pair, err := tls.LoadX509KeyPair(cfg.Server.TLSCert, cfg.Server.TLSKey)
	if err == nil && pair.Leaf != nil {
		if d.now.After(pair.Leaf.NotAfter) {
			err = fmt.Errorf("certificate expired at %s", pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
		} else if d.now.Before(pair.Leaf.NotBefore) {
			err = fmt.Errorf("certificate not valid before %s", pair.Leaf.NotBefore.UTC().Format(time.RFC3339))
		}
	}
	if err != nil {
		d.fail("tls: %v", err)
		d.line("tls", "error")
		return
	}
	d.line("tls", "ok")
}

// diagServerTarget returns the base URL and TLS configuration for the
// running-server checks, or skip = true when there is nothing to check.
func diagServerTarget(cfg *config.Config, serverURL, caFile string) (base string, tc *tls.Config, skip bool, err error) {
	tc = &tls.Config{MinVersion: tls.VersionTLS13}
	if serverURL != "" {
		base = strings.TrimSuffix(serverURL, "/")
	} else {
		if cfg == nil {
			return "", nil, true, nil
		}
		host, port, err := net.SplitHostPort(cfg.Server.Bind)
		if err != nil || port == "0" {
			return "", nil, true, nil // the port is chosen at start
		}
		switch host {
		case "", "0.0.0.0":
			host = "127.0.0.1"
		case "::":
			host = "::1"
		}
		base = "https://" + net.JoinHostPort(host, port)
		// The certificate names the domain, not necessarily the loopback
		// address the URL uses.
		tc.ServerName = cfg.Server.Domain
	}
	var pool *x509.CertPool
	var pemFile string
	switch {
	case caFile != "":
		pool, pemFile = x509.NewCertPool(), caFile
	case cfg != nil:
		if pool, err = x509.SystemCertPool(); err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pemFile = cfg.Server.TLSCert
	}
	if pool != nil {
		b, err := os.ReadFile(pemFile)
		if err != nil {
			return base, nil, false, err
		}
		if !pool.AppendCertsFromPEM(b) {
			return base, nil, false, fmt.Errorf("%s holds no PEM certificate", pemFile)
		}
		tc.RootCAs = pool
	}
	return base, tc, false, nil
}

// checkServer prints server=, handshake=, handshake_detail= and
// server_versions=.
func (d *diagnosis) checkServer(ctx context.Context, cfg *config.Config, serverURL, caFile string) {
	explicit := serverURL != ""
	skip := func() {
		d.line("server", "skipped")
		d.line("handshake", "skipped")
		d.line("server_versions", "none")
	}
	base, tc, skipped, err := diagServerTarget(cfg, serverURL, caFile)
	if skipped {
		skip()
		return
	}
	var info *client.ServerInfo
	if err == nil {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}, Timeout: diagServerTimeout}
		sctx, cancel := context.WithTimeout(ctx, diagServerTimeout)
		info, err = client.FetchServerInfo(sctx, hc, base)
		cancel()
		hc.CloseIdleConnections()
	}
	if err != nil {
		if explicit {
			d.fail("server %s: %v", base, err)
		} else {
			d.warn("server %s: %v (not running?)", base, err)
		}
		d.line("server", "unreachable")
		d.line("handshake", "skipped")
		d.line("server_versions", "none")
		return
	}
	d.line("server", "ok")
	ok, detail := d.handshake(ctx, base, tc, info)
	if ok {
		d.line("handshake", "ok")
	} else {
		d.line("handshake", "error")
		d.fail("handshake: %s", detail)
	}
	if detail != "" {
		d.line("handshake_detail", detail)
	}
	versions := make([]string, len(info.SupportedVersions))
	for i, v := range info.SupportedVersions {
		versions[i] = strconv.Itoa(v)
	}
	if len(versions) == 0 {
		versions = []string{"none"}
	}
	d.line("server_versions", strings.Join(versions, ","))
}

// handshakeOKTitles are the handshake ERRORs that a throw-away device
// without user hints gets from a working server, after the server read
// Noise msg1 and took the admission decision (§4.5, §4.9).
var handshakeOKTitles = map[string]bool{
	ccp.TitleInvalidHandshake: true, // unknown device, nothing to go on
	ccp.TitlePairingRequired:  true,
	ccp.TitleForbidden:        true,
}

// handshake runs a handshake with a throw-away identity (no user hints, so
// the server admits nothing and writes nothing) and classifies the result.
func (d *diagnosis) handshake(ctx context.Context, base string, tc *tls.Config, info *client.ServerInfo) (ok bool, detail string) {
	suffix, err := randomHex(8)
	if err != nil {
		return false, err.Error()
	}
	id, err := client.NewIdentity("diagnose-"+suffix, nil)
	if err != nil {
		return false, err.Error()
	}
	hctx, cancel := context.WithTimeout(ctx, diagHandshakeTimeout)
	defer cancel()
	conn, err := client.Dial(hctx, client.Options{
		URL: base, TLSConfig: tc.Clone(), Identity: id, Server: info,
		HandshakeTimeout: diagHandshakeTimeout, CloseTimeout: time.Second,
	})
	if err == nil {
		conn.Close()
		return true, ""
	}
	var ef *client.ErrorFrame
	if errors.As(err, &ef) {
		return handshakeOKTitles[ef.Problem.Title], ef.Problem.Title
	}
	return false, err.Error()
}

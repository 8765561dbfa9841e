package config

import (
	"crypto/ecdh"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Largest values that still fit a time.Duration.
const (
	maxSeconds = math.MaxInt64 / int64(time.Second)
	maxMillis  = math.MaxInt64 / int64(time.Millisecond)
	maxHours   = math.MaxInt64 / int64(time.Hour)
)

// maxPEMFile bounds the TLS and Reality files read during validation.
const maxPEMFile = 1 << 20

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// builder turns raw values into a Config. With check set it validates every
// key in the order of the §10.2 table and keeps the first error; without it
// (Default) it only converts.
type builder struct {
	vals  map[string]*value
	check bool
	err   *Error
}

func (b *builder) v(key string) *value {
	v, ok := b.vals[key]
	if !ok {
		panic("config: no key " + key)
	}
	return v
}

// failing reports whether checking should stop: an error was already
// recorded.
func (b *builder) failing() bool { return b.err != nil }

func (b *builder) fail(key, format string, args ...any) {
	if b.err == nil {
		b.err = &Error{Key: key, Reason: fmt.Sprintf(format, args...)}
	}
}

// present reports whether a key should be checked: checking is on, no
// error is recorded yet, and the key, if required, was given (a missing
// required key is recorded as the error).
func (b *builder) present(key string) bool {
	if !b.check || b.failing() {
		return false
	}
	d, v := defByName[key], b.v(key)
	switch {
	case d.required && !v.set:
		b.fail(key, "required key is missing")
		return false
	case d.required && d.kind == kPath && v.s == "":
		b.fail(key, "must not be empty")
		return false
	}
	return true
}

func (b *builder) str(key string) string { return b.v(key).s }

func (b *builder) boolean(key string) bool { return b.v(key).b }

// integer returns the key's value after checking min ≤ value ≤ max. A max
// that is only an implementation limit (what fits the Go type) is reported
// as "at most", a range of the §10.2 table as "between".
func (b *builder) integer(key string, min, max int64) int64 {
	i := b.v(key).i
	if b.check && !b.failing() && (i < min || i > max) {
		implLimit := max == maxSeconds || max == maxMillis || max == maxHours ||
			max == math.MaxInt || max == math.MaxInt64 || max == math.MaxUint32
		switch {
		case !implLimit:
			b.fail(key, "must be between %d and %d, not %d", min, max, i)
		case i < min:
			b.fail(key, "must be at least %d, not %d", min, i)
		default:
			b.fail(key, "must be at most %d, not %d", max, i)
		}
	}
	return max64(min, min64(i, max))
}

func min64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func (b *builder) seconds(key string, min, max int64) time.Duration {
	return time.Duration(b.integer(key, min, max)) * time.Second
}

func (b *builder) millis(key string, min, max int64) time.Duration {
	return time.Duration(b.integer(key, min, max)) * time.Millisecond
}

func (b *builder) hours(key string, min, max int64) time.Duration {
	return time.Duration(b.integer(key, min, max)) * time.Hour
}

// enum returns the key's value after checking it is one of allowed.
func (b *builder) enum(key string, allowed ...string) string {
	s := b.str(key)
	if b.check && !b.failing() {
		for _, a := range allowed {
			if s == a {
				return s
			}
		}
		b.fail(key, "%s is not one of %s", quoted(s), strings.Join(allowed, ", "))
	}
	return s
}

// hex32 decodes a hex32 key; "" is allowed only when optional.
func (b *builder) hex32(key string, optional bool) [32]byte {
	s := b.str(key)
	if s == "" && optional {
		return [32]byte{}
	}
	out, reason := decodeHex32(s)
	if reason != "" {
		b.failIfChecking(key, "%s", reason)
	}
	return out
}

// decodeHex32 decodes hex32 (§1.2: exactly 64 hex digits, either case). The
// reason is "" on success and never contains the value.
func decodeHex32(s string) ([32]byte, string) {
	var out [32]byte
	if len(s) != 64 {
		return out, fmt.Sprintf("must be 64 hex characters (32 bytes), not %d characters", len(s))
	}
	if _, err := hex.Decode(out[:], []byte(s)); err != nil {
		return [32]byte{}, "must be hex"
	}
	return out, ""
}

func (b *builder) failIfChecking(key, format string, args ...any) {
	if b.check {
		b.fail(key, format, args...)
	}
}

// build converts (and, with check, validates) every key in table order.
func (b *builder) build() Config {
	var c Config

	// [server]
	if b.present("server.bind") {
		b.checkBind("server.bind")
	}
	c.Server.Bind = b.str("server.bind")
	if b.present("server.domain") {
		d := b.str("server.domain")
		if n := utf8.RuneCountInString(d); !utf8.ValidString(d) || n < 1 || n > 253 {
			b.fail("server.domain", "must be 1 to 253 characters of UTF-8, not %d bytes", len(d))
		}
	}
	c.Server.Domain = b.str("server.domain")
	c.Server.TLSCert, c.Server.TLSKey = b.str("server.tls_cert"), b.str("server.tls_key")
	if b.present("server.tls_cert") && b.present("server.tls_key") {
		b.checkKeyPair(c.Server.TLSCert, c.Server.TLSKey)
	}
	c.Server.AutoApproveDevices = b.boolean("server.auto_approve_devices")
	c.Server.MaxAutoDevicesPerUser = int(b.integer("server.max_auto_devices_per_user", 0, math.MaxInt))
	c.Server.ConnectionKeepalive = b.seconds("server.connection_keepalive", 5, 3600)
	c.Server.SessionTTL = b.seconds("server.session_ttl", 60, 2592000)
	c.Server.HandshakeTimeout = b.seconds("server.handshake_timeout", 1, 60)
	c.Server.NodeID = b.str("server.node_id")
	if b.check && !b.failing() && !nodeIDPattern.MatchString(c.Server.NodeID) {
		b.fail("server.node_id", "%s does not match [A-Za-z0-9._-]{1,64}", quoted(c.Server.NodeID))
	}
	c.Server.MaxConcurrentStreams = uint32(b.integer("server.max_concurrent_streams", 1, math.MaxUint32))
	c.Server.ReadHeaderTimeout = b.seconds("server.read_header_timeout", 1, maxSeconds)
	c.Server.MaxRequestBody = b.integer("server.max_request_body", 1024, math.MaxInt64)
	c.Server.WebSocket = b.boolean("server.websocket")
	c.Server.TrustedProxies = b.cidrs("server.trusted_proxies")
	c.Server.ShutdownGrace = b.seconds("server.shutdown_grace", 0, maxSeconds)

	// [storage]
	c.Storage.PostgresDSN = b.str("storage.postgres_dsn")
	c.Storage.SQLitePath = b.str("storage.sqlite_path")
	if b.check && !b.failing() && c.Storage.PostgresDSN == "" && c.Storage.SQLitePath == "" {
		b.fail("storage.sqlite_path", "must not be empty when storage.postgres_dsn is empty")
	}
	c.Storage.RedisURL = b.str("storage.redis_url")
	if b.check && !b.failing() && c.Storage.RedisURL != "" && c.Storage.PostgresDSN == "" {
		b.fail("storage.redis_url", "requires storage.postgres_dsn (Redis is only used with PostgreSQL)")
	}

	// [crypto]
	if b.present("crypto.noise_private") {
		c.Crypto.NoisePrivate = b.hex32("crypto.noise_private", false)
	}
	if b.present("crypto.noise_public") {
		c.Crypto.NoisePublic = b.hex32("crypto.noise_public", false)
		if b.check && !b.failing() {
			k, err := ecdh.X25519().NewPrivateKey(c.Crypto.NoisePrivate[:])
			if err != nil || string(k.PublicKey().Bytes()) != string(c.Crypto.NoisePublic[:]) {
				b.fail("crypto.noise_public", "crypto.noise_public does not match crypto.noise_private")
			}
		}
	}
	if b.present("crypto.federation_seed") {
		c.Crypto.FederationSeed = b.seed("crypto.federation_seed")
	}
	c.Crypto.Prologue = b.str("crypto.prologue")

	// [admin]
	c.Admin.Token = b.str("admin.token")
	if b.check && !b.failing() && c.Admin.Token != "" && utf8.RuneCountInString(c.Admin.Token) < 16 {
		b.fail("admin.token", "must be at least 16 characters when set")
	}
	c.Admin.TokenFile = b.str("admin.token_file")

	// [presence], [pairing], [limits]
	c.Presence.TTL = b.seconds("presence.ttl_seconds", 5, maxSeconds)
	c.Pairing.TTL = b.seconds("pairing.ttl_seconds", 60, 3600)
	c.Pairing.AllowServerKeys = b.boolean("pairing.allow_server_keys")
	c.Limits.RelayTTL = b.seconds("limits.relay_ttl", 60, maxSeconds)
	c.Limits.MaxInboxEntries = b.integer("limits.max_inbox_entries", 0, math.MaxInt64)
	c.Limits.MaxInboxBytes = b.integer("limits.max_inbox_bytes", 0, math.MaxInt64)

	// [rotation.noise], [rotation.admin]
	c.Rotation.Noise = RotationPolicy{
		Enabled:     b.boolean("rotation.noise.enabled"),
		Interval:    b.hours("rotation.noise.interval_hours", 1, maxHours),
		Grace:       b.hours("rotation.noise.grace_hours", 1, maxHours),
		MaxVersions: int(b.integer("rotation.noise.max_versions", 2, math.MaxInt)),
	}
	adminEnabled := b.boolean("rotation.admin.enabled")
	if b.check && !b.failing() && adminEnabled && c.Admin.TokenFile == "" {
		b.fail("rotation.admin.enabled", "rotation.admin.enabled = true requires admin.token_file")
	}
	c.Rotation.Admin = RotationPolicy{
		Enabled:     adminEnabled,
		Interval:    b.hours("rotation.admin.interval_hours", 1, maxHours),
		Grace:       b.hours("rotation.admin.grace_hours", 1, maxHours),
		MaxVersions: int(b.integer("rotation.admin.max_versions", 1, math.MaxInt)),
	}

	// [security]
	c.Security.RequireEncryptedFrames = b.boolean("security.require_encrypted_frames")
	c.Security.OpenChannels = b.boolean("security.open_channels")
	c.Security.Padding = Padding(b.enum("security.padding", string(PaddingNone), string(PaddingBuckets)))
	zones := []struct {
		name string
		rl   *RateLimit
	}{
		{"http", &c.Security.RateLimit.HTTP},
		{"connect", &c.Security.RateLimit.Connect},
		{"pairing", &c.Security.RateLimit.Pairing},
		{"frame", &c.Security.RateLimit.Frame},
	}
	for _, z := range zones {
		z.rl.Burst = int(b.integer("security.rate_limit."+z.name+"_burst", 1, math.MaxInt))
	}
	for _, z := range zones {
		z.rl.Window = b.millis("security.rate_limit."+z.name+"_window_ms", 1, maxMillis)
	}
	for _, z := range zones {
		z.rl.Penalty = b.millis("security.rate_limit."+z.name+"_penalty_ms", 0, maxMillis)
	}

	c.Security.MaxConnectionsPerIP = int(b.integer("security.max_connections_per_ip", 1, math.MaxInt))
	c.Security.MaxHandshakesPerIP = int(b.integer("security.max_handshakes_per_ip", 1, math.MaxInt))

	// [media], [ledger]
	c.Media.Transcode = b.boolean("media.transcode")
	c.Ledger.Mode = LedgerMode(b.enum("ledger.mode", string(LedgerNull), string(LedgerDebug), string(LedgerFile)))
	c.Ledger.Target = b.str("ledger.target")
	if b.check && !b.failing() && c.Ledger.Mode == LedgerFile && c.Ledger.Target == "" {
		b.fail("ledger.target", `ledger.mode = "file" requires ledger.target`)
	}

	// [federation]
	c.Federation.Enabled = b.boolean("federation.enabled")
	c.Federation.Peers = b.peers("federation.peers")

	// [transport]
	c.Transport.RealityCert = b.str("transport.reality_cert")
	if b.check && !b.failing() && c.Transport.RealityCert != "" {
		b.checkPEMCert("transport.reality_cert", c.Transport.RealityCert)
	}
	c.Transport.RealityFingerprint = b.hex32("transport.reality_fingerprint", true)
	if b.check && !b.failing() {
		certSet, fpSet := c.Transport.RealityCert != "", b.str("transport.reality_fingerprint") != ""
		switch {
		case certSet && !fpSet:
			b.fail("transport.reality_fingerprint", "transport.reality_fingerprint is required when transport.reality_cert is set (both or neither)")
		case fpSet && !certSet:
			b.fail("transport.reality_cert", "transport.reality_cert is required when transport.reality_fingerprint is set (both or neither)")
		}
	}

	// [log]
	switch b.enum("log.level", "debug", "info", "warn", "error") {
	case "debug":
		c.Log.Level = slog.LevelDebug
	case "warn":
		c.Log.Level = slog.LevelWarn
	case "error":
		c.Log.Level = slog.LevelError
	default:
		c.Log.Level = slog.LevelInfo
	}
	c.Log.Format = LogFormat(b.enum("log.format", string(LogText), string(LogJSON)))
	return c
}

// checkBind checks host:port: a numeric port 0–65535 and a host that is
// empty, an IP address or a host name.
func (b *builder) checkBind(key string) {
	s := b.str(key)
	host, port, err := net.SplitHostPort(s)
	ok := err == nil
	if ok {
		p, perr := strconv.ParseUint(port, 10, 16)
		ok = perr == nil && port == strconv.FormatUint(p, 10)
	}
	if ok && host != "" {
		if _, aerr := netip.ParseAddr(host); aerr != nil {
			ok = hostName(host)
		}
	}
	if !ok {
		b.fail(key, "%s is not host:port", quoted(s))
	}
}

// hostName reports whether s looks like a DNS host name.
func hostName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func (b *builder) checkKeyPair(certPath, keyPath string) {
	if b.failing() {
		return
	}
	certPEM, err := readSmall(certPath)
	if err != nil {
		b.fail("server.tls_cert", "cannot read: %v", err)
		return
	}
	keyPEM, err := readSmall(keyPath)
	if err != nil {
		b.fail("server.tls_key", "cannot read: %v", err)
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "does not match"):
			b.fail("server.tls_key", "server.tls_key %s does not match the certificate in server.tls_cert %s (%s)", keyPath, certPath, msg)
		case strings.Contains(msg, "certificate input") || strings.HasPrefix(msg, "x509:"):
			b.fail("server.tls_cert", "%s is not a valid PEM certificate: %s", certPath, msg)
		default:
			b.fail("server.tls_key", "%s is not a valid PEM private key: %s", keyPath, msg)
		}
	}
}

func (b *builder) checkPEMCert(key, path string) {
	data, err := readSmall(path)
	if err != nil {
		b.fail(key, "cannot read: %v", err)
		return
	}
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(blk.Bytes); err == nil {
				return
			}
		}
	}
	b.fail(key, "%s holds no valid PEM certificate", path)
}

// readSmall reads a file of at most maxPEMFile bytes; the error names the
// path.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxPEMFile)
	}
	return data, nil
}

// seed decodes the federation seed: hex of at least 32 bytes.
func (b *builder) seed(key string) []byte {
	s := b.str(key)
	out, err := hex.DecodeString(s)
	switch {
	case err != nil:
		b.failIfChecking(key, "must be hex (an even number of hex digits)")
		return nil
	case len(out) < 32:
		b.failIfChecking(key, "must be at least 32 bytes (64 hex characters), not %d bytes", len(out))
	}
	return out
}

func (b *builder) cidrs(key string) []netip.Prefix {
	list := b.v(key).list
	out := make([]netip.Prefix, 0, len(list))
	for i, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			if b.check {
				b.fail(fmt.Sprintf("%s[%d]", key, i), "%s is not a CIDR", quoted(s))
			}
			continue
		}
		out = append(out, p.Masked())
	}
	return out
}

func (b *builder) peers(key string) []Peer {
	raw := b.v(key).peers
	out := make([]Peer, 0, len(raw))
	for i, rp := range raw {
		name := fmt.Sprintf("%s[%d]", key, i)
		pk, pkReason := decodeHex32(rp.publicKey)
		if b.check && !b.failing() {
			switch {
			case rp.domain == "":
				b.fail(name+".domain", "must not be empty")
			case !httpURL(rp.endpoint):
				b.fail(name+".endpoint", "%s is not an http or https URL", quoted(rp.endpoint))
			case pkReason != "":
				b.fail(name+".public_key", "%s", pkReason)
			}
		}
		out = append(out, Peer{Domain: rp.domain, Endpoint: rp.endpoint, PublicKey: pk})
	}
	return out
}

// httpURL reports whether s is an absolute http or https URL with a host.
func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Opaque == ""
}

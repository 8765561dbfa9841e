package config

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// fullFile sets every key of §10.2 to a value other than its default.
func (f *fixture) fullFile() string {
	return `# every key
[server]
bind = "0.0.0.0:8443"
domain = "chat.example.test"
tls_cert = "certs/server.crt"
tls_key = "` + f.keyPath + `"
auto_approve_devices = true
max_auto_devices_per_user = 0
connection_keepalive = 45
session_ttl = 7200
handshake_timeout = 20
node_id = "node-1.a_b"
max_concurrent_streams = 50
read_header_timeout = 3
max_request_body = 4096
websocket = false
trusted_proxies = ["10.0.0.0/8", "fd00::1/64"]
shutdown_grace = 0

[storage]
postgres_dsn = "postgres://user:pgsecretpw@db/commucat"
sqlite_path = "var/db.sqlite"
redis_url = "redis://:redissecretpw@cache:6379"

[crypto]
noise_private = "` + strings.ToUpper(f.noisePrivHex) + `"
noise_public = "` + f.noisePubHex + `"
federation_seed = "` + f.seedHex + `"
prologue = "commucat-test"

[admin]
token = "admin-token-0123456789abcdef"
token_file = "secrets/admin.token"

[presence]
ttl_seconds = 90

[pairing]
ttl_seconds = 600
allow_server_keys = false

[limits]
relay_ttl = 3600
max_inbox_entries = 500
max_inbox_bytes = 0

[rotation.noise]
enabled = false
interval_hours = 24
grace_hours = 6
max_versions = 4

[rotation.admin]
enabled = true
interval_hours = 12
grace_hours = 2
max_versions = 1

[security]
require_encrypted_frames = true
open_channels = true
padding = "buckets"
max_connections_per_ip = 100
max_handshakes_per_ip = 10

[security.rate_limit]
http_burst = 61
connect_burst = 21
pairing_burst = 6
frame_burst = 201
http_window_ms = 1001
connect_window_ms = 1002
pairing_window_ms = 60001
frame_window_ms = 1003
http_penalty_ms = 10001
connect_penalty_ms = 30001
pairing_penalty_ms = 120001
frame_penalty_ms = 1

[media]
transcode = false

[ledger]
mode = "file"
target = "ledger/ledger.jsonl"

[federation]
enabled = true

[[federation.peers]]
domain = "beta.example"
endpoint = "https://beta.example/federation"
public_key = "` + strings.Repeat("ab", 32) + `"

[[federation.peers]]
domain = "gamma.example"
endpoint = "http://gamma.example:8080"
public_key = "` + strings.Repeat("CD", 32) + `"

[transport]
reality_cert = "certs/server.crt"
reality_fingerprint = "` + strings.Repeat("01", 32) + `"

[log]
level = "debug"
format = "json"
`
}

func TestFullFile(t *testing.T) {
	f := newFixture(t)
	content := f.fullFile()

	// The file really names every key of the table.
	var m map[string]any
	if _, err := toml.Decode(content, &m); err != nil {
		t.Fatal(err)
	}
	for _, d := range keyDefs {
		if _, ok := lookup(m, d.name); !ok {
			t.Errorf("fullFile lacks %s", d.name)
		}
	}

	c := f.mustLoad(t, content, nil)
	d := f.dir
	want := Config{
		File: filepath.Join(d, "commucat.toml"),
		Server: Server{
			Bind: "0.0.0.0:8443", Domain: "chat.example.test",
			TLSCert: f.certPath, TLSKey: f.keyPath,
			AutoApproveDevices: true, MaxAutoDevicesPerUser: 0,
			ConnectionKeepalive: 45 * time.Second, SessionTTL: 7200 * time.Second,
			HandshakeTimeout: 20 * time.Second, NodeID: "node-1.a_b",
			MaxConcurrentStreams: 50, ReadHeaderTimeout: 3 * time.Second,
			MaxRequestBody: 4096, WebSocket: false,
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/64")},
			ShutdownGrace:  0,
		},
		Storage: Storage{
			PostgresDSN: "postgres://user:pgsecretpw@db/commucat",
			SQLitePath:  filepath.Join(d, "var", "db.sqlite"),
			RedisURL:    "redis://:redissecretpw@cache:6379",
		},
		Crypto:   Crypto{NoisePrivate: f.noisePriv, NoisePublic: f.noisePub, FederationSeed: f.seed, Prologue: "commucat-test"},
		Admin:    Admin{Token: "admin-token-0123456789abcdef", TokenFile: filepath.Join(d, "secrets", "admin.token")},
		Presence: Presence{TTL: 90 * time.Second},
		Pairing:  Pairing{TTL: 600 * time.Second, AllowServerKeys: false},
		Limits:   Limits{RelayTTL: time.Hour, MaxInboxEntries: 500, MaxInboxBytes: 0},
		Rotation: Rotation{
			Noise: RotationPolicy{Enabled: false, Interval: 24 * time.Hour, Grace: 6 * time.Hour, MaxVersions: 4},
			Admin: RotationPolicy{Enabled: true, Interval: 12 * time.Hour, Grace: 2 * time.Hour, MaxVersions: 1},
		},
		Security: Security{
			RequireEncryptedFrames: true, OpenChannels: true, Padding: PaddingBuckets,
			RateLimit: RateLimits{
				HTTP:    RateLimit{61, 1001 * time.Millisecond, 10001 * time.Millisecond},
				Connect: RateLimit{21, 1002 * time.Millisecond, 30001 * time.Millisecond},
				Pairing: RateLimit{6, 60001 * time.Millisecond, 120001 * time.Millisecond},
				Frame:   RateLimit{201, 1003 * time.Millisecond, time.Millisecond},
			},
			MaxConnectionsPerIP: 100, MaxHandshakesPerIP: 10,
		},
		Media:  Media{Transcode: false},
		Ledger: Ledger{Mode: LedgerFile, Target: filepath.Join(d, "ledger", "ledger.jsonl")},
		Federation: Federation{Enabled: true, Peers: []Peer{
			{"beta.example", "https://beta.example/federation", [32]byte(bytesRepeat(0xab))},
			{"gamma.example", "http://gamma.example:8080", [32]byte(bytesRepeat(0xcd))},
		}},
		Transport: Transport{RealityCert: f.certPath, RealityFingerprint: [32]byte(bytesRepeat(0x01))},
		Log:       Log{Level: slog.LevelDebug, Format: LogJSON},
	}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("got  %#v\nwant %#v", dump(*c), dump(want))
	}
	if !c.Transport.RealityEnabled() {
		t.Error("RealityEnabled false")
	}
	if got := c.SupportedVersions(); !reflect.DeepEqual(got, []int{2}) {
		t.Errorf("SupportedVersions = %v", got)
	}
}

func bytesRepeat(b byte) []byte {
	out := make([]byte, 32)
	for i := range out {
		out[i] = b
	}
	return out
}

// dump shows every field, secrets included (tests only).
func dump(c Config) string {
	return fmt.Sprintf("%+v crypto=%x/%x/%x admin=%q storage=%q/%q", []any{c.File, c.Server, c.Presence, c.Pairing, c.Limits, c.Rotation, c.Security, c.Media, c.Ledger, c.Federation, c.Transport, c.Log, c.Admin.TokenFile, c.Storage.SQLitePath},
		c.Crypto.NoisePrivate, c.Crypto.NoisePublic, c.Crypto.FederationSeed, c.Admin.Token, c.Storage.PostgresDSN, c.Storage.RedisURL)
}

// The defaults of the §10.2 table, transcribed independently of keyDefs.
func TestDefaultsMatchSpec(t *testing.T) {
	c := Default()
	checks := []struct {
		name      string
		got, want any
	}{
		{"server.bind", c.Server.Bind, ""},
		{"server.domain", c.Server.Domain, ""},
		{"server.tls_cert", c.Server.TLSCert, ""},
		{"server.tls_key", c.Server.TLSKey, ""},
		{"server.auto_approve_devices", c.Server.AutoApproveDevices, false},
		{"server.max_auto_devices_per_user", c.Server.MaxAutoDevicesPerUser, 1},
		{"server.connection_keepalive", c.Server.ConnectionKeepalive, 30 * time.Second},
		{"server.session_ttl", c.Server.SessionTTL, 3600 * time.Second},
		{"server.handshake_timeout", c.Server.HandshakeTimeout, 10 * time.Second},
		{"server.node_id", c.Server.NodeID, ""},
		{"server.max_concurrent_streams", c.Server.MaxConcurrentStreams, uint32(1000)},
		{"server.read_header_timeout", c.Server.ReadHeaderTimeout, 10 * time.Second},
		{"server.max_request_body", c.Server.MaxRequestBody, int64(262144)},
		{"server.websocket", c.Server.WebSocket, true},
		{"server.trusted_proxies", len(c.Server.TrustedProxies), 0},
		{"server.shutdown_grace", c.Server.ShutdownGrace, 10 * time.Second},
		{"storage.postgres_dsn", c.Storage.PostgresDSN, ""},
		{"storage.sqlite_path", c.Storage.SQLitePath, "data/commucat.db"},
		{"storage.redis_url", c.Storage.RedisURL, ""},
		{"crypto.noise_private", c.Crypto.NoisePrivate, [32]byte{}},
		{"crypto.noise_public", c.Crypto.NoisePublic, [32]byte{}},
		{"crypto.federation_seed", len(c.Crypto.FederationSeed), 0},
		{"crypto.prologue", c.Crypto.Prologue, "commucat"},
		{"admin.token", c.Admin.Token, ""},
		{"admin.token_file", c.Admin.TokenFile, ""},
		{"presence.ttl_seconds", c.Presence.TTL, 60 * time.Second},
		{"pairing.ttl_seconds", c.Pairing.TTL, 300 * time.Second},
		{"pairing.allow_server_keys", c.Pairing.AllowServerKeys, true},
		{"limits.relay_ttl", c.Limits.RelayTTL, 86400 * time.Second},
		{"limits.max_inbox_entries", c.Limits.MaxInboxEntries, int64(100000)},
		{"limits.max_inbox_bytes", c.Limits.MaxInboxBytes, int64(256 << 20)},
		{"rotation.noise", c.Rotation.Noise, RotationPolicy{true, 168 * time.Hour, 48 * time.Hour, 3}},
		{"rotation.admin", c.Rotation.Admin, RotationPolicy{false, 168 * time.Hour, 72 * time.Hour, 2}},
		{"security.require_encrypted_frames", c.Security.RequireEncryptedFrames, false},
		{"security.open_channels", c.Security.OpenChannels, false},
		{"security.padding", c.Security.Padding, PaddingNone},
		{"security.rate_limit.http", c.Security.RateLimit.HTTP, RateLimit{60, time.Second, 10 * time.Second}},
		{"security.rate_limit.connect", c.Security.RateLimit.Connect, RateLimit{20, time.Second, 30 * time.Second}},
		{"security.rate_limit.pairing", c.Security.RateLimit.Pairing, RateLimit{5, time.Minute, 2 * time.Minute}},
		{"security.rate_limit.frame", c.Security.RateLimit.Frame, RateLimit{200, time.Second, 0}},
		{"media.transcode", c.Media.Transcode, true},
		{"ledger.mode", c.Ledger.Mode, LedgerNull},
		{"ledger.target", c.Ledger.Target, ""},
		{"federation.enabled", c.Federation.Enabled, false},
		{"federation.peers", len(c.Federation.Peers), 0},
		{"transport.reality_cert", c.Transport.RealityCert, ""},
		{"transport.reality_fingerprint", c.Transport.RealityFingerprint, [32]byte{}},
		{"log.level", c.Log.Level, slog.LevelInfo},
		{"log.format", c.Log.Format, LogText},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s: default %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if got := c.SupportedVersions(); !reflect.DeepEqual(got, []int{1, 2}) {
		t.Errorf("SupportedVersions = %v", got)
	}
}

// A file with only the required keys yields Default() plus those keys.
func TestMinimalFileIsDefaults(t *testing.T) {
	f := newFixture(t)
	c := f.mustLoad(t, f.minimal(), nil)
	want := Default()
	want.File = filepath.Join(f.dir, "commucat.toml")
	want.Server.Bind, want.Server.Domain = "127.0.0.1:9443", "example.test"
	want.Server.TLSCert, want.Server.TLSKey = f.certPath, f.keyPath
	want.Server.NodeID = "test-host-abababab"
	want.Storage.SQLitePath = filepath.Join(f.dir, "data", "commucat.db")
	want.Crypto.NoisePrivate, want.Crypto.NoisePublic, want.Crypto.FederationSeed = f.noisePriv, f.noisePub, f.seed
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("got  %s\nwant %s", dump(*c), dump(want))
	}
}

func TestPublicLoad(t *testing.T) {
	f := newFixture(t)
	p := f.write(t, f.minimal())
	cfg, err := Load(p, true, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9._-]{1,55}-[0-9a-f]{8}$`).MatchString(cfg.Server.NodeID) {
		t.Errorf("node_id %q", cfg.Server.NodeID)
	}
	// Errors come back as *Error behind a non-nil interface, and a nil
	// error is a true nil.
	_, err = Load(filepath.Join(f.dir, "missing.toml"), true, noEnv)
	asError(t, err)
}

func TestValidationRules(t *testing.T) {
	f := newFixture(t)
	otherCert, otherKey := selfSigned(t, "other.test")
	writeFile(t, filepath.Join(f.dir, "other.crt"), otherCert)
	writeFile(t, filepath.Join(f.dir, "other.key"), otherKey)
	writeFile(t, filepath.Join(f.dir, "garbage.pem"), []byte("not pem"))
	x := strings.Repeat("ab", 32)
	min := f.minimal()
	without := func(key string) string {
		var out []string
		for _, l := range strings.Split(min, "\n") {
			if !strings.HasPrefix(l, key+" ") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	cases := []struct {
		name    string
		content string
		env     map[string]string
		key     string
		msg     string // the exact Error()
	}{
		{"bind missing", without("bind"), nil, "server.bind", "server.bind: required key is missing"},
		{"bind not host:port", withKey(min, "server.bind", `"x"`), nil, "server.bind", `server.bind: "x" is not host:port`},
		{"bind bad port", withKey(min, "server.bind", `"127.0.0.1:99999"`), nil, "server.bind", `server.bind: "127.0.0.1:99999" is not host:port`},
		{"bind named port", withKey(min, "server.bind", `"127.0.0.1:https"`), nil, "server.bind", `server.bind: "127.0.0.1:https" is not host:port`},
		{"bind bad host", withKey(min, "server.bind", `"a b:80"`), nil, "server.bind", `server.bind: "a b:80" is not host:port`},
		{"domain missing", without("domain"), nil, "server.domain", "server.domain: required key is missing"},
		{"domain empty", withKey(min, "server.domain", `""`), nil, "server.domain", "server.domain: must be 1 to 253 characters of UTF-8, not 0 bytes"},
		{"domain long", withKey(min, "server.domain", `"`+strings.Repeat("a", 254)+`"`), nil, "server.domain", "server.domain: must be 1 to 253 characters of UTF-8, not 254 bytes"},
		{"tls_cert missing", without("tls_cert"), nil, "server.tls_cert", "server.tls_cert: required key is missing"},
		{"tls_key missing", without("tls_key"), nil, "server.tls_key", "server.tls_key: required key is missing"},
		{"tls_cert unreadable", withKey(min, "server.tls_cert", `"nope.crt"`), nil, "server.tls_cert",
			"server.tls_cert: cannot read: open " + filepath.Join(f.dir, "nope.crt") + ": no such file or directory"},
		{"tls_key unreadable", withKey(min, "server.tls_key", `"nope.key"`), nil, "server.tls_key",
			"server.tls_key: cannot read: open " + filepath.Join(f.dir, "nope.key") + ": no such file or directory"},
		{"tls mismatch", withKey(min, "server.tls_key", `"other.key"`), nil, "server.tls_key",
			"server.tls_key " + filepath.Join(f.dir, "other.key") + " does not match the certificate in server.tls_cert " + f.certPath + " (tls: private key does not match public key)"},
		{"tls cert garbage", withKey(min, "server.tls_cert", `"garbage.pem"`), nil, "server.tls_cert", ""},
		{"tls key garbage", withKey(min, "server.tls_key", `"garbage.pem"`), nil, "server.tls_key", ""},
		{"tls key is a cert", withKey(min, "server.tls_key", `"certs/server.crt"`), nil, "server.tls_key", ""},
		{"node_id pattern", withKey(min, "server.node_id", `"a b"`), nil, "server.node_id", `server.node_id: "a b" does not match [A-Za-z0-9._-]{1,64}`},
		{"node_id too long", withKey(min, "server.node_id", `"`+strings.Repeat("n", 65)+`"`), nil, "server.node_id", ""},
		{"node_id empty", withKey(min, "server.node_id", `""`), nil, "server.node_id", ""},
		{"cidr", withKey(min, "server.trusted_proxies", `["10.0.0.0/8", "10.0.0.1"]`), nil, "server.trusted_proxies[1]", `server.trusted_proxies[1]: "10.0.0.1" is not a CIDR`},
		{"cidr garbage", withKey(min, "server.trusted_proxies", `["nope"]`), nil, "server.trusted_proxies[0]", `server.trusted_proxies[0]: "nope" is not a CIDR`},
		{"sqlite empty", withKey(min, "storage.sqlite_path", `""`), nil, "storage.sqlite_path", "storage.sqlite_path: must not be empty when storage.postgres_dsn is empty"},
		{"redis without postgres", withKey(min, "storage.redis_url", `"redis://localhost"`), nil, "storage.redis_url", "storage.redis_url: requires storage.postgres_dsn (Redis is only used with PostgreSQL)"},
		{"noise_private missing", without("noise_private"), nil, "crypto.noise_private", "crypto.noise_private: required key is missing"},
		{"noise_private short", withKey(min, "crypto.noise_private", `"abcd"`), nil, "crypto.noise_private", "crypto.noise_private: must be 64 hex characters (32 bytes), not 4 characters"},
		{"noise_private not hex", withKey(min, "crypto.noise_private", `"`+strings.Repeat("zz", 32)+`"`), nil, "crypto.noise_private", "crypto.noise_private: must be hex"},
		{"noise_public missing", without("noise_public"), nil, "crypto.noise_public", "crypto.noise_public: required key is missing"},
		{"noise_public not hex", withKey(min, "crypto.noise_public", `"`+strings.Repeat("g", 64)+`"`), nil, "crypto.noise_public", "crypto.noise_public: must be hex"},
		{"noise mismatch", withKey(min, "crypto.noise_public", `"`+x+`"`), nil, "crypto.noise_public", "crypto.noise_public does not match crypto.noise_private"},
		{"seed missing", without("federation_seed"), nil, "crypto.federation_seed", "crypto.federation_seed: required key is missing"},
		{"seed not hex", withKey(min, "crypto.federation_seed", `"`+strings.Repeat("x", 64)+`"`), nil, "crypto.federation_seed", "crypto.federation_seed: must be hex (an even number of hex digits)"},
		{"seed odd", withKey(min, "crypto.federation_seed", `"`+strings.Repeat("a", 65)+`"`), nil, "crypto.federation_seed", "crypto.federation_seed: must be hex (an even number of hex digits)"},
		{"seed short", withKey(min, "crypto.federation_seed", `"`+strings.Repeat("ab", 31)+`"`), nil, "crypto.federation_seed", "crypto.federation_seed: must be at least 32 bytes (64 hex characters), not 31 bytes"},
		{"admin token short", withKey(min, "admin.token", `"short"`), nil, "admin.token", "admin.token: must be at least 16 characters when set"},
		{"rotation admin without file", withKey(min, "rotation.admin.enabled", "true"), nil, "rotation.admin.enabled", "rotation.admin.enabled = true requires admin.token_file"},
		{"padding", withKey(min, "security.padding", `"random"`), nil, "security.padding", `security.padding: "random" is not one of none, buckets`},
		{"ledger mode", withKey(min, "ledger.mode", `"syslog"`), nil, "ledger.mode", `ledger.mode: "syslog" is not one of null, debug, file`},
		{"ledger file without target", withKey(min, "ledger.mode", `"file"`), nil, "ledger.target", `ledger.mode = "file" requires ledger.target`},
		{"peer domain", min + "\n[[federation.peers]]\ndomain = \"\"\nendpoint = \"https://a\"\npublic_key = \"" + x + "\"\n", nil, "federation.peers[0].domain", "federation.peers[0].domain: must not be empty"},
		{"peer endpoint", min + "\n[[federation.peers]]\ndomain = \"a\"\nendpoint = \"ftp://a\"\npublic_key = \"" + x + "\"\n", nil, "federation.peers[0].endpoint", `federation.peers[0].endpoint: "ftp://a" is not an http or https URL`},
		{"peer endpoint relative", min + "\n[[federation.peers]]\ndomain = \"a\"\nendpoint = \"/x\"\npublic_key = \"" + x + "\"\n", nil, "federation.peers[0].endpoint", `federation.peers[0].endpoint: "/x" is not an http or https URL`},
		{"peer key", min + "\n[[federation.peers]]\ndomain = \"a\"\nendpoint = \"https://a\"\npublic_key = \"" + x + "\"\n[[federation.peers]]\ndomain = \"b\"\nendpoint = \"https://b\"\npublic_key = \"ab\"\n", nil, "federation.peers[1].public_key", "federation.peers[1].public_key: must be 64 hex characters (32 bytes), not 2 characters"},
		{"peer key missing", min + "\n[[federation.peers]]\ndomain = \"a\"\nendpoint = \"https://a\"\n", nil, "federation.peers[0].public_key", ""},
		{"reality cert only", withKey(min, "transport.reality_cert", `"certs/server.crt"`), nil, "transport.reality_fingerprint", "transport.reality_fingerprint is required when transport.reality_cert is set (both or neither)"},
		{"reality fingerprint only", withKey(min, "transport.reality_fingerprint", `"`+x+`"`), nil, "transport.reality_cert", "transport.reality_cert is required when transport.reality_fingerprint is set (both or neither)"},
		{"reality fingerprint bad", withKey(withKey(min, "transport.reality_cert", `"certs/server.crt"`), "transport.reality_fingerprint", `"abc"`), nil, "transport.reality_fingerprint", ""},
		{"reality cert unreadable", withKey(withKey(min, "transport.reality_cert", `"nope.pem"`), "transport.reality_fingerprint", `"`+x+`"`), nil, "transport.reality_cert", ""},
		{"reality cert not a cert", withKey(withKey(min, "transport.reality_cert", `"garbage.pem"`), "transport.reality_fingerprint", `"`+x+`"`), nil, "transport.reality_cert", ""},
		{"log level", withKey(min, "log.level", `"trace"`), nil, "log.level", `log.level: "trace" is not one of debug, info, warn, error`},
		{"log format", withKey(min, "log.format", `"xml"`), nil, "log.format", `log.format: "xml" is not one of text, json`},
		// Types.
		{"bind integer", withKey(min, "server.bind", "9443"), nil, "server.bind", "server.bind: must be a string, not an integer"},
		{"bool string", withKey(min, "server.websocket", `"true"`), nil, "server.websocket", "server.websocket: must be a boolean, not a string"},
		{"int float", withKey(min, "server.session_ttl", "3600.0"), nil, "server.session_ttl", "server.session_ttl: must be an integer, not a float"},
		{"int string", withKey(min, "server.session_ttl", `"3600"`), nil, "server.session_ttl", "server.session_ttl: must be an integer, not a string"},
		{"list string", withKey(min, "server.trusted_proxies", `"10.0.0.0/8"`), nil, "server.trusted_proxies", "server.trusted_proxies: must be an array of strings, not a string"},
		{"list element", withKey(min, "server.trusted_proxies", `[1]`), nil, "server.trusted_proxies[0]", "server.trusted_proxies[0]: must be a string, not an integer"},
		{"date", withKey(min, "server.domain", "1979-05-27"), nil, "server.domain", "server.domain: must be a string, not a date/time"},
		{"table not table", "server = 1\n", nil, "server", "server: must be a table, not an integer"},
		{"peers not array", withKey(min, "federation.peers", `"x"`), nil, "federation.peers", "federation.peers: must be an array of tables, not a string"},
		{"peer not table", withKey(min, "federation.peers", `["x"]`), nil, "federation.peers[0]", "federation.peers[0]: must be a table, not a string"},
		{"peer member type", withKey(min, "federation.peers", `[{domain = 1}]`), nil, "federation.peers[0].domain", "federation.peers[0].domain: must be a string, not an integer"},
		// Unknown keys.
		{"unknown key", withKey(min, "server.bnd", `"x"`), nil, "server.bnd", "unknown key: server.bnd"},
		{"unknown case", withKey(min, "server.Bind", `"x"`), nil, "server.Bind", "unknown key: server.Bind"},
		{"unknown table", min + "\n[metrics]\nenabled = true\n", nil, "metrics", "unknown key: metrics"},
		{"unknown nested", withKey(min, "rotation.noise.interval", "5"), nil, "rotation.noise.interval", "unknown key: rotation.noise.interval"},
		{"unknown top-level", "bind = \"x\"\n" + min, nil, "bind", "unknown key: bind"},
		{"unknown dotted", min + "\n[storage]\nsqlite.path = \"x\"\n", nil, "storage.sqlite.path", "unknown key: storage.sqlite.path"},
		{"unknown peer member", withKey(min, "federation.peers", `[{domain = "a", endpoint = "https://a", public_key = "`+x+`", extra = 1}]`), nil, "federation.peers.extra", "unknown key: federation.peers.extra"},
		{"unknown under leaf", withKey(min, "server.bind", `{ host = "x" }`), nil, "server.bind.host", "unknown key: server.bind.host"},
		{"quoted dotted key", "\"server.bind\" = \"x\"\n" + min, nil, `"server.bind"`, `unknown key: "server.bind"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.load(t, tc.content, tc.env)
			ce := asError(t, err)
			if ce.Key != tc.key {
				t.Errorf("key %q, want %q (%v)", ce.Key, tc.key, err)
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Errorf("message %q does not name the key %q", err, tc.key)
			}
			if tc.msg != "" && err.Error() != tc.msg {
				t.Errorf("message\n got %q\nwant %q", err, tc.msg)
			}
		})
	}
}

// Ranges of the §10.2 table: each bound is accepted, one past it rejected
// with a message naming the key.
func TestRanges(t *testing.T) {
	f := newFixture(t)
	base := f.requiredEnv()
	const open = int64(-1)
	ranges := []struct {
		key, env string
		min, max int64 // max = open: no upper bound in the table
	}{
		{"server.max_auto_devices_per_user", "COMMUCAT_MAX_AUTO_DEVICES", 0, open},
		{"server.connection_keepalive", "COMMUCAT_CONNECTION_KEEPALIVE", 5, 3600},
		{"server.session_ttl", "COMMUCAT_SESSION_TTL", 60, 2592000},
		{"server.handshake_timeout", "COMMUCAT_HANDSHAKE_TIMEOUT", 1, 60},
		{"server.max_concurrent_streams", "COMMUCAT_MAX_STREAMS", 1, open},
		{"server.read_header_timeout", "COMMUCAT_READ_HEADER_TIMEOUT", 1, open},
		{"server.max_request_body", "COMMUCAT_MAX_REQUEST_BODY", 1024, open},
		{"server.shutdown_grace", "COMMUCAT_SHUTDOWN_GRACE", 0, open},
		{"presence.ttl_seconds", "COMMUCAT_PRESENCE_TTL", 5, open},
		{"pairing.ttl_seconds", "COMMUCAT_PAIRING_TTL", 60, 3600},
		{"limits.relay_ttl", "COMMUCAT_RELAY_TTL", 60, open},
		{"limits.max_inbox_entries", "COMMUCAT_MAX_INBOX_ENTRIES", 0, open},
		{"limits.max_inbox_bytes", "COMMUCAT_MAX_INBOX_BYTES", 0, open},
		{"rotation.noise.interval_hours", "COMMUCAT_ROTATE_NOISE_INTERVAL_HOURS", 1, open},
		{"rotation.noise.grace_hours", "COMMUCAT_ROTATE_NOISE_GRACE_HOURS", 1, open},
		{"rotation.noise.max_versions", "COMMUCAT_ROTATE_NOISE_MAX_VERSIONS", 2, open},
		{"rotation.admin.interval_hours", "COMMUCAT_ROTATE_ADMIN_INTERVAL_HOURS", 1, open},
		{"rotation.admin.grace_hours", "COMMUCAT_ROTATE_ADMIN_GRACE_HOURS", 1, open},
		{"rotation.admin.max_versions", "COMMUCAT_ROTATE_ADMIN_MAX_VERSIONS", 1, open},
		{"security.max_connections_per_ip", "COMMUCAT_MAX_CONNECTIONS_PER_IP", 1, open},
		{"security.max_handshakes_per_ip", "COMMUCAT_MAX_HANDSHAKES_PER_IP", 1, open},
	}
	for _, z := range []string{"HTTP", "CONNECT", "PAIRING", "FRAME"} {
		lz := strings.ToLower(z)
		ranges = append(ranges,
			struct {
				key, env string
				min, max int64
			}{"security.rate_limit." + lz + "_burst", "COMMUCAT_RATE_" + z + "_BURST", 1, open},
			struct {
				key, env string
				min, max int64
			}{"security.rate_limit." + lz + "_window_ms", "COMMUCAT_RATE_" + z + "_WINDOW_MS", 1, open},
			struct {
				key, env string
				min, max int64
			}{"security.rate_limit." + lz + "_penalty_ms", "COMMUCAT_RATE_" + z + "_PENALTY_MS", 0, open})
	}
	load := func(env, val string) error {
		e := map[string]string{env: val}
		for k, v := range base {
			e[k] = v
		}
		_, err := testLoader(f.dir).load(filepath.Join(f.dir, "absent.toml"), false, mapEnv(e))
		if err != nil {
			return err
		}
		return nil
	}
	intKeys := 0
	for _, d := range keyDefs {
		if d.kind == kInt {
			intKeys++
		}
	}
	if intKeys != len(ranges) {
		t.Errorf("%d integer keys, %d ranges tested", intKeys, len(ranges))
	}
	for _, r := range ranges {
		if err := load(r.env, strconv.FormatInt(r.min, 10)); err != nil {
			t.Errorf("%s = min %d rejected: %v", r.key, r.min, err)
		}
		err := load(r.env, strconv.FormatInt(r.min-1, 10))
		if ce := asError(t, err); ce.Key != r.key || !strings.HasPrefix(err.Error(), r.key+": must be") {
			t.Errorf("%s = %d: %v", r.key, r.min-1, err)
		}
		if r.max != open {
			if err := load(r.env, strconv.FormatInt(r.max, 10)); err != nil {
				t.Errorf("%s = max %d rejected: %v", r.key, r.max, err)
			}
			err := load(r.env, strconv.FormatInt(r.max+1, 10))
			want := fmt.Sprintf("%s: must be between %d and %d, not %d", r.key, r.min, r.max, r.max+1)
			if err == nil || err.Error() != want {
				t.Errorf("%s = %d: %v, want %s", r.key, r.max+1, err, want)
			}
		} else {
			// Large values are fine as long as they fit the Go type.
			if err := load(r.env, "1000000"); err != nil {
				t.Errorf("%s = 1000000 rejected: %v", r.key, err)
			}
			// The largest int64 does not fit a duration or a uint32.
			err := load(r.env, strconv.FormatInt(1<<62, 10))
			isDur := strings.Contains(r.key, "ttl") || strings.Contains(r.key, "timeout") || strings.Contains(r.key, "grace") ||
				strings.Contains(r.key, "_ms") || strings.Contains(r.key, "hours") || strings.Contains(r.key, "streams")
			if isDur && err == nil {
				t.Errorf("%s = 2^62 accepted", r.key)
			}
			if err != nil && !strings.HasPrefix(err.Error(), r.key+": must be at most") {
				t.Errorf("%s = 2^62: %v", r.key, err)
			}
		}
	}
}

// The first error in the order of the table is reported.
func TestFirstErrorInTableOrder(t *testing.T) {
	f := newFixture(t)
	content := withKey(withKey(withKey(f.minimal(), "log.level", `"x"`), "server.session_ttl", "1"), "security.padding", `"x"`)
	_, err := f.load(t, content, nil)
	if ce := asError(t, err); ce.Key != "server.session_ttl" {
		t.Errorf("first error %v", err)
	}
	// Unknown keys come before values.
	_, err = f.load(t, withKey(content, "log.colour", "true"), nil)
	if ce := asError(t, err); ce.Key != "log.colour" {
		t.Errorf("first error %v", err)
	}
}

// The seed's example repeats [server], which TOML forbids.
func TestDuplicateTable(t *testing.T) {
	f := newFixture(t)
	content := f.minimal() + "\n[server]\nmax_auto_devices_per_user = 5\nconnection_keepalive = 30\n"
	_, err := f.load(t, content, nil)
	ce := asError(t, err)
	if ce.Key != "server" || !strings.Contains(ce.Error(), "Key 'server' has already been defined") {
		t.Errorf("got %v", err)
	}
	// In one table it is fine.
	fixed := strings.Replace(f.minimal(), "[server]\n", "[server]\nmax_auto_devices_per_user = 5\nconnection_keepalive = 30\n", 1)
	c := f.mustLoad(t, fixed, nil)
	if c.Server.MaxAutoDevicesPerUser != 5 {
		t.Error(c.Server.MaxAutoDevicesPerUser)
	}
}

func TestSyntaxError(t *testing.T) {
	f := newFixture(t)
	_, err := f.load(t, "[server\nbind = 1", nil)
	ce := asError(t, err)
	if ce.Key != "" || !strings.Contains(ce.Error(), "commucat.toml: line 2: invalid TOML: ") || !strings.Contains(ce.Error(), "invalid TOML") {
		t.Errorf("got %#v", ce)
	}
}

func TestFileTooLarge(t *testing.T) {
	f := newFixture(t)
	big := f.minimal() + "\n#" + strings.Repeat("x", MaxFileSize) + "\n"
	_, err := f.load(t, big, nil)
	if ce := asError(t, err); !strings.Contains(ce.Error(), "larger than") {
		t.Errorf("got %v", err)
	}
	// Exactly MaxFileSize is accepted.
	exact := f.minimal() + "#"
	exact += strings.Repeat("x", MaxFileSize-len(exact))
	if _, err := f.load(t, exact, nil); err != nil {
		t.Errorf("file of exactly MaxFileSize: %v", err)
	}
}

// Inputs that make the TOML parser slow are rejected up front.
func TestPathologicalNesting(t *testing.T) {
	f := newFixture(t)
	for _, content := range []string{
		"a = " + strings.Repeat("{b=", 200000) + "1" + strings.Repeat("}", 200000),
		"a = " + strings.Repeat("[", 500000),
		strings.Repeat("a.", 400000) + "b = 1",
		"[" + strings.Repeat("a.", 400000) + "b]",
	} {
		start := time.Now()
		_, err := f.load(t, content, nil)
		asError(t, err)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v", d)
		}
	}
	// Dots and brackets inside strings and comments do not count.
	content := f.minimal() + "# " + strings.Repeat("[.", 100) + "\n[admin]\ntoken = \"" + strings.Repeat("[{.", 100) + "\"\n" +
		"token_file = '''" + strings.Repeat(".[", 50) + "\n" + strings.Repeat(".{", 50) + "'''\n"
	c := f.mustLoad(t, content, nil)
	if c.Admin.Token != strings.Repeat("[{.", 100) {
		t.Error("token")
	}
}

func TestResolve(t *testing.T) {
	env := mapEnv(map[string]string{"COMMUCAT_CONFIG": "/etc/commucat/c.toml"})
	cases := []struct {
		flag     string
		env      func(string) (string, bool)
		path     string
		explicit bool
	}{
		{"x.toml", env, "x.toml", true},
		{"", env, "/etc/commucat/c.toml", true},
		{"", noEnv, "commucat.toml", false},
		{"", mapEnv(map[string]string{"COMMUCAT_CONFIG": ""}), "commucat.toml", false},
	}
	for _, c := range cases {
		p, e := Resolve(c.flag, c.env)
		if p != c.path || e != c.explicit {
			t.Errorf("Resolve(%q) = %q, %v; want %q, %v", c.flag, p, e, c.path, c.explicit)
		}
	}
}

func TestMissingFile(t *testing.T) {
	f := newFixture(t)
	missing := filepath.Join(f.dir, "nope.toml")
	_, err := testLoader(f.dir).load(missing, true, noEnv)
	if ce := asError(t, err); ce.Error() != "configuration file "+missing+" does not exist" {
		t.Errorf("got %v", err)
	}
	// The default file may be absent: the environment suffices.
	c, err := testLoader(f.dir).load(missing, false, mapEnv(f.requiredEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if c.File != "" || c.Server.Domain != "example.test" {
		t.Errorf("got %+v", c)
	}
	// Without the environment, the required keys are missing.
	_, err = testLoader(f.dir).load(missing, false, noEnv)
	if ce := asError(t, err); ce.Key != "server.bind" {
		t.Errorf("got %v", err)
	}
	// A directory is not a file.
	_, err = testLoader(f.dir).load(f.dir, true, noEnv)
	asError(t, err)
}

func TestRelativePaths(t *testing.T) {
	f := newFixture(t)
	wd := t.TempDir()
	env := map[string]string{
		"COMMUCAT_LEDGER":               "file",
		"COMMUCAT_LEDGER_TARGET":        "logs/ledger.jsonl",
		"COMMUCAT_ADMIN_TOKEN_FILE":     "../tok",
		"COMMUCAT_ROTATE_ADMIN_ENABLED": "true",
	}
	// With a file: against the file's directory, wherever the process runs,
	// whether the path comes from the file, the environment or a default.
	p := f.write(t, f.minimal()+"\n[transport]\nreality_cert = \"./certs/../certs/server.crt\"\nreality_fingerprint = \""+strings.Repeat("00", 32)+"\"\n")
	c, lerr := testLoader(wd).load(p, true, mapEnv(env))
	if lerr != nil {
		t.Fatal(lerr)
	}
	want := map[string]string{
		"tls_cert":     f.certPath,
		"tls_key":      f.keyPath,
		"sqlite_path":  filepath.Join(f.dir, "data", "commucat.db"),
		"ledger":       filepath.Join(f.dir, "logs", "ledger.jsonl"),
		"token_file":   filepath.Join(filepath.Dir(f.dir), "tok"),
		"reality_cert": f.certPath,
	}
	got := map[string]string{
		"tls_cert": c.Server.TLSCert, "tls_key": c.Server.TLSKey, "sqlite_path": c.Storage.SQLitePath,
		"ledger": c.Ledger.Target, "token_file": c.Admin.TokenFile, "reality_cert": c.Transport.RealityCert,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("with file:\n got %v\nwant %v", got, want)
	}

	// A relative file name is taken from the working directory, and its
	// directory is the base.
	t.Chdir(filepath.Dir(f.dir))
	c, err := Load(filepath.Join(filepath.Base(f.dir), "commucat.toml"), true, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.TLSCert != f.certPath || c.File != p {
		t.Errorf("relative file name: %q %q", c.Server.TLSCert, c.File)
	}

	// Without a file: against the working directory.
	env = map[string]string{
		"COMMUCAT_TLS_CERT":      "certs/server.crt",
		"COMMUCAT_TLS_KEY":       "certs/server.key",
		"COMMUCAT_LEDGER_TARGET": "ledger.jsonl",
	}
	for k, v := range f.requiredEnv() {
		if _, ok := env[k]; !ok {
			env[k] = v
		}
	}
	c, lerr = testLoader(f.dir).load(filepath.Join(wd, "absent.toml"), false, mapEnv(env))
	if lerr != nil {
		t.Fatal(lerr)
	}
	if c.Server.TLSCert != f.certPath || c.Storage.SQLitePath != filepath.Join(f.dir, "data", "commucat.db") ||
		c.Ledger.Target != filepath.Join(f.dir, "ledger.jsonl") || c.Admin.TokenFile != "" {
		t.Errorf("without file: %+v %+v %+v", c.Server, c.Storage, c.Ledger)
	}
	// The same through Load and the real working directory (one without a
	// commucat.toml).
	t.Chdir(filepath.Join(f.dir, "certs"))
	env["COMMUCAT_TLS_CERT"], env["COMMUCAT_TLS_KEY"] = "server.crt", "./server.key"
	c, err = Load("", false, mapEnv(env))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.TLSKey != f.keyPath || c.File != "" {
		t.Errorf("Load without file: %q %q", c.Server.TLSKey, c.File)
	}
}

func TestNodeIDDefault(t *testing.T) {
	cases := []struct {
		host string
		err  error
		want string
	}{
		{"test-host", nil, "test-host-abababab"},
		{"my host.example.com", nil, "my-host.example.com-abababab"},
		{"héllo_wörld", nil, "h-llo_w-rld-abababab"},
		{strings.Repeat("x", 54) + "ÿÿ" + "tail", nil, strings.Repeat("x", 54) + "--abababab"},
		{strings.Repeat("a", 100), nil, strings.Repeat("a", 55) + "-abababab"},
		{"bad\xffbyte", nil, "bad-byte-abababab"},
		{"", nil, "node-abababab"},
		{"ignored", os.ErrNotExist, "node-abababab"},
	}
	for _, c := range cases {
		l := testLoader("/")
		l.hostname = func() (string, error) { return c.host, c.err }
		got, err := l.defaultNodeID()
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("hostname %q: %q, want %q", c.host, got, c.want)
		}
		if len(got) > 64 || !nodeIDPattern.MatchString(got) {
			t.Errorf("%q is not a valid node id", got)
		}
	}
	// Real randomness: two loads differ in the suffix only.
	f := newFixture(t)
	p := f.write(t, f.minimal())
	a, err := Load(p, true, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(p, true, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if a.Server.NodeID == b.Server.NodeID || a.Server.NodeID[:len(a.Server.NodeID)-8] != b.Server.NodeID[:len(b.Server.NodeID)-8] {
		t.Errorf("node ids %q %q", a.Server.NodeID, b.Server.NodeID)
	}
	// A configured node id is kept.
	c := f.mustLoad(t, withKey(f.minimal(), "server.node_id", `"fixed"`), nil)
	if c.Server.NodeID != "fixed" {
		t.Error(c.Server.NodeID)
	}
}

func TestErrorFormat(t *testing.T) {
	cases := []struct {
		e    Error
		want string
	}{
		{Error{"server.bind", `"x" is not host:port`}, `server.bind: "x" is not host:port`},
		{Error{"crypto.noise_public", "crypto.noise_public does not match crypto.noise_private"}, "crypto.noise_public does not match crypto.noise_private"},
		{Error{"server.bnd", "unknown key: server.bnd"}, "unknown key: server.bnd"},
		{Error{"", "file too large"}, "file too large"},
	}
	for _, c := range cases {
		if got := c.e.Error(); got != c.want {
			t.Errorf("%q, want %q", got, c.want)
		}
	}
}

// No secret appears when the configuration is formatted or encoded.
func TestSecretsRedacted(t *testing.T) {
	f := newFixture(t)
	c := f.mustLoad(t, f.fullFile(), nil)
	secrets := []string{
		f.noisePrivHex, strings.ToUpper(f.noisePrivHex), f.seedHex,
		"admin-token-0123456789abcdef", "pgsecretpw", "redissecretpw",
	}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		outs = append(outs, fmt.Sprintf(verb, *c), fmt.Sprintf(verb, c), fmt.Sprintf(verb, c.Crypto), fmt.Sprintf(verb, c.Admin), fmt.Sprintf(verb, c.Storage))
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(js))
	for _, out := range outs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Fatalf("secret %q printed in %s", s, out)
			}
		}
		// Byte values as decimal or hex fragments.
		if strings.Contains(out, fmt.Sprint(f.noisePriv[:])) || strings.Contains(out, fmt.Sprint(f.seed)) ||
			strings.Contains(out, fmt.Sprintf("%x", f.noisePriv[:8])) || strings.Contains(out, fmt.Sprintf("%x", f.seed[:8])) {
			t.Fatalf("secret bytes printed in %s", out)
		}
	}
	if s := fmt.Sprintf("%+v", *c); !strings.Contains(s, "[redacted]") || !strings.Contains(s, f.noisePubHex) || !strings.Contains(s, "chat.example.test") {
		t.Errorf("formatted config: %s", s)
	}
}

// No secret appears in an error message.
func TestSecretsNotInErrors(t *testing.T) {
	f := newFixture(t)
	secret := strings.Repeat("5ec7", 15) + "zz"    // 64 characters, not hex
	secret2 := "s3cr3t-" + strings.Repeat("q", 20) // long enough to spot
	contents := []string{
		withKey(f.minimal(), "crypto.noise_private", `"`+secret+`"`),
		withKey(f.minimal(), "crypto.noise_private", `"`+secret[:60]+`"`),
		withKey(f.minimal(), "crypto.federation_seed", `"`+secret+`"`),
		withKey(f.minimal(), "crypto.noise_private", secret),         // bare: syntax error
		withKey(f.minimal(), "crypto.noise_private", "0"+secret),     // bare number-like
		withKey(f.minimal(), "crypto.federation_seed", "12"+secret2), // bare
		withKey(f.minimal(), "admin.token", secret2),                 // bare
		withKey(f.minimal(), "admin.token", `"""`+"\n"+secret2+"\n"), // unterminated
		withKey(f.minimal(), "storage.postgres_dsn", "postgres://u:"+secret2+"@h"),
		withKey(f.minimal(), "storage.redis_url", `"redis://:`+secret2+`@h"`),
		withKey(f.minimal(), "admin.token", `"short`+`"`),
	}
	for _, content := range contents {
		_, err := f.load(t, content, nil)
		e := asError(t, err).Error()
		for _, s := range []string{secret, secret[:60], secret2, "short", "5ec75ec7"} {
			if strings.Contains(e, s) {
				t.Errorf("error %q contains the secret %q", e, s)
			}
		}
	}
	for _, env := range []map[string]string{
		{"COMMUCAT_NOISE_PRIVATE": secret},
		{"COMMUCAT_FEDERATION_SEED": secret + "0"},
		{"COMMUCAT_ADMIN_TOKEN": "short"},
	} {
		_, err := f.load(t, f.minimal(), env)
		e := asError(t, err).Error()
		for _, s := range []string{secret, "short"} {
			if strings.Contains(e, s) {
				t.Errorf("error %q contains the secret", e)
			}
		}
	}
}

func TestHexEitherCase(t *testing.T) {
	f := newFixture(t)
	c := f.mustLoad(t, strings.Replace(strings.Replace(f.minimal(), f.noisePubHex, strings.ToUpper(f.noisePubHex), 1), f.seedHex, strings.ToUpper(f.seedHex), 1), nil)
	if c.Crypto.NoisePublic != f.noisePub || hex.EncodeToString(c.Crypto.FederationSeed) != f.seedHex {
		t.Error("uppercase hex")
	}
}

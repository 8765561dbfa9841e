package config

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// specEnv lists every environment variable of the §10.2 table, transcribed
// from the spec independently of keyDefs.
var specEnv = []string{
	"COMMUCAT_BIND", "COMMUCAT_DOMAIN", "COMMUCAT_TLS_CERT", "COMMUCAT_TLS_KEY",
	"COMMUCAT_AUTO_APPROVE_DEVICES", "COMMUCAT_MAX_AUTO_DEVICES", "COMMUCAT_CONNECTION_KEEPALIVE",
	"COMMUCAT_SESSION_TTL", "COMMUCAT_HANDSHAKE_TIMEOUT", "COMMUCAT_NODE_ID", "COMMUCAT_MAX_STREAMS",
	"COMMUCAT_READ_HEADER_TIMEOUT", "COMMUCAT_MAX_REQUEST_BODY", "COMMUCAT_WEBSOCKET",
	"COMMUCAT_TRUSTED_PROXIES", "COMMUCAT_SHUTDOWN_GRACE",
	"COMMUCAT_PG_DSN", "COMMUCAT_SQLITE_PATH", "COMMUCAT_REDIS_URL",
	"COMMUCAT_NOISE_PRIVATE", "COMMUCAT_NOISE_PUBLIC", "COMMUCAT_FEDERATION_SEED", "COMMUCAT_NOISE_PROLOGUE",
	"COMMUCAT_ADMIN_TOKEN", "COMMUCAT_ADMIN_TOKEN_FILE",
	"COMMUCAT_PRESENCE_TTL", "COMMUCAT_PAIRING_TTL", "COMMUCAT_PAIRING_SERVER_KEYS", "COMMUCAT_RELAY_TTL",
	"COMMUCAT_ROTATE_NOISE_ENABLED", "COMMUCAT_ROTATE_NOISE_INTERVAL_HOURS", "COMMUCAT_ROTATE_NOISE_GRACE_HOURS", "COMMUCAT_ROTATE_NOISE_MAX_VERSIONS",
	"COMMUCAT_ROTATE_ADMIN_ENABLED", "COMMUCAT_ROTATE_ADMIN_INTERVAL_HOURS", "COMMUCAT_ROTATE_ADMIN_GRACE_HOURS", "COMMUCAT_ROTATE_ADMIN_MAX_VERSIONS",
	"COMMUCAT_REQUIRE_ENCRYPTED_FRAMES", "COMMUCAT_OPEN_CHANNELS", "COMMUCAT_PADDING",
	"COMMUCAT_RATE_HTTP_BURST", "COMMUCAT_RATE_CONNECT_BURST", "COMMUCAT_RATE_PAIRING_BURST", "COMMUCAT_RATE_FRAME_BURST",
	"COMMUCAT_RATE_HTTP_WINDOW_MS", "COMMUCAT_RATE_CONNECT_WINDOW_MS", "COMMUCAT_RATE_PAIRING_WINDOW_MS", "COMMUCAT_RATE_FRAME_WINDOW_MS",
	"COMMUCAT_RATE_HTTP_PENALTY_MS", "COMMUCAT_RATE_CONNECT_PENALTY_MS", "COMMUCAT_RATE_PAIRING_PENALTY_MS", "COMMUCAT_RATE_FRAME_PENALTY_MS",
	"COMMUCAT_MEDIA_TRANSCODE", "COMMUCAT_LEDGER", "COMMUCAT_LEDGER_TARGET",
	"COMMUCAT_FEDERATION_ENABLED", "COMMUCAT_FEDERATION_PEERS",
	"COMMUCAT_REALITY_CERT", "COMMUCAT_REALITY_FINGERPRINT",
	"COMMUCAT_LOG_LEVEL", "COMMUCAT_LOG_FORMAT",
}

// specEmptyAllowed are the variables of string, path and list keys: an
// empty value sets the key to empty instead of being an error (§10.1).
var specEmptyAllowed = map[string]bool{
	"COMMUCAT_DOMAIN": true, "COMMUCAT_NODE_ID": true, "COMMUCAT_PG_DSN": true, "COMMUCAT_REDIS_URL": true,
	"COMMUCAT_NOISE_PROLOGUE": true, "COMMUCAT_ADMIN_TOKEN": true,
	"COMMUCAT_TLS_CERT": true, "COMMUCAT_TLS_KEY": true, "COMMUCAT_SQLITE_PATH": true,
	"COMMUCAT_ADMIN_TOKEN_FILE": true, "COMMUCAT_LEDGER_TARGET": true, "COMMUCAT_REALITY_CERT": true,
	"COMMUCAT_TRUSTED_PROXIES": true, "COMMUCAT_FEDERATION_PEERS": true,
}

// extensionEnv are the variables of keys this server adds to the spec's
// table (hardening caps, see keys.go).
var extensionEnv = map[string]bool{"COMMUCAT_MAX_CONNECTIONS_PER_IP": true, "COMMUCAT_MAX_HANDSHAKES_PER_IP": true,
	"COMMUCAT_MAX_INBOX_ENTRIES": true, "COMMUCAT_MAX_INBOX_BYTES": true}

func TestEnvTableMatchesSpec(t *testing.T) {
	var have []string
	for _, d := range keyDefs {
		if extensionEnv[d.env] {
			continue
		}
		have = append(have, d.env)
		if d.kind.emptyEnvAllowed() != specEmptyAllowed[d.env] {
			t.Errorf("%s: empty allowed = %v", d.env, d.kind.emptyEnvAllowed())
		}
	}
	want := append([]string(nil), specEnv...)
	sort.Strings(have)
	sort.Strings(want)
	if !reflect.DeepEqual(have, want) {
		t.Errorf("keyDefs env\n%v\nspec\n%v", have, want)
	}
}

func TestEnvOverrides(t *testing.T) {
	f := newFixture(t)
	otherCert, otherKey := selfSigned(t, "other.test")
	writeFile(t, filepath.Join(f.dir, "other.crt"), otherCert)
	writeFile(t, filepath.Join(f.dir, "other.key"), otherKey)
	k, _ := ecdh.X25519().GenerateKey(rand.Reader)
	priv2, pub2 := hex.EncodeToString(k.Bytes()), hex.EncodeToString(k.PublicKey().Bytes())
	seed40 := strings.Repeat("5a", 40)
	pkA, pkB := strings.Repeat("ab", 32), strings.Repeat("CD", 32)
	fp := strings.Repeat("0f", 32)
	d := f.dir
	ms := time.Millisecond

	type tc struct {
		env   string
		value string
		extra map[string]string
		get   func(c *Config) any
		want  any
	}
	cases := []tc{
		{"COMMUCAT_BIND", "[::1]:1234", nil, func(c *Config) any { return c.Server.Bind }, "[::1]:1234"},
		{"COMMUCAT_DOMAIN", "env.example", nil, func(c *Config) any { return c.Server.Domain }, "env.example"},
		{"COMMUCAT_TLS_CERT", "other.crt", map[string]string{"COMMUCAT_TLS_KEY": "other.key"}, func(c *Config) any { return c.Server.TLSCert }, filepath.Join(d, "other.crt")},
		{"COMMUCAT_TLS_KEY", filepath.Join(d, "other.key"), map[string]string{"COMMUCAT_TLS_CERT": "other.crt"}, func(c *Config) any { return c.Server.TLSKey }, filepath.Join(d, "other.key")},
		{"COMMUCAT_AUTO_APPROVE_DEVICES", "true", nil, func(c *Config) any { return c.Server.AutoApproveDevices }, true},
		{"COMMUCAT_MAX_AUTO_DEVICES", "7", nil, func(c *Config) any { return c.Server.MaxAutoDevicesPerUser }, 7},
		{"COMMUCAT_CONNECTION_KEEPALIVE", "15", nil, func(c *Config) any { return c.Server.ConnectionKeepalive }, 15 * time.Second},
		{"COMMUCAT_SESSION_TTL", "120", nil, func(c *Config) any { return c.Server.SessionTTL }, 120 * time.Second},
		{"COMMUCAT_HANDSHAKE_TIMEOUT", "5", nil, func(c *Config) any { return c.Server.HandshakeTimeout }, 5 * time.Second},
		{"COMMUCAT_NODE_ID", "env-node", nil, func(c *Config) any { return c.Server.NodeID }, "env-node"},
		{"COMMUCAT_MAX_STREAMS", "9", nil, func(c *Config) any { return c.Server.MaxConcurrentStreams }, uint32(9)},
		{"COMMUCAT_READ_HEADER_TIMEOUT", "4", nil, func(c *Config) any { return c.Server.ReadHeaderTimeout }, 4 * time.Second},
		{"COMMUCAT_MAX_REQUEST_BODY", "2048", nil, func(c *Config) any { return c.Server.MaxRequestBody }, int64(2048)},
		{"COMMUCAT_WEBSOCKET", "false", nil, func(c *Config) any { return c.Server.WebSocket }, false},
		{"COMMUCAT_TRUSTED_PROXIES", "10.1.0.0/16, 192.168.0.7/24,::1/128", nil, func(c *Config) any { return c.Server.TrustedProxies },
			[]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.168.0.0/24"), netip.MustParsePrefix("::1/128")}},
		{"COMMUCAT_SHUTDOWN_GRACE", "3", nil, func(c *Config) any { return c.Server.ShutdownGrace }, 3 * time.Second},
		{"COMMUCAT_PG_DSN", "postgres://db/x", nil, func(c *Config) any { return c.Storage.PostgresDSN }, "postgres://db/x"},
		{"COMMUCAT_SQLITE_PATH", "db/x.db", nil, func(c *Config) any { return c.Storage.SQLitePath }, filepath.Join(d, "db", "x.db")},
		{"COMMUCAT_REDIS_URL", "redis://r:6379", map[string]string{"COMMUCAT_PG_DSN": "postgres://db"}, func(c *Config) any { return c.Storage.RedisURL }, "redis://r:6379"},
		{"COMMUCAT_NOISE_PRIVATE", priv2, map[string]string{"COMMUCAT_NOISE_PUBLIC": pub2}, func(c *Config) any { return hex.EncodeToString(c.Crypto.NoisePrivate[:]) }, priv2},
		{"COMMUCAT_NOISE_PUBLIC", strings.ToUpper(pub2), map[string]string{"COMMUCAT_NOISE_PRIVATE": priv2}, func(c *Config) any { return hex.EncodeToString(c.Crypto.NoisePublic[:]) }, pub2},
		{"COMMUCAT_FEDERATION_SEED", seed40, nil, func(c *Config) any { return hex.EncodeToString(c.Crypto.FederationSeed) }, seed40},
		{"COMMUCAT_NOISE_PROLOGUE", "p2", nil, func(c *Config) any { return c.Crypto.Prologue }, "p2"},
		{"COMMUCAT_ADMIN_TOKEN", "0123456789abcdefX", nil, func(c *Config) any { return c.Admin.Token }, "0123456789abcdefX"},
		{"COMMUCAT_ADMIN_TOKEN_FILE", "/run/tok", nil, func(c *Config) any { return c.Admin.TokenFile }, "/run/tok"},
		{"COMMUCAT_PRESENCE_TTL", "30", nil, func(c *Config) any { return c.Presence.TTL }, 30 * time.Second},
		{"COMMUCAT_PAIRING_TTL", "120", nil, func(c *Config) any { return c.Pairing.TTL }, 120 * time.Second},
		{"COMMUCAT_PAIRING_SERVER_KEYS", "false", nil, func(c *Config) any { return c.Pairing.AllowServerKeys }, false},
		{"COMMUCAT_RELAY_TTL", "600", nil, func(c *Config) any { return c.Limits.RelayTTL }, 600 * time.Second},
		{"COMMUCAT_ROTATE_NOISE_ENABLED", "false", nil, func(c *Config) any { return c.Rotation.Noise.Enabled }, false},
		{"COMMUCAT_ROTATE_NOISE_INTERVAL_HOURS", "2", nil, func(c *Config) any { return c.Rotation.Noise.Interval }, 2 * time.Hour},
		{"COMMUCAT_ROTATE_NOISE_GRACE_HOURS", "3", nil, func(c *Config) any { return c.Rotation.Noise.Grace }, 3 * time.Hour},
		{"COMMUCAT_ROTATE_NOISE_MAX_VERSIONS", "5", nil, func(c *Config) any { return c.Rotation.Noise.MaxVersions }, 5},
		{"COMMUCAT_ROTATE_ADMIN_ENABLED", "true", map[string]string{"COMMUCAT_ADMIN_TOKEN_FILE": "tok"}, func(c *Config) any { return c.Rotation.Admin.Enabled }, true},
		{"COMMUCAT_ROTATE_ADMIN_INTERVAL_HOURS", "4", nil, func(c *Config) any { return c.Rotation.Admin.Interval }, 4 * time.Hour},
		{"COMMUCAT_ROTATE_ADMIN_GRACE_HOURS", "5", nil, func(c *Config) any { return c.Rotation.Admin.Grace }, 5 * time.Hour},
		{"COMMUCAT_ROTATE_ADMIN_MAX_VERSIONS", "6", nil, func(c *Config) any { return c.Rotation.Admin.MaxVersions }, 6},
		{"COMMUCAT_REQUIRE_ENCRYPTED_FRAMES", "true", nil, func(c *Config) any { return c.SupportedVersions() }, []int{2}},
		{"COMMUCAT_OPEN_CHANNELS", "true", nil, func(c *Config) any { return c.Security.OpenChannels }, true},
		{"COMMUCAT_PADDING", "buckets", nil, func(c *Config) any { return c.Security.Padding }, PaddingBuckets},
		{"COMMUCAT_RATE_HTTP_BURST", "11", nil, func(c *Config) any { return c.Security.RateLimit.HTTP.Burst }, 11},
		{"COMMUCAT_RATE_CONNECT_BURST", "12", nil, func(c *Config) any { return c.Security.RateLimit.Connect.Burst }, 12},
		{"COMMUCAT_RATE_PAIRING_BURST", "13", nil, func(c *Config) any { return c.Security.RateLimit.Pairing.Burst }, 13},
		{"COMMUCAT_RATE_FRAME_BURST", "14", nil, func(c *Config) any { return c.Security.RateLimit.Frame.Burst }, 14},
		{"COMMUCAT_RATE_HTTP_WINDOW_MS", "21", nil, func(c *Config) any { return c.Security.RateLimit.HTTP.Window }, 21 * ms},
		{"COMMUCAT_RATE_CONNECT_WINDOW_MS", "22", nil, func(c *Config) any { return c.Security.RateLimit.Connect.Window }, 22 * ms},
		{"COMMUCAT_RATE_PAIRING_WINDOW_MS", "23", nil, func(c *Config) any { return c.Security.RateLimit.Pairing.Window }, 23 * ms},
		{"COMMUCAT_RATE_FRAME_WINDOW_MS", "24", nil, func(c *Config) any { return c.Security.RateLimit.Frame.Window }, 24 * ms},
		{"COMMUCAT_RATE_HTTP_PENALTY_MS", "31", nil, func(c *Config) any { return c.Security.RateLimit.HTTP.Penalty }, 31 * ms},
		{"COMMUCAT_RATE_CONNECT_PENALTY_MS", "32", nil, func(c *Config) any { return c.Security.RateLimit.Connect.Penalty }, 32 * ms},
		{"COMMUCAT_RATE_PAIRING_PENALTY_MS", "33", nil, func(c *Config) any { return c.Security.RateLimit.Pairing.Penalty }, 33 * ms},
		{"COMMUCAT_RATE_FRAME_PENALTY_MS", "34", nil, func(c *Config) any { return c.Security.RateLimit.Frame.Penalty }, 34 * ms},
		{"COMMUCAT_MEDIA_TRANSCODE", "false", nil, func(c *Config) any { return c.Media.Transcode }, false},
		{"COMMUCAT_LEDGER", "debug", nil, func(c *Config) any { return c.Ledger.Mode }, LedgerDebug},
		{"COMMUCAT_LEDGER_TARGET", "l.jsonl", nil, func(c *Config) any { return c.Ledger.Target }, filepath.Join(d, "l.jsonl")},
		{"COMMUCAT_FEDERATION_ENABLED", "true", nil, func(c *Config) any { return c.Federation.Enabled }, true},
		{"COMMUCAT_FEDERATION_PEERS", "a.example,https://a.example/f," + pkA + ";b.example, http://b:1 ," + pkB, nil, func(c *Config) any { return c.Federation.Peers },
			[]Peer{{"a.example", "https://a.example/f", [32]byte(bytesRepeat(0xab))}, {"b.example", "http://b:1", [32]byte(bytesRepeat(0xcd))}}},
		{"COMMUCAT_REALITY_CERT", "certs/server.crt", map[string]string{"COMMUCAT_REALITY_FINGERPRINT": fp}, func(c *Config) any { return c.Transport.RealityCert }, f.certPath},
		{"COMMUCAT_REALITY_FINGERPRINT", fp, map[string]string{"COMMUCAT_REALITY_CERT": f.certPath}, func(c *Config) any { return c.Transport.RealityFingerprint }, [32]byte(bytesRepeat(0x0f))},
		{"COMMUCAT_LOG_LEVEL", "warn", nil, func(c *Config) any { return c.Log.Level }, slog.LevelWarn},
		{"COMMUCAT_LOG_FORMAT", "json", nil, func(c *Config) any { return c.Log.Format }, LogJSON},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.env] = true
	}
	for _, e := range specEnv {
		if !covered[e] {
			t.Errorf("no override test for %s", e)
		}
	}
	for _, c := range cases {
		t.Run(c.env, func(t *testing.T) {
			// Without the variable the value differs (the test is not vacuous).
			// (When the extra variables alone do not load, the variable is
			// needed anyway.)
			base, err := f.load(t, f.minimal(), c.extra)
			if err == nil && reflect.DeepEqual(c.get(base), c.want) {
				t.Fatalf("the value is already %v without %s", c.want, c.env)
			}
			env := map[string]string{c.env: c.value}
			for k, v := range c.extra {
				env[k] = v
			}
			cfg, err := f.load(t, f.minimal(), env)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.get(cfg); !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

// Every variable also wins over a value in the file.
func TestEnvWinsOverFile(t *testing.T) {
	f := newFixture(t)
	c := f.mustLoad(t, f.fullFile(), map[string]string{
		"COMMUCAT_SESSION_TTL":      "61",
		"COMMUCAT_TRUSTED_PROXIES":  "1.2.3.0/24",
		"COMMUCAT_FEDERATION_PEERS": "z.example,https://z," + strings.Repeat("00", 32),
		"COMMUCAT_LOG_LEVEL":        "error",
		"COMMUCAT_ADMIN_TOKEN":      "",
		"COMMUCAT_PG_DSN":           "postgres://other",
	})
	if c.Server.SessionTTL != 61*time.Second || len(c.Server.TrustedProxies) != 1 || len(c.Federation.Peers) != 1 ||
		c.Federation.Peers[0].Domain != "z.example" || c.Log.Level != slog.LevelError || c.Admin.Token != "" ||
		c.Storage.PostgresDSN != "postgres://other" {
		t.Errorf("%+v", c)
	}
}

func TestEnvEmpty(t *testing.T) {
	f := newFixture(t)
	// Non-string keys: an empty value is an error naming the key.
	for _, d := range keyDefs {
		if specEmptyAllowed[d.env] {
			continue
		}
		_, err := f.load(t, f.minimal(), map[string]string{d.env: ""})
		ce := asError(t, err)
		if want := d.name + ": " + d.env + " is set but empty"; ce.Key != d.name || ce.Error() != want {
			t.Errorf("%s=\"\": %q, want %q", d.env, ce.Error(), want)
		}
	}

	// String, path and list keys: an empty value sets the key to empty.
	file := withKey(withKey(withKey(withKey(withKey(f.minimal(),
		"admin.token", `"0123456789abcdef0"`),
		"admin.token_file", `"tok"`),
		"storage.postgres_dsn", `"postgres://db"`),
		"server.trusted_proxies", `["10.0.0.0/8"]`),
		"ledger.target", `"l"`) +
		"\n[[federation.peers]]\ndomain = \"a\"\nendpoint = \"https://a\"\npublic_key = \"" + strings.Repeat("11", 32) + "\"\n"
	sets := []struct {
		env string
		get func(c *Config) any
	}{
		{"COMMUCAT_ADMIN_TOKEN", func(c *Config) any { return c.Admin.Token }},
		{"COMMUCAT_ADMIN_TOKEN_FILE", func(c *Config) any { return c.Admin.TokenFile }},
		{"COMMUCAT_NOISE_PROLOGUE", func(c *Config) any { return c.Crypto.Prologue }},
		{"COMMUCAT_PG_DSN", func(c *Config) any { return c.Storage.PostgresDSN }},
		{"COMMUCAT_REDIS_URL", func(c *Config) any { return c.Storage.RedisURL }},
		{"COMMUCAT_LEDGER_TARGET", func(c *Config) any { return c.Ledger.Target }},
		{"COMMUCAT_REALITY_CERT", func(c *Config) any { return c.Transport.RealityCert }},
		{"COMMUCAT_TRUSTED_PROXIES", func(c *Config) any { return len(c.Server.TrustedProxies) }},
		{"COMMUCAT_FEDERATION_PEERS", func(c *Config) any { return len(c.Federation.Peers) }},
	}
	for _, s := range sets {
		c, err := f.load(t, file, map[string]string{s.env: ""})
		if err != nil {
			t.Errorf("%s=\"\": %v", s.env, err)
			continue
		}
		if got := s.get(c); got != "" && got != 0 {
			t.Errorf("%s=\"\": value %v", s.env, got)
		}
	}
	c, err := f.load(t, file, map[string]string{"COMMUCAT_SQLITE_PATH": ""})
	if err != nil || c.Storage.SQLitePath != "" {
		t.Errorf("COMMUCAT_SQLITE_PATH=\"\" with PostgreSQL: %v", err)
	}
	// ... and validation then judges the empty value.
	for env, key := range map[string]string{
		"COMMUCAT_DOMAIN":      "server.domain",
		"COMMUCAT_NODE_ID":     "server.node_id",
		"COMMUCAT_TLS_CERT":    "server.tls_cert",
		"COMMUCAT_TLS_KEY":     "server.tls_key",
		"COMMUCAT_SQLITE_PATH": "storage.sqlite_path",
	} {
		_, err := f.load(t, f.minimal(), map[string]string{env: ""})
		if ce := asError(t, err); ce.Key != key || strings.Contains(ce.Error(), "set but empty") {
			t.Errorf("%s=\"\": %v", env, err)
		}
	}
}

func TestEnvBadValues(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		env, value, key, msg string
	}{
		{"COMMUCAT_WEBSOCKET", "TRUE", "server.websocket", `server.websocket: COMMUCAT_WEBSOCKET must be true or false, not "TRUE"`},
		{"COMMUCAT_WEBSOCKET", "1", "server.websocket", ""},
		{"COMMUCAT_SESSION_TTL", "1e3", "server.session_ttl", `server.session_ttl: COMMUCAT_SESSION_TTL "1e3": is not a decimal integer`},
		{"COMMUCAT_SESSION_TTL", "+600", "server.session_ttl", ""},
		{"COMMUCAT_SESSION_TTL", " 600", "server.session_ttl", ""},
		{"COMMUCAT_SESSION_TTL", "0x100", "server.session_ttl", ""},
		{"COMMUCAT_SESSION_TTL", "1_000", "server.session_ttl", ""},
		{"COMMUCAT_SESSION_TTL", "-", "server.session_ttl", ""},
		{"COMMUCAT_SESSION_TTL", "99999999999999999999", "server.session_ttl", `server.session_ttl: COMMUCAT_SESSION_TTL "99999999999999999999": is out of range`},
		{"COMMUCAT_SESSION_TTL", "-5", "server.session_ttl", "server.session_ttl: must be between 60 and 2592000, not -5"},
		{"COMMUCAT_TRUSTED_PROXIES", "10.0.0.0/8,,1.0.0.0/8", "server.trusted_proxies[1]", `server.trusted_proxies[1]: "" is not a CIDR`},
		{"COMMUCAT_FEDERATION_PEERS", "a,https://a", "federation.peers", "federation.peers: COMMUCAT_FEDERATION_PEERS: entry 0 is not domain,endpoint,public_key"},
		{"COMMUCAT_FEDERATION_PEERS", "a,https://a," + strings.Repeat("00", 32) + ";", "federation.peers", "federation.peers: COMMUCAT_FEDERATION_PEERS: entry 1 is not domain,endpoint,public_key"},
		{"COMMUCAT_FEDERATION_PEERS", "a,https://a,zz", "federation.peers[0].public_key", ""},
		{"COMMUCAT_PADDING", "None", "security.padding", ""},
		{"COMMUCAT_LOG_LEVEL", "INFO", "log.level", ""},
		{"COMMUCAT_BIND", "9443", "server.bind", ""},
		{"COMMUCAT_REALITY_FINGERPRINT", "xx", "transport.reality_fingerprint", ""},
		{"COMMUCAT_NOISE_PRIVATE", strings.Repeat("x", 64), "crypto.noise_private", "crypto.noise_private: must be hex"},
	}
	for _, c := range cases {
		_, err := f.load(t, f.minimal(), map[string]string{c.env: c.value})
		ce := asError(t, err)
		if ce.Key != c.key || !strings.Contains(ce.Error(), c.key) {
			t.Errorf("%s=%q: %v (key %q, want %q)", c.env, c.value, err, ce.Key, c.key)
		}
		if c.msg != "" && ce.Error() != c.msg {
			t.Errorf("%s=%q:\n got %q\nwant %q", c.env, c.value, ce.Error(), c.msg)
		}
	}
}

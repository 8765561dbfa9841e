package config

// kind is the type of a key, which decides how its TOML value and its
// environment variable are read (§10.1).
type kind int

const (
	kString   kind = iota // TOML string; an empty environment value sets ""
	kPath                 // as kString, then resolved against the base directory
	kList                 // TOML array of strings; environment: comma-separated
	kPeers                // TOML array of tables; environment: domain,endpoint,hex32;…
	kBool                 // TOML boolean; environment: true or false
	kInt                  // TOML integer; environment: decimal
	kHex                  // TOML string of hex digits
	kEnum                 // TOML string from a fixed set
	kHostPort             // TOML string host:port
)

// emptyEnvAllowed reports whether an empty environment value is a value
// (string, path and list keys) rather than an error (§10.1).
func (k kind) emptyEnvAllowed() bool {
	return k == kString || k == kPath || k == kList || k == kPeers
}

func (k kind) tomlType() string {
	switch k {
	case kList:
		return "an array of strings"
	case kPeers:
		return "an array of tables"
	case kBool:
		return "a boolean"
	case kInt:
		return "an integer"
	}
	return "a string"
}

// keyDef describes one key of the §10.2 table.
type keyDef struct {
	name     string // dotted TOML key
	env      string // environment variable
	kind     kind
	def      any  // default: string, int64, bool or nil (list, peers, required)
	required bool // no default: must come from the file or the environment
	secret   bool // the value never appears in messages or formatted output
}

// keyDefs is the §10.2 table, in its order, which is also the order in
// which keys are read and validated.
var keyDefs = []keyDef{
	{name: "server.bind", env: "COMMUCAT_BIND", kind: kHostPort, required: true},
	{name: "server.domain", env: "COMMUCAT_DOMAIN", kind: kString, required: true},
	{name: "server.tls_cert", env: "COMMUCAT_TLS_CERT", kind: kPath, required: true},
	{name: "server.tls_key", env: "COMMUCAT_TLS_KEY", kind: kPath, required: true},
	{name: "server.auto_approve_devices", env: "COMMUCAT_AUTO_APPROVE_DEVICES", kind: kBool, def: false},
	{name: "server.max_auto_devices_per_user", env: "COMMUCAT_MAX_AUTO_DEVICES", kind: kInt, def: int64(1)},
	{name: "server.connection_keepalive", env: "COMMUCAT_CONNECTION_KEEPALIVE", kind: kInt, def: int64(30)},
	{name: "server.session_ttl", env: "COMMUCAT_SESSION_TTL", kind: kInt, def: int64(3600)},
	{name: "server.handshake_timeout", env: "COMMUCAT_HANDSHAKE_TIMEOUT", kind: kInt, def: int64(10)},
	{name: "server.node_id", env: "COMMUCAT_NODE_ID", kind: kString, def: ""},
	{name: "server.max_concurrent_streams", env: "COMMUCAT_MAX_STREAMS", kind: kInt, def: int64(1000)},
	{name: "server.read_header_timeout", env: "COMMUCAT_READ_HEADER_TIMEOUT", kind: kInt, def: int64(10)},
	{name: "server.max_request_body", env: "COMMUCAT_MAX_REQUEST_BODY", kind: kInt, def: int64(262144)},
	{name: "server.websocket", env: "COMMUCAT_WEBSOCKET", kind: kBool, def: true},
	{name: "server.trusted_proxies", env: "COMMUCAT_TRUSTED_PROXIES", kind: kList},
	{name: "server.shutdown_grace", env: "COMMUCAT_SHUTDOWN_GRACE", kind: kInt, def: int64(10)},

	{name: "storage.postgres_dsn", env: "COMMUCAT_PG_DSN", kind: kString, def: "", secret: true},
	{name: "storage.sqlite_path", env: "COMMUCAT_SQLITE_PATH", kind: kPath, def: "data/commucat.db"},
	{name: "storage.redis_url", env: "COMMUCAT_REDIS_URL", kind: kString, def: "", secret: true},

	{name: "crypto.noise_private", env: "COMMUCAT_NOISE_PRIVATE", kind: kHex, required: true, secret: true},
	{name: "crypto.noise_public", env: "COMMUCAT_NOISE_PUBLIC", kind: kHex, required: true},
	{name: "crypto.federation_seed", env: "COMMUCAT_FEDERATION_SEED", kind: kHex, required: true, secret: true},
	{name: "crypto.prologue", env: "COMMUCAT_NOISE_PROLOGUE", kind: kString, def: "commucat"},

	{name: "admin.token", env: "COMMUCAT_ADMIN_TOKEN", kind: kString, def: "", secret: true},
	{name: "admin.token_file", env: "COMMUCAT_ADMIN_TOKEN_FILE", kind: kPath, def: ""},

	{name: "presence.ttl_seconds", env: "COMMUCAT_PRESENCE_TTL", kind: kInt, def: int64(60)},

	{name: "pairing.ttl_seconds", env: "COMMUCAT_PAIRING_TTL", kind: kInt, def: int64(300)},
	{name: "pairing.allow_server_keys", env: "COMMUCAT_PAIRING_SERVER_KEYS", kind: kBool, def: true},

	{name: "limits.relay_ttl", env: "COMMUCAT_RELAY_TTL", kind: kInt, def: int64(86400)},
	{name: "limits.max_inbox_entries", env: "COMMUCAT_MAX_INBOX_ENTRIES", kind: kInt, def: int64(100000)},
	{name: "limits.max_inbox_bytes", env: "COMMUCAT_MAX_INBOX_BYTES", kind: kInt, def: int64(256 << 20)},

	{name: "rotation.noise.enabled", env: "COMMUCAT_ROTATE_NOISE_ENABLED", kind: kBool, def: true},
	{name: "rotation.noise.interval_hours", env: "COMMUCAT_ROTATE_NOISE_INTERVAL_HOURS", kind: kInt, def: int64(168)},
	{name: "rotation.noise.grace_hours", env: "COMMUCAT_ROTATE_NOISE_GRACE_HOURS", kind: kInt, def: int64(48)},
	{name: "rotation.noise.max_versions", env: "COMMUCAT_ROTATE_NOISE_MAX_VERSIONS", kind: kInt, def: int64(3)},
	{name: "rotation.admin.enabled", env: "COMMUCAT_ROTATE_ADMIN_ENABLED", kind: kBool, def: false},
	{name: "rotation.admin.interval_hours", env: "COMMUCAT_ROTATE_ADMIN_INTERVAL_HOURS", kind: kInt, def: int64(168)},
	{name: "rotation.admin.grace_hours", env: "COMMUCAT_ROTATE_ADMIN_GRACE_HOURS", kind: kInt, def: int64(72)},
	{name: "rotation.admin.max_versions", env: "COMMUCAT_ROTATE_ADMIN_MAX_VERSIONS", kind: kInt, def: int64(2)},

	{name: "security.require_encrypted_frames", env: "COMMUCAT_REQUIRE_ENCRYPTED_FRAMES", kind: kBool, def: false},
	{name: "security.open_channels", env: "COMMUCAT_OPEN_CHANNELS", kind: kBool, def: false},
	{name: "security.padding", env: "COMMUCAT_PADDING", kind: kEnum, def: "none"},
	{name: "security.rate_limit.http_burst", env: "COMMUCAT_RATE_HTTP_BURST", kind: kInt, def: int64(60)},
	{name: "security.rate_limit.connect_burst", env: "COMMUCAT_RATE_CONNECT_BURST", kind: kInt, def: int64(20)},
	{name: "security.rate_limit.pairing_burst", env: "COMMUCAT_RATE_PAIRING_BURST", kind: kInt, def: int64(5)},
	{name: "security.rate_limit.frame_burst", env: "COMMUCAT_RATE_FRAME_BURST", kind: kInt, def: int64(200)},
	{name: "security.rate_limit.http_window_ms", env: "COMMUCAT_RATE_HTTP_WINDOW_MS", kind: kInt, def: int64(1000)},
	{name: "security.rate_limit.connect_window_ms", env: "COMMUCAT_RATE_CONNECT_WINDOW_MS", kind: kInt, def: int64(1000)},
	{name: "security.rate_limit.pairing_window_ms", env: "COMMUCAT_RATE_PAIRING_WINDOW_MS", kind: kInt, def: int64(60000)},
	{name: "security.rate_limit.frame_window_ms", env: "COMMUCAT_RATE_FRAME_WINDOW_MS", kind: kInt, def: int64(1000)},
	{name: "security.rate_limit.http_penalty_ms", env: "COMMUCAT_RATE_HTTP_PENALTY_MS", kind: kInt, def: int64(10000)},
	{name: "security.rate_limit.connect_penalty_ms", env: "COMMUCAT_RATE_CONNECT_PENALTY_MS", kind: kInt, def: int64(30000)},
	{name: "security.rate_limit.pairing_penalty_ms", env: "COMMUCAT_RATE_PAIRING_PENALTY_MS", kind: kInt, def: int64(120000)},
	{name: "security.rate_limit.frame_penalty_ms", env: "COMMUCAT_RATE_FRAME_PENALTY_MS", kind: kInt, def: int64(0)},
	// Not in the spec (an extension, hardening): per client IP caps on open
	// and on handshaking /connect streams.
	{name: "security.max_connections_per_ip", env: "COMMUCAT_MAX_CONNECTIONS_PER_IP", kind: kInt, def: int64(1024)},
	{name: "security.max_handshakes_per_ip", env: "COMMUCAT_MAX_HANDSHAKES_PER_IP", kind: kInt, def: int64(64)},

	{name: "media.transcode", env: "COMMUCAT_MEDIA_TRANSCODE", kind: kBool, def: true},

	{name: "ledger.mode", env: "COMMUCAT_LEDGER", kind: kEnum, def: "null"},
	{name: "ledger.target", env: "COMMUCAT_LEDGER_TARGET", kind: kPath, def: ""},

	{name: "federation.enabled", env: "COMMUCAT_FEDERATION_ENABLED", kind: kBool, def: false},
	{name: "federation.peers", env: "COMMUCAT_FEDERATION_PEERS", kind: kPeers},

	{name: "transport.reality_cert", env: "COMMUCAT_REALITY_CERT", kind: kPath, def: ""},
	{name: "transport.reality_fingerprint", env: "COMMUCAT_REALITY_FINGERPRINT", kind: kHex, def: ""},

	{name: "log.level", env: "COMMUCAT_LOG_LEVEL", kind: kEnum, def: "info"},
	{name: "log.format", env: "COMMUCAT_LOG_FORMAT", kind: kEnum, def: "text"},
}

// tables are the TOML tables of the schema. federation.peers is an array of
// tables whose elements hold peerKeys.
var tables = []string{
	"server", "storage", "crypto", "admin", "presence", "pairing", "limits",
	"rotation", "rotation.noise", "rotation.admin",
	"security", "security.rate_limit",
	"media", "ledger", "federation", "transport", "log",
}

var peerKeys = []string{"domain", "endpoint", "public_key"}

var (
	defByName = map[string]*keyDef{}
	isTable   = map[string]bool{}
)

func init() {
	for i := range keyDefs {
		defByName[keyDefs[i].name] = &keyDefs[i]
	}
	for _, t := range tables {
		isTable[t] = true
	}
}

// knownKey reports whether the dotted key is a table or a key of the schema
// (including the members of a federation.peers element).
func knownKey(k string) bool {
	if isTable[k] || defByName[k] != nil {
		return true
	}
	for _, p := range peerKeys {
		if k == "federation.peers."+p {
			return true
		}
	}
	return false
}

// rawPeer is a federation peer before validation.
type rawPeer struct {
	domain, endpoint, publicKey string
}

// value is the raw value of one key before validation: the field matching
// the key's kind is used.
type value struct {
	s     string
	i     int64
	b     bool
	list  []string
	peers []rawPeer
	set   bool   // given by the file or the environment
	from  string // the environment variable that set it, "" for file/default
}

func defaultValues() map[string]*value {
	m := make(map[string]*value, len(keyDefs))
	for _, d := range keyDefs {
		v := &value{}
		switch x := d.def.(type) {
		case string:
			v.s = x
		case int64:
			v.i = x
		case bool:
			v.b = x
		}
		m[d.name] = v
	}
	return m
}

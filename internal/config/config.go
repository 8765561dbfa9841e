// Package config loads and validates the CommuCat server configuration
// (spec §10): a TOML 1.0 file, overridden key by key by COMMUCAT_*
// environment variables, on top of the defaults of the §10.2 table.
//
// Load is the only entry point the server and commucat-cli need: it returns
// a fully validated *Config whose relative paths are already resolved
// (§10.1), or the first problem found as a *Error naming the key, in the
// order of the §10.2 table.
//
// Secret values (crypto.noise_private, crypto.federation_seed, admin.token,
// and the credentials that storage.postgres_dsn and storage.redis_url may
// carry) never appear in an error message, and the structs holding them
// print "[redacted]" in their place with every fmt verb and in JSON.
package config

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"
)

// Config is a loaded configuration. Every field mirrors the key of the
// §10.2 table named in its comment.
type Config struct {
	// File is the absolute path of the configuration file that was loaded,
	// or "" when none was (the default file was absent).
	File string

	Server     Server
	Storage    Storage
	Crypto     Crypto
	Admin      Admin
	Presence   Presence
	Pairing    Pairing
	Limits     Limits
	Rotation   Rotation
	Security   Security
	Media      Media
	Ledger     Ledger
	Federation Federation
	Transport  Transport
	Log        Log
}

// Server is the [server] table.
type Server struct {
	Bind                  string // server.bind, host:port (numeric port)
	Domain                string // server.domain
	TLSCert               string // server.tls_cert, absolute path after Load
	TLSKey                string // server.tls_key, absolute path after Load
	AutoApproveDevices    bool   // server.auto_approve_devices
	MaxAutoDevicesPerUser int    // server.max_auto_devices_per_user, 0 = unlimited
	ConnectionKeepalive   time.Duration
	SessionTTL            time.Duration
	HandshakeTimeout      time.Duration
	NodeID                string         // server.node_id (default derived from the hostname)
	MaxConcurrentStreams  uint32         // server.max_concurrent_streams
	ReadHeaderTimeout     time.Duration  // server.read_header_timeout
	MaxRequestBody        int64          // server.max_request_body, bytes
	WebSocket             bool           // server.websocket
	TrustedProxies        []netip.Prefix // server.trusted_proxies, masked
	ShutdownGrace         time.Duration  // server.shutdown_grace
}

// Storage is the [storage] table. PostgresDSN and RedisURL may embed
// credentials and are redacted when the struct is formatted.
type Storage struct {
	PostgresDSN string // storage.postgres_dsn, "" = SQLite
	SQLitePath  string // storage.sqlite_path, absolute path after Load
	RedisURL    string // storage.redis_url, "" = in-process
}

// Crypto is the [crypto] table. NoisePrivate and FederationSeed are secret
// and redacted when the struct is formatted.
type Crypto struct {
	NoisePrivate   [32]byte // crypto.noise_private
	NoisePublic    [32]byte // crypto.noise_public = X25519(NoisePrivate)
	FederationSeed []byte   // crypto.federation_seed, ≥ 32 bytes; device CA = from_seed(FederationSeed)
	Prologue       string   // crypto.prologue
}

// Admin is the [admin] table. Token is secret and redacted when the struct
// is formatted.
type Admin struct {
	Token     string // admin.token, "" = none
	TokenFile string // admin.token_file, absolute path after Load, or ""
}

// Presence is the [presence] table.
type Presence struct {
	TTL time.Duration // presence.ttl_seconds
}

// Pairing is the [pairing] table.
type Pairing struct {
	TTL             time.Duration // pairing.ttl_seconds
	AllowServerKeys bool          // pairing.allow_server_keys
}

// Limits is the [limits] table.
type Limits struct {
	RelayTTL time.Duration // limits.relay_ttl
	// MaxInboxEntries and MaxInboxBytes bound one device's inbox (entries,
	// and bytes of payload) for durable frames sent while it is not
	// connected to the sender's node; 0: no bound (extension keys).
	MaxInboxEntries int64 // limits.max_inbox_entries
	MaxInboxBytes   int64 // limits.max_inbox_bytes
}

// Rotation is the [rotation] table.
type Rotation struct {
	Noise RotationPolicy // [rotation.noise]
	Admin RotationPolicy // [rotation.admin]
}

// RotationPolicy is one of [rotation.noise] and [rotation.admin].
type RotationPolicy struct {
	Enabled     bool          // enabled
	Interval    time.Duration // interval_hours
	Grace       time.Duration // grace_hours
	MaxVersions int           // max_versions
}

// RotationFarFuture is the lifetime of a secret version when rotation is
// off (§10.4: 100 years).
const RotationFarFuture = 100 * 365 * 24 * time.Hour

// Validity returns the times of a secret version (Noise key or admin
// token) created at now under this policy (§10.4): valid at once, rotated
// after the interval, expired a grace period later; with rotation off,
// both lie RotationFarFuture ahead.
func (p RotationPolicy) Validity(now time.Time) (validAfter, rotatesAt, expiresAt time.Time) {
	if !p.Enabled {
		return now, now.Add(RotationFarFuture), now.Add(RotationFarFuture)
	}
	rot := now.Add(p.Interval)
	return now, rot, rot.Add(p.Grace)
}

// Keeps reports whether a stored secret version survives pruning (§10.4):
// it is not expired at now and fewer than max_versions versions are newer
// than it. rank is its position among all versions, newest first, counting
// one just added (0: the newest).
func (p RotationPolicy) Keeps(rank int, expiresAt, now time.Time) bool {
	return now.Before(expiresAt) && rank < p.MaxVersions
}

// Padding is the value of security.padding.
type Padding string

// The values of security.padding.
const (
	PaddingNone    Padding = "none"
	PaddingBuckets Padding = "buckets"
)

// Security is the [security] table.
type Security struct {
	RequireEncryptedFrames bool    // security.require_encrypted_frames
	OpenChannels           bool    // security.open_channels
	Padding                Padding // security.padding
	RateLimit              RateLimits
	// MaxConnectionsPerIP and MaxHandshakesPerIP cap the open and the
	// handshaking /connect streams of one client IP (an extension of the
	// spec: security.max_connections_per_ip, security.max_handshakes_per_ip).
	MaxConnectionsPerIP int
	MaxHandshakesPerIP  int
}

// RateLimits is the [security.rate_limit] table: one zone per prefix of its
// flat keys (http_, connect_, pairing_, frame_).
type RateLimits struct {
	HTTP    RateLimit
	Connect RateLimit
	Pairing RateLimit
	Frame   RateLimit
}

// RateLimit is one rate-limit zone.
type RateLimit struct {
	Burst   int           // <zone>_burst, > 0
	Window  time.Duration // <zone>_window_ms, > 0
	Penalty time.Duration // <zone>_penalty_ms, ≥ 0
}

// Media is the [media] table.
type Media struct {
	Transcode bool // media.transcode
}

// LedgerMode is the value of ledger.mode.
type LedgerMode string

// The values of ledger.mode.
const (
	LedgerNull  LedgerMode = "null"
	LedgerDebug LedgerMode = "debug"
	LedgerFile  LedgerMode = "file"
)

// Ledger is the [ledger] table.
type Ledger struct {
	Mode   LedgerMode // ledger.mode
	Target string     // ledger.target, absolute path after Load, or ""
}

// Federation is the [federation] table.
type Federation struct {
	Enabled bool   // federation.enabled
	Peers   []Peer // federation.peers
}

// Peer is one element of federation.peers.
type Peer struct {
	Domain    string
	Endpoint  string   // an http or https URL
	PublicKey [32]byte // Ed25519
}

// Transport is the [transport] table. RealityCert and RealityFingerprint are
// either both set or both unset; RealityFingerprint is meaningful only when
// RealityCert != "" (see RealityEnabled).
type Transport struct {
	RealityCert        string   // transport.reality_cert, absolute path after Load, or ""
	RealityFingerprint [32]byte // transport.reality_fingerprint
}

// RealityEnabled reports whether the transport.reality_* keys are set.
func (t Transport) RealityEnabled() bool { return t.RealityCert != "" }

// LogFormat is the value of log.format.
type LogFormat string

// The values of log.format.
const (
	LogText LogFormat = "text"
	LogJSON LogFormat = "json"
)

// Log is the [log] table.
type Log struct {
	Level  slog.Level // log.level: debug, info, warn, error
	Format LogFormat  // log.format
}

// SupportedVersions returns the protocol versions the server supports
// (§1.4): [2] when security.require_encrypted_frames, else [1, 2].
func (c *Config) SupportedVersions() []int {
	if c.Security.RequireEncryptedFrames {
		return []int{2}
	}
	return []int{1, 2}
}

// Default returns the defaults of the §10.2 table. Required keys
// (server.bind, server.domain, server.tls_cert, server.tls_key and the
// crypto keys) are left zero, server.node_id is "" (Load derives it from the
// hostname), and the default storage.sqlite_path is still relative.
func Default() Config {
	b := &builder{vals: defaultValues()}
	return b.build()
}

// Error is a configuration error. Key is the dotted key at fault ("" for
// problems with the file as a whole, e.g. a TOML syntax error).
type Error struct {
	Key    string
	Reason string
}

// Error returns "<key>: <reason>", or just the reason when it already names
// the key or there is no key.
func (e *Error) Error() string {
	if e.Key == "" || strings.Contains(e.Reason, e.Key) {
		return e.Reason
	}
	return e.Key + ": " + e.Reason
}

const redacted = "[redacted]"

func redact(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

type storageView struct {
	PostgresDSN string
	SQLitePath  string
	RedisURL    string
}

func (s Storage) view() storageView {
	return storageView{redact(s.PostgresDSN), s.SQLitePath, redact(s.RedisURL)}
}

// Format prints the struct with PostgresDSN and RedisURL redacted, whatever
// the verb.
func (s Storage) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), s.view())
}

// MarshalJSON encodes the struct with PostgresDSN and RedisURL redacted.
func (s Storage) MarshalJSON() ([]byte, error) { return json.Marshal(s.view()) }

type cryptoView struct {
	NoisePrivate   string
	NoisePublic    string
	FederationSeed string
	Prologue       string
}

func (c Crypto) view() cryptoView {
	return cryptoView{redacted, hex.EncodeToString(c.NoisePublic[:]), redacted, c.Prologue}
}

// Format prints the struct with NoisePrivate and FederationSeed redacted and
// NoisePublic in hex, whatever the verb.
func (c Crypto) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), c.view())
}

// MarshalJSON encodes the struct with NoisePrivate and FederationSeed
// redacted.
func (c Crypto) MarshalJSON() ([]byte, error) { return json.Marshal(c.view()) }

type adminView struct {
	Token     string
	TokenFile string
}

func (a Admin) view() adminView { return adminView{redact(a.Token), a.TokenFile} }

// Format prints the struct with Token redacted, whatever the verb.
func (a Admin) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), a.view())
}

// MarshalJSON encodes the struct with Token redacted.
func (a Admin) MarshalJSON() ([]byte, error) { return json.Marshal(a.view()) }

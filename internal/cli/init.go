package cli

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/identity"
)

const initUsage = "usage: commucat-cli init [--dir DIR] [--domain D] [--bind ADDR] [--force]"

// Paths written by init, relative to DIR (§12.2).
const (
	initConfigFile = "commucat.toml"
	initCertFile   = "certs/server.crt"
	initKeyFile    = "certs/server.key"
	initDataDir    = "data"
)

// initCertValidity is the validity of the self-signed certificate.
const initCertValidity = 365 * 24 * time.Hour

type initOptions struct {
	dir, domain, bind string
	force             bool
}

// runInit implements `commucat-cli init` (§12.2): a fresh configuration with
// new secrets, a self-signed TLS certificate and the data directory.
func runInit(env *Env, args []string) int {
	opts, msg := parseInitArgs(args)
	if msg != "" {
		fmt.Fprintf(env.Stderr, "%s (%s)\n", initUsage, msg)
		return ExitUsage
	}
	if err := checkInitDomain(opts.domain); err != nil {
		env.errorf("invalid --domain %s: %v", strconv.Quote(opts.domain), err)
		return ExitUsage
	}
	if err := checkInitBind(opts.bind); err != nil {
		env.errorf("invalid --bind %s: %v", strconv.Quote(opts.bind), err)
		return ExitUsage
	}
	out, err := initFiles(opts)
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	for _, kv := range out {
		fmt.Fprintf(env.Stdout, "%s=%s\n", kv[0], kv[1])
	}
	return ExitOK
}

func parseInitArgs(args []string) (initOptions, string) {
	o := initOptions{dir: ".", domain: "commucat.local", bind: "0.0.0.0:9443"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--force" {
			o.force = true
			continue
		}
		name, val, hasVal := strings.Cut(a, "=")
		var dst *string
		switch name {
		case "--dir":
			dst = &o.dir
		case "--domain":
			dst = &o.domain
		case "--bind":
			dst = &o.bind
		default:
			return o, "unknown argument " + a
		}
		if !hasVal {
			if i+1 >= len(args) {
				return o, name + " needs a value"
			}
			i++
			val = args[i]
		}
		*dst = val
	}
	if o.dir == "" {
		return o, "--dir must not be empty"
	}
	return o, ""
}

// checkInitDomain accepts an IP address or a DNS name (it becomes a
// certificate SAN and server.domain).
func checkInitDomain(d string) error {
	if ip, err := netip.ParseAddr(d); err == nil {
		if ip.Zone() != "" {
			return errors.New("an IPv6 zone is not allowed")
		}
		return nil
	}
	if d == "" || len(d) > 253 {
		return errors.New("must be 1 to 253 characters")
	}
	for _, label := range strings.Split(strings.TrimSuffix(d, "."), ".") {
		if label == "" || len(label) > 63 {
			return errors.New("not a DNS name (empty or long label)")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return errors.New("not a DNS name (letters, digits, '-', '_' and '.' only)")
			}
		}
	}
	return nil
}

// checkInitBind accepts host:port with a numeric port (as config.Load).
func checkInitBind(b string) error {
	host, port, err := net.SplitHostPort(b)
	if err != nil {
		return errors.New("not host:port")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || strconv.FormatUint(p, 10) != port {
		return errors.New("the port must be a number from 0 to 65535")
	}
	if strings.ContainsAny(host, " \t\r\n\"\\") {
		return errors.New("not host:port")
	}
	return nil
}

// initFiles writes the files and returns the output lines. The files are
// first written into a staging directory inside DIR, checked with
// config.Load, and only then moved into place.
func initFiles(o initOptions) ([][2]string, error) {
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, initConfigFile)
	certPath := filepath.Join(dir, filepath.FromSlash(initCertFile))
	keyPath := filepath.Join(dir, filepath.FromSlash(initKeyFile))
	if !o.force {
		for _, p := range []string{cfgPath, certPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return nil, fmt.Errorf("%s already exists (use --force to overwrite)", p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
		}
	}

	s, err := newInitSecrets(o.domain)
	if err != nil {
		return nil, err
	}
	cfgText, err := initConfigText(o, s)
	if err != nil {
		return nil, err
	}

	if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, initDataDir), 0o700); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(dir, ".commucat-init-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	if err := os.Mkdir(filepath.Join(stage, "certs"), 0o700); err != nil {
		return nil, err
	}
	files := []struct {
		rel  string
		data []byte
		mode fs.FileMode
	}{
		{initCertFile, s.certPEM, 0o644},
		{initKeyFile, s.keyPEM, 0o600},
		{initConfigFile, cfgText, 0o600}, // last: its presence marks a complete run
	}
	for _, f := range files {
		if err := writeNewFile(filepath.Join(stage, filepath.FromSlash(f.rel)), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	// The result must be a configuration the server accepts (without any
	// COMMUCAT_* variables of this shell).
	noEnv := func(string) (string, bool) { return "", false }
	if _, err := config.Load(filepath.Join(stage, initConfigFile), true, noEnv); err != nil {
		return nil, fmt.Errorf("generated configuration does not validate: %v", err)
	}
	for _, f := range files {
		dst := filepath.Join(dir, filepath.FromSlash(f.rel))
		if err := os.Rename(filepath.Join(stage, filepath.FromSlash(f.rel)), dst); err != nil {
			return nil, err
		}
	}
	return [][2]string{
		{"config", cfgPath},
		{"tls_cert", certPath},
		{"tls_key", keyPath},
		{"domain", o.domain},
		{"noise_public", hex.EncodeToString(s.noisePublic)},
		{"device_ca_public", hex.EncodeToString(s.deviceCAPublic[:])},
		{"admin_token", s.adminToken},
	}, nil
}

// writeNewFile creates path (which must not exist) with exactly mode,
// whatever the umask, and syncs it.
func writeNewFile(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

type initSecrets struct {
	noisePrivate, noisePublic []byte
	federationSeed            []byte
	deviceCAPublic            [32]byte
	adminToken                string
	certPEM, keyPEM           []byte
}

func newInitSecrets(domain string) (*initSecrets, error) {
	s := &initSecrets{}
	nk, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	s.noisePrivate, s.noisePublic = nk.Bytes(), nk.PublicKey().Bytes()
	s.federationSeed = make([]byte, 32)
	token := make([]byte, 32)
	if _, err := rand.Read(s.federationSeed); err != nil {
		return nil, err
	}
	if _, err := rand.Read(token); err != nil {
		return nil, err
	}
	s.adminToken = hex.EncodeToString(token)
	ca, err := identity.DeviceCA(s.federationSeed)
	if err != nil {
		return nil, err
	}
	s.deviceCAPublic = identity.PublicKey32(ca)
	s.certPEM, s.keyPEM, err = selfSignedCert(domain, time.Now())
	if err != nil {
		return nil, err
	}
	return s, nil
}

// selfSignedCert makes an ECDSA P-256 certificate for domain, localhost,
// 127.0.0.1 and ::1, valid for initCertValidity from now.
func selfSignedCert(domain string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: domain},
		NotBefore:             now.Truncate(time.Second),
		NotAfter:              now.Truncate(time.Second).Add(initCertValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	if ip, err := netip.ParseAddr(domain); err == nil {
		if ip = ip.Unmap(); ip != netip.AddrFrom4([4]byte{127, 0, 0, 1}) && ip != netip.IPv6Loopback() {
			ips = append([]net.IP{ip.AsSlice()}, ips...)
		}
	} else {
		tmpl.DNSNames = append(tmpl.DNSNames, domain)
	}
	if domain != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, "localhost")
	}
	tmpl.IPAddresses = ips
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// initConfigText renders commucat.toml. Every key except server.node_id and
// federation.peers is written with its value; the defaults come from
// config.Default so that the file and the loader agree.
func initConfigText(o initOptions, s *initSecrets) ([]byte, error) {
	d := config.Default()
	secs := func(v time.Duration) int64 { return int64(v / time.Second) }
	ms := func(v time.Duration) int64 { return int64(v / time.Millisecond) }
	hours := func(v time.Duration) int64 { return int64(v / time.Hour) }
	data := map[string]any{
		"D":              d,
		"Bind":           tomlString(o.bind),
		"Domain":         tomlString(o.domain),
		"TLSCert":        tomlString(initCertFile),
		"TLSKey":         tomlString(initKeyFile),
		"SQLitePath":     tomlString(filepath.ToSlash(d.Storage.SQLitePath)),
		"NoisePrivate":   tomlString(hex.EncodeToString(s.noisePrivate)),
		"NoisePublic":    tomlString(hex.EncodeToString(s.noisePublic)),
		"FederationSeed": tomlString(hex.EncodeToString(s.federationSeed)),
		"Prologue":       tomlString(d.Crypto.Prologue),
		"AdminToken":     tomlString(s.adminToken),
		"Level":          tomlString(strings.ToLower(d.Log.Level.String())),
		"Generated":      time.Now().UTC().Format(time.RFC3339),
	}
	var buf bytes.Buffer
	err := template.Must(template.New("toml").Funcs(template.FuncMap{
		"secs": secs, "ms": ms, "hours": hours, "q": tomlString,
	}).Parse(initTemplate)).Execute(&buf, data)
	return buf.Bytes(), err
}

const initTemplate = `# CommuCat server configuration (spec §10), written by commucat-cli init
# on {{.Generated}}. This file holds secrets: keep it private (mode 0600).
# Relative paths are resolved against the directory of this file. Every key
# can be overridden by its COMMUCAT_* environment variable. Values below
# other than the generated ones are the defaults.

[server]
bind = {{.Bind}}
domain = {{.Domain}}
tls_cert = {{.TLSCert}}   # self-signed; replace for production
tls_key = {{.TLSKey}}
auto_approve_devices = {{.D.Server.AutoApproveDevices}}   # false: unknown devices must be paired (§4.9)
max_auto_devices_per_user = {{.D.Server.MaxAutoDevicesPerUser}}   # with auto-approval: active devices per user, 0 = unlimited
connection_keepalive = {{secs .D.Server.ConnectionKeepalive}}   # seconds, 5-3600
session_ttl = {{secs .D.Server.SessionTTL}}   # seconds, 60-2592000
handshake_timeout = {{secs .D.Server.HandshakeTimeout}}   # seconds, 1-60
# node_id = "node-1"   # default: the host name + "-" + 8 random hex digits
max_concurrent_streams = {{.D.Server.MaxConcurrentStreams}}   # HTTP/2 streams per connection
read_header_timeout = {{secs .D.Server.ReadHeaderTimeout}}   # seconds
max_request_body = {{.D.Server.MaxRequestBody}}   # bytes, >= 1024
websocket = {{.D.Server.WebSocket}}
trusted_proxies = []   # CIDRs of reverse proxies trusted for X-Forwarded-For
shutdown_grace = {{secs .D.Server.ShutdownGrace}}   # seconds

[storage]
postgres_dsn = ""   # empty: SQLite at sqlite_path
sqlite_path = {{.SQLitePath}}
redis_url = ""   # empty: in-process (Redis needs postgres_dsn)

[crypto]
noise_private = {{.NoisePrivate}}   # secret: the Noise static key
noise_public = {{.NoisePublic}}
federation_seed = {{.FederationSeed}}   # secret: the device CA key derives from it
prologue = {{.Prologue}}

[admin]
token = {{.AdminToken}}   # secret
token_file = ""   # where rotated admin tokens are written

[presence]
ttl_seconds = {{secs .D.Presence.TTL}}

[pairing]
ttl_seconds = {{secs .D.Pairing.TTL}}   # 60-3600
allow_server_keys = {{.D.Pairing.AllowServerKeys}}

[limits]
relay_ttl = {{secs .D.Limits.RelayTTL}}   # seconds an undelivered frame is kept

[rotation.noise]
enabled = {{.D.Rotation.Noise.Enabled}}
interval_hours = {{hours .D.Rotation.Noise.Interval}}
grace_hours = {{hours .D.Rotation.Noise.Grace}}
max_versions = {{.D.Rotation.Noise.MaxVersions}}

[rotation.admin]
enabled = {{.D.Rotation.Admin.Enabled}}   # true needs admin.token_file
interval_hours = {{hours .D.Rotation.Admin.Interval}}
grace_hours = {{hours .D.Rotation.Admin.Grace}}
max_versions = {{.D.Rotation.Admin.MaxVersions}}

[security]
require_encrypted_frames = {{.D.Security.RequireEncryptedFrames}}   # true: protocol version 2 only
open_channels = {{.D.Security.OpenChannels}}   # true: anyone may join a channel
padding = {{q (print .D.Security.Padding)}}   # none or buckets

[security.rate_limit]
{{- with .D.Security.RateLimit}}
http_burst = {{.HTTP.Burst}}
http_window_ms = {{ms .HTTP.Window}}
http_penalty_ms = {{ms .HTTP.Penalty}}
connect_burst = {{.Connect.Burst}}
connect_window_ms = {{ms .Connect.Window}}
connect_penalty_ms = {{ms .Connect.Penalty}}
pairing_burst = {{.Pairing.Burst}}
pairing_window_ms = {{ms .Pairing.Window}}
pairing_penalty_ms = {{ms .Pairing.Penalty}}
frame_burst = {{.Frame.Burst}}
frame_window_ms = {{ms .Frame.Window}}
frame_penalty_ms = {{ms .Frame.Penalty}}
{{- end}}

[media]
transcode = {{.D.Media.Transcode}}

[ledger]
mode = {{q (print .D.Ledger.Mode)}}   # null, debug or file
target = ""   # the ledger file for mode = "file"

[federation]
enabled = {{.D.Federation.Enabled}}
# [[federation.peers]]
# domain = "peer.example"
# endpoint = "https://peer.example"
# public_key = "<hex32 Ed25519 public key>"

[transport]
reality_cert = ""   # both or neither
reality_fingerprint = ""

[log]
level = {{.Level}}   # debug, info, warn or error
format = {{q (print .D.Log.Format)}}   # text or json
`

package cli

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/identity"
)

var initHex32 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// runInitOK runs init and returns its key=value lines in order.
func runInitOK(t *testing.T, args ...string) (keys []string, vals map[string]string) {
	t.Helper()
	out, errOut, code := run(t, "", append([]string{"init"}, args...)...)
	if code != ExitOK || errOut != "" {
		t.Fatalf("init %v: exit %d, stderr %q", args, code, errOut)
	}
	vals = map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("bad output line %q", line)
		}
		keys = append(keys, k)
		vals[k] = v
	}
	return keys, vals
}

func initNoEnv(string) (string, bool) { return "", false }

func initFileMode(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode()
}

func initReadCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	blk, rest := pem.Decode(data)
	if blk == nil || blk.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s is not one PEM certificate", p)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestInitDefaults(t *testing.T) {
	dir := t.TempDir()
	keys, out := runInitOK(t, "--dir", dir)

	if want := []string{"config", "tls_cert", "tls_key", "domain", "noise_public", "device_ca_public", "admin_token"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("output keys %v, want %v", keys, want)
	}
	cfgPath := filepath.Join(dir, "commucat.toml")
	certPath := filepath.Join(dir, "certs", "server.crt")
	keyPath := filepath.Join(dir, "certs", "server.key")
	if out["config"] != cfgPath || out["tls_cert"] != certPath || out["tls_key"] != keyPath || out["domain"] != "commucat.local" {
		t.Errorf("output %v", out)
	}
	for _, k := range []string{"noise_public", "device_ca_public", "admin_token"} {
		if !initHex32.MatchString(out[k]) {
			t.Errorf("%s=%q is not 64 lowercase hex characters", k, out[k])
		}
	}

	// Files and modes.
	for p, want := range map[string]os.FileMode{cfgPath: 0o600, keyPath: 0o600, certPath: 0o644} {
		if got := initFileMode(t, p); got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "data")); err != nil || !st.IsDir() {
		t.Errorf("data directory: %v", err)
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, ".commucat-init-*")); len(entries) != 0 {
		t.Errorf("staging left behind: %v", entries)
	}

	// The configuration loads from anywhere, with paths resolved against
	// DIR.
	t.Chdir(t.TempDir())
	cfg, err := config.Load(cfgPath, true, initNoEnv)
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	if cfg.Server.TLSCert != certPath || cfg.Server.TLSKey != keyPath || cfg.Storage.SQLitePath != filepath.Join(dir, "data", "commucat.db") {
		t.Errorf("paths %q %q %q", cfg.Server.TLSCert, cfg.Server.TLSKey, cfg.Storage.SQLitePath)
	}
	if cfg.Server.Bind != "0.0.0.0:9443" || cfg.Server.Domain != "commucat.local" {
		t.Errorf("bind %q domain %q", cfg.Server.Bind, cfg.Server.Domain)
	}
	if hex.EncodeToString(cfg.Crypto.NoisePublic[:]) != out["noise_public"] {
		t.Error("noise_public differs from the file")
	}
	if cfg.Admin.Token != out["admin_token"] {
		t.Error("admin_token differs from the file")
	}
	if len(cfg.Crypto.FederationSeed) != 32 {
		t.Errorf("federation seed of %d bytes", len(cfg.Crypto.FederationSeed))
	}
	ca, err := identity.DeviceCA(cfg.Crypto.FederationSeed)
	if err != nil {
		t.Fatal(err)
	}
	if pub := identity.PublicKey32(ca); hex.EncodeToString(pub[:]) != out["device_ca_public"] {
		t.Error("device_ca_public is not from_seed(federation_seed)")
	}

	// Everything else is the default of §10.2.
	want := config.Default()
	want.File = cfgPath
	want.Server.Bind, want.Server.Domain = cfg.Server.Bind, cfg.Server.Domain
	want.Server.TLSCert, want.Server.TLSKey = certPath, keyPath
	want.Server.NodeID = cfg.Server.NodeID
	want.Storage.SQLitePath = cfg.Storage.SQLitePath
	want.Crypto = cfg.Crypto
	want.Admin.Token = cfg.Admin.Token
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("configuration differs from the defaults:\n got %+v\nwant %+v", *cfg, want)
	}

	// Every key except node_id and federation.peers is written explicitly.
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	md, err := toml.Decode(string(raw), &m)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range md.Keys() {
		if md.Type(k...) != "Hash" {
			n++
		}
	}
	if n != 59 {
		t.Errorf("%d keys written, want 59 (the 61 of §10.2 without node_id and federation.peers)", n)
	}
	for _, k := range []string{"auto_approve_devices = false", "max_auto_devices_per_user = 1", "session_ttl = 3600", "frame_penalty_ms = 0", `postgres_dsn = ""`, `redis_url = ""`, `sqlite_path = "data/commucat.db"`} {
		if !strings.Contains(string(raw), k) {
			t.Errorf("file lacks %q", k)
		}
	}

	// The certificate.
	c := initReadCert(t, certPath)
	if !reflect.DeepEqual(c.DNSNames, []string{"commucat.local", "localhost"}) {
		t.Errorf("DNS SANs %v", c.DNSNames)
	}
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !reflect.DeepEqual(ips, []string{"127.0.0.1", "::1"}) {
		t.Errorf("IP SANs %v", ips)
	}
	if d := c.NotAfter.Sub(c.NotBefore); d != 365*24*time.Hour {
		t.Errorf("validity %v", d)
	}
	if time.Since(c.NotBefore) > time.Minute || time.Since(c.NotBefore) < 0 {
		t.Errorf("NotBefore %v", c.NotBefore)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key %T is not ECDSA P-256", c.PublicKey)
	}
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil || !bytes.Equal(c.RawIssuer, c.RawSubject) {
		t.Errorf("not self-signed: %v", err)
	}
	if c.IsCA || c.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Error("not a TLS server leaf certificate")
	}
	if err := c.VerifyHostname("commucat.local"); err != nil {
		t.Error(err)
	}
	if _, err := tls.LoadX509KeyPair(certPath, keyPath); err != nil {
		t.Error(err)
	}
	keyPEM, _ := os.ReadFile(keyPath)
	if blk, _ := pem.Decode(keyPEM); blk == nil || blk.Type != "PRIVATE KEY" {
		t.Error("key is not a PKCS#8 PEM block")
	}
}

func TestInitOptions(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "nested", "deploy")
	_, out := runInitOK(t, "--domain=chat.example.org", "--bind", "127.0.0.1:8443", "--dir="+dir)
	if out["domain"] != "chat.example.org" || out["config"] != filepath.Join(dir, "commucat.toml") {
		t.Errorf("output %v", out)
	}
	cfg, err := config.Load(out["config"], true, initNoEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Bind != "127.0.0.1:8443" || cfg.Server.Domain != "chat.example.org" {
		t.Errorf("%q %q", cfg.Server.Bind, cfg.Server.Domain)
	}
	c := initReadCert(t, out["tls_cert"])
	if !reflect.DeepEqual(c.DNSNames, []string{"chat.example.org", "localhost"}) || len(c.IPAddresses) != 2 {
		t.Errorf("SANs %v %v", c.DNSNames, c.IPAddresses)
	}

	// DIR defaults to the working directory, and the printed paths are
	// absolute.
	wd := t.TempDir()
	t.Chdir(wd)
	_, out = runInitOK(t, "--domain", "10.1.2.3", "--bind", "[::]:443")
	if out["config"] != filepath.Join(wd, "commucat.toml") {
		t.Errorf("config=%s", out["config"])
	}
	c = initReadCert(t, filepath.Join(wd, "certs", "server.crt"))
	if !reflect.DeepEqual(c.DNSNames, []string{"localhost"}) ||
		!reflect.DeepEqual(c.IPAddresses, []net.IP{net.ParseIP("10.1.2.3").To4(), net.ParseIP("127.0.0.1").To4(), net.IPv6loopback}) {
		t.Errorf("SANs %v %v", c.DNSNames, c.IPAddresses)
	}
	if _, err := config.Load("commucat.toml", true, initNoEnv); err != nil {
		t.Error(err)
	}

	// A loopback domain is not listed twice.
	_, out = runInitOK(t, "--dir", "lo", "--domain", "localhost")
	c = initReadCert(t, out["tls_cert"])
	if !reflect.DeepEqual(c.DNSNames, []string{"localhost"}) || len(c.IPAddresses) != 2 {
		t.Errorf("SANs %v %v", c.DNSNames, c.IPAddresses)
	}
	_, out = runInitOK(t, "--dir", "lo4", "--domain", "127.0.0.1")
	c = initReadCert(t, out["tls_cert"])
	if !reflect.DeepEqual(c.DNSNames, []string{"localhost"}) || len(c.IPAddresses) != 2 {
		t.Errorf("SANs %v %v", c.DNSNames, c.IPAddresses)
	}
}

func TestInitForce(t *testing.T) {
	dir := t.TempDir()
	_, first := runInitOK(t, "--dir", dir)
	files := []string{first["config"], first["tls_cert"], first["tls_key"]}
	before := map[string][]byte{}
	for _, p := range files {
		before[p], _ = os.ReadFile(p)
	}
	unchanged := func() {
		t.Helper()
		for _, p := range files {
			if b, _ := os.ReadFile(p); !bytes.Equal(b, before[p]) {
				t.Errorf("%s was overwritten", p)
			}
		}
	}

	out, errOut, code := run(t, "", "init", "--dir", dir, "--domain", "other.example")
	if code != ExitFail || out != "" || errOut != "error: "+first["config"]+" already exists (use --force to overwrite)\n" {
		t.Errorf("second run: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	unchanged()

	// Any one of the files blocks the run, and nothing is written.
	for _, keep := range files {
		d := t.TempDir()
		rel, _ := filepath.Rel(dir, keep)
		if err := os.MkdirAll(filepath.Dir(filepath.Join(d, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, rel), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, errOut, code := run(t, "", "init", "--dir", d); code != ExitFail || !strings.Contains(errOut, "already exists") {
			t.Errorf("with %s present: exit %d, %q", rel, code, errOut)
		}
		for _, other := range files {
			r, _ := filepath.Rel(dir, other)
			if r == rel {
				if b, _ := os.ReadFile(filepath.Join(d, r)); string(b) != "keep" {
					t.Errorf("%s overwritten", r)
				}
			} else if _, err := os.Stat(filepath.Join(d, r)); err == nil {
				t.Errorf("%s written although %s existed", r, rel)
			}
		}
	}

	// --force replaces everything with fresh secrets and the right modes.
	if err := os.Chmod(first["config"], 0o644); err != nil {
		t.Fatal(err)
	}
	_, second := runInitOK(t, "--dir", dir, "--force", "--domain", "other.example")
	if second["noise_public"] == first["noise_public"] || second["admin_token"] == first["admin_token"] || second["device_ca_public"] == first["device_ca_public"] {
		t.Error("secrets not renewed")
	}
	for _, p := range files {
		if b, _ := os.ReadFile(p); bytes.Equal(b, before[p]) {
			t.Errorf("%s not replaced", p)
		}
	}
	if m := initFileMode(t, first["config"]); m != 0o600 {
		t.Errorf("config mode %v after --force", m)
	}
	cfg, err := config.Load(first["config"], true, initNoEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Domain != "other.example" || !slices.Contains(initReadCert(t, second["tls_cert"]).DNSNames, "other.example") {
		t.Error("domain not applied")
	}
}

func TestInitUsageErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"--dir"}, ExitUsage, "usage: commucat-cli init [--dir DIR] [--domain D] [--bind ADDR] [--force] (--dir needs a value)\n"},
		{[]string{"--dir", dir, "extra"}, ExitUsage, "usage: commucat-cli init [--dir DIR] [--domain D] [--bind ADDR] [--force] (unknown argument extra)\n"},
		{[]string{"--dir", dir, "--verbose"}, ExitUsage, "usage: commucat-cli init [--dir DIR] [--domain D] [--bind ADDR] [--force] (unknown argument --verbose)\n"},
		{[]string{"--dir", dir, "--force=yes"}, ExitUsage, "usage: commucat-cli init [--dir DIR] [--domain D] [--bind ADDR] [--force] (unknown argument --force=yes)\n"},
		{[]string{"--dir="}, ExitUsage, "usage: commucat-cli init [--dir DIR] [--domain D] [--bind ADDR] [--force] (--dir must not be empty)\n"},
		{[]string{"--dir", dir, "--domain", ""}, ExitUsage, "error: invalid --domain \"\": must be 1 to 253 characters\n"},
		{[]string{"--dir", dir, "--domain", "a b"}, ExitUsage, ""},
		{[]string{"--dir", dir, "--domain", "bad\"quote"}, ExitUsage, ""},
		{[]string{"--dir", dir, "--domain", "fe80::1%eth0"}, ExitUsage, ""},
		{[]string{"--dir", dir, "--bind", "9443"}, ExitUsage, "error: invalid --bind \"9443\": not host:port\n"},
		{[]string{"--dir", dir, "--bind", "0.0.0.0:https"}, ExitUsage, ""},
		{[]string{"--dir", dir, "--bind", "0.0.0.0:70000"}, ExitUsage, ""},
	}
	for _, c := range cases {
		out, errOut, code := run(t, "", append([]string{"init"}, c.args...)...)
		if code != c.code || out != "" {
			t.Errorf("%v: exit %d, stdout %q", c.args, code, out)
		}
		if c.err != "" && errOut != c.err {
			t.Errorf("%v: stderr %q, want %q", c.args, errOut, c.err)
		}
		if c.err == "" && !strings.HasPrefix(errOut, "error: invalid --") {
			t.Errorf("%v: stderr %q", c.args, errOut)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files written on usage errors: %v", entries)
	}
}

// DIR exists as a file: a failure (exit 1), not a usage error.
func TestInitDirIsFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := run(t, "", "init", "--dir", p)
	if code != ExitFail || !strings.HasPrefix(errOut, "error: ") {
		t.Errorf("exit %d, %q", code, errOut)
	}
}

func TestInitListed(t *testing.T) {
	_, errOut, code := run(t, "")
	if code != ExitUsage || !strings.Contains(errOut, "  init [--dir DIR] [--domain D] [--bind ADDR] [--force]\n") {
		t.Errorf("exit %d, %q", code, errOut)
	}
}

func TestTOMLString(t *testing.T) {
	for _, s := range []string{"plain", `q"uote`, `back\slash`, "ctl\x01\x7f\n\t", "ünï©ødé"} {
		var m map[string]string
		if _, err := toml.Decode("k = "+tomlString(s), &m); err != nil || m["k"] != s {
			t.Errorf("%q: %v %q", s, err, m["k"])
		}
	}
}

package config

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
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fixture is a directory with a TLS key pair and fresh secrets.
type fixture struct {
	dir          string
	certPath     string // absolute
	keyPath      string // absolute
	noisePrivHex string
	noisePubHex  string
	noisePriv    [32]byte
	noisePub     [32]byte
	seedHex      string
	seed         []byte
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: dir}
	if err := os.Mkdir(filepath.Join(dir, "certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.certPath = filepath.Join(dir, "certs", "server.crt")
	f.keyPath = filepath.Join(dir, "certs", "server.key")
	certPEM, keyPEM := selfSigned(t, "example.test")
	writeFile(t, f.certPath, certPEM)
	writeFile(t, f.keyPath, keyPEM)

	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	copy(f.noisePriv[:], k.Bytes())
	copy(f.noisePub[:], k.PublicKey().Bytes())
	f.noisePrivHex = hex.EncodeToString(f.noisePriv[:])
	f.noisePubHex = hex.EncodeToString(f.noisePub[:])
	f.seed = make([]byte, 32)
	rand.Read(f.seed)
	f.seedHex = hex.EncodeToString(f.seed)
	return f
}

func selfSigned(t testing.TB, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// minimal is a file with only the required keys (TLS paths relative to the
// file's directory).
func (f *fixture) minimal() string {
	return `[server]
bind = "127.0.0.1:9443"
domain = "example.test"
tls_cert = "certs/server.crt"
tls_key = "certs/server.key"

[crypto]
noise_private = "` + f.noisePrivHex + `"
noise_public = "` + f.noisePubHex + `"
federation_seed = "` + f.seedHex + `"
`
}

// requiredEnv sets every required key through the environment.
func (f *fixture) requiredEnv() map[string]string {
	return map[string]string{
		"COMMUCAT_BIND":            "127.0.0.1:9443",
		"COMMUCAT_DOMAIN":          "example.test",
		"COMMUCAT_TLS_CERT":        f.certPath,
		"COMMUCAT_TLS_KEY":         f.keyPath,
		"COMMUCAT_NOISE_PRIVATE":   f.noisePrivHex,
		"COMMUCAT_NOISE_PUBLIC":    f.noisePubHex,
		"COMMUCAT_FEDERATION_SEED": f.seedHex,
	}
}

// write stores content as DIR/commucat.toml and returns its path.
func (f *fixture) write(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(f.dir, "commucat.toml")
	writeFile(t, p, []byte(content))
	return p
}

func noEnv(string) (string, bool) { return "", false }

func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// testLoader is a loader with a fixed hostname, randomness and working
// directory.
func testLoader(wd string) *loader {
	return &loader{
		hostname: func() (string, error) { return "test-host", nil },
		random:   bytes.NewReader(bytes.Repeat([]byte{0xab}, 64)),
		getwd:    func() (string, error) { return wd, nil },
	}
}

// loadString writes content into the fixture and loads it with env.
func (f *fixture) load(t testing.TB, content string, env map[string]string) (*Config, error) {
	t.Helper()
	p := f.write(t, content)
	cfg, err := testLoader(t.TempDir()).load(p, true, mapEnv(env))
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

func (f *fixture) mustLoad(t testing.TB, content string, env map[string]string) *Config {
	t.Helper()
	cfg, err := f.load(t, content, env)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return cfg
}

// asError checks that err is a *Error and returns it.
func asError(t testing.TB, err error) *Error {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *config.Error", err, err)
	}
	return ce
}

// withKey returns content with `key = value` set in the right table (the
// table is appended when absent, the key replaced when present).
func withKey(content, dotted, value string) string {
	i := strings.LastIndexByte(dotted, '.')
	table, key := dotted[:i], dotted[i+1:]
	lines := strings.Split(content, "\n")
	cur := ""
	for j, l := range lines {
		tl := strings.TrimSpace(l)
		if strings.HasPrefix(tl, "[") {
			cur = strings.Trim(tl, "[]")
			continue
		}
		if cur == table && strings.HasPrefix(tl, key+" ") {
			lines[j] = key + " = " + value
			return strings.Join(lines, "\n")
		}
	}
	for j, l := range lines {
		if strings.TrimSpace(l) == "["+table+"]" {
			lines = append(lines[:j+1], append([]string{key + " = " + value}, lines[j+1:]...)...)
			return strings.Join(lines, "\n")
		}
	}
	return content + "\n[" + table + "]\n" + key + " = " + value + "\n"
}

// Package servertest starts real CommuCat servers for end-to-end tests:
// on 127.0.0.1 port 0, over real TLS with a fresh self-signed certificate,
// on the embedded SQLite storage in a temporary directory.
package servertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/server"
)

// Server is a running test server.
type Server struct {
	URL      string // https://127.0.0.1:port
	Config   *config.Config
	Registry *prometheus.Registry
	CertPool *x509.CertPool
	Srv      *server.Server
	Dir      string

	cancel context.CancelFunc
	done   chan error
}

// WriteCert writes a self-signed ECDSA P-256 certificate for localhost and
// 127.0.0.1 into dir and returns the paths and a pool holding it.
func WriteCert(t testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "commucat.local"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"commucat.local", "localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}

// Config returns a valid development configuration in dir: auto-approval
// without a device limit, fresh keys, SQLite in dir.
func Config(t testing.TB, dir string) (*config.Config, *x509.CertPool) {
	t.Helper()
	certFile, keyFile, pool := WriteCert(t, dir)
	c := config.Default()
	c.Server.Bind = "127.0.0.1:0"
	c.Server.Domain = "commucat.local"
	c.Server.TLSCert, c.Server.TLSKey = certFile, keyFile
	c.Server.AutoApproveDevices = true
	c.Server.MaxAutoDevicesPerUser = 0
	c.Server.NodeID = "test-node"
	c.Storage.SQLitePath = filepath.Join(dir, "data", "commucat.db")
	if _, err := rand.Read(c.Crypto.NoisePrivate[:]); err != nil {
		t.Fatal(err)
	}
	pub, err := identity.X25519Public(c.Crypto.NoisePrivate)
	if err != nil {
		t.Fatal(err)
	}
	c.Crypto.NoisePublic = pub
	c.Crypto.FederationSeed = make([]byte, 32)
	if _, err := rand.Read(c.Crypto.FederationSeed); err != nil {
		t.Fatal(err)
	}
	return &c, pool
}

// Start starts a server with the configuration from Config, changed by
// mutate, and stops it when the test ends.
func Start(t testing.TB, mutate func(*config.Config)) *Server {
	t.Helper()
	dir := t.TempDir()
	c, pool := Config(t, dir)
	if mutate != nil {
		mutate(c)
	}
	return StartWith(t, c, pool, dir)
}

// StartWith starts a server with a given configuration.
func StartWith(t testing.TB, c *config.Config, pool *x509.CertPool, dir string) *Server {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("COMMUCAT_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	reg := prometheus.NewRegistry()
	srv, err := server.New(context.Background(), server.Options{Config: c, Logger: logger, Registry: reg})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Listen(c.Server.Bind); err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{URL: "https://" + srv.Addr().String(), Config: c, Registry: reg, CertPool: pool, Srv: srv, Dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(ctx) }()
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// Stop shuts the server down (idempotent).
func (s *Server) Stop(t testing.TB) {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("server: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("server did not stop within 30 s")
	}
}

// TLS returns a client TLS configuration trusting the server.
func (s *Server) TLS() *tls.Config {
	return &tls.Config{RootCAs: s.CertPool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
}

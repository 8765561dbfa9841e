//go:build linux

package noiseconn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/identity"
)

// BenchmarkSessionFloor measures the cryptographic floor of one new v2
// session, both ends in this process: a TLS 1.3 handshake as the server and
// the SDK make it (ECDSA P-256 certificate as `commucat-cli init` makes it,
// Go's default key shares, i.e. the X25519MLKEM768 hybrid; the client
// trusts the certificate directly) and a Noise XK v2 handshake with a
// prepared server key (with the ML-KEM-768 hybrid for "v2-pq"). No TCP,
// HTTP, JSON beyond the handshake payloads, storage or scheduler hand-offs:
// what a real session costs on top of this is overhead the server and load
// tool can cut, this is not.
//
// Sub-benchmarks: "tls" and "noise-v2[-pq]" alone, "session-v2[-pq]" both;
// "-resumed" resumes the TLS session of an earlier connection (a client
// that reconnects: no certificate signature or verification, the key
// exchange still runs).
// Each reports cpu-µs/op, the process's user+system CPU per iteration (both
// ends together, read with getrusage), and max-ops/s, the rate two fully
// busy cores could reach for this work alone. issue 7 asks for
// 1 500 v2 sessions/s (1 000 with PQ) with server and load tool sharing two
// cores: that needs at most 1 333 µs (2 000 µs) per session for both ends
// together, everything included.
//
//	go test -run '^$' -bench SessionFloor -benchtime 3s ./internal/noiseconn/
func BenchmarkSessionFloor(b *testing.B) {
	certDER, key := floorCert(b)
	srvTLS := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{certDER}, PrivateKey: key}},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	leaf, err := x509.ParseCertificate(certDER)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	cliTLS := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		ServerName: "localhost",
		NextProtos: []string{"h2"},
	}
	v2, v2pq := newFloorNoise(b, false), newFloorNoise(b, true)
	for _, c := range []struct {
		name   string
		tls    bool
		resume bool // the TLS handshake resumes an earlier connection's session
		noise  *floorNoise
	}{
		{"tls", true, false, nil},
		{"tls-resumed", true, true, nil},
		{"noise-v2", false, false, v2},
		{"noise-v2-pq", false, false, v2pq},
		{"session-v2", true, false, v2},
		{"session-v2-pq", true, false, v2pq},
		{"session-v2-resumed", true, true, v2},
	} {
		b.Run(c.name, func(b *testing.B) {
			cfg := cliTLS
			if c.resume {
				cfg = cliTLS.Clone()
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
				floorTLS(b, srvTLS, cfg, false) // fills the cache
			}
			b.ReportAllocs()
			cpu0 := processCPU(b)
			n := 0
			for b.Loop() {
				if c.tls {
					floorTLS(b, srvTLS, cfg, c.resume)
				}
				if c.noise != nil {
					c.noise.run(b)
				}
				n++
			}
			us := float64(processCPU(b)-cpu0) / float64(time.Microsecond) / float64(n)
			b.ReportMetric(us, "cpu-µs/op")
			b.ReportMetric(2e6/us, "max-ops/s")
		})
	}
}

// floorTLS runs one TLS 1.3 handshake over an in-memory pipe, then the
// server sends one byte, so that the client also reads the session ticket
// the server sent after the handshake. resume says whether the handshake
// must have resumed a session.
func floorTLS(b *testing.B, srvCfg, cliCfg *tls.Config, resume bool) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(c2, srvCfg)
		if err := s.HandshakeContext(context.Background()); err != nil {
			done <- err
			return
		}
		_, err := s.Write([]byte{1})
		done <- err
	}()
	c := tls.Client(c1, cliCfg)
	if err := c.HandshakeContext(context.Background()); err != nil {
		b.Fatal(err)
	}
	var one [1]byte
	if _, err := io.ReadFull(c, one[:]); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if st := c.ConnectionState(); st.Version != tls.VersionTLS13 || st.DidResume != resume {
		b.Fatalf("TLS version %x, resumed %v (want %v)", st.Version, st.DidResume, resume)
	}
}

type floorNoise struct {
	srv  ServerConfig
	keys []ServerKey
	cli  ClientConfig
	info AuthInfo
}

func newFloorNoise(b *testing.B, pq bool) *floorNoise {
	key := serverKey(b, 2, 0x77).Prepared()
	dev, err := identity.FromSeed(seq32(0x20))
	if err != nil {
		b.Fatal(err)
	}
	return &floorNoise{
		srv: ServerConfig{
			Domain:   "commucat.local",
			Prologue: []byte("commucat"),
			Versions: []int{1, 2},
			Features: ServerFeatures{V2: true},
		},
		keys: []ServerKey{key},
		cli: ClientConfig{
			Pattern:      PatternXK,
			DeviceID:     "device-1",
			DeviceKey:    dev,
			StaticKey:    [32]byte(seq32(0x40)),
			ServerStatic: key.Public,
			Domain:       "commucat.local",
			Prologue:     []byte("commucat"),
			Versions:     []int{2},
			PQ:           pq,
		},
		info: AuthInfo{Session: strings.Repeat("ab", 32), UserID: strings.Repeat("cd", 32)},
	}
}

// run is one complete XK handshake, client and server.
func (f *floorNoise) run(b *testing.B) {
	_, sess := handshakeOnce(b, f.cli, f.srv, f.keys, f.info)
	if sess.Version != 2 || sess.PQ != f.cli.PQ {
		b.Fatalf("version %d, PQ %v; want 2, %v", sess.Version, sess.PQ, f.cli.PQ)
	}
}

func floorCert(b *testing.B) ([]byte, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	return der, key
}

// processCPU is this process's user+system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

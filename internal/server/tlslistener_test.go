package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestHandshakeListener: connections come out of Accept with the TLS
// handshake done and the ALPN protocol negotiated; a peer that never
// completes its handshake neither blocks the others nor Close.
func TestHandshakeListener(t *testing.T) {
	conf := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"h2", "http/1.1"}}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newHandshakeListener(inner, conf, 2*time.Second, 0, nil)
	var omu sync.Mutex
	var observed []string
	l.observe = func(r string) { omu.Lock(); observed = append(observed, r); omu.Unlock() }
	// A silent peer: TCP only.
	silent, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := tls.Dial("tcp", inner.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		t.Fatalf("Accept returned %T, want *tls.Conn", c)
	}
	st := tc.ConnectionState()
	if !st.HandshakeComplete || st.NegotiatedProtocol != "h2" {
		t.Fatalf("handshake complete %v, ALPN %q", st.HandshakeComplete, st.NegotiatedProtocol)
	}
	if err := <-errc; err != nil {
		t.Fatalf("client: %v", err)
	}
	c.Close()
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close waited %v for a pending handshake", d)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
	// The completed handshake counts; the silent peer's, aborted by
	// Close, is not the peer's failure.
	omu.Lock()
	defer omu.Unlock()
	if !slices.Equal(observed, []string{"full"}) {
		t.Fatalf("observed %q, want [full]", observed)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestHandshakeListenerPerIP: one IP holds at most perIP pending TLS
// handshakes; a further connection is closed at once, and a slot frees
// when a pending handshake ends.
func TestHandshakeListenerPerIP(t *testing.T) {
	conf := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{selfSigned(t)}}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newHandshakeListener(inner, conf, 10*time.Second, 2, nil)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c
		}
	}()
	addr := inner.Addr().String()
	pendingCount := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.pending)
	}
	var silent []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for pendingCount() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := pendingCount(); n != 2 {
		t.Fatalf("%d pending handshakes, want 2", n)
	}
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := third.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("third connection from the same IP: read %v, want EOF (closed by the server)", err)
	}
	// A silent peer gives up: its slot frees and a real client gets in.
	silent[0].Close()
	for pendingCount() > 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	errc := make(chan error, 1)
	go func() {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			defer c.Close()
			_, err = c.Read(make([]byte, 1)) // until the server closes
			if errors.Is(err, io.EOF) {
				err = nil
			}
		}
		errc <- err
	}()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted after a slot freed")
	}
	if err := <-errc; err != nil {
		t.Fatalf("client: %v", err)
	}
}

// TestHandshakeListenerTrustedProxyExempt: connections from a trusted
// proxy (every client behind it shares its address) are not bounded per IP.
func TestHandshakeListenerTrustedProxyExempt(t *testing.T) {
	conf := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{selfSigned(t)}}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newHandshakeListener(inner, conf, 10*time.Second, 1, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	defer l.Close()
	go func() { _, _ = l.Accept() }()
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		n := len(l.pending)
		l.mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pending handshakes from the trusted proxy, want 3 (bound 1 must not apply)", n)
		}
		time.Sleep(time.Millisecond)
	}
}

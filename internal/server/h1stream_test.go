package server_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/servertest"
)

// rawH1 is a /connect stream over HTTP/1.1 written byte by byte on a TLS
// connection: the request head and the first chunk go out in one write,
// so the server receives the start of the body together with the headers.
type rawH1 struct {
	conn *tls.Conn
	br   *bufio.Reader
	resp *http.Response
}

func openRawH1(t *testing.T, s *servertest.Server, firstChunk []byte) *rawH1 {
	t.Helper()
	cfg := s.TLS().Clone()
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(s.URL, "https://"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	head := "POST /connect HTTP/1.1\r\nHost: commucat.local\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
	if _, err := conn.Write(append([]byte(head), chunk(firstChunk)...)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !resp.Close || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" ||
		resp.Header.Get("Content-Type") != "application/octet-stream" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("response %d close=%v te=%v headers %v", resp.StatusCode, resp.Close, resp.TransferEncoding, resp.Header)
	}
	return &rawH1{conn: conn, br: br, resp: resp}
}

// chunk encodes p as one HTTP/1.1 chunk.
func chunk(p []byte) []byte {
	return append(fmt.Appendf(nil, "%x\r\n", len(p)), append(p, '\r', '\n')...)
}

// legacyHello returns a v1 XK HELLO frame (the original client's) for a
// new device of its own.
func legacyHello(t *testing.T, s *servertest.Server, name string) []byte {
	t.Helper()
	dev, _ := identity.FromSeed(bytes.Repeat([]byte{byte(len(name))}, 32))
	var static [32]byte
	static[0] = 2
	handle := uniqueHandle(name)
	_, hello, err := noiseconn.NewClientHandshake(noiseconn.ClientConfig{
		Pattern: "XK", DeviceID: handle, DeviceKey: dev, StaticKey: static,
		ServerStatic: fetchInfo(t, s), Domain: "commucat.local", Prologue: []byte("commucat"),
		LegacyVersion: 1, Capabilities: []string{"noise", "zstd"}, User: &noiseconn.UserHint{Handle: &handle},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ccp.AppendFrame(nil, ccp.Frame{Type: ccp.Hello, Sequence: 1, Payload: hello})
	return b
}

// The HTTP/1.1 stream the server takes over from net/http: the body bytes
// that arrived with the request head are not lost, the response is well
// formed chunked coding, and when the client ends the request body the
// response ends with its last chunk and the connection is closed (§3.4).
func TestH1StreamWire(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	r := openRawH1(t, s, legacyHello(t, s, "h1wire"))
	rd := ccp.NewReader(r.resp.Body, ccp.V1)
	f, err := rd.ReadFrame()
	if err != nil || f.Type != ccp.Auth || f.Sequence != 1 {
		t.Fatalf("AUTH: %v %v", f, err)
	}
	// The client ends its body: the server finishes and ends the response.
	if _, err := r.conn.Write([]byte("0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r.resp.Body); err != nil {
		t.Fatalf("the response did not end with its last chunk: %v", err)
	}
	if b, err := r.br.ReadByte(); err != io.EOF {
		t.Fatalf("after the stream: byte %q, err %v; want the connection closed", b, err)
	}
}

// A malformed chunk size ends the stream (never a hang): the response ends
// and the connection is closed.
func TestH1StreamBadChunk(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	r := openRawH1(t, s, legacyHello(t, s, "h1bad"))
	if _, err := r.conn.Write([]byte("zz\r\nnot a chunk\r\n")); err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(r.resp.Body) // AUTH and whatever the end brings
	r.wantClosed(t)
}

// wantClosed checks that the server closed the connection (not that the
// read deadline passed).
func (r *rawH1) wantClosed(t *testing.T) {
	t.Helper()
	_, err := r.br.ReadByte()
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("the connection is still open (%v)", err)
	}
}

// Stopping the server ends a taken-over stream that net/http no longer
// tracks, here one left half-way through its handshake, long before the
// handshake deadline would.
func TestH1StreamEndsAtShutdown(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *config.Config) { c.Server.HandshakeTimeout = time.Minute })
	r := openRawH1(t, s, legacyHello(t, s, "h1stop"))
	rd := ccp.NewReader(r.resp.Body, ccp.V1)
	if f, err := rd.ReadFrame(); err != nil || f.Type != ccp.Auth {
		t.Fatalf("AUTH: %v %v", f, err)
	}
	s.Stop(t)
	// Within the 20 s read deadline, well before the handshake deadline.
	_ = r.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, _ = io.ReadAll(r.resp.Body)
	r.wantClosed(t)
}

// A WebSocket client may send its first message in the same write as the
// upgrade request: the server must not lose it (the socket is handed to
// the WebSocket library with buffers of our own, lightHijacker).
func TestWebSocketFirstMessageWithUpgrade(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	cfg := s.TLS().Clone()
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(s.URL, "https://"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	head := "GET /connect HTTP/1.1\r\nHost: commucat.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: commucat.ccp1\r\n\r\n"
	if _, err := conn.Write(append([]byte(head), wsClientFrame(legacyHello(t, s, "wsfirst"))...)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	msg := wsReadFrame(t, br)
	f, err := ccp.NewReader(bytes.NewReader(msg), ccp.V1).ReadFrame()
	if err != nil || f.Type != ccp.Auth || f.Sequence != 1 {
		t.Fatalf("AUTH: %v %v", f, err)
	}
}

// wsClientFrame is one masked binary WebSocket frame (RFC 6455 §5.2).
func wsClientFrame(p []byte) []byte {
	b := []byte{0x82}
	switch {
	case len(p) < 126:
		b = append(b, 0x80|byte(len(p)))
	case len(p) < 1<<16:
		b = append(b, 0x80|126, byte(len(p)>>8), byte(len(p)))
	default:
		panic("frame too large for this helper")
	}
	mask := []byte{1, 2, 3, 4}
	b = append(b, mask...)
	for i, c := range p {
		b = append(b, c^mask[i%4])
	}
	return b
}

// wsReadFrame reads one unmasked binary server frame.
func wsReadFrame(t *testing.T, br *bufio.Reader) []byte {
	t.Helper()
	h := make([]byte, 2)
	if _, err := io.ReadFull(br, h); err != nil {
		t.Fatal(err)
	}
	if h[0] != 0x82 || h[1]&0x80 != 0 {
		t.Fatalf("frame header %x", h)
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		e := make([]byte, 2)
		if _, err := io.ReadFull(br, e); err != nil {
			t.Fatal(err)
		}
		n = int(e[0])<<8 | int(e[1])
	case 127:
		t.Fatal("unexpectedly large frame")
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatal(err)
	}
	return p
}

package server_test

// §14 "HTTP and transport", items 1-8.

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
)

// Item 1: `POST /connect` over HTTP/2 answers 200 with `content-type:
// application/octet-stream` and `cache-control: no-store` before the client
// has sent any body byte.
func TestItem1ConnectHeadersBeforeBody(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	// openRaw returns once the response headers are in; nothing has been
	// written into the request body pipe yet.
	r := openRawHTTP(t, s, true)
	if r.resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", r.resp.Proto)
	}
	if r.resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", r.resp.StatusCode)
	}
	if ct := r.resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Fatalf("content-type %q", ct)
	}
	if cc := r.resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("cache-control %q", cc)
	}
}

// exchangeV1 connects two v1 XK devices over tr, makes them share a channel
// and exchanges a MSG each way.
func exchangeV1(t *testing.T, tr client.Transport, wantProto string) {
	s := startServer(t, nil)
	ida, idb := newIdentity(t, "a"), newIdentity(t, "b")
	mods := []func(*client.Options){withTransport(tr), withVersions(1), withPattern(client.PatternXK)}
	b := dial(t, s, idb, uniqueHandle("bob"), mods...)
	a := dial(t, s, ida, uniqueHandle("alice"), mods...)
	for _, c := range []*client.Conn{a, b} {
		if c.Version() != 1 {
			t.Fatalf("version %d, want 1", c.Version())
		}
		if !strings.HasPrefix(c.Proto(), wantProto) {
			t.Fatalf("proto %q, want %q", c.Proto(), wantProto)
		}
	}
	ctx := ctxWait(t)
	if _, err := a.Join(ctx, 7, []string{idb.DeviceID}, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.SendMessage(ctx, 7, []byte("hello bob")); err != nil {
		t.Fatal(err)
	}
	f := recvNonPresence(t, b, wait)
	if f.Type != ccp.Msg || f.Channel != 7 || string(f.Payload) != "hello bob" {
		t.Fatalf("bob got %v %q", f, f.Payload)
	}
	if err := b.SendMessage(ctx, 7, []byte("hello alice")); err != nil {
		t.Fatal(err)
	}
	f = recvNonPresence(t, a, wait)
	if f.Type != ccp.Msg || f.Channel != 7 || string(f.Payload) != "hello alice" {
		t.Fatalf("alice got %v %q", f, f.Payload)
	}
}

// Item 2: A complete v1 XK handshake and a MSG exchange work over HTTP/1.1
// with a chunked request body (full duplex).
func TestItem2HTTP1FullDuplex(t *testing.T) {
	t.Parallel()
	t.Run("sdk", func(t *testing.T) {
		t.Parallel()
		exchangeV1(t, client.HTTP1, "HTTP/1.1")
	})
	t.Run("raw-original-client", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, nil)
		// net/http sends a body of unknown length chunked.
		r := openRawHTTP(t, s, false)
		if r.resp.ProtoMajor != 1 {
			t.Fatalf("protocol %s", r.resp.Proto)
		}
		id := newIdentity(t, "raw")
		r.connect(r.legacyConfig(id, uniqueHandle("raw")))
		seq := r.next(ccp.Join, 9, []byte(`{}`))
		r.expectAck(9, seq)
		seq = r.next(ccp.Msg, 9, []byte("to nobody"))
		r.expectAck(9, seq)
	})
}

// Item 3: The same handshake and exchange work over WebSocket `GET
// /connect` with binary messages; a text message closes the socket with
// code 1003.
func TestItem3WebSocket(t *testing.T) {
	t.Parallel()
	t.Run("exchange", func(t *testing.T) {
		t.Parallel()
		exchangeV1(t, client.WebSocket, "websocket")
	})
	t.Run("text-message-1003", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, nil)
		r, ws := openRawWS(t, s)
		r.connect(r.legacyConfig(newIdentity(t, "ws"), uniqueHandle("ws")))
		seq := r.next(ccp.Join, 3, []byte(`{}`))
		r.expectAck(3, seq)
		if err := ws.Write(context.Background(), websocket.MessageText, []byte("not binary")); err != nil {
			t.Fatal(err)
		}
		for {
			ev, ok := r.event(wait)
			if !ok {
				t.Fatal("the socket was not closed after a text message")
			}
			if ev.err == nil {
				continue
			}
			if code := websocket.CloseStatus(ev.err); code != websocket.StatusUnsupportedData {
				t.Fatalf("close status %v (%v), want 1003", code, ev.err)
			}
			return
		}
	})
}

// Item 4: A client limited to TLS 1.2 cannot complete a TLS handshake;
// ALPN offers `h2` and `http/1.1`.
func TestItem4TLS13AndALPN(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	addr := strings.TrimPrefix(s.URL, "https://")
	cfg := s.TLS().Clone()
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS12
	conn, err := tls.Dial("tcp", addr, cfg)
	if err == nil {
		conn.Close()
		t.Fatalf("a TLS 1.2 client completed the handshake (version %x)", conn.ConnectionState().Version)
	}
	for _, proto := range []string{"h2", "http/1.1"} {
		cfg := s.TLS().Clone()
		cfg.NextProtos = []string{proto}
		conn, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatalf("ALPN %s: %v", proto, err)
		}
		st := conn.ConnectionState()
		conn.Close()
		if st.NegotiatedProtocol != proto {
			t.Fatalf("offered only %q, negotiated %q", proto, st.NegotiatedProtocol)
		}
		if st.Version != tls.VersionTLS13 {
			t.Fatalf("TLS version %x", st.Version)
		}
	}
}

func get(t *testing.T, hc *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// Item 5: `GET /connect` without upgrade headers gets 400
// `application/problem+json`.
func TestItem5GetConnectWithoutUpgrade(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, h2 := range []bool{true, false} {
		resp, body := get(t, httpClientFor(t, s, h2), s.URL+"/connect")
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("h2=%v: status %d", h2, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("h2=%v: content-type %q", h2, ct)
		}
		m := jsonObject(t, []byte(body))
		if m["title"] != "BadRequest" || m["detail"] != "websocket upgrade required" {
			t.Fatalf("h2=%v: body %s", h2, body)
		}
	}
}

// Item 6: An unknown path gets 404 with body
// `{"status":404,"title":"Not Found","type":"about:blank"}`.
func TestItem6UnknownPath(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, h2 := range []bool{true, false} {
		resp, body := get(t, httpClientFor(t, s, h2), s.URL+"/no/such/path?x=1")
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if body != `{"status":404,"title":"Not Found","type":"about:blank"}` {
			t.Fatalf("body %q", body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("content-type %q", ct)
		}
	}
}

// Item 7: `GET /healthz` returns 200 `ok`; `GET /readyz` returns 200
// `ready`, and 503 `degraded` while the storage is unreachable.
//
// The 503 half is not tested: the SQLite store keeps its database file open,
// so there is no clean way to make `SELECT 1` fail from outside the server
// process without fault injection the server does not offer.
func TestItem7Probes(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	hc := httpClientFor(t, s, true)
	resp, body := get(t, hc, s.URL+"/healthz")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("/healthz: %d %q", resp.StatusCode, body)
	}
	resp, body = get(t, hc, s.URL+"/readyz")
	if resp.StatusCode != 200 || body != "ready" {
		t.Fatalf("/readyz: %d %q", resp.StatusCode, body)
	}
}

// Item 8: `GET /` returns `text/html; charset=utf-8` containing
// `<title>CommuCat</title>`.
func TestItem8LandingPage(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, path := range []string{"/", "/index.html"} {
		resp, body := get(t, httpClientFor(t, s, true), s.URL+path)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", path, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Fatalf("%s: content-type %q", path, ct)
		}
		if !strings.Contains(body, "<title>CommuCat</title>") {
			t.Fatalf("%s: body %q", path, body)
		}
	}
}

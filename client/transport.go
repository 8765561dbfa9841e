package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Transport selects how the /connect stream is carried (§3.3-§3.5).
type Transport int

const (
	// HTTP2 is POST /connect over HTTP/2 (the default and the primary
	// transport): the request body carries the client→server bytes, the
	// response body the server→client bytes.
	HTTP2 Transport = iota
	// HTTP1 is POST /connect over HTTP/1.1 with a chunked request body,
	// full duplex (§3.4), on a TLS connection of its own (HTTP proxies
	// from the environment are not used for it).
	HTTP1
	// WebSocket is GET /connect upgraded to WebSocket with the subprotocol
	// commucat.ccp1 and binary messages (§3.5).
	WebSocket
)

// String returns "http2", "http1" or "websocket".
func (t Transport) String() string {
	switch t {
	case HTTP2:
		return "http2"
	case HTTP1:
		return "http1"
	case WebSocket:
		return "websocket"
	}
	return fmt.Sprintf("Transport(%d)", int(t))
}

// ParseTransport parses a transport name: "http2" (or "h2"), "http1" (or
// "h1", "http/1.1"), "websocket" (or "ws").
func ParseTransport(s string) (Transport, error) {
	switch strings.ToLower(s) {
	case "http2", "h2", "http/2", "":
		return HTTP2, nil
	case "http1", "h1", "http/1.1", "http1.1":
		return HTTP1, nil
	case "websocket", "ws", "wss":
		return WebSocket, nil
	}
	return 0, fmt.Errorf("client: unknown transport %q", s)
}

// Subprotocol is the WebSocket subprotocol of §3.5.
const Subprotocol = "commucat.ccp1"

// maxWSMessage is the largest WebSocket message of §3.5.
const maxWSMessage = 16777220

const (
	dialTimeout     = 15 * time.Second
	h2ReadIdle      = 30 * time.Second // send an HTTP/2 PING after this much silence
	h2PingTimeout   = 15 * time.Second // and drop the connection if unanswered
	maxErrorBody    = 4096
	defaultProtoTLS = tls.VersionTLS13
)

// newHTTPClient returns an http.Client for transport t: HTTP/2 only for
// HTTP2, HTTP/1.1 only (ALPN http/1.1) for HTTP1 and WebSocket. Redirects
// are not followed and there is no overall timeout (streams are long-lived).
func newHTTPClient(t Transport, tlsConfig *tls.Config) *http.Client {
	var cfg *tls.Config
	if tlsConfig != nil {
		cfg = tlsConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = defaultProtoTLS // §3.1: the server requires TLS 1.3
	}
	var p http.Protocols
	if t == HTTP2 {
		p.SetHTTP2(true)
		cfg.NextProtos = nil // set by the transport: ["h2"]
	} else {
		p.SetHTTP1(true)
		cfg.NextProtos = []string{"http/1.1"}
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       cfg,
		TLSHandshakeTimeout:   dialTimeout,
		ForceAttemptHTTP2:     t == HTTP2,
		Protocols:             &p,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: h2ReadIdle,
			PingTimeout:     h2PingTimeout,
		},
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// stream is one /connect byte stream, either direction.
type stream interface {
	// Read reads server→client bytes; io.EOF when the server ended the
	// stream normally.
	Read(p []byte) (int, error)
	// Write writes client→server bytes. On a message-oriented stream
	// every call is one WebSocket message.
	Write(p []byte) (int, error)
	// messages reports whether Write calls map to messages.
	messages() bool
	// CloseWrite ends the client→server direction (end of the request
	// body, or the WebSocket close handshake).
	CloseWrite() error
	// Close releases the stream; abrupt drops the TCP connection itself.
	// It is safe to call more than once and concurrently with the rest.
	Close(abrupt bool)
	// proto describes the negotiated protocol, for logs.
	proto() string
}

// openStream opens the /connect stream and writes first (the HELLO frame)
// as its first bytes. ctx bounds only the opening; the stream lives until
// Close.
func openStream(ctx context.Context, t Transport, hc *http.Client, tlsConfig *tls.Config, baseURL string, first []byte) (stream, error) {
	u := strings.TrimSuffix(baseURL, "/") + "/connect"
	switch t {
	case WebSocket:
		return openWS(ctx, hc, u, first)
	case HTTP1:
		return openH1(ctx, tlsConfig, u, first)
	}
	return openHTTP(ctx, hc, u, first)
}

// httpStream is POST /connect over HTTP/2: request body from a pipe,
// response body streamed.
type httpStream struct {
	pw     *io.PipeWriter
	pr     *io.PipeReader
	resp   *http.Response
	cancel context.CancelFunc

	mu sync.Mutex
	nc net.Conn // the TCP (TLS) connection carrying the stream
}

// pipeBody is the request body: the first bytes, then the pipe. Closing it
// (which the HTTP transport does when the request ends) closes the pipe, so
// that writers never block on a dead stream.
type pipeBody struct {
	io.Reader
	pr *io.PipeReader
}

func (b *pipeBody) Close() error { return b.pr.Close() }

func openHTTP(ctx context.Context, hc *http.Client, u string, first []byte) (*httpStream, error) {
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	pr, pw := io.Pipe()
	s := &httpStream{pw: pw, pr: pr, cancel: cancel}
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		s.mu.Lock()
		s.nc = info.Conn
		s.mu.Unlock()
	}}
	body := &pipeBody{Reader: io.MultiReader(bytes.NewReader(first), pr), pr: pr}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(sctx, trace), http.MethodPost, u, body)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("client: connect: %w", err)
	}
	req.ContentLength = -1 // unknown: chunked on HTTP/1.1, no probe read
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		pr.CloseWithError(err)
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("client: connect: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		cancel()
		pr.CloseWithError(ErrClosed)
		return nil, &HTTPError{Op: "connect", StatusCode: resp.StatusCode, Body: b, RetryAfter: retryAfterHeader(resp.Header)}
	}
	s.resp = resp
	return s, nil
}

func (s *httpStream) Read(p []byte) (int, error)  { return s.resp.Body.Read(p) }
func (s *httpStream) Write(p []byte) (int, error) { return s.pw.Write(p) }
func (s *httpStream) messages() bool              { return false }
func (s *httpStream) CloseWrite() error           { return s.pw.Close() }
func (s *httpStream) proto() string               { return s.resp.Proto }

func (s *httpStream) Close(abrupt bool) {
	if abrupt {
		s.mu.Lock()
		nc := s.nc
		s.mu.Unlock()
		if nc != nil {
			nc.Close()
		}
	}
	s.cancel()
	s.pw.CloseWithError(ErrClosed)
	s.pr.CloseWithError(ErrClosed)
	s.resp.Body.Close()
}

// wsStream is GET /connect upgraded to WebSocket. Reads concatenate the
// binary messages; every Write is one binary message.
type wsStream struct {
	c      *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc
	cur    io.Reader // the message being read
	sub    string
	ending atomic.Bool // CloseWrite started the close handshake
}

func openWS(ctx context.Context, hc *http.Client, u string, first []byte) (*wsStream, error) {
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	c, resp, err := websocket.Dial(sctx, u, &websocket.DialOptions{
		HTTPClient:      hc,
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		cancel()
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var b []byte
			if resp.Body != nil {
				b, _ = io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
				resp.Body.Close()
			}
			return nil, &HTTPError{Op: "connect", StatusCode: resp.StatusCode, Body: b, RetryAfter: retryAfterHeader(resp.Header)}
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("client: connect: %w", err)
	}
	c.SetReadLimit(maxWSMessage)
	s := &wsStream{c: c, ctx: sctx, cancel: cancel, sub: c.Subprotocol()}
	if len(first) > 0 {
		if _, err := s.Write(first); err != nil {
			s.Close(true)
			return nil, fmt.Errorf("client: connect: %w", err)
		}
	}
	return s, nil
}

func (s *wsStream) Read(p []byte) (int, error) {
	for {
		if s.cur != nil {
			n, err := s.cur.Read(p)
			if err == io.EOF {
				s.cur = nil
				if n > 0 {
					return n, nil
				}
				continue
			}
			if err != nil && s.ending.Load() && errors.Is(err, net.ErrClosed) {
				err = io.EOF // our close handshake ended the connection
			}
			return n, err
		}
		typ, r, err := s.c.Reader(s.ctx)
		if err != nil {
			switch websocket.CloseStatus(err) {
			case websocket.StatusNormalClosure, websocket.StatusGoingAway:
				return 0, io.EOF
			}
			if s.ending.Load() && errors.Is(err, net.ErrClosed) {
				return 0, io.EOF // our close handshake consumed the server's Close
			}
			return 0, err
		}
		if typ != websocket.MessageBinary {
			s.c.Close(websocket.StatusUnsupportedData, "text message")
			return 0, errors.New("client: websocket: text message from the server")
		}
		s.cur = r
	}
}

func (s *wsStream) Write(p []byte) (int, error) {
	if err := s.c.Write(s.ctx, websocket.MessageBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *wsStream) messages() bool { return true }

func (s *wsStream) CloseWrite() error {
	s.ending.Store(true)
	return s.c.Close(websocket.StatusNormalClosure, "")
}

func (s *wsStream) Close(abrupt bool) {
	s.c.CloseNow()
	s.cancel()
}

func (s *wsStream) proto() string { return "websocket/" + s.sub }

// h1Stream is POST /connect over HTTP/1.1 on a TLS connection of its own
// (§3.4): a chunked request body written while the chunked response is
// read. It does not use net/http's client, whose HTTP/1 writer can wait
// forever on a streaming request body when the server answers early and
// closes the connection (e.g. a 429 from the connect rate limit).
type h1Stream struct {
	conn  net.Conn
	body  io.Reader // the decoded response body
	resp  string
	wmu   sync.Mutex
	wbuf  []byte
	ended bool // the final chunk was written
}

func openH1(ctx context.Context, tlsConfig *tls.Config, u string, first []byte) (*h1Stream, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("client: connect: %w", err)
	}
	addr := pu.Host
	if pu.Port() == "" {
		addr = net.JoinHostPort(pu.Hostname(), "443")
	}
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		Config:    h1TLSConfig(tlsConfig),
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("client: connect: %w", err)
	}
	if p := nc.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
		nc.Close()
		return nil, fmt.Errorf("client: connect: server negotiated ALPN %q instead of http/1.1", p)
	}
	// Until the response headers are in, ctx aborts the connection.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	s := &h1Stream{conn: nc}
	head := "POST " + pu.RequestURI() + " HTTP/1.1\r\n" +
		"Host: " + pu.Host + "\r\n" +
		"User-Agent: commucat-go-client\r\n" +
		"Content-Type: application/octet-stream\r\n" +
		"Transfer-Encoding: chunked\r\n\r\n"
	if _, err := s.write(append([]byte(head), appendChunk(nil, first)...)); err != nil {
		nc.Close()
		return nil, fmt.Errorf("client: connect: %w", ctxErr(ctx, err))
	}
	br := bufio.NewReaderSize(nc, 32<<10)
	req := &http.Request{Method: http.MethodPost, URL: pu}
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(br, req)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("client: connect: %w", ctxErr(ctx, err))
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		nc.Close()
		return nil, &HTTPError{Op: "connect", StatusCode: resp.StatusCode, Body: b, RetryAfter: retryAfterHeader(resp.Header)}
	}
	if !stop() {
		nc.Close()
		return nil, fmt.Errorf("client: connect: %w", context.Cause(ctx))
	}
	s.body, s.resp = resp.Body, resp.Proto
	return s, nil
}

func h1TLSConfig(c *tls.Config) *tls.Config {
	if c != nil {
		c = c.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.MinVersion == 0 {
		c.MinVersion = defaultProtoTLS
	}
	c.NextProtos = []string{"http/1.1"}
	return c
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// appendChunk appends p as one chunk of the chunked transfer coding.
func appendChunk(dst, p []byte) []byte {
	dst = strconv.AppendUint(dst, uint64(len(p)), 16)
	dst = append(dst, "\r\n"...)
	dst = append(dst, p...)
	return append(dst, "\r\n"...)
}

func (s *h1Stream) write(b []byte) (int, error) {
	return s.conn.Write(b)
}

func (s *h1Stream) Read(p []byte) (int, error) { return s.body.Read(p) }

func (s *h1Stream) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil // an empty chunk would end the body
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.ended {
		return 0, ErrClosed
	}
	s.wbuf = appendChunk(s.wbuf[:0], p)
	_, err := s.conn.Write(s.wbuf)
	if cap(s.wbuf) > keepBufCap {
		s.wbuf = nil
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *h1Stream) messages() bool { return false }

func (s *h1Stream) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.ended {
		return nil
	}
	s.ended = true
	_, err := s.conn.Write([]byte("0\r\n\r\n"))
	return err
}

// Close closes the TCP connection (§3.4: it is not reused after the
// stream).
func (s *h1Stream) Close(abrupt bool) { s.conn.Close() }

func (s *h1Stream) proto() string { return s.resp }

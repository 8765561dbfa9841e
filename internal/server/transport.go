package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/commucat/commucat/internal/session"
)

// httpTransport is a POST /connect stream (HTTP/2 or HTTP/1.1 full duplex).
type httpTransport struct {
	body io.Reader
	w    http.ResponseWriter
	rc   *http.ResponseController
	kind string

	mu   sync.Mutex
	done bool // the handler returned: rc must not be used any more
}

func (t *httpTransport) Read(p []byte) (int, error) { return t.body.Read(p) }

func (t *httpTransport) WriteChunks(chunks [][]byte) error {
	for _, c := range chunks {
		if _, err := t.w.Write(c); err != nil {
			return err
		}
	}
	return t.rc.Flush()
}

func (t *httpTransport) MessageOriented() bool { return false }
func (t *httpTransport) Kind() string          { return t.kind }

func (t *httpTransport) SetReadDeadline(d time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return errors.New("stream ended")
	}
	return t.rc.SetReadDeadline(d)
}

func (t *httpTransport) Abort(session.EndReason) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return
	}
	past := time.Unix(1, 0)
	_ = t.rc.SetReadDeadline(past)
	_ = t.rc.SetWriteDeadline(past)
}

// Finish unblocks the reader only: the handler then returns and net/http
// ends the response cleanly. A write deadline in the past (Abort) would
// make HTTP/2 reset the stream with INTERNAL_ERROR and break the TLS
// stream of HTTP/1.1; Abort stays for writes that are stuck.
func (t *httpTransport) Finish(session.EndReason) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return
	}
	_ = t.rc.SetReadDeadline(time.Unix(1, 0))
}

func (t *httpTransport) finish() {
	t.mu.Lock()
	t.done = true
	t.mu.Unlock()
}

// Close codes of §3.5.
func closeCode(r session.EndReason) websocket.StatusCode {
	switch r {
	case session.EndShutdown:
		return websocket.StatusGoingAway
	case session.EndDecode:
		return websocket.StatusProtocolError
	case session.EndHandshake, session.EndReplaced, session.EndRevoked, session.EndKeepalive:
		return websocket.StatusPolicyViolation
	case session.EndInternal:
		return websocket.StatusInternalError
	}
	return websocket.StatusNormalClosure
}

// maxWSMessage is the largest client message (§3.5).
const maxWSMessage = 16777220

// wsTransport is a WebSocket /connect stream: binary messages carry the
// byte stream; the server sends each frame or record as one message.
type wsTransport struct {
	c      *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc

	rmu     sync.Mutex
	reader  io.Reader
	lastIn  time.Time
	actMu   sync.Mutex
	closeMu sync.Mutex
	closed  bool
	// textClose is set when a text message ended the stream (1003).
	textClose bool
}

func newWSTransport(c *websocket.Conn) *wsTransport {
	ctx, cancel := context.WithCancel(context.Background())
	c.SetReadLimit(maxWSMessage)
	return &wsTransport{c: c, ctx: ctx, cancel: cancel, lastIn: time.Now()}
}

func (t *wsTransport) touch() {
	t.actMu.Lock()
	t.lastIn = time.Now()
	t.actMu.Unlock()
}

func (t *wsTransport) idleFor() time.Duration {
	t.actMu.Lock()
	defer t.actMu.Unlock()
	return time.Since(t.lastIn)
}

func (t *wsTransport) Read(p []byte) (int, error) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	for {
		if t.reader == nil {
			typ, r, err := t.c.Reader(t.ctx)
			if err != nil {
				switch websocket.CloseStatus(err) {
				case websocket.StatusNormalClosure, websocket.StatusGoingAway:
					return 0, io.EOF
				}
				return 0, err
			}
			t.touch()
			if typ != websocket.MessageBinary {
				t.textClose = true
				t.closeWith(websocket.StatusUnsupportedData, "text messages are not accepted")
				return 0, errors.New("websocket: text message")
			}
			t.reader = r
		}
		n, err := t.reader.Read(p)
		if err == io.EOF {
			t.reader = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		if n > 0 {
			t.touch()
		}
		return n, err
	}
}

func (t *wsTransport) WriteChunks(chunks [][]byte) error {
	for _, c := range chunks {
		if err := t.c.Write(t.ctx, websocket.MessageBinary, c); err != nil {
			return err
		}
	}
	return nil
}

func (t *wsTransport) MessageOriented() bool { return true }
func (t *wsTransport) Kind() string          { return "websocket" }

// SetReadDeadline is not used for WebSocket (liveness uses Ping, §3.6).
func (t *wsTransport) SetReadDeadline(time.Time) error { return nil }

func (t *wsTransport) Abort(r session.EndReason) { t.closeWith(closeCode(r), "") }

func (t *wsTransport) Finish(r session.EndReason) { t.closeWith(closeCode(r), "") }

func (t *wsTransport) closeWith(code websocket.StatusCode, reason string) {
	t.closeMu.Lock()
	if t.closed {
		t.closeMu.Unlock()
		return
	}
	t.closed = true
	t.closeMu.Unlock()
	// Close sends the close frame and waits (bounded) for the peer's.
	go func() {
		_ = t.c.Close(code, reason)
		t.cancel()
	}()
}

// startPings sends a Ping every k and reports liveness lost when neither a
// Pong nor any message arrived for 3k (§3.6). It runs on a timer, with a
// goroutine only while a Ping is outstanding, so an idle WebSocket has no
// goroutine of its own for it; stop ends it (idempotent).
func (t *wsTransport) startPings(k time.Duration, liveness *session.Liveness) (stop func()) {
	r := session.Repeat(k, func() bool {
		if t.ctx.Err() != nil {
			return false
		}
		go func() {
			ctx, cancel := context.WithTimeout(t.ctx, 3*k)
			defer cancel()
			if err := t.c.Ping(ctx); err == nil {
				t.touch()
			}
		}()
		if t.idleFor() > 3*k {
			liveness.Lost()
			return false
		}
		return true
	})
	return r.Stop
}

package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/internal/session"
)

// h1Stream is a POST /connect stream over HTTP/1.1 (§3.4) that the server
// takes over from net/http once the response headers are out: the chunked
// request body is decoded (net/http/httputil's decoder) and the chunked
// response written directly on the TLS connection, on a goroutine of our
// own, and net/http's goroutine returns.
//
// Why: net/http keeps, for the whole life of a full-duplex stream, its
// 4 KiB read and 4 KiB write buffers, the 2 KiB chunking buffer, the
// request with its headers and its connection state, about 16 KiB of the
// 30 KiB heap of an idle HTTP/1.1 connection (issue 7, BENCHMARKS.md). On
// its own it keeps a 512-byte buffer for the chunk-size lines and nothing
// else between writes.
//
// The wire is what net/http wrote before: the same status line and
// headers (written by net/http itself before the take-over), one chunk per
// WriteChunks, the last chunk and the end of the connection when the
// stream ends (§3.4: after the stream the TCP connection is closed).
type h1Stream struct {
	conn net.Conn
	body io.Reader // chunked decoder

	wmu   sync.Mutex // serialises writes
	ended bool       // the last chunk is written (under wmu)

	// dmu orders the read deadline: once Finish or Abort set it in the
	// past, a later SetReadDeadline (the session's idle reader) must not
	// move it.
	dmu      sync.Mutex
	finished bool // under dmu
	aborted  atomic.Bool
}

// h1LineBuf bounds a chunk-size line of the request body (hex length,
// optional extensions, CRLF); a longer line ends the stream.
const h1LineBuf = 512

// h1EndTimeout bounds the write of the last chunk.
const h1EndTimeout = 5 * time.Second

// chunkedRequest reports whether r's body uses chunked transfer coding
// alone, the form §3.4 prescribes and the only one h1Stream decodes.
func chunkedRequest(r *http.Request) bool {
	return len(r.TransferEncoding) == 1 && r.TransferEncoding[0] == "chunked"
}

// hijackH1 takes the connection over after the response headers were
// written and flushed. The bytes net/http had already read past the
// request headers (the start of the body) are kept; its buffers are not.
func hijackH1(rc *http.ResponseController) (*h1Stream, error) {
	conn, brw, err := rc.Hijack()
	if err != nil {
		return nil, err
	}
	br, err := takeOver(conn, brw, h1LineBuf)
	if err != nil {
		return nil, err
	}
	return &h1Stream{conn: conn, body: httputil.NewChunkedReader(br)}, nil
}

// takeOver finishes a Hijack without net/http's 4 KiB buffers: it flushes
// what net/http may still buffer for writing, and returns a reader of at
// least size bytes over conn whose buffer already holds the bytes net/http
// had read past the request head (a client may send them with it). On an
// error conn is closed.
func takeOver(conn net.Conn, brw *bufio.ReadWriter, size int) (*bufio.Reader, error) {
	if err := brw.Writer.Flush(); err != nil {
		conn.Close()
		return nil, err
	}
	n := brw.Reader.Buffered()
	if n == 0 {
		return bufio.NewReaderSize(conn, size), nil
	}
	early, _ := brw.Reader.Peek(n)
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), max(size, n))
	if _, err := br.Peek(n); err != nil { // served from early: never blocks
		conn.Close()
		return nil, err
	}
	return br, nil
}

func (t *h1Stream) Read(p []byte) (int, error) { return t.body.Read(p) }

// WriteChunks writes all chunks as one HTTP chunk, in one TLS write.
func (t *h1Stream) WriteChunks(chunks [][]byte) error {
	n := 0
	for _, c := range chunks {
		n += len(c)
	}
	if n == 0 {
		return nil
	}
	buf := make([]byte, 0, n+20)
	buf = strconv.AppendUint(buf, uint64(n), 16)
	buf = append(buf, '\r', '\n')
	for _, c := range chunks {
		buf = append(buf, c...)
	}
	buf = append(buf, '\r', '\n')
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.ended {
		return errors.New("stream ended")
	}
	_, err := t.conn.Write(buf)
	return err
}

func (t *h1Stream) MessageOriented() bool { return false }
func (t *h1Stream) Kind() string          { return "http1" }

func (t *h1Stream) SetReadDeadline(d time.Time) error {
	t.dmu.Lock()
	defer t.dmu.Unlock()
	if t.finished {
		return errors.New("stream ended")
	}
	return t.conn.SetReadDeadline(d)
}

// Abort unblocks the pending Read and Write at once; the stream then ends
// without the last chunk (the client sees the connection break, as with
// net/http after a write deadline in the past).
func (t *h1Stream) Abort(session.EndReason) {
	t.aborted.Store(true)
	t.stopReads()
	_ = t.conn.SetWriteDeadline(time.Unix(1, 0))
}

// Finish unblocks the pending Read only: Serve returns, and end writes
// the last chunk.
func (t *h1Stream) Finish(session.EndReason) { t.stopReads() }

// stopReads unblocks the pending Read and keeps later ones from blocking.
func (t *h1Stream) stopReads() {
	t.dmu.Lock()
	t.finished = true
	_ = t.conn.SetReadDeadline(time.Unix(1, 0))
	t.dmu.Unlock()
}

// end finishes the response with the last chunk (unless the stream was
// aborted) and closes the connection.
func (t *h1Stream) end() {
	t.wmu.Lock()
	if !t.ended && !t.aborted.Load() {
		_ = t.conn.SetWriteDeadline(time.Now().Add(h1EndTimeout))
		_, _ = io.WriteString(t.conn, "0\r\n\r\n")
	}
	t.ended = true
	t.wmu.Unlock()
	_ = t.conn.Close()
}

// lightHijacker hands the WebSocket library the connection with buffers
// of wsReadBuf and wsWriteBuf bytes instead of net/http's 4 KiB each, which
// the library would keep for the life of the socket (idle memory). A
// message larger than the write buffer goes out as two TLS records instead
// of one.
type lightHijacker struct{ http.ResponseWriter }

// Buffer sizes of a WebSocket (lightHijacker): a read buffer for frame
// headers (payloads larger than it are read directly), a write buffer that
// holds a typical chat message and its header.
const (
	wsReadBuf  = 512
	wsWriteBuf = 2048
)

func (h lightHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Bytes the client sent right after the upgrade request must be in the
	// returned reader's buffer: the library takes what is buffered there
	// and reads the rest from conn itself (takeOver puts them there).
	br, err := takeOver(conn, brw, wsReadBuf)
	if err != nil {
		return nil, nil, err
	}
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(conn, wsWriteBuf)), nil
}

// hijackedStreams tracks the /connect streams net/http no longer knows
// about (HTTP/1.1 streams taken over, WebSockets), so that the server can
// end them and wait for them when it stops: http.Server.Shutdown does not.
type hijackedStreams struct {
	mu   sync.Mutex
	live map[session.Transport]struct{}
	wg   sync.WaitGroup
}

// add registers a stream; the caller calls done when it has ended.
func (h *hijackedStreams) add(t session.Transport) {
	h.mu.Lock()
	if h.live == nil {
		h.live = make(map[session.Transport]struct{})
	}
	h.live[t] = struct{}{}
	h.mu.Unlock()
	h.wg.Add(1)
}

func (h *hijackedStreams) done(t session.Transport) {
	h.mu.Lock()
	delete(h.live, t)
	h.mu.Unlock()
	h.wg.Done()
}

// abortAll aborts every stream still open and waits up to wait for their
// goroutines to end; it reports whether they all did.
func (h *hijackedStreams) abortAll(wait time.Duration) bool {
	h.mu.Lock()
	for t := range h.live {
		t.Abort(session.EndShutdown)
	}
	h.mu.Unlock()
	ended := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(ended)
	}()
	select {
	case <-ended:
		return true
	case <-time.After(wait):
		return false
	}
}

// serveH1 runs a taken-over HTTP/1.1 stream on its own goroutine, so that
// net/http's goroutine, and with it the request and its buffers, can go.
// release gives back the stream's slot (streamCaps).
func (s *Server) serveH1(ctx context.Context, t *h1Stream, ip netip.Addr, release func()) {
	s.hijacked.add(t)
	go func() {
		defer s.hijacked.done(t)
		defer release()
		s.serveStream(ctx, t, ip, "http1", nil)
		t.end()
	}()
}

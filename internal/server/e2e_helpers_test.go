package server_test

// Shared helpers of the end-to-end conformance suite (spec §14): real
// servers from internal/servertest, SDK connections (package client), and
// hand-driven /connect streams (rawConn) for inputs the SDK cannot produce.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/servertest"
	"github.com/commucat/commucat/internal/store/sqlite"
)

// wait is the deadline for a frame the server is expected to send promptly.
const wait = 10 * time.Second

// ---------------------------------------------------------------------------
// Servers and plain HTTP.

// startServer starts a real server (TLS, SQLite in a temp dir, auto-approval
// without a device limit) changed by mutate.
func startServer(t *testing.T, mutate func(*config.Config)) *servertest.Server {
	t.Helper()
	return servertest.Start(t, mutate)
}

// httpClientFor returns an HTTP client trusting s that speaks only HTTP/2
// (h2 true) or only HTTP/1.1. Its idle connections are closed when the test
// ends (before the server stops, which would otherwise wait for them).
func httpClientFor(t testing.TB, s *servertest.Server, h2 bool) *http.Client {
	cfg := s.TLS().Clone()
	var p http.Protocols
	if h2 {
		p.SetHTTP2(true)
	} else {
		p.SetHTTP1(true)
		cfg.NextProtos = []string{"http/1.1"}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2, Protocols: &p}}
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

func fetchServerInfo(t testing.TB, s *servertest.Server) *client.ServerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	hc := httpClientFor(t, s, true)
	defer hc.CloseIdleConnections()
	info, err := client.FetchServerInfo(ctx, hc, s.URL)
	if err != nil {
		t.Fatalf("server-info: %v", err)
	}
	return info
}

// openStore opens the server's SQLite database beside the server (WAL allows
// it) to inspect what a handshake wrote.
func openStore(t testing.TB, s *servertest.Server) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), s.Config.Storage.SQLitePath)
	if err != nil {
		t.Fatalf("opening the server database: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// ---------------------------------------------------------------------------
// Identities and SDK connections.

var idSeq atomic.Int64

// newIdentity returns a fresh device identity with a unique device id.
func newIdentity(t testing.TB, prefix string) *client.Identity {
	t.Helper()
	id, err := client.NewIdentity(fmt.Sprintf("%s-%d", prefix, idSeq.Add(1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var channelSeq atomic.Uint32

// freshChannel returns a channel id no other test uses.
func freshChannel() uint32 { return 100000 + channelSeq.Add(1) }

// uniqueHandle returns a handle nobody else uses.
func uniqueHandle(prefix string) string { return fmt.Sprintf("%s-%d", prefix, idSeq.Add(1)) }

// dialErr dials with the SDK; mods change the options.
func dialErr(t testing.TB, s *servertest.Server, id *client.Identity, handle string, mods ...func(*client.Options)) (*client.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := client.Options{URL: s.URL, TLSConfig: s.TLS(), Identity: id, Handle: handle, HandshakeTimeout: 30 * time.Second}
	for _, m := range mods {
		m(&o)
	}
	c, err := client.Dial(ctx, o)
	if err != nil {
		return nil, err
	}
	t.Cleanup(c.CloseAbruptly)
	return c, nil
}

// dial dials with the SDK and fails the test on error.
func dial(t testing.TB, s *servertest.Server, id *client.Identity, handle string, mods ...func(*client.Options)) *client.Conn {
	t.Helper()
	c, err := dialErr(t, s, id, handle, mods...)
	if err != nil {
		t.Fatalf("dial %s: %v", id.DeviceID, err)
	}
	return c
}

func withVersions(v ...int) func(*client.Options) {
	return func(o *client.Options) { o.Versions = v }
}

func withTransport(tr client.Transport) func(*client.Options) {
	return func(o *client.Options) { o.Transport = tr }
}

func withPattern(p string) func(*client.Options) {
	return func(o *client.Options) { o.Pattern = p }
}

// register connects a device once (creating it) and disconnects.
func register(t testing.TB, s *servertest.Server, id *client.Identity, handle string) {
	t.Helper()
	c := dial(t, s, id, handle)
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func ctxWait(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// recv returns the next frame from c within d.
func recv(t testing.TB, c *client.Conn, d time.Duration) ccp.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	f, err := c.Recv(ctx)
	if err != nil {
		t.Fatalf("waiting for a frame: %v (conn err %v)", err, c.Err())
	}
	return f
}

// recvNonPresence returns the next frame that is not a PRESENCE push.
func recvNonPresence(t testing.TB, c *client.Conn, d time.Duration) ccp.Frame {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		f := recv(t, c, time.Until(deadline))
		if f.Type != ccp.Presence {
			return f
		}
	}
}

// recvUntil skips frames until pred holds.
func recvUntil(t testing.TB, c *client.Conn, d time.Duration, what string, pred func(ccp.Frame) bool) ccp.Frame {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		f, err := c.Recv(ctx)
		cancel()
		if err != nil {
			t.Fatalf("waiting for %s: %v (conn err %v)", what, err, c.Err())
		}
		if pred(f) {
			return f
		}
	}
}

// expectEnded checks that the server ended c's stream (after the frames
// still queued, which are returned).
func expectEnded(t testing.TB, c *client.Conn, d time.Duration) []ccp.Frame {
	t.Helper()
	var rest []ccp.Frame
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		f, err := c.Recv(ctx)
		cancel()
		if err == nil {
			rest = append(rest, f)
			continue
		}
		if !errors.Is(err, client.ErrClosed) {
			t.Fatalf("the stream did not end: %v", err)
		}
		return rest
	}
}

// problem parses an ERROR frame.
func problem(t testing.TB, f ccp.Frame) ccp.Problem {
	t.Helper()
	if f.Type != ccp.Error {
		t.Fatalf("got %v %s, want an ERROR", f, f.Payload)
	}
	p, err := ccp.ParseProblem(f.Payload)
	if err != nil {
		t.Fatalf("ERROR payload %s: %v", f.Payload, err)
	}
	return p
}

// wantProblem checks an ERROR frame's title (and status/class when not 0/"").
func wantProblem(t testing.TB, f ccp.Frame, title string, status int, class string) ccp.Problem {
	t.Helper()
	p := problem(t, f)
	if p.Title != title || (status != 0 && p.Status != status) || (class != "" && p.Error != class) {
		t.Fatalf("ERROR %s, want title %q status %d error %q", f.Payload, title, status, class)
	}
	return p
}

// requestProblem checks that err is an ERROR frame answer with title.
func requestProblem(t testing.TB, err error, title string) *client.ErrorFrame {
	t.Helper()
	var ef *client.ErrorFrame
	if !errors.As(err, &ef) || ef.Problem.Title != title {
		t.Fatalf("got %v, want ERROR %q", err, title)
	}
	return ef
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jsonObject decodes a JSON object keeping numbers exact.
func jsonObject(t testing.TB, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("JSON %q: %v", b, err)
	}
	return m
}

func encodeFrame(t testing.TB, typ ccp.FrameType, ch, seq uint32, payload []byte) []byte {
	t.Helper()
	b, err := ccp.AppendFrame(nil, ccp.Frame{Type: typ, Channel: ch, Sequence: seq, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// presenceOf returns entity and state of a PRESENCE frame.
func presenceOf(t testing.TB, f ccp.Frame) (entity, state string) {
	t.Helper()
	var p struct {
		Entity string `json:"entity"`
		State  string `json:"state"`
	}
	if err := json.Unmarshal(f.Payload, &p); err != nil {
		t.Fatalf("PRESENCE %s: %v", f.Payload, err)
	}
	return p.Entity, p.State
}

// ---------------------------------------------------------------------------
// Hand-driven /connect streams.

// rawEvent is one result of the background frame reader of a rawConn.
type rawEvent struct {
	f   ccp.Frame
	err error
}

// rawConn is a /connect stream driven byte by byte: it writes what the test
// says, decodes every server frame (v1 plaintext, then v2 records with keys
// the test supplies) and records the size of every server record.
type rawConn struct {
	t      testing.TB
	write  func([]byte) error
	closeW func() error // end the client→server direction
	abort  func()
	events chan rawEvent
	info   *client.ServerInfo

	mu       sync.Mutex
	v2       bool // set before the client's AUTH is written
	recvKey  [32]byte
	sendKey  [32]byte
	sendCtr  uint64
	sealing  bool  // client→server bytes go into records
	recSizes []int // wire sizes of the server records
	recRaw   [][]byte

	seq  uint32 // last client sequence used
	resp *http.Response
}

// openRaw opens POST /connect over HTTP/2 (h2 true) or HTTP/1.1 with a
// streaming request body.
func openRawHTTP(t testing.TB, s *servertest.Server, h2 bool) *rawConn {
	t.Helper()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	var ncMu sync.Mutex
	var nc net.Conn
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { ncMu.Lock(); nc = i.Conn; ncMu.Unlock() }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, s.URL+"/connect", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	hc := httpClientFor(t, s, h2)
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("POST /connect: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("POST /connect: status %d", resp.StatusCode)
	}
	r := &rawConn{
		t:      t,
		write:  func(b []byte) error { _, err := pw.Write(b); return err },
		closeW: pw.Close,
		abort: func() {
			cancel()
			pw.CloseWithError(errors.New("aborted"))
			resp.Body.Close()
			ncMu.Lock()
			if nc != nil {
				nc.Close()
			}
			ncMu.Unlock()
		},
		resp: resp,
	}
	r.info = fetchServerInfo(t, s)
	r.start(resp.Body)
	t.Cleanup(r.abort)
	return r
}

// wsReader concatenates the binary messages of a WebSocket.
type wsReader struct {
	c   *websocket.Conn
	cur io.Reader
}

func (w *wsReader) Read(p []byte) (int, error) {
	for {
		if w.cur != nil {
			n, err := w.cur.Read(p)
			if err == io.EOF {
				w.cur = nil
				if n > 0 {
					return n, nil
				}
				continue
			}
			return n, err
		}
		typ, r, err := w.c.Reader(context.Background())
		if err != nil {
			return 0, err
		}
		if typ != websocket.MessageBinary {
			return 0, errors.New("text message from the server")
		}
		w.cur = r
	}
}

// openRawWS opens GET /connect upgraded to WebSocket; every write is one
// binary message.
func openRawWS(t testing.TB, s *servertest.Server) (*rawConn, *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	hc := httpClientFor(t, s, false)
	c, resp, err := websocket.Dial(ctx, s.URL+"/connect", &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"commucat.ccp1"}})
	if err != nil {
		t.Fatalf("websocket dial: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || c.Subprotocol() != "commucat.ccp1" {
		t.Fatalf("upgrade: status %d subprotocol %q", resp.StatusCode, c.Subprotocol())
	}
	c.SetReadLimit(16777220)
	r := &rawConn{
		t:      t,
		write:  func(b []byte) error { return c.Write(context.Background(), websocket.MessageBinary, b) },
		closeW: func() error { return c.Close(websocket.StatusNormalClosure, "") },
		abort:  func() { c.CloseNow() },
	}
	r.info = fetchServerInfo(t, s)
	r.start(&wsReader{c: c})
	t.Cleanup(r.abort)
	return r, c
}

// start runs the background reader until the stream ends or the test
// ends.
func (r *rawConn) start(body io.Reader) {
	r.events = make(chan rawEvent, 4096)
	done := make(chan struct{})
	r.t.Cleanup(func() { close(done) })
	emit := func(ev rawEvent) bool {
		select {
		case r.events <- ev:
			return true
		case <-done:
			return false
		}
	}
	go func() {
		defer close(r.events)
		rd := ccp.NewReader(body, ccp.V1)
		switched := false
		for {
			f, err := rd.ReadFrame()
			if err != nil {
				if !emit(rawEvent{err: err}) {
					return
				}
				var fe *ccp.FrameError
				if errors.As(err, &fe) && !fe.Fatal {
					continue
				}
				return
			}
			f.Payload = bytes.Clone(f.Payload)
			if !emit(rawEvent{f: f}) {
				return
			}
			if !switched && f.Type == ccp.Ack && f.Channel == 0 && f.Sequence == 2 {
				switched = true
				r.mu.Lock()
				v2, key := r.v2, r.recvKey
				r.mu.Unlock()
				if v2 {
					src := io.MultiReader(bytes.NewReader(bytes.Clone(rd.Buffered())), body)
					rd = ccp.NewReader(&recordReader{r: r, src: src, key: key}, ccp.V2)
				}
			}
		}
	}()
}

// recordReader opens the server's records (§5.4) with the server→client key
// and counters from 0, checking the format itself.
type recordReader struct {
	r       *rawConn
	src     io.Reader
	key     [32]byte
	counter uint64
	pending []byte
}

var errRecord = errors.New("record error")

func (rr *recordReader) Read(p []byte) (int, error) {
	for len(rr.pending) == 0 {
		var hdr [2]byte
		if _, err := io.ReadFull(rr.src, hdr[:]); err != nil {
			if err == io.ErrUnexpectedEOF {
				return 0, fmt.Errorf("%w: stream ended inside a record", errRecord)
			}
			return 0, err
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		ct := make([]byte, n)
		if _, err := io.ReadFull(rr.src, ct); err != nil {
			return 0, fmt.Errorf("%w: stream ended inside a record: %v", errRecord, err)
		}
		rr.r.mu.Lock()
		rr.r.recSizes = append(rr.r.recSizes, 2+n)
		rr.r.recRaw = append(rr.r.recRaw, append(hdr[:], ct...))
		rr.r.mu.Unlock()
		pt, err := openRecord(rr.key, rr.counter, ct)
		if err != nil {
			return 0, err
		}
		rr.counter++
		rr.pending = pt
	}
	n := copy(p, rr.pending)
	rr.pending = rr.pending[n:]
	return n, nil
}

// recordNonce is the 12-byte nonce of §5.4.
func recordNonce(counter uint64) []byte {
	var n [12]byte
	binary.LittleEndian.PutUint64(n[4:], counter)
	return n[:]
}

// openRecord decrypts one record ciphertext and returns its data (§5.4).
func openRecord(key [32]byte, counter uint64, ct []byte) ([]byte, error) {
	if len(ct) < 18 {
		return nil, fmt.Errorf("%w: length %d", errRecord, len(ct))
	}
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, recordNonce(counter), ct, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: tag (counter %d)", errRecord, counter)
	}
	dl := int(binary.BigEndian.Uint16(pt))
	if 2+dl > len(pt) {
		return nil, fmt.Errorf("%w: data_len", errRecord)
	}
	for _, b := range pt[2+dl:] {
		if b != 0 {
			return nil, fmt.Errorf("%w: non-zero padding", errRecord)
		}
	}
	return pt[2 : 2+dl], nil
}

// sealRecord builds one record of data followed by padding with the client's
// send key and next counter (§5.4); padding may be non-zero for tests.
func (r *rawConn) sealRecord(data, padding []byte) []byte {
	r.mu.Lock()
	key, ctr := r.sendKey, r.sendCtr
	r.sendCtr++
	r.mu.Unlock()
	pt := binary.BigEndian.AppendUint16(nil, uint16(len(data)))
	pt = append(pt, data...)
	pt = append(pt, padding...)
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		r.t.Fatal(err)
	}
	ct := aead.Seal(nil, recordNonce(ctr), pt, nil)
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(ct))), ct...)
}

// sealAll seals stream bytes into as many records as needed.
func (r *rawConn) sealAll(data []byte) []byte {
	var out []byte
	for first := true; first || len(data) > 0; first = false {
		n := min(len(data), 65535-18)
		out = append(out, r.sealRecord(data[:n], nil)...)
		data = data[n:]
	}
	return out
}

// sendBytes writes stream bytes (inside records once the v2 session runs).
func (r *rawConn) sendBytes(b []byte) {
	r.t.Helper()
	r.mu.Lock()
	sealing := r.sealing
	r.mu.Unlock()
	if sealing {
		b = r.sealAll(b)
	}
	if err := r.write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// writeRaw writes bytes as they are, outside any record.
func (r *rawConn) writeRaw(b []byte) error { return r.write(b) }

// send writes one frame with an explicit sequence.
func (r *rawConn) send(typ ccp.FrameType, ch, seq uint32, payload []byte) {
	r.t.Helper()
	r.sendBytes(encodeFrame(r.t, typ, ch, seq, payload))
	r.mu.Lock()
	if seq > r.seq {
		r.seq = seq
	}
	r.mu.Unlock()
}

// next writes one frame with the next client sequence and returns it.
func (r *rawConn) next(typ ccp.FrameType, ch uint32, payload []byte) uint32 {
	r.t.Helper()
	r.mu.Lock()
	r.seq++
	seq := r.seq
	r.mu.Unlock()
	r.sendBytes(encodeFrame(r.t, typ, ch, seq, payload))
	return seq
}

// event returns the next reader event within d (ok false on timeout).
func (r *rawConn) event(d time.Duration) (rawEvent, bool) {
	got := func(ev rawEvent, open bool) (rawEvent, bool) {
		if !open {
			return rawEvent{err: io.EOF}, true
		}
		return ev, true
	}
	select {
	case ev, open := <-r.events: // what is already there, even when d is 0
		return got(ev, open)
	default:
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case ev, open := <-r.events:
		return got(ev, open)
	case <-timer.C:
		return rawEvent{}, false
	}
}

// frame returns the next frame within d; any error fails the test.
func (r *rawConn) frame(d time.Duration) ccp.Frame {
	r.t.Helper()
	ev, ok := r.event(d)
	if !ok {
		r.t.Fatalf("no frame from the server within %v", d)
	}
	if ev.err != nil {
		r.t.Fatalf("reading the stream: %v", ev.err)
	}
	return ev.f
}

// frameUntil skips frames until pred holds.
func (r *rawConn) frameUntil(d time.Duration, what string, pred func(ccp.Frame) bool) ccp.Frame {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ev, ok := r.event(time.Until(deadline))
		if !ok {
			r.t.Fatalf("no %s within %v", what, d)
		}
		if ev.err != nil {
			r.t.Fatalf("waiting for %s: %v", what, ev.err)
		}
		if pred(ev.f) {
			return ev.f
		}
	}
}

// expectEOF checks that the stream ends within d and returns the frames
// that came before the end.
func (r *rawConn) expectEOF(d time.Duration) []ccp.Frame {
	r.t.Helper()
	var got []ccp.Frame
	deadline := time.Now().Add(d)
	for {
		ev, ok := r.event(time.Until(deadline))
		if !ok {
			r.t.Fatalf("the stream did not end within %v (frames: %v)", d, got)
		}
		if ev.err != nil {
			if ev.err == io.EOF {
				return got
			}
			var fe *ccp.FrameError
			if errors.As(ev.err, &fe) {
				r.t.Fatalf("malformed server frame: %v", ev.err)
			}
			return got // a transport error also ends the stream
		}
		got = append(got, ev.f)
	}
}

// expectAck waits for the ACK whose "ack" is seq on channel ch (skipping
// PRESENCE pushes) and returns its payload.
func (r *rawConn) expectAck(ch, seq uint32) []byte {
	r.t.Helper()
	f := r.frameUntil(wait, fmt.Sprintf("ACK %d", seq), func(f ccp.Frame) bool { return f.Type != ccp.Presence })
	if f.Type != ccp.Ack || f.Channel != ch {
		r.t.Fatalf("got %v %s, want ACK for %d on channel %d", f, f.Payload, seq, ch)
	}
	if n, ok := client.AckNumber(f.Payload); !ok || n != seq {
		r.t.Fatalf("ACK %s, want ack %d", f.Payload, seq)
	}
	return f.Payload
}

// expectError waits for the next non-PRESENCE frame and checks it is an
// ERROR with title.
func (r *rawConn) expectError(title string) ccp.Problem {
	r.t.Helper()
	f := r.frameUntil(wait, "ERROR "+title, func(f ccp.Frame) bool { return f.Type != ccp.Presence })
	return wantProblem(r.t, f, title, 0, "")
}

// records returns the wire sizes of the server records read so far.
func (r *rawConn) records() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.recSizes...)
}

// clientConfig builds a handshake configuration for id against r's server.
func (r *rawConn) clientConfig(id *client.Identity, handle string, versions []int, caps []string) noiseconn.ClientConfig {
	cfg := noiseconn.ClientConfig{
		Pattern:      noiseconn.PatternXK,
		DeviceID:     id.DeviceID,
		DeviceKey:    id.DeviceKey(),
		StaticKey:    id.StaticKey,
		ServerStatic: r.info.NoisePublic,
		Domain:       r.info.Domain,
		Prologue:     []byte("commucat"),
		Versions:     versions,
		Capabilities: caps,
	}
	if handle != "" {
		h := handle
		cfg.User = &noiseconn.UserHint{Handle: &h}
	}
	return cfg
}

// legacyConfig is the original terminal client's HELLO (§14 item 25): XK,
// protocol_version 1, capabilities ["noise","zstd"].
func (r *rawConn) legacyConfig(id *client.Identity, handle string) noiseconn.ClientConfig {
	cfg := r.clientConfig(id, handle, nil, []string{"noise", "zstd"})
	cfg.LegacyVersion = 1
	ca := r.info.DeviceCAPublic
	cfg.DeviceCAPublic = &ca
	return cfg
}

// handshakeResult is what connect returns.
type handshakeResult struct {
	auth    ccp.Frame
	ack     ccp.Frame
	ackJSON *noiseconn.HandshakeAck
	hs      *noiseconn.ClientHandshake
	sess    *noiseconn.Session
}

// hello writes the HELLO (channel ch, sequence 1) and returns the server's
// first frame.
func (r *rawConn) hello(cfg noiseconn.ClientConfig, ch uint32) (*noiseconn.ClientHandshake, ccp.Frame) {
	r.t.Helper()
	hs, hello, err := noiseconn.NewClientHandshake(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.send(ccp.Hello, ch, 1, hello)
	return hs, r.frame(wait)
}

// connect runs a whole handshake with cfg. extra frames are written in the
// same write as the client's AUTH (sealed when v2). It fails the test unless
// the handshake ACK arrives.
func (r *rawConn) connect(cfg noiseconn.ClientConfig, extra ...ccp.Frame) *handshakeResult {
	r.t.Helper()
	hs, f := r.hello(cfg, 0)
	if f.Type != ccp.Auth {
		r.t.Fatalf("got %v %s, want AUTH", f, f.Payload)
	}
	res := &handshakeResult{auth: f, hs: hs}
	reply, err := hs.ReadAuth(f.Payload)
	if err != nil {
		r.t.Fatalf("reading AUTH: %v", err)
	}
	sess := hs.Result()
	res.sess = sess
	buf := encodeFrame(r.t, ccp.Auth, 0, 2, reply)
	r.mu.Lock()
	r.seq = 2
	if sess.Version == noiseconn.Version2 {
		r.v2, r.recvKey, r.sendKey, r.sendCtr = true, sess.RecvKey, sess.SendKey, sess.SendCounter
	}
	r.mu.Unlock()
	if len(extra) > 0 {
		var plain []byte
		for _, e := range extra {
			plain = append(plain, encodeFrame(r.t, e.Type, e.Channel, e.Sequence, e.Payload)...)
			r.mu.Lock()
			r.seq = max(r.seq, e.Sequence)
			r.mu.Unlock()
		}
		if sess.Version == noiseconn.Version2 {
			plain = r.sealAll(plain)
		}
		buf = append(buf, plain...)
	}
	if err := r.write(buf); err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.sealing = sess.Version == noiseconn.Version2
	r.mu.Unlock()
	ack := r.frame(wait)
	if ack.Type != ccp.Ack || ack.Channel != 0 || ack.Sequence != 2 {
		r.t.Fatalf("got %v %s, want the handshake ACK", ack, ack.Payload)
	}
	res.ack = ack
	if res.ackJSON, err = noiseconn.ParseHandshakeAck(ack.Payload); err != nil {
		r.t.Fatal(err)
	}
	return res
}

// ---------------------------------------------------------------------------
// Hand-made Noise handshakes (flynn/noise directly), for inputs the SDK
// and noiseconn's client refuse to produce.

var noiseSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// manualHello describes a hand-made HELLO.
type manualHello struct {
	pattern       string
	deviceID      string
	devKey        ed25519.PrivateKey
	claimedStatic [32]byte // private key whose public half is client_static (and in the ZKP)
	noiseStatic   [32]byte // private key actually used in Noise
	msg1Payload   []byte
	members       map[string]any // HELLO members (nil value deletes)
}

// build returns the HELLO payload and the initiator state.
func (m manualHello) build(t testing.TB, info *client.ServerInfo) ([]byte, *noise.HandshakeState) {
	t.Helper()
	claimedPub, err := identity.X25519Public(m.claimedStatic)
	if err != nil {
		t.Fatal(err)
	}
	noisePub, err := identity.X25519Public(m.noiseStatic)
	if err != nil {
		t.Fatal(err)
	}
	pat := noise.HandshakeXK
	if m.pattern == "IK" {
		pat = noise.HandshakeIK
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   noiseSuite,
		Pattern:       pat,
		Initiator:     true,
		Prologue:      []byte("commucat"),
		StaticKeypair: noise.DHKey{Private: m.noiseStatic[:], Public: noisePub[:]},
		PeerStatic:    info.NoisePublic[:],
	})
	if err != nil {
		t.Fatal(err)
	}
	msg1, _, _, err := hs.WriteMessage(nil, m.msg1Payload)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := identity.Prove(m.devKey, info.Domain, m.deviceID, claimedPub, nil)
	if err != nil {
		t.Fatal(err)
	}
	devPub := identity.PublicKey32(m.devKey)
	h := map[string]any{
		"pattern":       m.pattern,
		"device_id":     m.deviceID,
		"handshake":     hex.EncodeToString(msg1),
		"client_static": hex.EncodeToString(claimedPub[:]),
		"device_public": hex.EncodeToString(devPub[:]),
		"zkp": map[string]string{
			"commitment": hex.EncodeToString(proof.Commitment[:]),
			"response":   hex.EncodeToString(proof.Response[:]),
		},
	}
	for k, v := range m.members {
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return b, hs
}

// manualFor returns a manualHello for id with the client static used both
// as claimed and as Noise key.
func manualFor(id *client.Identity, pattern string, handle string) manualHello {
	return manualHello{
		pattern:       pattern,
		deviceID:      id.DeviceID,
		devKey:        id.DeviceKey(),
		claimedStatic: id.StaticKey,
		noiseStatic:   id.StaticKey,
		members:       map[string]any{"user": map[string]string{"handle": handle}, "supported_versions": []int{1, 2}},
	}
}

// authFields is the server AUTH payload (§4.11).
type authFields struct {
	AcceptedCapabilities []string `json:"accepted_capabilities"`
	DeviceID             string   `json:"device_id"`
	Handshake            string   `json:"handshake"`
	ProtocolVersion      int      `json:"protocol_version"`
	ServerStatic         string   `json:"server_static"`
	Session              string   `json:"session"`
	SupportedVersions    []int    `json:"supported_versions"`
}

// expectHandshakeError reads the stream's frames until it ends and checks
// that they are exactly one ERROR on channel 0 with sequence seq and the
// title, class "handshake" (or class) and detail (when not "").
func expectHandshakeError(t testing.TB, r *rawConn, seq uint32, title, class, detail string) ccp.Problem {
	t.Helper()
	got := r.expectEOF(wait)
	if len(got) != 1 {
		t.Fatalf("got frames %v, want exactly one ERROR and the end of the stream", got)
	}
	f := got[0]
	if f.Channel != 0 || f.Sequence != seq {
		t.Fatalf("handshake ERROR on channel %d sequence %d, want 0/%d", f.Channel, f.Sequence, seq)
	}
	p := wantProblem(t, f, title, 0, class)
	if detail != "" && p.Detail != detail {
		t.Fatalf("detail %q, want %q", p.Detail, detail)
	}
	return p
}

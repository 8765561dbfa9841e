package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/noiseconn"
)

// HandshakeAck is the parsed handshake ACK (§4.13).
type HandshakeAck = noiseconn.HandshakeAck

// CertificateSummary is the `certificate` member of the handshake ACK.
type CertificateSummary = noiseconn.CertificateSummary

// UserSnapshot is a user snapshot (§8.1) as found in the handshake ACK and
// in presence entries.
type UserSnapshot = noiseconn.UserSnapshot

// Queue bounds.
const (
	writeQueueLen  = 64       // frames waiting for the writer
	maxWriteBatch  = 64 << 10 // bytes the writer coalesces into one write
	recvQueueLen   = 256      // frames waiting for Recv
	recvQueueBytes = 8 << 20  // payload bytes waiting for Recv (one larger frame is always admitted)
	keepBufCap     = 1 << 20  // writer buffers above this are dropped after use
)

// Conn is one established /connect stream: the handshake (§4) has
// completed and the handshake ACK has been received. Frames are written by
// one writer goroutine fed by a bounded queue and read by one reader
// goroutine into a bounded queue; when the application does not call Recv,
// the reader stops reading the stream (backpressure) instead of buffering
// without limit.
//
// All methods are safe for concurrent use.
type Conn struct {
	opts      Options
	log       *slog.Logger
	st        stream
	ownHTTP   *http.Client // closed when the conn ends (Dial without a Client)
	info      *ServerInfo
	ack       *HandshakeAck
	version   int
	pq        bool
	accepted  []string
	keepalive time.Duration // K
	sealer    *noiseconn.Sealer

	sendLock chan struct{} // held while a sequence is assigned and the frame queued
	seq      atomic.Uint64 // last client sequence used (1 and 2 by the handshake)
	closing  atomic.Bool   // Close was called: no new frames
	writeq   chan writeReq
	closeReq chan struct{}
	closeMu  sync.Once

	recvq  chan ccp.Frame
	qbytes atomic.Int64
	qspace chan struct{}

	pmu     sync.Mutex
	pending map[uint32]*pending

	lastRead atomic.Int64 // unix nanoseconds of the last byte read

	quit       chan struct{} // closed when the conn is shutting down
	quitOnce   sync.Once
	writerDone chan struct{}
	done       chan struct{} // closed when every goroutine has stopped
	errMu      sync.Mutex
	err        error
}

type writeReq struct {
	data []byte     // stream bytes (frames or raw bytes)
	done chan error // buffered; nil for fire-and-forget
}

type pending struct {
	channel uint32
	res     chan reply // buffered 1
}

type reply struct {
	payload []byte
	err     error
}

// Dial opens a /connect stream, performs the handshake and returns the
// connection once the handshake ACK has arrived. ctx bounds the dial and
// the handshake only (together with Options.HandshakeTimeout); use Close to
// end the connection.
//
// A handshake failure reported by the server is returned as an error
// wrapping *ErrorFrame; a non-200 HTTP answer as *HTTPError.
func Dial(ctx context.Context, opts Options) (*Conn, error) {
	o, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	return dial(ctx, o, nil, nil)
}

// dial is Dial with normalized options, an optional shared HTTP client and
// optional server info (nil: fetch).
func dial(ctx context.Context, o Options, hc *http.Client, info *ServerInfo) (c *Conn, err error) {
	own := hc == nil
	if own {
		hc = newHTTPClient(o.Transport, o.TLSConfig)
		defer func() {
			if err != nil {
				hc.CloseIdleConnections()
			}
		}()
	}
	hctx, cancel := context.WithTimeout(ctx, o.HandshakeTimeout)
	defer cancel()
	if info == nil {
		info = o.Server
	}
	if info == nil {
		if info, err = FetchServerInfo(hctx, hc, o.URL); err != nil {
			return nil, err
		}
	}

	id := o.Identity
	devKey := id.DeviceKey()
	cfg := noiseconn.ClientConfig{
		Pattern:      o.Pattern,
		DeviceID:     id.DeviceID,
		DeviceKey:    devKey,
		StaticKey:    id.StaticKey,
		ServerStatic: info.NoisePublic,
		Domain:       info.Domain,
		Prologue:     []byte(o.Prologue),
		Versions:     o.Versions,
		Capabilities: o.capabilities(),
		PQ:           o.PQ,
		User:         o.userHint(),
		Certificate:  presentable(id, info, time.Now()),
	}
	if len(cfg.Capabilities) >= noiseconn.MaxCapabilities {
		return nil, fmt.Errorf("client: too many capabilities (at most %d)", noiseconn.MaxCapabilities)
	}
	if info.DeviceCAPublic != ([32]byte{}) {
		ca := info.DeviceCAPublic
		cfg.DeviceCAPublic = &ca
	}
	hs, hello, err := noiseconn.NewClientHandshake(cfg)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	helloFrame, err := ccp.AppendFrame(nil, ccp.Frame{Type: ccp.Hello, Channel: 0, Sequence: 1, Payload: hello})
	if err != nil {
		return nil, fmt.Errorf("client: HELLO: %w", err)
	}

	st, err := openStream(hctx, o.Transport, hc, o.TLSConfig, o.URL, helloFrame)
	if err != nil {
		return nil, err
	}
	// The handshake deadline aborts the stream; stopAbort disarms it.
	stopAbort := context.AfterFunc(hctx, func() { st.Close(false) })
	fail := func(err error) (*Conn, error) {
		stopAbort()
		st.Close(true)
		if hctx.Err() != nil && !errors.Is(err, hctx.Err()) {
			err = fmt.Errorf("%w (%w)", hctx.Err(), err)
		}
		return nil, fmt.Errorf("client: handshake: %w", err)
	}

	c = &Conn{
		opts:       o,
		log:        o.Logger.With("transport", o.Transport.String(), "device", id.DeviceID),
		st:         st,
		info:       info,
		sendLock:   make(chan struct{}, 1),
		writeq:     make(chan writeReq, writeQueueLen),
		closeReq:   make(chan struct{}),
		recvq:      make(chan ccp.Frame, recvQueueLen),
		qspace:     make(chan struct{}, 1),
		pending:    make(map[uint32]*pending),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
		done:       make(chan struct{}),
	}
	c.seq.Store(2)
	c.lastRead.Store(time.Now().UnixNano())
	src := &activityReader{r: st, c: c}
	r := ccp.NewReader(src, ccp.V1)

	// Step 2: the server's AUTH (or an ERROR).
	f, err := readHandshakeFrame(r, ccp.Auth)
	if err != nil {
		return fail(err)
	}
	authPayload, err := hs.ReadAuth(f.Payload)
	if err != nil {
		return fail(err)
	}
	// Step 3: our AUTH, on the HELLO's channel with sequence 2.
	authFrame, err := ccp.AppendFrame(nil, ccp.Frame{Type: ccp.Auth, Channel: 0, Sequence: 2, Payload: authPayload})
	if err != nil {
		return fail(err)
	}
	if _, err := st.Write(authFrame); err != nil {
		return fail(err)
	}
	// Step 4: the handshake ACK.
	f, err = readHandshakeFrame(r, ccp.Ack)
	if err != nil {
		return fail(err)
	}
	ack, err := noiseconn.ParseHandshakeAck(f.Payload)
	if err != nil {
		return fail(err)
	}
	if !stopAbort() {
		return fail(hctx.Err())
	}

	sess := hs.Result()
	c.ack, c.version, c.pq, c.accepted = ack, sess.Version, sess.PQ, sess.Accepted
	k := ack.KeepaliveInterval
	if k <= 0 {
		k = info.KeepaliveInterval
	}
	c.keepalive = DefaultKeepalive
	if k > 0 {
		c.keepalive = time.Duration(k) * time.Second
	}
	rd := r
	if c.version == noiseconn.Version2 {
		// §5.1: the server's records start right after the ACK frame,
		// possibly within the bytes already read.
		left := bytes.Clone(r.Buffered())
		opener := noiseconn.NewOpener(sess.RecvKey, sess.RecvCounter)
		rd = ccp.NewReader(noiseconn.NewRecordReader(io.MultiReader(bytes.NewReader(left), src), opener), ccp.V2)
		padding, _ := noiseconn.ParsePadding(o.Padding)
		c.sealer = noiseconn.NewSealer(sess.SendKey, sess.SendCounter, padding)
	}
	clear(sess.SendKey[:])
	clear(sess.RecvKey[:])
	if own {
		c.ownHTTP = hc
	}
	c.storeCertificate(ack, info)
	c.log.Debug("connected", "proto", st.proto(), "version", c.version, "pq", c.pq, "pattern", o.Pattern, "accepted", c.accepted, "keepalive", c.keepalive)

	go c.writeLoop()
	go c.readLoop(rd)
	return c, nil
}

// readHandshakeFrame reads the next handshake frame, which must be want or
// an ERROR (returned as *ErrorFrame).
func readHandshakeFrame(r *ccp.Reader, want ccp.FrameType) (ccp.Frame, error) {
	f, err := r.ReadFrame()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return f, fmt.Errorf("waiting for %v: %w", want, err)
	}
	switch f.Type {
	case want:
		return f, nil
	case ccp.Error:
		return f, errorFrame(f)
	}
	return f, fmt.Errorf("unexpected %v frame while waiting for %v", f.Type, want)
}

// errorFrame turns an ERROR frame into an *ErrorFrame; an unparsable
// payload gives an Internal Error problem carrying a note.
func errorFrame(f ccp.Frame) *ErrorFrame {
	p, err := ccp.ParseProblem(f.Payload)
	if err != nil {
		p = ccp.Problem{Title: "(unparsable ERROR payload)", Detail: err.Error()}
	}
	return &ErrorFrame{Channel: f.Channel, Sequence: f.Sequence, Problem: p}
}

// presentable returns the stored certificate if it may be presented in the
// HELLO: for this device key and id, issued by the expected CA, and not
// about to expire (an unverifiable certificate fails the handshake, §4.9).
func presentable(id *Identity, info *ServerInfo, now time.Time) *Certificate {
	c := id.CurrentCertificate()
	if c == nil {
		return nil
	}
	if c.DeviceID != id.DeviceID || c.PublicKey != id.DevicePublic() || c.ExpiresAt <= now.Unix()+60 {
		return nil
	}
	if info.DeviceCAPublic != ([32]byte{}) && c.Issuer != info.DeviceCAPublic {
		return nil
	}
	return c
}

// storeCertificate verifies the device_certificate of the ACK and stores
// it into the identity.
func (c *Conn) storeCertificate(ack *HandshakeAck, info *ServerInfo) {
	cert := ack.DeviceCertificate
	if cert == (Certificate{}) {
		return
	}
	id := c.opts.Identity
	ca := info.DeviceCAPublic
	if ca == ([32]byte{}) {
		var err error
		if ca, err = identity.DecodeHex32(ack.DeviceCAPublic); err != nil {
			c.log.Warn("handshake ACK: bad device_ca_public; certificate not stored")
			return
		}
	}
	if herr := noiseconn.CheckCertificate(&cert, ca, id.DeviceID, ack.UserID, time.Now().Unix()); herr != nil {
		c.log.Warn("handshake ACK: device certificate does not verify; not stored", "error", herr.Cause)
		return
	}
	if cert.PublicKey != id.DevicePublic() {
		c.log.Warn("handshake ACK: device certificate is for another key; not stored")
		return
	}
	if id.setCertificate(cert) {
		c.log.Debug("device certificate stored", "serial", cert.Serial, "expires_at", cert.ExpiresAt)
		if c.opts.OnIdentityUpdate != nil {
			c.opts.OnIdentityUpdate(id)
		}
	}
}

// activityReader records when bytes arrive (for the v2 liveness check).
type activityReader struct {
	r io.Reader
	c *Conn
}

func (a *activityReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.c.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
}

// Ack returns the handshake ACK.
func (c *Conn) Ack() *HandshakeAck { return c.ack }

// Version returns the negotiated protocol version (1 or 2).
func (c *Conn) Version() int { return c.version }

// PQ reports whether the ML-KEM-768 hybrid keys are in effect.
func (c *Conn) PQ() bool { return c.pq }

// Accepted returns the server's accepted_capabilities.
func (c *Conn) Accepted() []string { return append([]string(nil), c.accepted...) }

// HasCapability reports whether cap was accepted by the server.
func (c *Conn) HasCapability(cap string) bool { return noiseconn.HasCapability(c.accepted, cap) }

// Session returns the session id, also the REST bearer token (§8.2).
func (c *Conn) Session() string { return c.ack.Session }

// UserID returns the id of the device's owner.
func (c *Conn) UserID() string { return c.ack.UserID }

// ServerInfo returns the server info the handshake used.
func (c *Conn) ServerInfo() *ServerInfo { return c.info }

// KeepaliveInterval returns K (§3.6) as announced in the handshake ACK.
func (c *Conn) KeepaliveInterval() time.Duration { return c.keepalive }

// Proto describes the carrying protocol: "HTTP/2.0", "HTTP/1.1" or
// "websocket/commucat.ccp1".
func (c *Conn) Proto() string { return c.st.proto() }

// Done is closed when the connection has ended and all its goroutines
// have stopped.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is open, and then why it ended:
// ErrClosed after Close, an error wrapping ErrStreamEnded when the server
// ended the stream, or the transport, record or keepalive error.
func (c *Conn) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// closedErr is the error of an operation on an ended connection.
func (c *Conn) closedErr() error {
	err := c.Err()
	if err == nil || errors.Is(err, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrClosed, err)
}

// shutdown ends the connection with reason (the first reason wins) and
// releases the stream, which unblocks the reader and the writer.
func (c *Conn) shutdown(reason error, abrupt bool) {
	c.quitOnce.Do(func() {
		c.errMu.Lock()
		c.err = reason
		c.errMu.Unlock()
		close(c.quit)
		c.st.Close(abrupt)
		if c.log.Enabled(context.Background(), slog.LevelDebug) && !errors.Is(reason, ErrClosed) {
			c.log.Debug("connection ended", "reason", reason)
		}
	})
}

// Close ends the request body (WebSocket: the close handshake) after the
// frames already queued, then waits up to Options.CloseTimeout for the
// server to end the stream before dropping it. It returns nil when the
// stream ended normally.
func (c *Conn) Close() error {
	c.closeMu.Do(func() {
		c.closing.Store(true)
		close(c.closeReq)
	})
	t := time.NewTimer(c.opts.CloseTimeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.shutdown(ErrClosed, false)
		<-c.done
	}
	if err := c.Err(); err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrStreamEnded) {
		return err
	}
	return nil
}

// CloseAbruptly drops the TCP connection under the stream at once, as a
// crash would (for tests of the server's cleanup paths). On HTTP/2 this
// ends every stream sharing that TCP connection.
func (c *Conn) CloseAbruptly() {
	c.closing.Store(true)
	c.shutdown(ErrClosed, true)
	<-c.done
}

// lock takes the send lock.
func (c *Conn) lock(ctx context.Context) error {
	select {
	case c.sendLock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.quit:
		return c.closedErr()
	}
}

func (c *Conn) unlock() { <-c.sendLock }

// enqueue hands req to the writer.
func (c *Conn) enqueue(ctx context.Context, req writeReq) error {
	select {
	case c.writeq <- req:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.quit:
		return c.closedErr()
	}
}

// waitWritten waits until the writer has written req.
func (c *Conn) waitWritten(ctx context.Context, req writeReq) error {
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.quit:
		select {
		case err := <-req.done:
			return err
		default:
			return c.closedErr()
		}
	}
}

// Send writes a frame with the next client sequence and returns that
// sequence. Sequences come from one counter for all channels, starting at
// 3 after the handshake's 1 and 2 (§6.2), and frames leave in sequence
// order. Send returns once the frame has been handed to the transport; it
// does not wait for the server's reply (see Request).
func (c *Conn) Send(ctx context.Context, t ccp.FrameType, channel uint32, payload []byte) (uint32, error) {
	return c.send(ctx, t, channel, payload, nil)
}

func (c *Conn) send(ctx context.Context, t ccp.FrameType, channel uint32, payload []byte, p *pending) (uint32, error) {
	if !t.Valid() {
		return 0, fmt.Errorf("client: invalid frame type %v", t)
	}
	if err := c.lock(ctx); err != nil {
		return 0, err
	}
	if c.closing.Load() {
		c.unlock()
		return 0, c.closedErr()
	}
	n := c.seq.Add(1)
	if n > ccp.MaxSequence {
		c.unlock()
		return 0, ErrSequenceExhausted
	}
	seq := uint32(n)
	buf, err := ccp.AppendFrame(make([]byte, 0, ccp.EncodedLen(channel, seq, len(payload))), ccp.Frame{Type: t, Channel: channel, Sequence: seq, Payload: payload})
	if err != nil {
		c.unlock()
		return 0, fmt.Errorf("client: %w", err)
	}
	if p != nil {
		c.pmu.Lock()
		c.pending[seq] = p
		c.pmu.Unlock()
	}
	req := writeReq{data: buf, done: make(chan error, 1)}
	err = c.enqueue(ctx, req)
	c.unlock()
	if err == nil {
		err = c.waitWritten(ctx, req)
	}
	if err != nil {
		if p != nil {
			c.dropPending(seq)
		}
		return seq, err
	}
	if c.log.Enabled(ctx, slog.LevelDebug) {
		c.log.Debug("sent", "type", t.String(), "channel", channel, "sequence", seq, "len", len(payload))
	}
	return seq, nil
}

// SendRaw writes b into the stream as it is (version 2: inside records),
// without a sequence: for protocol tests that send malformed frames.
func (c *Conn) SendRaw(ctx context.Context, b []byte) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	if c.closing.Load() {
		c.unlock()
		return c.closedErr()
	}
	req := writeReq{data: bytes.Clone(b), done: make(chan error, 1)}
	err := c.enqueue(ctx, req)
	c.unlock()
	if err != nil {
		return err
	}
	return c.waitWritten(ctx, req)
}

// Recv returns the next frame from the server, in order. The payload is
// a copy owned by the caller. ERROR frames are returned as frames (use
// ccp.ParseProblem); server ACKs and ERRORs that answer a Request, and the
// server's keepalive ACKs, are not. After the end of the connection the
// frames still queued are returned, then an error wrapping ErrClosed.
func (c *Conn) Recv(ctx context.Context) (ccp.Frame, error) {
	select {
	case f := <-c.recvq:
		return c.took(f), nil
	default:
	}
	select {
	case f := <-c.recvq:
		return c.took(f), nil
	case <-ctx.Done():
		return ccp.Frame{}, ctx.Err()
	case <-c.done:
		select {
		case f := <-c.recvq:
			return c.took(f), nil
		default:
			return ccp.Frame{}, c.closedErr()
		}
	}
}

func (c *Conn) took(f ccp.Frame) ccp.Frame {
	c.qbytes.Add(-int64(len(f.Payload)))
	select {
	case c.qspace <- struct{}{}:
	default:
	}
	return f
}

// noReply lists the frame types the server never answers (§6.3).
func noReply(t ccp.FrameType) bool {
	switch t {
	case ccp.Presence, ccp.Ack, ccp.Error, ccp.VoiceFrame, ccp.VideoFrame:
		return true
	}
	return false
}

// Request sends a frame and waits for the server's answer: an ACK on the
// same channel whose "ack" is the frame's sequence (its payload is
// returned), or an ERROR whose "sequence" is the frame's sequence (returned
// as an *ErrorFrame error). Frames received meanwhile stay queued for Recv;
// since answers are read in order behind them, a full Recv queue (nobody
// calling Recv) delays the answer. An answer that arrives after ctx ended
// is delivered to Recv instead.
func (c *Conn) Request(ctx context.Context, t ccp.FrameType, channel uint32, payload []byte) ([]byte, error) {
	if noReply(t) {
		return nil, fmt.Errorf("%w: %v", ErrNoReply, t)
	}
	p := &pending{channel: channel, res: make(chan reply, 1)}
	seq, err := c.send(ctx, t, channel, payload, p)
	if err != nil {
		return nil, err
	}
	select {
	case r := <-p.res:
		return r.payload, r.err
	case <-ctx.Done():
		c.dropPending(seq)
		return nil, ctx.Err()
	case <-c.quit:
		c.dropPending(seq)
		select {
		case r := <-p.res:
			return r.payload, r.err
		default:
			return nil, c.closedErr()
		}
	}
}

func (c *Conn) dropPending(seq uint32) {
	c.pmu.Lock()
	delete(c.pending, seq)
	c.pmu.Unlock()
}

// takePending removes and returns the waiter for seq if the answer's
// channel fits: an ACK must come on the request's channel, an ERROR on it
// or on channel 0 (decode errors, §13a.1).
func (c *Conn) takePending(seq, channel uint32, isError bool) *pending {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	p := c.pending[seq]
	if p == nil || (p.channel != channel && !(isError && channel == 0)) {
		return nil
	}
	delete(c.pending, seq)
	return p
}

// AckDelivery sends the client ACK {"ack":serverSeq} for a frame delivered
// under serverSeq (§6.3), on channel (the delivered frame's channel is
// recommended). In ack mode the server then deletes the inbox entry.
func (c *Conn) AckDelivery(ctx context.Context, channel uint32, serverSeq uint32) error {
	payload := strconv.AppendUint([]byte(`{"ack":`), uint64(serverSeq), 10)
	payload = append(payload, '}')
	_, err := c.Send(ctx, ccp.Ack, channel, payload)
	return err
}

// ackPayload is a server or client ACK payload (§6.3).
type ackPayload struct {
	Ack       *uint64 `json:"ack"`
	Keepalive *int64  `json:"keepalive"`
}

func parseAck(p []byte) (ackPayload, bool) {
	var a ackPayload
	if err := json.Unmarshal(p, &a); err != nil {
		return a, false
	}
	return a, true
}

// readLoop reads frames until the stream ends, then finishes the
// connection.
func (c *Conn) readLoop(r *ccp.Reader) {
	var err error
	var lastUnsolicited *ErrorFrame
	for {
		f, e := r.ReadFrame()
		if e != nil {
			var fe *ccp.FrameError
			if errors.As(e, &fe) && !fe.Fatal {
				c.log.Warn("skipped a malformed frame from the server", "error", fe.Err.Title())
				continue
			}
			err = e
			break
		}
		f.Payload = bytes.Clone(f.Payload)
		if f.Payload == nil {
			f.Payload = []byte{}
		}
		if !c.dispatch(f, &lastUnsolicited) {
			break
		}
	}
	switch {
	case err == nil: // stopped by shutdown
	case err == io.EOF && c.closing.Load():
		err = ErrClosed
	case err == io.EOF:
		err = ErrStreamEnded
		if lastUnsolicited != nil {
			err = fmt.Errorf("%w: %w", ErrStreamEnded, lastUnsolicited)
		}
	case lastUnsolicited != nil && !c.closing.Load():
		// The server said why it ends the stream (Replaced, Device
		// Revoked, ...); that is the reason, however the bytes ended.
		err = fmt.Errorf("%w: %w", ErrStreamEnded, lastUnsolicited)
	case errors.Is(err, noiseconn.ErrRecord):
		err = fmt.Errorf("client: record layer: %w", err)
	default:
		err = fmt.Errorf("client: reading the stream: %w", err)
	}
	if err != nil {
		c.shutdown(err, false)
	}
	<-c.writerDone
	// The TCP connection is not reused for another stream: close it
	// rather than leave it idle in the pool.
	c.st.Close(true)
	c.failPending()
	if c.ownHTTP != nil {
		c.ownHTTP.CloseIdleConnections()
	}
	close(c.done)
}

// failPending drops every waiter; they observe quit.
func (c *Conn) failPending() {
	c.pmu.Lock()
	clear(c.pending)
	c.pmu.Unlock()
}

// dispatch routes one received frame; false when the connection is
// shutting down.
func (c *Conn) dispatch(f ccp.Frame, lastUnsolicited **ErrorFrame) bool {
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.log.Debug("received", "type", f.Type.String(), "channel", f.Channel, "sequence", f.Sequence, "len", len(f.Payload))
	}
	switch f.Type {
	case ccp.Ack:
		a, ok := parseAck(f.Payload)
		if ok && a.Ack == nil && a.Keepalive != nil {
			return true // server keepalive (§3.6): never acknowledged, never surfaced
		}
		if ok && a.Ack != nil && *a.Ack <= ccp.MaxSequence {
			if p := c.takePending(uint32(*a.Ack), f.Channel, false); p != nil {
				p.res <- reply{payload: f.Payload}
				return true
			}
		}
	case ccp.Error:
		ef := errorFrame(f)
		if ef.Problem.HasSequence {
			if p := c.takePending(ef.Problem.Sequence, f.Channel, true); p != nil {
				p.res <- reply{err: ef}
				return true
			}
		} else if !ef.Problem.HasFrameType {
			*lastUnsolicited = ef
			return c.pushRecv(f)
		}
	}
	*lastUnsolicited = nil
	return c.pushRecv(f)
}

// pushRecv queues f for Recv, waiting while the queue is full.
func (c *Conn) pushRecv(f ccp.Frame) bool {
	n := int64(len(f.Payload))
	for {
		q := c.qbytes.Load()
		if q == 0 || q+n <= recvQueueBytes {
			break
		}
		select {
		case <-c.qspace:
		case <-c.quit:
			return false
		}
	}
	c.qbytes.Add(n)
	select {
	case c.recvq <- f:
		return true
	case <-c.quit:
		return false
	}
}

// writeLoop is the only writer of the stream.
func (c *Conn) writeLoop() {
	defer close(c.writerDone)
	var tick <-chan time.Time
	if c.version == noiseconn.Version2 {
		// A v2 client sends a keepalive ACK at least every K seconds (a
		// MUST on HTTP/1.1, done on every transport), and treats 3·K of
		// silence from the server as a dead connection.
		t := time.NewTicker(c.keepalive * 3 / 4)
		defer t.Stop()
		tick = t.C
	}
	w := &batchWriter{c: c}
	closeReq := c.closeReq
	writeClosed := false
	batch := make([]writeReq, 0, writeQueueLen)
	for {
		select {
		case <-c.quit:
			return
		case req := <-c.writeq:
			if writeClosed {
				complete(req, c.closedErr())
				continue
			}
			batch = c.collect(append(batch[:0], req))
			if !c.writeBatch(w, batch) {
				return
			}
		case <-closeReq:
			closeReq = nil
			for {
				batch = c.collect(batch[:0])
				if len(batch) == 0 {
					break
				}
				if !c.writeBatch(w, batch) {
					return
				}
			}
			writeClosed, tick = true, nil
			if err := c.st.CloseWrite(); err != nil {
				c.log.Debug("closing the request side", "error", err)
			}
		case <-tick:
			if idle := time.Since(time.Unix(0, c.lastRead.Load())); idle > 3*c.keepalive {
				c.shutdown(ErrKeepaliveTimeout, false)
				return
			}
			n := c.seq.Add(1)
			if n > ccp.MaxSequence {
				continue
			}
			payload := strconv.AppendInt([]byte(`{"keepalive":`), time.Now().Unix(), 10)
			payload = append(payload, '}')
			frame, _ := ccp.AppendFrame(nil, ccp.Frame{Type: ccp.Ack, Channel: 0, Sequence: uint32(n), Payload: payload})
			if !c.writeBatch(w, append(batch[:0], writeReq{data: frame})) {
				return
			}
		}
	}
}

// collect adds queued requests to batch without blocking, up to
// maxWriteBatch bytes.
func (c *Conn) collect(batch []writeReq) []writeReq {
	size := 0
	for _, r := range batch {
		size += len(r.data)
	}
	for size < maxWriteBatch && len(batch) < cap(batch) {
		select {
		case r := <-c.writeq:
			batch = append(batch, r)
			size += len(r.data)
		default:
			return batch
		}
	}
	return batch
}

// writeBatch writes batch and reports the outcome to each request; false
// when the connection failed.
func (c *Conn) writeBatch(w *batchWriter, batch []writeReq) bool {
	err := w.write(batch)
	for _, r := range batch {
		complete(r, err)
	}
	if err != nil {
		c.shutdown(fmt.Errorf("client: writing the stream: %w", err), false)
		return false
	}
	return true
}

func complete(r writeReq, err error) {
	if r.done != nil {
		r.done <- err
	}
}

// batchWriter turns batches into stream writes: v1 bytes as they are
// (one message per frame on WebSocket), v2 sealed into records (one
// message per record on WebSocket).
type batchWriter struct {
	c      *Conn
	plain  []byte
	sealed []byte
}

func (w *batchWriter) write(batch []writeReq) error {
	st := w.c.st
	if w.c.sealer == nil {
		if st.messages() || len(batch) == 1 {
			for _, r := range batch {
				if _, err := st.Write(r.data); err != nil {
					return err
				}
			}
			return nil
		}
		w.plain = w.plain[:0]
		for _, r := range batch {
			w.plain = append(w.plain, r.data...)
		}
		_, err := st.Write(w.plain)
		w.trim()
		return err
	}
	data := batch[0].data
	if len(batch) > 1 {
		w.plain = w.plain[:0]
		for _, r := range batch {
			w.plain = append(w.plain, r.data...)
		}
		data = w.plain
	}
	var err error
	w.sealed, err = w.c.sealer.AppendRecords(w.sealed[:0], data)
	if err != nil {
		return err
	}
	if st.messages() {
		for rec := w.sealed; len(rec) > 0; {
			n := noiseconn.RecordLengthSize + int(binary.BigEndian.Uint16(rec))
			if _, err = st.Write(rec[:n]); err != nil {
				break
			}
			rec = rec[n:]
		}
	} else {
		_, err = st.Write(w.sealed)
	}
	w.trim()
	return err
}

// trim drops buffers grown by a large frame.
func (w *batchWriter) trim() {
	if cap(w.plain) > keepBufCap {
		w.plain = nil
	}
	if cap(w.sealed) > keepBufCap {
		w.sealed = nil
	}
}

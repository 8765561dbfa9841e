package session

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/ratelimit"
	"github.com/commucat/commucat/internal/router"
	"github.com/commucat/commucat/internal/store"
)

const (
	titleShutdown  = ccp.TitleServerShuttingDown
	detailShutdown = "server shutting down"
	// maxSkipped: a connection is closed once more than this many frames
	// were skipped by §2.6 during its lifetime.
	maxSkipped = 100
	// maxTrackedChannels bounds the per-channel sequence state (§6.2) of one
	// connection; beyond it the least recently used channel is forgotten.
	maxTrackedChannels = 4096
)

// chanState is the inbound sequence state of one channel (§6.2).
type chanState struct {
	last  uint32
	reply []byte // ACK payload sent for the frame at last, nil if none
	// commit is the inbox write the reply at last waits for (nil: none);
	// a repeat of that frame gets the same outcome.
	commit *commit
	used   uint64 // recency, for eviction
}

// conn is one established connection.
type conn struct {
	// id numbers the stream (the "conn" of the logs; early-delivery routes).
	id   uint64
	m    *Manager
	t    Transport
	meta Meta
	log  *slog.Logger
	ctx  context.Context
	stop context.CancelFunc

	device    store.Device
	user      store.User
	snapshot  noiseconn.UserSnapshot
	sessionID string
	version   int
	accepted  []string
	ackMode   bool
	presence  bool // accepted presence.push
	keyInfo   noiseconn.ServerKey

	out        *outbound
	sealer     *noiseconn.Sealer
	seq        uint32 // last server sequence used (the running sender only)
	fw         frameWriter
	senderDone chan struct{} // closed when the sender ended for good
	// sender state (sender.go)
	sendMu      sync.Mutex
	sendReady   bool // the handshake ACK is written: senders may run
	sendRunning bool // a sender goroutine runs
	sendAgain   bool // kicked while running: drain once more
	sendDead    bool // ended for good
	// timers (sender.go)
	keepalive, refresh *Repeater
	// pendingCommit is set by a handler whose reply waits for an inbox
	// write (the reader goroutine only); commits counts those writes.
	pendingCommit *commit
	commits       sync.WaitGroup
	// routes: per recipient, how the last durable frame of this
	// connection goes to it (see deliverEarly; the reader goroutine only).
	routes    map[string]route
	prunePast int
	// quota: inbox usage of away recipients (checkInboxQuota; the reader
	// goroutine only).
	quota map[string]quotaView
	// fwdMedia: per channel, the last media frame forwarded to another
	// node's call (the reader goroutine only); rollbacks: the request ids
	// of those the owner rejected, for the reader (under rbMu).
	fwdMedia   map[uint32]forwardedMedia
	rbMu       sync.Mutex
	rollbacks  []string
	rbPending  atomic.Bool
	durMu      sync.Mutex
	durQ       []pendingWrite
	durRunning bool

	chans      map[uint32]*chanState
	chanClock  uint64
	skipped    int
	limiter    *ratelimit.Single
	lastMedia  time.Time
	endMu      sync.Mutex
	end        EndReason
	endSet     bool
	replaced   atomic.Bool
	stateMu    sync.Mutex
	presState  string
	lastActive atomic.Int64

	idle *idleReader

	// handshake deadline state (§4.15)
	hsMu      sync.Mutex
	hsTimer   *time.Timer
	hsSeq     uint32
	hsDone    bool
	hsExpired bool
}

func (c *conn) expired() bool {
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	return c.hsExpired
}

// Serve runs one stream from the moment the response headers were sent
// until it ends, and returns why it ended.
func (m *Manager) Serve(ctx context.Context, t Transport, meta Meta) EndReason {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	id := m.nextConn.Add(1)
	c := &conn{id: id, m: m, t: t, meta: meta, ctx: ctx, stop: cancel, log: m.d.Logger.With("conn", id, "transport", t.Kind())}
	start := m.d.Now()
	var rd *ccp.Reader
	var reason EndReason
	var ok bool
	// The handshake and the session set-up (cryptography, SQL, JSON: deep
	// call stacks) run on a goroutine of their own, so that the stack of
	// this long-lived goroutine, which then mostly waits for frames, does
	// not keep their size (memory per idle connection, issue 7).
	onFreshStack(func() {
		var hs *handshakeResult
		if rd, hs, reason, ok = c.handshake(start); ok {
			rd, reason, ok = c.setup(rd, hs, start)
		}
	})
	if !ok {
		return reason
	}
	return c.serveFrames(rd)
}

// onFreshStack runs f on a new goroutine and waits for it; a panic in f
// goes on in the caller.
func onFreshStack(f func()) {
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		f()
	}()
	if p := <-done; p != nil {
		panic(p)
	}
}

func (c *conn) setEnd(r EndReason) {
	c.endMu.Lock()
	if !c.endSet {
		c.end, c.endSet = r, true
	}
	c.endMu.Unlock()
}

func (c *conn) endReason(def EndReason) EndReason {
	c.endMu.Lock()
	defer c.endMu.Unlock()
	if c.endSet {
		return c.end
	}
	return def
}

// writeDirect writes one plaintext frame (handshake phase only, before the
// sender is enabled). It writes nothing once the handshake timed out.
func (c *conn) writeDirect(t ccp.FrameType, ch, seq uint32, payload []byte) error {
	b, err := ccp.AppendFrame(nil, ccp.Frame{Type: t, Channel: ch, Sequence: seq, Payload: payload})
	if err != nil {
		return err
	}
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	if c.hsExpired {
		return errHandshakeExpired
	}
	return c.t.WriteChunks([][]byte{b})
}

var errHandshakeExpired = errors.New("session: handshake deadline passed")

// startDeadline arms the handshake deadline (§4.15): when it passes before
// finishHandshake, ERROR Handshake Timeout is written with the next server
// sequence and the stream is aborted.
func (c *conn) startDeadline(d time.Duration) {
	c.hsTimer = time.AfterFunc(d, func() {
		c.hsMu.Lock()
		defer c.hsMu.Unlock()
		if c.hsDone || c.hsExpired {
			return
		}
		p := noiseconn.ErrTimeout.Problem()
		if b, err := ccp.AppendFrame(nil, ccp.Frame{Type: ccp.Error, Sequence: c.hsSeq, Payload: p.JSON()}); err == nil {
			_ = c.t.WriteChunks([][]byte{b})
		}
		c.hsExpired = true
		c.log.Info("handshake timeout")
		c.t.Abort(EndHandshake)
	})
}

// finishHandshake disarms the deadline; false when it already passed.
func (c *conn) finishHandshake() bool {
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	c.hsTimer.Stop()
	if c.hsExpired {
		return false
	}
	c.hsDone = true
	return true
}

// handshakeResult carries the state from the handshake into the session.
type handshakeResult struct {
	sess   *noiseconn.Session
	sh     *noiseconn.ServerHandshake
	commit *committed
	rest   []byte
}

// handshake runs §4. On success it returns the frame reader positioned after
// the client's AUTH.
//
// handshakeMaxFrame is the largest handshake frame: a Control payload of
// 256 KiB plus the largest header (§2.5).
const handshakeMaxFrame = ccp.MaxControlPayload + 1 + 3*ccp.MaxVarintLen

func (c *conn) handshake(start time.Time) (*ccp.Reader, *handshakeResult, EndReason, bool) {
	m := c.m
	c.hsSeq = 1 // sequence of the next server frame
	c.startDeadline(m.cfg.HandshakeTimeout - m.d.Now().Sub(start))
	defer c.hsTimer.Stop()
	rd := ccp.NewReader(c.t, ccp.V1)
	// Only HELLO and AUTH are valid before the handshake completes: a
	// larger frame fails on its length prefix instead of being buffered.
	rd.SetMaxFrame(handshakeMaxFrame)
	fail := func(herr *noiseconn.HandshakeError, reason EndReason) (*ccp.Reader, *handshakeResult, EndReason, bool) {
		c.log.Info("handshake failed", "title", herr.Title, "detail", herr.Detail, "cause", herr.Cause)
		p := herr.Problem()
		if err := c.writeDirect(ccp.Error, 0, c.hsSeq, p.JSON()); errors.Is(err, errHandshakeExpired) {
			reason = EndHandshake
		}
		return nil, nil, reason, false
	}
	read := func() (ccp.Frame, EndReason, bool) {
		f, err := rd.ReadFrame()
		if err == nil {
			return f, 0, true
		}
		var fe *ccp.FrameError
		switch {
		case c.expired():
			return f, EndHandshake, false
		case errors.As(err, &fe):
			p := fe.Problem()
			if werr := c.writeDirect(ccp.Error, 0, c.hsSeq, p.JSON()); errors.Is(werr, errHandshakeExpired) {
				return f, EndHandshake, false
			}
			c.log.Info("handshake decode error", "title", fe.Err.Title(), "detail", fe.Detail)
			return f, EndDecode, false
		case err == io.EOF:
			return f, EndNormal, false
		}
		return f, EndTransport, false
	}
	if m.isDraining() {
		return fail(noiseconn.ErrShuttingDown, EndShutdown)
	}

	f, reason, ok := read()
	if !ok {
		return nil, nil, reason, false
	}
	helloChannel := f.Channel
	sh, herr := m.hs.ReadHello(f, m.d.Keys())
	if herr != nil {
		return fail(herr, EndHandshake)
	}
	c.log = c.log.With("device", sh.Hello.DeviceID)
	sessionID, err := randomID(m.d.Rand)
	if err != nil {
		return fail(noiseconn.StorageFailure(err), EndInternal)
	}
	newUserID, err := randomID(m.d.Rand)
	if err != nil {
		return fail(noiseconn.StorageFailure(err), EndInternal)
	}
	now := m.d.Now()
	dec, herr := decideAdmission(context.Background(), m.d.Store, m.pol, sh.Hello, newUserID, now, false)
	if herr != nil {
		return fail(herr, EndHandshake)
	}
	auth, err := sh.WriteAuth(noiseconn.AuthInfo{Session: sessionID, UserID: dec.user.ID, User: userSnapshot(dec.user)})
	if err != nil {
		return fail(noiseconn.StorageFailure(err), EndInternal)
	}
	if err := c.writeDirect(ccp.Auth, helloChannel, c.hsSeq, auth); err != nil {
		if c.expired() {
			return nil, nil, EndHandshake, false
		}
		return nil, nil, EndTransport, false
	}
	c.hsMu.Lock()
	c.hsSeq = 2
	c.hsMu.Unlock()
	sentAuth := m.d.Now()

	f, reason, ok = read()
	if !ok {
		return nil, nil, reason, false
	}
	if c.meta.HandshakeRTT != nil {
		c.meta.HandshakeRTT(m.d.Now().Sub(sentAuth))
	}
	sess, herr := sh.ReadClientAuth(f)
	if herr != nil {
		return fail(herr, EndHandshake)
	}
	if m.isDraining() {
		return fail(noiseconn.ErrShuttingDown, EndShutdown)
	}

	// Commit (§4.5): re-check the decision and persist, in one transaction.
	now = m.d.Now()
	var done *committed
	var commitErr *noiseconn.HandshakeError
	err = m.d.Store.Tx(context.Background(), func(q store.Queries) error {
		// Every successful decision checked the HELLO's certificate, if
		// any, so its signature is known to verify.
		again, herr := decideAdmission(context.Background(), q, m.pol, sh.Hello, newUserID, now, true)
		if herr != nil {
			commitErr = herr
			return errors.New("admission re-check failed")
		}
		if again.user.ID != dec.user.ID {
			commitErr = noiseconn.StorageFailure(errors.New("device owner changed during the handshake"))
			return commitErr
		}
		row := store.Session{ID: sessionID, UserID: again.user.ID, DeviceID: sh.Hello.DeviceID, NodeID: m.cfg.NodeID, CreatedAt: now, LastActiveAt: now}
		var err error
		done, err = again.apply(context.Background(), q, m.pol, sh.Hello, m.d.CA, m.d.Rand, row, now)
		return err
	})
	if commitErr != nil {
		return fail(commitErr, EndHandshake)
	}
	if err != nil {
		return fail(noiseconn.StorageFailure(err), EndInternal)
	}
	if !c.finishHandshake() {
		return nil, nil, EndHandshake, false
	}
	c.sessionID = sessionID
	rd.SetMaxFrame(0)
	return rd, &handshakeResult{sess: sess, sh: sh, commit: done, rest: rd.Buffered()}, 0, true
}

// setup registers the connection, sends the ACK and starts the sender; it
// returns the frame reader of the session.
func (c *conn) setup(rd *ccp.Reader, hs *handshakeResult, start time.Time) (*ccp.Reader, EndReason, bool) {
	m := c.m
	c.device, c.user = hs.commit.device, hs.commit.user
	c.snapshot = userSnapshot(c.user)
	c.version = hs.sess.Version
	c.accepted = hs.sess.Accepted
	c.ackMode = noiseconn.HasCapability(c.accepted, noiseconn.CapAck)
	c.presence = noiseconn.HasCapability(c.accepted, noiseconn.CapPresence)
	c.keyInfo = hs.sh.Key
	c.out = newOutbound()
	c.out.notify = c.kickSender
	c.chans = make(map[uint32]*chanState)
	c.limiter = ratelimit.NewSingle(m.cfg.FrameLimit, m.d.Now)
	c.senderDone = make(chan struct{})
	c.seq = 2
	c.log = c.log.With("session", c.sessionID[:16], "version", c.version)
	c.lastActive.Store(m.d.Now().UnixMicro())

	ack, err := c.handshakeAck(hs)
	if err != nil {
		c.log.Error("building the handshake ACK", "err", err)
		p := noiseconn.StorageFailure(err).Problem()
		_ = c.writeDirect(ccp.Error, 0, 2, p.JSON())
		return nil, EndInternal, false
	}

	m.mu.Lock()
	m.conns[c] = struct{}{}
	m.mu.Unlock()
	if old := m.d.Router.Registry.Register(c); old != nil {
		old.Kick(router.KickReplaced)
	}
	m.d.Router.Claim(c.device.ID, c.sessionID)
	c.setPresence(stateOnline)
	if err := c.writeDirect(ccp.Ack, 0, 2, ack); err != nil {
		c.cleanup()
		return nil, EndTransport, false
	}
	mt := m.d.Metrics
	mt.SecurityNoise.Inc()
	if hs.sess.PQ {
		mt.SecurityPQ.Inc()
	}
	mt.ConnectionsActive.Inc()
	mt.HandshakeDuration.WithLabelValues(hs.sh.Hello.Pattern).Observe(m.d.Now().Sub(start).Seconds())
	c.recordHandshakeLedger(hs)
	c.log.Info("connected", "pq", hs.sess.PQ, "accepted", c.accepted)

	c.pushPresence(stateOnline)
	c.queueSnapshot()

	var in io.Reader = c.t
	if c.version == noiseconn.Version2 && c.t.Kind() == "http1" && m.cfg.Keepalive > 0 {
		// §3.6: a v2 stream over HTTP/1.1 ends after 3×K without a byte.
		c.idle = &idleReader{t: c.t, d: 3 * m.cfg.Keepalive}
		in = c.idle
	}
	if c.version == noiseconn.Version2 {
		c.sealer = noiseconn.NewSealer(hs.sess.SendKey, hs.sess.SendCounter, m.cfg.Padding)
		opener := noiseconn.NewOpener(hs.sess.RecvKey, hs.sess.RecvCounter)
		rest := bytes.Clone(hs.rest)
		in = noiseconn.NewRecordReader(io.MultiReader(bytes.NewReader(rest), in), opener)
		rd = ccp.NewReader(in, ccp.V2)
	}
	c.startTimers()
	c.enableSender()
	return rd, 0, true
}

// serveFrames runs the session until the stream ends.
func (c *conn) serveFrames(rd *ccp.Reader) EndReason {
	reason := c.readLoop(rd)
	c.out.close()
	<-c.senderDone
	c.commits.Wait() // pipelined inbox writes (storeAsync)
	c.cleanup()
	return c.endReason(reason)
}

// Kick implements router.Peer.
func (c *conn) Kick(r router.KickReason) {
	switch r {
	case router.KickReplaced:
		c.replaced.Store(true)
		c.kickWith(ccp.TitleReplaced, "device connected elsewhere", EndReplaced)
	case router.KickRevoked:
		c.kickWith(ccp.TitleDeviceRevoked, "device revoked", EndRevoked)
	}
}

// kickWith sends an unsolicited ERROR (§6.4: channel 0, no frame_type or
// sequence) and ends the connection once it is written.
func (c *conn) kickWith(title, detail string, r EndReason) {
	p := ccp.NewProblem(title, detail)
	c.setEnd(r)
	c.out.pushUrgent(outFrame{t: ccp.Error, ch: 0, payload: p.JSON(), closeAfter: true, reason: r})
	// If the sender is stuck on a write, end the stream anyway.
	time.AfterFunc(5*time.Second, func() { c.t.Abort(r) })
}

func (c *conn) DeviceID() string    { return c.device.ID }
func (c *conn) SessionID() string   { return c.sessionID }
func (c *conn) WantsPresence() bool { return c.presence }

func (c *conn) DeliverLive(t ccp.FrameType, ch uint32, payload []byte) bool {
	if c.version == noiseconn.Version1 && (t == ccp.VoiceFrame || t == ccp.VideoFrame) {
		// §7.8: v1 recipients get bare Opus or VP8 and nothing else.
		if !bareForV1(t, payload) {
			return false
		}
		payload = payload[3:]
	}
	return c.out.pushLive(outFrame{t: t, ch: ch, payload: payload, accepted: c.m.d.Now()})
}

// bareForV1 reports whether a media payload is encoded or hybrid Opus
// (voice) or VP8 (video), the only media a v1 recipient receives.
func bareForV1(t ccp.FrameType, p []byte) bool {
	if len(p) < 3 || p[0] != 1 || (p[1] != 0 && p[1] != 2) {
		return false
	}
	if t == ccp.VoiceFrame {
		return p[2] == 0
	}
	return p[2] == 1
}

func (c *conn) DeliverInbox(entries []store.InboxEntry) { c.out.pushInbox(entries) }

func (c *conn) RequestCatchup(after int64) { c.out.requestCatchupFrom(after) }

// cleanup runs §6.10.
func (c *conn) cleanup() {
	m := c.m
	m.mu.Lock()
	delete(m.conns, c)
	m.mu.Unlock()
	m.d.Metrics.ConnectionsActive.Dec()
	now := m.d.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// §8.2: the token stays valid for session_ttl after the later of the
	// connection's end and its last authenticated request.
	// One transaction (one disk sync) for both.
	err := m.d.Store.Tx(ctx, func(q store.Queries) error {
		if err := q.TouchSession(ctx, c.sessionID, now); err != nil {
			return err
		}
		return q.CloseSession(ctx, c.sessionID, now)
	})
	if err != nil {
		c.log.Warn("recording session end", "err", err)
	}
	// Unregister first: a connection replaced from another node is still
	// this node's registry entry and must leave it (Unregister removes only
	// this very connection, never its successor on this node).
	unregistered := m.d.Router.Registry.Unregister(c)
	if c.replaced.Load() || !unregistered {
		c.log.Info("disconnected (replaced)")
		return
	}
	m.d.Router.Release(c.device.ID)
	c.setPresence(stateOffline)
	c.pushPresence(stateOffline)
	m.d.Calls.Disconnect(c.device.ID)
	c.log.Info("disconnected", "reason", c.endReason(EndNormal).String())
}

// idleReader sets a read deadline before every Read (§3.6 HTTP/1.1 v2
// liveness) and remembers when one passed.
type idleReader struct {
	t       Transport
	d       time.Duration
	expired atomic.Bool
}

func (r *idleReader) Read(p []byte) (int, error) {
	deadline := time.Now().Add(r.d)
	_ = r.t.SetReadDeadline(deadline)
	n, err := r.t.Read(p)
	if err != nil && !time.Now().Before(deadline) {
		r.expired.Store(true)
	}
	return n, err
}

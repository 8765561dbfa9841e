package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/identity"
)

// Event is what a Client reports: *Connected, *Disconnected, *Message,
// *Presence or *ServerError.
type Event interface{ event() }

// Connected reports an established connection.
type Connected struct {
	Conn     *Conn
	Ack      *HandshakeAck
	Version  int
	PQ       bool
	Accepted []string
}

// Disconnected reports a connection that ended, or a connection attempt
// that failed. RetryIn is the delay before the next attempt (0 when the
// Client stops).
type Disconnected struct {
	Err     error
	RetryIn time.Duration
}

// Message is a frame relayed or redelivered by the server: MSG,
// KEY_UPDATE, GROUP_*, TYPING, CALL_*, VOICE_FRAME, VIDEO_FRAME.
type Message struct {
	Type      ccp.FrameType
	Channel   uint32
	Sender    string // the "sender" member of a Control payload (§6.6.1); "" for opaque payloads
	Payload   []byte
	ServerSeq uint32 // the server sequence it was delivered under
	Durable   bool   // a durable type (§6.7); the Client has acknowledged it in ack mode
}

// Presence is a presence push or snapshot entry (§6.8).
type Presence struct {
	Entity    string       // device id
	State     string       // "online", "offline", or a state set by the device
	ExpiresAt string       // RFC 3339
	User      UserSnapshot // the device's owner
	Raw       []byte
	ServerSeq uint32
}

// ServerError is an ERROR frame that answered no Request: an unsolicited
// ERROR (Replaced, Device Revoked, Server Shutting Down, Keepalive Timeout,
// ...) or the answer to a frame sent with Conn.Send.
type ServerError struct {
	Channel   uint32
	ServerSeq uint32
	Problem   ccp.Problem
}

func (*Connected) event()    {}
func (*Disconnected) event() {}
func (*Message) event()      {}
func (*Presence) event()     {}
func (*ServerError) event()  {}

// Durable reports whether t is of the durable delivery class (§6.7): MSG,
// KEY_UPDATE, GROUP_CREATE, GROUP_INVITE, GROUP_EVENT.
func Durable(t ccp.FrameType) bool {
	switch t {
	case ccp.Msg, ccp.KeyUpdate, ccp.GroupCreate, ccp.GroupInvite, ccp.GroupEvent:
		return true
	}
	return false
}

const (
	eventQueueLen = 256
	// healthyAfter is how long a connection must live for the reconnect
	// backoff to start again from Options.ReconnectMin.
	healthyAfter = 10 * time.Second
	// maxRetryAfter caps a Retry-After honoured by the reconnect loop.
	maxRetryAfter = 10 * time.Minute
)

// Client keeps one device connected: it dials, reconnects with
// exponential backoff (with jitter, capped, reset after a healthy
// connection), acknowledges every delivered durable frame when
// delivery.ack is in effect (so the server's inbox redelivery resumes
// after a reconnect, §6.7), keeps the device certificate in the Identity
// and re-sends the chosen presence state after a reconnect.
//
// The application must keep reading Events: when it does not, the Client
// stops reading the connection (backpressure), and replies to its own
// requests are delayed too.
type Client struct {
	opts   Options
	optErr error
	log    *slog.Logger
	events chan Event
	hc     *http.Client

	mu        sync.Mutex
	conn      *Conn
	connCh    chan struct{} // closed when conn changes
	info      *ServerInfo
	urlIdx    int // index into URL + FallbackURLs of the next attempt
	presence  string
	stopped   chan struct{}
	runCalled sync.Once
}

// New returns a Client; nothing happens until Run. Invalid options are
// reported by Run.
func New(opts Options) *Client {
	o, err := opts.normalize()
	if err == nil {
		o.TLSConfig = withSessionCache(o.TLSConfig)
	}
	c := &Client{
		opts:    o,
		optErr:  err,
		log:     o.Logger,
		events:  make(chan Event, eventQueueLen),
		connCh:  make(chan struct{}),
		stopped: make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if err == nil {
		c.hc = newHTTPClient(o.Transport, o.TLSConfig)
		c.info = o.Server
	}
	return c
}

// Events returns the event channel. It is closed when Run returns.
func (c *Client) Events() <-chan Event { return c.events }

// Conn returns the current connection, or nil while disconnected.
func (c *Client) Conn() *Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

func (c *Client) setConn(conn *Conn) {
	c.mu.Lock()
	c.conn = conn
	close(c.connCh)
	c.connCh = make(chan struct{})
	c.mu.Unlock()
}

// WaitConnected waits until the Client has a live connection and returns
// it.
func (c *Client) WaitConnected(ctx context.Context) (*Conn, error) {
	for {
		c.mu.Lock()
		conn, ch := c.conn, c.connCh
		c.mu.Unlock()
		if conn != nil {
			select {
			case <-conn.Done():
			default:
				return conn, nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.stopped:
			return nil, ErrStopped
		}
	}
}

// Run connects and keeps the device connected until ctx ends (then it
// closes the connection and returns nil) or a permanent failure occurs:
// a handshake refused with PairingRequired, Forbidden, Protocol Version
// Mismatch or Invalid Handshake, or a connection ended by Replaced (the
// device connected elsewhere) or Device Revoked. Run may be called once.
func (c *Client) Run(ctx context.Context) error {
	first := false
	c.runCalled.Do(func() { first = true })
	if !first {
		return errors.New("client: Run called twice")
	}
	defer func() {
		close(c.stopped)
		close(c.events)
		if c.hc != nil {
			c.hc.CloseIdleConnections()
		}
	}()
	if c.optErr != nil {
		return c.optErr
	}
	attempt := 0
	for {
		if ctx.Err() != nil {
			return nil
		}
		conn, err := c.connect(ctx)
		if err == nil {
			start := time.Now()
			c.setConn(conn)
			c.log.Info("connected", "version", conn.Version(), "pq", conn.PQ(), "proto", conn.Proto())
			ok := c.emit(ctx, &Connected{Conn: conn, Ack: conn.Ack(), Version: conn.Version(), PQ: conn.PQ(), Accepted: conn.Accepted()})
			if ok {
				c.restorePresence(ctx, conn)
				err = c.serve(ctx, conn)
			}
			c.setConn(nil)
			if ctx.Err() != nil {
				conn.Close()
				return nil
			}
			conn.Close() // the stream has ended; this only waits for the goroutines
			if time.Since(start) >= healthyAfter {
				attempt = 0
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if permanent(err) {
			c.log.Warn("giving up", "error", err)
			c.emit(ctx, &Disconnected{Err: err})
			return err
		}
		d := backoff(c.opts.ReconnectMin, c.opts.ReconnectMax, attempt, err)
		attempt++
		c.log.Info("disconnected", "error", err, "retry_in", d)
		if !c.emit(ctx, &Disconnected{Err: err, RetryIn: d}) {
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}

// emit delivers ev unless ctx ends first.
func (c *Client) emit(ctx context.Context, ev Event) bool {
	select {
	case c.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// connect dials once, with the cached server info, at the current URL;
// after a failure the next attempt goes to the next of URL and
// FallbackURLs (with its own server info).
func (c *Client) connect(ctx context.Context) (*Conn, error) {
	c.mu.Lock()
	info := c.info
	opts := c.opts
	opts.URL = c.urlLocked()
	c.mu.Unlock()
	conn, err := c.connectTo(ctx, opts, info)
	if err != nil && len(c.opts.FallbackURLs) > 0 {
		c.mu.Lock()
		c.urlIdx = (c.urlIdx + 1) % (1 + len(c.opts.FallbackURLs))
		if c.opts.Server == nil {
			c.info = nil // fetched from the next node
		}
		c.mu.Unlock()
		c.log.Info("trying another node next", "url", c.currentURL())
	}
	return conn, err
}

// currentURL is the URL of the next attempt.
func (c *Client) currentURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.urlLocked()
}

// urlLocked is currentURL with c.mu held.
func (c *Client) urlLocked() string {
	if c.urlIdx == 0 {
		return c.opts.URL
	}
	return c.opts.FallbackURLs[c.urlIdx-1]
}

func (c *Client) connectTo(ctx context.Context, opts Options, info *ServerInfo) (*Conn, error) {
	if info == nil {
		fctx, cancel := context.WithTimeout(ctx, opts.HandshakeTimeout)
		var err error
		info, err = FetchServerInfo(fctx, c.hc, opts.URL)
		cancel()
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.info = info
		c.mu.Unlock()
	}
	conn, err := dial(ctx, opts, c.hc, info)
	if err != nil {
		if c.opts.Server == nil && IsProblem(err, ccp.TitleAuthenticationFailed) {
			// Perhaps the Noise key rotated away: fetch server-info again.
			c.mu.Lock()
			c.info = nil
			c.mu.Unlock()
		}
		return nil, err
	}
	// Move to the newest Noise key of the ACK's catalog (§4.13).
	if keys := conn.Ack().NoiseKeys; len(keys) > 0 {
		if pub, err := identity.DecodeHex32(keys[0].Public); err == nil && pub != info.NoisePublic {
			ni := info.clone()
			ni.NoisePublic = pub
			c.mu.Lock()
			c.info = ni
			c.mu.Unlock()
		}
	}
	return conn, nil
}

// serve turns the frames of conn into events until conn or ctx ends.
func (c *Client) serve(ctx context.Context, conn *Conn) error {
	ackMode := conn.HasCapability(CapAck)
	for {
		f, err := conn.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if reason := conn.Err(); reason != nil {
				return reason
			}
			return err
		}
		var ev Event
		switch f.Type {
		case ccp.Ack:
			continue // an answer nobody waits for any more
		case ccp.Error:
			p, err := ccp.ParseProblem(f.Payload)
			if err != nil {
				p = ccp.Problem{Title: "(unparsable ERROR payload)"}
			}
			ev = &ServerError{Channel: f.Channel, ServerSeq: f.Sequence, Problem: p}
		case ccp.Presence:
			ev = parsePresence(f)
		default:
			ev = &Message{Type: f.Type, Channel: f.Channel, Sender: senderOf(f.Type, f.Payload), Payload: f.Payload, ServerSeq: f.Sequence, Durable: Durable(f.Type)}
		}
		if !c.emit(ctx, ev) {
			return ctx.Err()
		}
		if ackMode && Durable(f.Type) {
			if err := conn.AckDelivery(ctx, f.Channel, f.Sequence); err != nil {
				c.log.Debug("client ACK not sent", "error", err)
			}
		}
	}
}

func parsePresence(f ccp.Frame) *Presence {
	var j struct {
		Entity    string       `json:"entity"`
		State     string       `json:"state"`
		ExpiresAt string       `json:"expires_at"`
		User      UserSnapshot `json:"user"`
	}
	_ = json.Unmarshal(f.Payload, &j) // a malformed push still surfaces, with Raw
	return &Presence{Entity: j.Entity, State: j.State, ExpiresAt: j.ExpiresAt, User: j.User, Raw: f.Payload, ServerSeq: f.Sequence}
}

// permanent reports whether err should stop Run instead of a reconnect.
func permanent(err error) bool {
	var ef *ErrorFrame
	if !errors.As(err, &ef) {
		return false
	}
	switch ef.Problem.Title {
	case ccp.TitlePairingRequired, ccp.TitleForbidden, ccp.TitleProtocolVersionMismatch,
		ccp.TitleInvalidHandshake, ccp.TitleReplaced, ccp.TitleDeviceRevoked:
		return true
	}
	return false
}

// backoff returns the delay before reconnect attempt number attempt (0
// based): min·2^attempt capped at max, with jitter in [d/2, d], and at
// least a retry delay the server asked for.
func backoff(lo, hi time.Duration, attempt int, err error) time.Duration {
	d := hi
	if attempt < 32 {
		if x := lo << attempt; x > 0 && x < hi {
			d = x
		}
	}
	d = d/2 + rand.N(d/2+1)
	var he *HTTPError
	if errors.As(err, &he) && he.RetryAfter > d {
		d = min(he.RetryAfter, max(hi, maxRetryAfter))
	}
	return d
}

func (c *Client) restorePresence(ctx context.Context, conn *Conn) {
	c.mu.Lock()
	state := c.presence
	c.mu.Unlock()
	if state != "" && state != "online" {
		if err := conn.SetPresence(ctx, state); err != nil {
			c.log.Debug("presence not restored", "error", err)
		}
	}
}

// Request sends a frame on the current connection and waits for its ACK
// (see Conn.Request). It waits for a connection first, and when the
// connection is lost before the answer it sends the frame again on the
// next one (so the server may see it twice: at-least-once). Too Many
// Requests is retried after retry_after, Internal Error after a second.
func (c *Client) Request(ctx context.Context, t ccp.FrameType, ch uint32, payload []byte) ([]byte, error) {
	if noReply(t) {
		return nil, ErrNoReply
	}
	for {
		conn, err := c.WaitConnected(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := conn.Request(ctx, t, ch, payload)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		var ef *ErrorFrame
		if errors.As(err, &ef) {
			var wait time.Duration
			switch ef.Problem.Title {
			case ccp.TitleTooManyRequests:
				wait = max(ef.RetryAfter(), time.Second)
			case ccp.TitleInternalError:
				wait = time.Second
			default:
				return nil, err
			}
			if err := sleep(ctx, wait); err != nil {
				return nil, err
			}
			continue
		}
		if !errors.Is(err, ErrClosed) {
			return nil, err
		}
		// The connection ended: wait for the next one and send again.
		select {
		case <-conn.Done():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SendMessage sends an opaque MSG on channel ch and waits until the server
// has acknowledged it, across reconnects (see Request).
func (c *Client) SendMessage(ctx context.Context, ch uint32, payload []byte) error {
	_, err := c.Request(ctx, ccp.Msg, ch, payload)
	return err
}

// Join sends JOIN (see Conn.Join), across reconnects.
func (c *Client) Join(ctx context.Context, ch uint32, members []string, groupID string) ([]byte, error) {
	p, err := joinPayload(members, groupID)
	if err != nil {
		return nil, err
	}
	return c.Request(ctx, ccp.Join, ch, p)
}

// Leave sends LEAVE on channel ch, across reconnects.
func (c *Client) Leave(ctx context.Context, ch uint32) error {
	_, err := c.Request(ctx, ccp.Leave, ch, []byte("{}"))
	return err
}

// Typing sends TYPING on ch on the current connection (live: not retried
// on another connection).
func (c *Client) Typing(ctx context.Context, ch uint32) error {
	conn, err := c.WaitConnected(ctx)
	if err != nil {
		return err
	}
	return conn.Typing(ctx, ch)
}

// SetPresence sets the device's presence state; the Client sends it again
// after every reconnect (the server sets "online" on connect).
func (c *Client) SetPresence(ctx context.Context, state string) error {
	if _, err := presencePayload(state); err != nil {
		return err
	}
	c.mu.Lock()
	c.presence = state
	c.mu.Unlock()
	conn, err := c.WaitConnected(ctx)
	if err != nil {
		return err
	}
	return conn.SetPresence(ctx, state)
}

// withSessionCache returns cfg, or a copy of it with a TLS session cache
// when it has none: a Client's reconnects then resume TLS (RFC 8446 §2.2,
// PSK with a fresh (EC)DHE key exchange, so forward secrecy stays), which
// spares the server's certificate signature and the client's certificate
// verification. A server that cannot resume the session (another node, a
// restart) answers with a full handshake. The cache lives as long as the
// Client, in memory only.
func withSessionCache(cfg *tls.Config) *tls.Config {
	if cfg != nil && cfg.ClientSessionCache != nil {
		return cfg
	}
	if cfg == nil {
		cfg = &tls.Config{}
	} else {
		cfg = cfg.Clone()
	}
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	return cfg
}

// Package session runs one /connect stream: the handshake of §4 (with the
// admission decision of §4.9), then the session of §6: a reader loop that
// decodes and handles the client's frames in order, and one sender at a
// time that owns the write side, assigns server sequences and drains
// bounded queues (replies, live frames, inbox deliveries). The sender is a
// goroutine started when there is something to write and gone when the
// queues are empty (sender.go); the handshake and set-up run on a
// short-lived goroutine of their own (onFreshStack).
//
//	reader goroutine (the caller of Serve)      sender (on demand)
//	  ReadFrame ─► limiter ─► sequence rule        take queues ─► assign seqs
//	  ─► handler ─► reply via outbound ──────────►  ─► (v2: seal records) ─► write, flush
//	                                                ─► inbox read-ahead (redelivery)
package session

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/ledger"
	"github.com/commucat/commucat/internal/media"
	"github.com/commucat/commucat/internal/metrics"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/ratelimit"
	"github.com/commucat/commucat/internal/router"
	"github.com/commucat/commucat/internal/store"
)

// EndReason says why a connection ended; the transport maps it to a
// WebSocket close code (§3.5).
type EndReason int

const (
	EndNormal    EndReason = iota // client ended the stream, or a clean end
	EndShutdown                   // server shutting down (1001)
	EndDecode                     // fatal decode error or record error (1002)
	EndHandshake                  // handshake failure (1008)
	EndReplaced                   // Replaced (1008)
	EndRevoked                    // Device Revoked (1008)
	EndKeepalive                  // Keepalive Timeout (1008)
	EndInternal                   // Internal Error (1011)
	EndTransport                  // the transport failed (read/write error)
)

var endReasonNames = [...]string{"normal", "shutdown", "decode", "handshake", "replaced", "revoked", "keepalive", "internal", "transport"}

// String names the reason for logs.
func (r EndReason) String() string {
	if r >= 0 && int(r) < len(endReasonNames) {
		return endReasonNames[r]
	}
	return "EndReason(" + strconv.Itoa(int(r)) + ")"
}

// Transport is one /connect stream as the session sees it.
type Transport interface {
	// Read reads client bytes (the request body or WebSocket payloads).
	io.Reader
	// WriteChunks writes and flushes. Each chunk is one frame (v1 and
	// handshake) or one record (v2); a message-oriented transport sends
	// each chunk as one message, a byte stream concatenates them.
	WriteChunks(chunks [][]byte) error
	// MessageOriented reports whether chunks are separate messages.
	MessageOriented() bool
	// SetReadDeadline bounds the pending and future Reads (used for the
	// HTTP/1.1 liveness rule of §3.6).
	SetReadDeadline(t time.Time) error
	// Abort ends the stream at once, unblocking pending Reads and Writes;
	// a WebSocket is closed with the code for the reason (§3.5). It must be
	// safe to call more than once and after Serve returned.
	Abort(reason EndReason)
	// Finish ends the stream cleanly after the last frame was written
	// and flushed (an unsolicited fatal ERROR, §3.3 step 6, §3.4): it
	// unblocks the pending Read so Serve returns, and the response ends
	// normally (HTTP/2 END_STREAM, the last HTTP/1.1 chunk, a WebSocket
	// close with the reason's code). Safe to call more than once.
	Finish(reason EndReason)
	// Kind is "http2", "http1" or "websocket".
	Kind() string
}

// Config is the session-relevant configuration.
type Config struct {
	Domain         string
	Prologue       []byte
	Versions       []int
	Features       noiseconn.ServerFeatures
	Padding        noiseconn.Padding
	AutoApprove    bool
	MaxAutoDevices int
	// Keepalive is K of §3.6.
	Keepalive        time.Duration
	HandshakeTimeout time.Duration
	RelayTTL         time.Duration
	// MaxInboxEntries and MaxInboxBytes bound the inbox of a recipient that
	// is not connected to this node (limits.max_inbox_entries,
	// limits.max_inbox_bytes); 0: no bound.
	MaxInboxEntries int64
	MaxInboxBytes   int64
	PresenceTTL     time.Duration
	OpenChannels    bool
	Federation      bool
	FrameLimit      ratelimit.Config
	NodeID          string
}

// KeySource returns the non-expired Noise keys, newest first.
type KeySource func() []noiseconn.ServerKey

// Deps are the shared services a Manager uses.
type Deps struct {
	Store    store.Store
	Router   *router.Router
	Calls    *media.Manager
	Presence router.Presence
	Writer   *router.Writer
	Keys     KeySource
	CA       ed25519.PrivateKey
	Metrics  *metrics.Metrics
	Ledger   ledger.Ledger
	Logger   *slog.Logger
	Now      func() time.Time
	Rand     io.Reader

	// CallBus forwards call frames to their owner node (§9.4); nil on a
	// single node.
	CallBus *CallBus
}

// Manager runs the connections of one node.
type Manager struct {
	cfg   Config
	d     Deps
	caPub [32]byte
	hs    noiseconn.ServerConfig
	pol   admissionPolicy

	mu       sync.Mutex
	conns    map[*conn]struct{}
	draining bool
	// nextConn numbers the streams for the logs ("conn" on every line).
	nextConn atomic.Uint64
}

// NewManager returns a Manager.
func NewManager(cfg Config, d Deps) *Manager {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Rand == nil {
		d.Rand = rand.Reader
	}
	if d.Ledger == nil {
		d.Ledger = ledger.Null{}
	}
	if d.Calls == nil {
		r := d.Router
		d.Calls = media.NewManager(media.Config{
			Deliver: func(dev string, t ccp.FrameType, ch uint32, p []byte) { r.DeliverLive(dev, t, ch, p, false) },
			Metrics: d.Metrics, Ledger: d.Ledger, Logger: d.Logger, Now: d.Now,
		})
	}
	m := &Manager{cfg: cfg, d: d, conns: make(map[*conn]struct{})}
	m.caPub = identity.PublicKey32(d.CA)
	m.hs = noiseconn.ServerConfig{
		Domain:   cfg.Domain,
		Prologue: cfg.Prologue,
		Versions: cfg.Versions,
		Features: cfg.Features,
		Rand:     d.Rand,
	}
	m.pol = admissionPolicy{autoApprove: cfg.AutoApprove, maxAutoDevices: cfg.MaxAutoDevices, caPublic: m.caPub}
	return m
}

// Meta describes where a stream comes from.
type Meta struct {
	RemoteIP netip.Addr
	// HandshakeRTT, if set, receives the time from flushing the server
	// AUTH to receiving the client's AUTH (§8.4.8 transport health).
	HandshakeRTT func(time.Duration)
	// Liveness, if set, is fired by the transport when the peer failed
	// its liveness check (WebSocket, §3.6); the session then sends ERROR
	// Keepalive Timeout and ends.
	Liveness *Liveness
}

// Liveness carries a transport's "the peer stopped answering" to the
// session without a goroutine waiting for it: the session registers a
// callback (OnLost), the transport calls Lost. Either may come first; the
// callback runs once, at the later of the two.
type Liveness struct {
	mu   sync.Mutex
	lost bool
	fn   func()
}

// Lost reports that the peer failed its liveness check.
func (l *Liveness) Lost() {
	l.mu.Lock()
	if l.lost {
		l.mu.Unlock()
		return
	}
	l.lost = true
	fn := l.fn
	l.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// OnLost registers fn (once); it runs at once if Lost was already called.
func (l *Liveness) OnLost(fn func()) {
	l.mu.Lock()
	l.fn = fn
	lost := l.lost
	l.mu.Unlock()
	if lost {
		fn()
	}
}

// Active returns the number of established connections.
func (m *Manager) Active() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.conns)
}

// Drain sends every live connection ERROR Server Shutting Down and closes
// it (§6.13); new handshakes are refused from now on.
func (m *Manager) Drain() {
	m.mu.Lock()
	m.draining = true
	conns := make([]*conn, 0, len(m.conns))
	for c := range m.conns {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	for _, c := range conns {
		c.kickWith(titleShutdown, detailShutdown, EndShutdown)
	}
}

func (m *Manager) isDraining() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.draining
}

// randomID returns 64 lowercase hex characters from 32 random bytes (§1.2).
func randomID(r io.Reader) (string, error) {
	var b [32]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/commucat/commucat/internal/ratelimit"
)

// handshakeListener is a TLS listener that completes each handshake on a
// short-lived goroutine of its own before net/http sees the connection.
//
// Why: net/http runs the TLS handshake on the goroutine that then serves
// the connection for its whole life (for HTTP/2, the serve loop). A TLS
// 1.3 handshake with the X25519MLKEM768 key share needs a deep stack, and
// a goroutine's stack does not shrink until a garbage collection finds it
// mostly unused, so every idle connection kept a handshake-sized stack
// (memory per idle connection, issue 7). Here that stack belongs to a
// goroutine that exits after the handshake. net/http finds the handshake
// done (HandshakeContext returns at once) and reads the negotiated ALPN
// protocol as before.
//
// At most maxPendingHandshakes handshakes run at once; beyond that the
// accept loop waits (the kernel's backlog queues new connections), so a
// flood of half-open TLS connections costs bounded memory. One client (an
// IPv4 address or an IPv6 /64, as for the rate limits) may hold at most
// perIP of them (security.max_handshakes_per_ip): its further connections
// are closed at once, so that a few hosts holding TCP connections open
// without a TLS hello cannot fill the global bound. Peers inside
// server.trusted_proxies are exempt: behind a TCP proxy every client has
// the proxy's address. A handshake gets the
// given timeout, as net/http gave it (ReadHeaderTimeout). The listener
// owns its goroutines: Close stops the accept loop, aborts the handshakes
// in progress and waits for all of them.
type handshakeListener struct {
	inner   net.Listener
	conf    *tls.Config
	timeout time.Duration
	perIP   int
	trusted []netip.Prefix
	// observe, when set before the first Accept, is told how each TLS
	// handshake ended: "full", "resumed" or "failed" (not for handshakes
	// that Close aborts).
	observe func(result string)

	start sync.Once // the accept loop starts at the first Accept
	ready chan net.Conn
	sem   chan struct{}
	done  chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex
	pending map[net.Conn]string // handshakes in progress → client key
	byIP    map[string]int      // pending handshakes per ratelimit.ClientKey
	err     error               // why the accept loop stopped
	closed  bool
}

const maxPendingHandshakes = 4096

func newHandshakeListener(inner net.Listener, conf *tls.Config, timeout time.Duration, perIP int, trusted []netip.Prefix) *handshakeListener {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if perIP <= 0 {
		perIP = maxPendingHandshakes
	}
	l := &handshakeListener{
		inner: inner, conf: conf, timeout: timeout, perIP: perIP, trusted: trusted,
		byIP:    make(map[string]int),
		ready:   make(chan net.Conn),
		sem:     make(chan struct{}, maxPendingHandshakes),
		done:    make(chan struct{}),
		pending: make(map[net.Conn]string),
	}
	return l
}

func (l *handshakeListener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		select {
		case l.sem <- struct{}{}:
		case <-l.done:
			return
		}
		c, err := l.inner.Accept()
		if err != nil {
			<-l.sem
			var t interface{ Temporary() bool }
			if errors.As(err, &t) && t.Temporary() {
				// As net/http does for temporary errors (EMFILE...).
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
					continue
				case <-l.done:
					return
				}
			}
			l.mu.Lock()
			if l.err == nil {
				l.err = err
			}
			l.mu.Unlock()
			l.shut()
			return
		}
		delay = 0
		ok, closed := l.track(c)
		if !ok {
			<-l.sem
			c.Close()
			if closed {
				return
			}
			continue
		}
		l.wg.Add(1)
		go l.handshake(c)
	}
}

// track registers a connection whose handshake starts; false when the
// listener is closed (closed true) or its IP is at its bound.
func (l *handshakeListener) track(c net.Conn) (ok, closed bool) {
	key := l.clientKey(c)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false, true
	}
	if key != "" {
		if l.byIP[key] >= l.perIP {
			return false, false
		}
		l.byIP[key]++
	}
	l.pending[c] = key
	return true, false
}

func (l *handshakeListener) untrack(c net.Conn) {
	l.mu.Lock()
	if key := l.pending[c]; key != "" {
		if l.byIP[key]--; l.byIP[key] <= 0 {
			delete(l.byIP, key)
		}
	}
	delete(l.pending, c)
	l.mu.Unlock()
}

// clientKey is the per-client bound's key of c (ratelimit.ClientKey), ""
// when exempt (a trusted proxy) or unknown.
func (l *handshakeListener) clientKey(c net.Conn) string {
	ip := ratelimit.ParsePeer(c.RemoteAddr().String())
	if ratelimit.InTrusted(ip, l.trusted) {
		return ""
	}
	return ratelimit.ClientKey(ip)
}

func (l *handshakeListener) handshake(raw net.Conn) {
	defer l.wg.Done()
	defer func() { <-l.sem }()
	tc := tls.Server(raw, l.conf)
	_ = raw.SetDeadline(time.Now().Add(l.timeout))
	err := tc.HandshakeContext(context.Background()) // bounded by the deadline; Close closes raw
	l.untrack(raw)
	if l.observe != nil {
		switch {
		case err != nil:
			select {
			case <-l.done: // aborted by Close, not the peer's failure
			default:
				l.observe("failed")
			}
		case tc.ConnectionState().DidResume:
			l.observe("resumed")
		default:
			l.observe("full")
		}
	}
	if err != nil {
		raw.Close()
		return
	}
	_ = raw.SetDeadline(time.Time{})
	select {
	case l.ready <- tc:
	case <-l.done:
		tc.Close()
	}
}

// Accept returns the next connection whose TLS handshake is complete.
func (l *handshakeListener) Accept() (net.Conn, error) {
	l.start.Do(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if !l.closed {
			l.wg.Add(1)
			go l.acceptLoop()
		}
	})
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil && !errors.Is(l.err, net.ErrClosed) {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

// shut closes done once and aborts the handshakes in progress.
func (l *handshakeListener) shut() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.done) // first: the aborted handshakes below see it (observe)
	for c := range l.pending {
		c.Close()
	}
	l.mu.Unlock()
}

// Close stops accepting, aborts the handshakes in progress and waits for
// the listener's goroutines.
func (l *handshakeListener) Close() error {
	err := l.inner.Close()
	l.shut()
	l.wg.Wait()
	return err
}

func (l *handshakeListener) Addr() net.Addr { return l.inner.Addr() }

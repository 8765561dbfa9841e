package server_test

// §14 items 11-13: keepalive and liveness (§3.6), with K =
// server.connection_keepalive at its minimum of 5 s.
//
// Items 11 and 13 need to see (and not answer) HTTP/2 PING frames, which
// net/http hides, so they use h2Raw: a minimal HTTP/2 client written
// directly on TLS (golang.org/x/net/http2 is not a dependency of the
// module, so the framing is done by hand: RFC 9113 frame headers and an
// HPACK block of literal fields without Huffman coding).

import (
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/servertest"
)

const keepaliveK = 5 * time.Second

func withKeepalive(c *config.Config) { c.Server.ConnectionKeepalive = keepaliveK }

// slackK bounds, in multiples of K, when a periodic keepalive must have
// arrived in these tests (the spec's period is K; scheduling on a loaded
// machine adds delay, and a timing test must not fail on load).
const slackK = 3

// HTTP/2 frame types and flags used by h2Raw (RFC 9113 §6).
const (
	h2Data         = 0x0
	h2Headers      = 0x1
	h2RstStream    = 0x3
	h2Settings     = 0x4
	h2Ping         = 0x6
	h2GoAway       = 0x7
	h2WindowUpdate = 0x8

	h2FlagAck        = 0x1
	h2FlagEndStream  = 0x1
	h2FlagEndHeaders = 0x4
	h2FlagPadded     = 0x8
)

// h2Raw is one POST /connect stream (stream 1) on a hand-driven HTTP/2
// connection. It acknowledges the server's SETTINGS and answers PINGs only
// when answerPings is set; it never sends WINDOW_UPDATE after the start
// (it opens huge windows instead), so once the test stops writing it sends
// nothing at all.
type h2Raw struct {
	conn        *tls.Conn
	wmu         sync.Mutex
	pw          *io.PipeWriter
	pr          *io.PipeReader
	answerPings bool
	pings       chan time.Time
	settings    chan []byte // the payload of each SETTINGS from the server (not ACKs)
	headers     chan []byte // the HPACK block of each HEADERS on stream 1
	goaway      atomic.Bool
	closed      chan struct{}
	lastSent    atomic.Int64 // unix nanoseconds of the last frame written
}

func hpackString(b []byte, s string) []byte {
	n := len(s)
	if n < 127 {
		b = append(b, byte(n))
	} else {
		b = append(b, 127)
		n -= 127
		for n >= 128 {
			b = append(b, byte(n%128+128))
			n /= 128
		}
		b = append(b, byte(n))
	}
	return append(b, s...)
}

func dialH2Raw(t *testing.T, s *servertest.Server, answerPings bool) *h2Raw {
	t.Helper()
	cfg := s.TLS().Clone()
	cfg.NextProtos = []string{"h2"}
	host := strings.TrimPrefix(s.URL, "https://")
	conn, err := tls.Dial("tcp", host, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q", p)
	}
	pr, pw := io.Pipe()
	h := &h2Raw{conn: conn, pr: pr, pw: pw, answerPings: answerPings, pings: make(chan time.Time, 16), settings: make(chan []byte, 4), headers: make(chan []byte, 4), closed: make(chan struct{})}
	t.Cleanup(func() { conn.Close(); pr.Close() })

	var first []byte
	first = append(first, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"...)
	// SETTINGS: INITIAL_WINDOW_SIZE 2^30.
	set := binary.BigEndian.AppendUint16(nil, 0x4)
	set = binary.BigEndian.AppendUint32(set, 1<<30)
	first = appendH2Frame(first, h2Settings, 0, 0, set)
	first = appendH2Frame(first, h2WindowUpdate, 0, 0, binary.BigEndian.AppendUint32(nil, 1<<30))
	var hb []byte
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", host}, {":path", "/connect"}, {"content-type", "application/octet-stream"}} {
		hb = append(hb, 0x00) // literal header field without indexing, new name
		hb = hpackString(hb, kv[0])
		hb = hpackString(hb, kv[1])
	}
	first = appendH2Frame(first, h2Headers, h2FlagEndHeaders, 1, hb)
	if err := h.writeRaw(first); err != nil {
		t.Fatal(err)
	}
	go h.readLoop()
	return h
}

func appendH2Frame(b []byte, typ, flags byte, stream uint32, payload []byte) []byte {
	n := len(payload)
	b = append(b, byte(n>>16), byte(n>>8), byte(n), typ, flags)
	b = binary.BigEndian.AppendUint32(b, stream&0x7fffffff)
	return append(b, payload...)
}

func (h *h2Raw) writeRaw(b []byte) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	_, err := h.conn.Write(b)
	h.lastSent.Store(time.Now().UnixNano())
	return err
}

// sendData writes stream bytes as DATA frames on stream 1.
func (h *h2Raw) sendData(p []byte) error {
	var b []byte
	for len(p) > 0 {
		n := min(len(p), 16384)
		b = appendH2Frame(b, h2Data, 0, 1, p[:n])
		p = p[n:]
	}
	return h.writeRaw(b)
}

func (h *h2Raw) readLoop() {
	defer close(h.closed)
	var hdr [9]byte
	for {
		if _, err := io.ReadFull(h.conn, hdr[:]); err != nil {
			h.pw.CloseWithError(err)
			return
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		typ, flags := hdr[3], hdr[4]
		stream := binary.BigEndian.Uint32(hdr[5:]) & 0x7fffffff
		payload := make([]byte, n)
		if _, err := io.ReadFull(h.conn, payload); err != nil {
			h.pw.CloseWithError(err)
			return
		}
		switch typ {
		case h2Data:
			if stream != 1 {
				continue
			}
			data := payload
			if flags&h2FlagPadded != 0 && len(data) > 0 {
				pad := int(data[0])
				data = data[1 : len(data)-pad]
			}
			if len(data) > 0 {
				if _, err := h.pw.Write(data); err != nil {
					return
				}
			}
			if flags&h2FlagEndStream != 0 {
				h.pw.Close()
			}
		case h2Headers:
			if stream == 1 {
				block := payload
				if flags&h2FlagPadded != 0 && len(block) > 0 {
					block = block[1 : len(block)-int(block[0])]
				}
				if flags&0x20 != 0 && len(block) >= 5 { // PRIORITY
					block = block[5:]
				}
				select {
				case h.headers <- block:
				default:
				}
			}
			if stream == 1 && flags&h2FlagEndStream != 0 {
				h.pw.Close()
			}
		case h2RstStream:
			if stream == 1 {
				h.pw.CloseWithError(errors.New("RST_STREAM"))
			}
		case h2Settings:
			if flags&h2FlagAck == 0 {
				select {
				case h.settings <- payload:
				default:
				}
				_ = h.writeRaw(appendH2Frame(nil, h2Settings, h2FlagAck, 0, nil))
			}
		case h2Ping:
			if flags&h2FlagAck != 0 {
				continue
			}
			select {
			case h.pings <- time.Now():
			default:
			}
			if h.answerPings {
				_ = h.writeRaw(appendH2Frame(nil, h2Ping, h2FlagAck, 0, payload))
			}
		case h2GoAway:
			h.goaway.Store(true)
		}
	}
}

// rawOverH2 wraps an h2Raw stream into a rawConn.
func rawOverH2(t *testing.T, s *servertest.Server, h *h2Raw) *rawConn {
	r := &rawConn{
		t:      t,
		write:  h.sendData,
		closeW: func() error { return h.writeRaw(appendH2Frame(nil, h2Data, h2FlagEndStream, 1, nil)) },
		abort:  func() { h.conn.Close() },
	}
	r.info = fetchServerInfo(t, s)
	r.start(h.pr)
	t.Cleanup(r.abort)
	return r
}

// isKeepaliveAck reports whether f is a server keepalive ACK (§3.6).
func isKeepaliveAck(f ccp.Frame) bool {
	if f.Type != ccp.Ack {
		return false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(f.Payload, &m) != nil {
		return false
	}
	_, ok := m["keepalive"]
	return ok
}

// Item 11: An idle v1 connection on HTTP/2 receives an HTTP/2 PING within
// 2×K seconds and never receives an ACK frame with a `keepalive` member.
func TestItem11V1IdleGetsPingNoKeepaliveAck(t *testing.T) {
	t.Parallel()
	s := startServer(t, withKeepalive)
	h := dialH2Raw(t, s, true)
	r := rawOverH2(t, s, h)
	res := r.connect(r.clientConfig(newIdentity(t, "idle"), uniqueHandle("idle"), []int{1}, nil))
	if res.sess.Version != 1 {
		t.Fatalf("version %d", res.sess.Version)
	}
	if res.ackJSON.KeepaliveInterval != int(keepaliveK/time.Second) {
		t.Fatalf("keepalive_interval %d", res.ackJSON.KeepaliveInterval)
	}
	// Two PINGs in a row (the first one answered), each within 2K of the
	// client's last frame: the connection stays idle for about 2K in all,
	// during which a v2 peer would have received keepalive ACKs.
	//
	// The server sends its PING K after the last frame; the test allows 3K
	// so that a loaded CI machine (race detector, packages in parallel)
	// cannot fail it, which still tells a PING from its absence: without
	// one the connection would just stay silent.
	for i := 0; i < 2; i++ {
		from := time.Unix(0, h.lastSent.Load())
		select {
		case at := <-h.pings:
			if d := at.Sub(from); d > slackK*keepaliveK {
				t.Fatalf("PING %d came %v after the client's last frame, want within %dK", i+1, d, slackK)
			}
		case <-time.After(time.Until(from.Add(slackK * keepaliveK))):
			t.Fatalf("no HTTP/2 PING within %dK (PING %d)", slackK, i+1)
		case <-h.closed:
			t.Fatal("the connection closed")
		}
	}
	for {
		ev, ok := r.event(0)
		if !ok {
			break
		}
		if ev.err != nil {
			t.Fatalf("stream: %v", ev.err)
		}
		if isKeepaliveAck(ev.f) {
			t.Fatalf("v1 connection received a keepalive ACK %s", ev.f.Payload)
		}
	}
}

// Item 12: A v2 connection receives ACK `{"keepalive":<unix time>}` on
// channel 0 every K seconds.
func TestItem12V2KeepaliveAck(t *testing.T) {
	t.Parallel()
	s := startServer(t, withKeepalive)
	r := openRawHTTP(t, s, true)
	res := r.connect(r.clientConfig(newIdentity(t, "v2"), uniqueHandle("v2"), []int{1, 2}, nil))
	if res.sess.Version != 2 {
		t.Fatalf("version %d", res.sess.Version)
	}
	var at []time.Time
	last := uint32(2)
	for len(at) < 2 {
		f := r.frame(slackK * keepaliveK)
		if !isKeepaliveAck(f) {
			t.Fatalf("unexpected frame %v %s", f, f.Payload)
		}
		now := time.Now()
		if f.Channel != 0 || f.Sequence <= last {
			t.Fatalf("keepalive ACK on channel %d sequence %d (previous %d)", f.Channel, f.Sequence, last)
		}
		last = f.Sequence
		m := jsonObject(t, f.Payload)
		if len(m) != 1 {
			t.Fatalf("keepalive payload %s", f.Payload)
		}
		ts, err := m["keepalive"].(json.Number).Int64()
		if err != nil || ts < now.Unix()-5 || ts > now.Unix()+5 {
			t.Fatalf("keepalive %s is not the current unix time (%d)", f.Payload, now.Unix())
		}
		at = append(at, now)
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < keepaliveK/2 || gap > slackK*keepaliveK {
			t.Fatalf("keepalive ACKs %v apart, want about K = %v", gap, keepaliveK)
		}
	}
}

// Item 13: A peer that answers no PING and sends nothing is disconnected
// within 4×K seconds, and its co-members see it go offline.
func TestItem13SilentPeerDisconnected(t *testing.T) {
	t.Parallel()
	s := startServer(t, withKeepalive)
	h := dialH2Raw(t, s, false)
	r := rawOverH2(t, s, h)
	idb := newIdentity(t, "silent")
	r.connect(r.clientConfig(idb, uniqueHandle("silent"), []int{1}, nil))

	a := dial(t, s, newIdentity(t, "watcher"), uniqueHandle("watcher"))
	if _, err := a.Join(ctxWait(t), 5, []string{idb.DeviceID}, ""); err != nil {
		t.Fatal(err)
	}
	// From here on the silent peer writes nothing.
	silentSince := time.Unix(0, h.lastSent.Load())
	select {
	case <-h.closed:
	case <-time.After(time.Until(silentSince.Add(4 * keepaliveK))):
		t.Fatalf("the silent peer was not disconnected within 4K (PINGs seen: %d)", len(h.pings))
	}
	if d := time.Since(silentSince); d > 4*keepaliveK {
		t.Fatalf("disconnected %v after the peer fell silent, want within 4K", d)
	}
	f := recvUntil(t, a, time.Until(silentSince.Add(4*keepaliveK+2*time.Second)), "offline PRESENCE", func(f ccp.Frame) bool {
		if f.Type != ccp.Presence {
			return false
		}
		e, st := presenceOf(t, f)
		return e == idb.DeviceID && st == "offline"
	})
	if f.Channel != 0 {
		t.Fatalf("PRESENCE on channel %d", f.Channel)
	}
}

// TestHTTP2Settings reads the server's SETTINGS (§3.8): at most
// server.max_concurrent_streams streams and a 16 384-byte max frame size.
// The response HEADERS block starts with an HPACK dynamic table size
// update to 1 byte: the server indexes no response header (a /connect
// stream carries one header block; the table would only hold memory on
// every idle connection). A /connect stream works on such a connection.
func TestHTTP2Settings(t *testing.T) {
	s := servertest.Start(t, func(c *config.Config) { c.Server.MaxConcurrentStreams = 77 })
	h := dialH2Raw(t, s, true)
	var payload []byte
	select {
	case payload = <-h.settings:
	case <-time.After(10 * time.Second):
		t.Fatal("no SETTINGS from the server")
	}
	if len(payload)%6 != 0 {
		t.Fatalf("SETTINGS payload of %d bytes", len(payload))
	}
	got := map[uint16]uint32{}
	for p := payload; len(p) >= 6; p = p[6:] {
		got[binary.BigEndian.Uint16(p)] = binary.BigEndian.Uint32(p[2:])
	}
	for id, want := range map[uint16]uint32{
		0x3: 77,    // SETTINGS_MAX_CONCURRENT_STREAMS
		0x5: 16384, // SETTINGS_MAX_FRAME_SIZE
	} {
		if v, ok := got[id]; !ok || v != want {
			t.Errorf("setting 0x%x = %d (sent: %v), want %d", id, v, ok, want)
		}
	}
	select {
	case block := <-h.headers:
		// RFC 7541 §6.3: 001xxxxx, a 5-bit prefix integer; 0x21 is size 1.
		if len(block) == 0 || block[0] != 0x21 {
			t.Errorf("response header block starts % x, want a table size update to 1 (21)", block[:min(len(block), 4)])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no response HEADERS")
	}
	r := rawOverH2(t, s, h)
	res := r.connect(r.clientConfig(newIdentity(t, "settings"), uniqueHandle("settings"), []int{1, 2}, nil))
	if res.sess.Version != 2 {
		t.Fatalf("version %d", res.sess.Version)
	}
}

package session

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/metrics"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/ratelimit"
	"github.com/commucat/commucat/internal/router"
	"github.com/commucat/commucat/internal/store"
	"github.com/commucat/commucat/internal/store/sqlite"
	"github.com/commucat/commucat/internal/testenv"
)

// pipeTransport is an in-memory Transport: the test writes client bytes
// into c2s and reads server bytes from s2c.
type pipeTransport struct {
	in      *io.PipeReader
	out     *io.PipeWriter
	mu      sync.Mutex
	aborted bool
	reason  EndReason
}

func (p *pipeTransport) Read(b []byte) (int, error) { return p.in.Read(b) }
func (p *pipeTransport) WriteChunks(chunks [][]byte) error {
	for _, c := range chunks {
		if _, err := p.out.Write(c); err != nil {
			return err
		}
	}
	return nil
}
func (p *pipeTransport) MessageOriented() bool           { return false }
func (p *pipeTransport) SetReadDeadline(time.Time) error { return nil }
func (p *pipeTransport) Kind() string                    { return "http2" }
func (p *pipeTransport) Abort(r EndReason) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.aborted {
		return
	}
	p.aborted, p.reason = true, r
	p.in.CloseWithError(errors.New("aborted"))
	p.out.CloseWithError(errors.New("aborted"))
}

// Finish ends the server side cleanly: the test's reader sees io.EOF.
func (p *pipeTransport) Finish(r EndReason) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.aborted {
		return
	}
	p.aborted, p.reason = true, r
	p.in.CloseWithError(errors.New("finished"))
	p.out.Close()
}

type testNode struct {
	t       *testing.T
	m       *Manager
	st      store.Store
	reg     *router.Registry
	keys    []noiseconn.ServerKey
	ca      ed25519.PrivateKey
	metrics *metrics.Metrics
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// logs receives every log line of the node at debug level.
	logs *testenv.Buffer
}

func newTestNode(t *testing.T, mutate func(*Config)) *testNode {
	t.Helper()
	return newTestNodeWith(t, mutate, nil)
}

// newTestNodeWith is newTestNode whose inbox Writer uses writerStore(st)
// instead of the node's store (nil: st).
func newTestNodeWith(t *testing.T, mutate func(*Config), writerStore func(store.Store) store.Store) *testNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := sqlite.Open(ctx, t.TempDir()+"/db.sqlite")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var priv [32]byte
	copy(priv[:], bytes.Repeat([]byte{7}, 32))
	pub, _ := identity.X25519Public(priv)
	now := time.Now()
	key := noiseconn.ServerKey{Version: 1, Private: priv, Public: pub, ValidAfter: now, RotatesAt: now.Add(time.Hour), ExpiresAt: now.Add(2 * time.Hour)}
	ca, _ := identity.DeviceCA(bytes.Repeat([]byte{1}, 32))
	reg := router.NewRegistry()
	var ws store.Store = st
	if writerStore != nil {
		ws = writerStore(st)
	}
	mt := metrics.New(prometheus.NewRegistry())
	w := router.NewWriter(router.WriterConfig{Store: ws, Registry: reg,
		OnCommit:     func(n int) { mt.RelayEnqueued.Add(float64(n)) },
		OnEarlyAcked: func(n int) { mt.RelayEarlyAcked.Add(float64(n)) },
	})
	n := &testNode{t: t, st: st, reg: reg, keys: []noiseconn.ServerKey{key}, ca: ca, metrics: mt, cancel: cancel}
	n.wg.Add(1)
	go func() { defer n.wg.Done(); w.Run(ctx) }()
	cfg := Config{
		Domain: "commucat.local", Prologue: []byte("commucat"), Versions: []int{1, 2},
		Features: noiseconn.ServerFeatures{V2: true}, AutoApprove: true, MaxAutoDevices: 0,
		Keepalive: 30 * time.Second, HandshakeTimeout: 10 * time.Second, RelayTTL: 24 * time.Hour,
		PresenceTTL: 60 * time.Second, FrameLimit: ratelimit.Config{Burst: 100000, Window: time.Second}, NodeID: "test",
	}
	if mutate != nil {
		mutate(&cfg)
	}
	n.logs = &testenv.Buffer{}
	var sink io.Writer = n.logs
	if os.Getenv("SESSION_TEST_LOG") != "" {
		sink = io.MultiWriter(n.logs, os.Stderr)
	}
	logger := slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n.m = NewManager(cfg, Deps{
		Store: st, Router: &router.Router{Registry: reg, Log: logger}, Presence: router.NewLocalPresence(), Writer: w,
		Keys: func() []noiseconn.ServerKey { return n.keys }, CA: ca, Metrics: mt, Logger: logger,
	})
	t.Cleanup(func() {
		n.cancel()
		n.wg.Wait()
		st.Close()
	})
	return n
}

// testClient is a minimal CCP-1 client over a pipeTransport.
type testClient struct {
	t      *testing.T
	n      *testNode
	tr     *pipeTransport
	c2s    *io.PipeWriter
	s2c    *io.PipeReader
	rd     *ccp.Reader
	seq    uint32
	sess   *noiseconn.Session
	ack    *noiseconn.HandshakeAck
	sealer *noiseconn.Sealer
	done   chan EndReason
	device string
	frames chan ccp.Frame
	errc   chan error
}

type clientOpts struct {
	device   string
	handle   string
	versions []int
	caps     []string
	seed     byte
}

func (n *testNode) dial(o clientOpts) *testClient {
	t := n.t
	t.Helper()
	c, err := n.tryDial(o)
	if err != nil {
		t.Fatalf("dial %s: %v", o.device, err)
	}
	return c
}

func (n *testNode) start(o clientOpts) (*testClient, *noiseconn.ClientHandshake, []byte) {
	t := n.t
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	tr := &pipeTransport{in: inR, out: outW}
	c := &testClient{t: t, n: n, tr: tr, c2s: inW, s2c: outR, rd: ccp.NewReader(outR, ccp.V1), done: make(chan EndReason, 1), device: o.device}
	go func() { c.done <- n.m.Serve(context.Background(), tr, Meta{}) }()
	if o.seed == 0 {
		o.seed = byte(len(o.device)) + o.device[len(o.device)-1]
	}
	if o.versions == nil {
		o.versions = []int{1, 2}
	}
	dev, _ := identity.FromSeed(bytes.Repeat([]byte{o.seed}, 32))
	var static [32]byte
	copy(static[:], bytes.Repeat([]byte{o.seed + 1}, 32))
	handle := o.handle
	if handle == "" {
		handle = "user-" + o.device
	}
	ch, hello, err := noiseconn.NewClientHandshake(noiseconn.ClientConfig{
		Pattern: noiseconn.PatternXK, DeviceID: o.device, DeviceKey: dev, StaticKey: static,
		ServerStatic: n.keys[0].Public, Domain: "commucat.local", Prologue: []byte("commucat"),
		Versions: o.versions, Capabilities: o.caps, User: &noiseconn.UserHint{Handle: &handle},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, ch, hello
}

func (n *testNode) tryDial(o clientOpts) (*testClient, error) {
	c, ch, hello := n.start(o)
	c.writeFrame(ccp.Hello, 0, 1, hello)
	f, err := c.rd.ReadFrame()
	if err != nil {
		return nil, err
	}
	if f.Type == ccp.Error {
		return nil, errors.New(string(f.Payload))
	}
	reply, err := ch.ReadAuth(f.Payload)
	if err != nil {
		return nil, err
	}
	c.writeFrame(ccp.Auth, 0, 2, reply)
	c.seq = 2
	c.sess = ch.Result()
	f, err = c.rd.ReadFrame()
	if err != nil {
		return nil, err
	}
	if f.Type == ccp.Error {
		return nil, errors.New(string(f.Payload))
	}
	if f.Type != ccp.Ack || f.Sequence != 2 {
		return nil, errors.New("expected handshake ACK")
	}
	if c.ack, err = noiseconn.ParseHandshakeAck(f.Payload); err != nil {
		return nil, err
	}
	if c.sess.Version == 2 {
		c.sealer = noiseconn.NewSealer(c.sess.SendKey, c.sess.SendCounter, noiseconn.PaddingNone)
		rest := bytes.Clone(c.rd.Buffered())
		op := noiseconn.NewOpener(c.sess.RecvKey, c.sess.RecvCounter)
		c.rd = ccp.NewReader(noiseconn.NewRecordReader(io.MultiReader(bytes.NewReader(rest), c.s2c), op), ccp.V2)
	}
	c.frames = make(chan ccp.Frame, 4096)
	c.errc = make(chan error, 1)
	go func() {
		for {
			f, err := c.rd.ReadFrame()
			if err != nil {
				c.errc <- err
				close(c.frames)
				return
			}
			f.Payload = bytes.Clone(f.Payload)
			c.frames <- f
		}
	}()
	return c, nil
}

func (c *testClient) writeRaw(b []byte) {
	if c.sealer != nil && c.sess != nil && c.frames != nil {
		rec, err := c.sealer.AppendRecords(nil, b)
		if err != nil {
			c.t.Fatal(err)
		}
		b = rec
	}
	if _, err := c.c2s.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *testClient) writeFrame(t ccp.FrameType, ch, seq uint32, payload []byte) {
	b, err := ccp.AppendFrame(nil, ccp.Frame{Type: t, Channel: ch, Sequence: seq, Payload: payload})
	if err != nil {
		c.t.Fatal(err)
	}
	c.writeRaw(b)
}

// send writes a frame with the next client sequence and returns it.
func (c *testClient) send(t ccp.FrameType, ch uint32, payload string) uint32 {
	c.seq++
	c.writeFrame(t, ch, c.seq, []byte(payload))
	return c.seq
}

// next returns the next frame, skipping server keepalive ACKs.
func (c *testClient) next() ccp.Frame {
	c.t.Helper()
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				c.t.Fatalf("%s: stream ended: %v", c.device, <-c.errc)
			}
			if f.Type == ccp.Ack && bytes.HasPrefix(f.Payload, []byte(`{"keepalive"`)) {
				continue
			}
			return f
		case <-time.After(5 * time.Second):
			c.t.Fatalf("%s: no frame within 5 s", c.device)
		}
	}
}

// nextOf returns the next frame of type t, failing on anything else.
func (c *testClient) expect(t ccp.FrameType) ccp.Frame {
	c.t.Helper()
	f := c.next()
	if f.Type != t {
		c.t.Fatalf("%s: got %v %s, want %v", c.device, f, f.Payload, t)
	}
	return f
}

// expectAfterPresence returns the next frame of type t, skipping PRESENCE
// frames before it: a device's presence snapshot (§6.8) is queued after its
// handshake ACK, so when a test JOINs the two devices right after they
// connected, the snapshot may or may not already include the other one.
func (c *testClient) expectAfterPresence(t ccp.FrameType) ccp.Frame {
	c.t.Helper()
	for {
		f := c.next()
		if f.Type == ccp.Presence && t != ccp.Presence {
			continue
		}
		if f.Type != t {
			c.t.Fatalf("%s: got %v %s, want %v", c.device, f, f.Payload, t)
		}
		return f
	}
}

// none checks that no frame arrives within d.
func (c *testClient) none(d time.Duration) {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if ok {
			c.t.Fatalf("%s: unexpected frame %v %s", c.device, f, f.Payload)
		}
	case <-time.After(d):
	}
}

func (c *testClient) request(t ccp.FrameType, ch uint32, payload string) (uint32, map[string]any) {
	c.t.Helper()
	seq := c.send(t, ch, payload)
	f := c.next()
	var m map[string]any
	if err := json.Unmarshal(f.Payload, &m); err != nil {
		c.t.Fatalf("reply %s: %v", f.Payload, err)
	}
	if f.Type == ccp.Error {
		return seq, m
	}
	if f.Type != ccp.Ack || m["ack"] != float64(seq) || f.Channel != ch {
		c.t.Fatalf("%s: reply to seq %d: %v %s", c.device, seq, f, f.Payload)
	}
	return seq, m
}

func (c *testClient) mustOK(t ccp.FrameType, ch uint32, payload string) map[string]any {
	c.t.Helper()
	_, m := c.request(t, ch, payload)
	if _, isErr := m["title"]; isErr {
		c.t.Fatalf("%s: %v on ch %d failed: %v", c.device, t, ch, m)
	}
	return m
}

func (c *testClient) mustErr(t ccp.FrameType, ch uint32, payload, title string) map[string]any {
	c.t.Helper()
	_, m := c.request(t, ch, payload)
	if m["title"] != title {
		c.t.Fatalf("%s: %v on ch %d: got %v, want %s", c.device, t, ch, m, title)
	}
	return m
}

func (c *testClient) close() EndReason {
	c.c2s.Close()
	select {
	case r := <-c.done:
		return r
	case <-time.After(5 * time.Second):
		c.t.Fatalf("%s: server did not end the stream", c.device)
	}
	return 0
}

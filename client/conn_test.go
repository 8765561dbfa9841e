package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/noiseconn"
)

func newTestIdentity(t testing.TB, deviceID string) *Identity {
	t.Helper()
	id, err := NewIdentity(deviceID, nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dialTest(t testing.TB, o Options) *Conn {
	t.Helper()
	c, err := Dial(testCtx(t), o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.CloseAbruptly() })
	return c
}

// recvTimeout is Recv with a deadline.
func recvTimeout(t testing.TB, c *Conn, d time.Duration) (ccp.Frame, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.Recv(ctx)
}

func mustRecv(t testing.TB, c *Conn) ccp.Frame {
	t.Helper()
	f, err := recvTimeout(t, c, 10*time.Second)
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return f
}

var transports = []Transport{HTTP2, HTTP1, WebSocket}

var wantProto = map[Transport]string{HTTP2: "HTTP/2.0", HTTP1: "HTTP/1.1", WebSocket: "websocket"}

// TestDialMatrix runs the handshake and a frame exchange for every
// transport, pattern and version, with and without PQ.
func TestDialMatrix(t *testing.T) {
	s := newTestServer(t)
	modes := []struct {
		name     string
		versions []int
		pq       bool
		want     int
	}{
		{"v1", []int{1}, false, 1},
		{"v2", nil, false, 2},
		{"v2-pq", []int{1, 2}, true, 2},
	}
	for _, tr := range transports {
		for _, pattern := range []string{PatternXK, PatternIK} {
			for _, m := range modes {
				t.Run(fmt.Sprintf("%v/%s/%s", tr, pattern, m.name), func(t *testing.T) {
					id := newTestIdentity(t, "dev-"+strings.ReplaceAll(t.Name(), "/", "-"))
					o := s.options(id, tr)
					o.Pattern, o.Versions, o.PQ = pattern, m.versions, m.pq
					c := dialTest(t, o)
					sc := s.nextConn(t)
					if c.Version() != m.want || sc.version != m.want {
						t.Fatalf("version client %d server %d, want %d", c.Version(), sc.version, m.want)
					}
					if c.PQ() != m.pq || sc.pq != m.pq {
						t.Fatalf("pq client %v server %v, want %v", c.PQ(), sc.pq, m.pq)
					}
					if sc.pattern != pattern {
						t.Fatalf("server saw pattern %q", sc.pattern)
					}
					if sc.proto != wantProto[tr] || !strings.HasPrefix(c.Proto(), wantProto[tr]) {
						t.Fatalf("carried over %q (client says %q), want %q", sc.proto, c.Proto(), wantProto[tr])
					}
					for _, cp := range []string{CapNoise, CapPresence, CapAck} {
						if !c.HasCapability(cp) {
							t.Errorf("capability %s not accepted: %v", cp, c.Accepted())
						}
					}
					if c.HasCapability(CapV2) != (m.want == 2) || c.HasCapability(CapPQ) != m.pq {
						t.Errorf("accepted %v", c.Accepted())
					}
					if c.Session() != testSession || c.UserID() != testUserID || c.Ack().Handshake != "ok" {
						t.Errorf("ACK %+v", c.Ack())
					}
					exchange(t, c, sc)
					if m.want == 2 {
						// The server decrypted our records, starting at
						// counter 0 (XK) or 1 (IK: the confirm used 0).
						wantFirst := uint64(0)
						if pattern == PatternIK {
							wantFirst = 1
						}
						if sc.firstRecvCounter != wantFirst {
							t.Errorf("first client record counter %d, want %d", sc.firstRecvCounter, wantFirst)
						}
						if got := uint64(sc.recvCounter.Load()); got <= wantFirst {
							t.Errorf("server opened no client record (counter %d)", got)
						}
					}
					if err := c.Close(); err != nil {
						t.Fatalf("Close: %v", err)
					}
					if err := sc.waitEnded(t); err != io.EOF {
						t.Fatalf("server read side ended with %v, want EOF (request body ended cleanly)", err)
					}
					if !errors.Is(c.Err(), ErrClosed) {
						t.Fatalf("Err after Close = %v", c.Err())
					}
					if _, err := c.Send(testCtx(t), ccp.Msg, 7, nil); !errors.Is(err, ErrClosed) {
						t.Fatalf("Send after Close: %v", err)
					}
				})
			}
		}
	}
}

// exchange sends frames both ways, including a large one that spans
// several records and WebSocket messages.
func exchange(t *testing.T, c *Conn, sc *serverConn) {
	t.Helper()
	ctx := testCtx(t)
	resp, err := c.Request(ctx, ccp.Msg, 7, []byte("hello"))
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	if n, ok := AckNumber(resp); !ok || n != 3 {
		t.Fatalf("ACK %s, want ack 3 (first sequence after the handshake)", resp)
	}
	if f := sc.nextFrame(t); f.Type != ccp.Msg || f.Channel != 7 || f.Sequence != 3 || string(f.Payload) != "hello" {
		t.Fatalf("server got %v %q", f, f.Payload)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 100<<10/16+7) // > one record
	if err := c.SendMessage(ctx, 8, big); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	if f := sc.nextFrame(t); f.Sequence != 4 || !bytes.Equal(f.Payload, big) {
		t.Fatalf("server got %v (%d bytes)", f, len(f.Payload))
	}
	seq := sc.push(t, ccp.Msg, 7, []byte("from server"))
	seq2 := sc.push(t, ccp.Msg, 7, big)
	if seq != 5 || seq2 != 6 {
		t.Fatalf("server sequences %d %d", seq, seq2)
	}
	f := mustRecv(t, c)
	if f.Type != ccp.Msg || f.Channel != 7 || f.Sequence != seq || string(f.Payload) != "from server" {
		t.Fatalf("Recv %v %q", f, f.Payload)
	}
	if f := mustRecv(t, c); f.Sequence != seq2 || !bytes.Equal(f.Payload, big) {
		t.Fatalf("Recv %v (%d bytes)", f, len(f.Payload))
	}
}

func TestRequestMatching(t *testing.T) {
	for _, v := range [][]int{{1}, {2}} {
		t.Run(fmt.Sprintf("v%d", v[0]), func(t *testing.T) {
			s := newTestServer(t)
			c := dialTest(t, func() Options { o := s.options(newTestIdentity(t, "dev-1"), HTTP2); o.Versions = v; return o }())
			sc := s.nextConn(t)
			ctx := testCtx(t)
			s.setHook(func(sc *serverConn, f ccp.Frame) bool {
				switch string(f.Payload) {
				case "interleave":
					// Unrelated frames first: a relayed MSG, an ACK for
					// another sequence, an ACK with the right number on
					// another channel, then the answer.
					sc.send(ccp.Msg, 9, []byte("relayed"))
					sc.send(ccp.Ack, f.Channel, []byte(`{"ack":99999}`))
					sc.send(ccp.Ack, f.Channel+1, []byte(fmt.Sprintf(`{"ack":%d}`, f.Sequence)))
					sc.send(ccp.Ack, f.Channel, []byte(fmt.Sprintf(`{"ack":%d,"extra":true}`, f.Sequence)))
					return true
				case "error-on-0":
					// Decode-style ERROR on channel 0 carrying the sequence.
					p := ccp.NewProblem(ccp.TitleInvalidPayload, "test")
					p.SetSequence(f.Sequence)
					sc.send(ccp.Error, 0, p.JSON())
					return true
				}
				return false
			})
			resp, err := c.Request(ctx, ccp.Msg, 5, []byte("interleave"))
			if err != nil {
				t.Fatal(err)
			}
			if string(resp) != `{"ack":3,"extra":true}` {
				t.Fatalf("Request answer %s", resp)
			}
			for _, want := range []string{"relayed", `{"ack":99999}`, `{"ack":3}`} {
				if f := mustRecv(t, c); string(f.Payload) != want {
					t.Fatalf("Recv %v %s, want %s", f, f.Payload, want)
				}
			}

			_, err = c.Request(ctx, ccp.Msg, 5, []byte("forbidden"))
			var ef *ErrorFrame
			if !errors.As(err, &ef) || ef.Problem.Title != ccp.TitleForbidden || ef.Problem.Sequence != 4 || ef.Channel != 5 || !IsProblem(err, ccp.TitleForbidden) {
				t.Fatalf("Request error %v", err)
			}
			if _, err = c.Request(ctx, ccp.Msg, 5, []byte("error-on-0")); !IsProblem(err, ccp.TitleInvalidPayload) {
				t.Fatalf("Request error %v", err)
			}
			if _, err := c.Request(ctx, ccp.Presence, 0, []byte(`{}`)); !errors.Is(err, ErrNoReply) {
				t.Fatalf("Request(PRESENCE) = %v", err)
			}

			// Concurrent requests on several channels: every frame leaves in
			// sequence order and gets its own answer.
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for i := range 64 {
				wg.Go(func() {
					ch := uint32(10 + i%4)
					resp, err := c.Request(ctx, ccp.Msg, ch, []byte("x"))
					if err != nil {
						errs <- err
						return
					}
					if _, ok := AckNumber(resp); !ok {
						errs <- fmt.Errorf("bad ACK %s", resp)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			// frames seen by the server: interleave, forbidden, error-on-0, 64 x
			last := uint32(0)
			for range 67 {
				f := sc.nextFrame(t)
				if f.Sequence <= last {
					t.Fatalf("sequence %d after %d", f.Sequence, last)
				}
				last = f.Sequence
			}
			if _, err := recvTimeout(t, c, 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("unexpected extra frame: %v", err)
			}
		})
	}
}

// TestKeepalive: server keepalive ACKs are consumed silently and never
// acknowledged; a v2 client sends its own keepalives at least every K.
func TestKeepalive(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			s := newTestServer(t)
			s.set(func(s *testServer) { s.keepaliveK, s.keepaliveEvery = 1, 20*time.Millisecond })
			c := dialTest(t, s.options(newTestIdentity(t, "dev-ka"), tr))
			sc := s.nextConn(t)
			if c.Version() != 2 || c.KeepaliveInterval() != time.Second {
				t.Fatalf("version %d keepalive %v", c.Version(), c.KeepaliveInterval())
			}
			if _, err := recvTimeout(t, c, 1600*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Recv surfaced %v", err)
			}
			if n := sc.keepalives.Load(); n < 2 {
				t.Fatalf("server got %d client keepalives in 1.6 s with K = 1 s", n)
			}
			seq := sc.push(t, ccp.Msg, 3, []byte("after keepalives"))
			if f := mustRecv(t, c); f.Sequence != seq {
				t.Fatalf("Recv %v", f)
			}
			if seq < 40 {
				t.Fatalf("server sequence %d: too few keepalives were sent", seq)
			}
			select {
			case n := <-sc.acks:
				t.Fatalf("client acknowledged server sequence %d", n)
			default:
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("v1-none", func(t *testing.T) {
		s := newTestServer(t)
		s.set(func(s *testServer) { s.keepaliveK = 1 })
		o := s.options(newTestIdentity(t, "dev-ka1"), HTTP1)
		o.Versions = []int{1}
		c := dialTest(t, o)
		sc := s.nextConn(t)
		time.Sleep(1200 * time.Millisecond)
		if n := sc.keepalives.Load(); n != 0 {
			t.Fatalf("v1 client sent %d keepalives", n)
		}
		c.Close()
	})
}

func TestSendRawMalformed(t *testing.T) {
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			s := newTestServer(t)
			o := s.options(newTestIdentity(t, "dev-raw"), WebSocket)
			o.Versions = []int{v}
			c := dialTest(t, o)
			s.nextConn(t)
			raw, _ := hex.DecodeString("04ff030400") // unknown type 0xff
			if err := c.SendRaw(testCtx(t), raw); err != nil {
				t.Fatal(err)
			}
			f := mustRecv(t, c)
			p, err := ccp.ParseProblem(f.Payload)
			if f.Type != ccp.Error || err != nil || p.Title != ccp.TitleInvalidFrameType {
				t.Fatalf("Recv %v %s", f, f.Payload)
			}
			if _, err := c.Request(testCtx(t), ccp.Msg, 1, []byte("next")); err != nil {
				t.Fatalf("next frame: %v", err)
			}
		})
	}
}

func TestCertificateStoredAndPresented(t *testing.T) {
	s := newTestServer(t)
	id := newTestIdentity(t, "dev-cert")
	updates := 0
	o := s.options(id, HTTP2)
	o.OnIdentityUpdate = func(got *Identity) {
		if got != id {
			t.Error("OnIdentityUpdate with another identity")
		}
		updates++
	}
	c := dialTest(t, o)
	sc := s.nextConn(t)
	if sc.hello.Certificate != nil {
		t.Fatal("first HELLO presented a certificate")
	}
	cert := id.CurrentCertificate()
	if cert == nil || *cert != sc.cert || updates != 1 {
		t.Fatalf("certificate not stored (%v, %d updates)", cert, updates)
	}
	if err := cert.Verify(s.caPub, id.DeviceID, testUserID, time.Now().Unix()); err != nil || cert.PublicKey != id.DevicePublic() {
		t.Fatalf("stored certificate: %v", err)
	}
	c.Close()

	// Persist and reload the identity, then connect again: the HELLO
	// carries the certificate and the server returns it unchanged.
	state, err := id.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var id2 Identity
	if err := id2.UnmarshalJSON(state); err != nil {
		t.Fatal(err)
	}
	if id2.DeviceSeed != id.DeviceSeed || id2.StaticKey != id.StaticKey || id2.DeviceID != id.DeviceID || *id2.Certificate != *cert {
		t.Fatal("identity JSON round trip")
	}
	o.Identity = &id2
	o.OnIdentityUpdate = nil
	c2 := dialTest(t, o)
	sc2 := s.nextConn(t)
	if sc2.hello.Certificate == nil || *sc2.hello.Certificate != *cert {
		t.Fatalf("second HELLO certificate %v", sc2.hello.Certificate)
	}
	if c2.Ack().Certificate.Serial != cert.Serial {
		t.Fatal("serial changed")
	}
	c2.Close()

	// A certificate for another key is not presented.
	id3 := newTestIdentity(t, "dev-cert")
	id3.Certificate = cert
	o.Identity = id3
	c3 := dialTest(t, o)
	if sc3 := s.nextConn(t); sc3.hello.Certificate != nil {
		t.Fatal("presented a certificate for another device key")
	}
	c3.Close()
}

func TestHandshakeRefused(t *testing.T) {
	s := newTestServer(t)
	s.set(func(s *testServer) { s.failHello = noiseconn.ErrPairingRequired })
	_, err := Dial(testCtx(t), s.options(newTestIdentity(t, "dev-x"), HTTP2))
	var ef *ErrorFrame
	if !errors.As(err, &ef) || ef.Problem.Title != ccp.TitlePairingRequired || !ef.Problem.PairingRequired || ef.Problem.Error != ccp.ClassHandshake {
		t.Fatalf("Dial: %v", err)
	}

	s.set(func(s *testServer) { s.failHello, s.rejectStatus = nil, 429 })
	_, err = Dial(testCtx(t), s.options(newTestIdentity(t, "dev-x"), HTTP1))
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode != 429 || he.RetryAfter != 2*time.Second {
		t.Fatalf("Dial: %v", err)
	}
	for _, tr := range []Transport{HTTP2, WebSocket} {
		_, err = Dial(testCtx(t), s.options(newTestIdentity(t, "dev-x"), tr))
		if !errors.As(err, &he) || he.StatusCode != 429 || he.RetryAfter != 2*time.Second {
			t.Fatalf("Dial over %v: %v", tr, err)
		}
	}
}

// TestWrongServerKey: a stale Noise key fails the handshake on the client
// (msg2 does not read) or server (Authentication Failed).
func TestWrongServerKey(t *testing.T) {
	s := newTestServer(t)
	info, err := FetchServerInfo(testCtx(t), newHTTPClient(HTTP2, s.tlsConfig()), s.url)
	if err != nil {
		t.Fatal(err)
	}
	if info.Domain != testDomain || info.NoisePublic != s.key.Public || info.DeviceCAPublic != s.caPub || info.KeepaliveInterval != 30 || !slices.Equal(info.SupportedVersions, []int{1, 2}) {
		t.Fatalf("server info %+v", info)
	}
	bad := info.clone()
	bad.NoisePublic[0] ^= 1
	o := s.options(newTestIdentity(t, "dev-x"), HTTP2)
	o.Server = bad
	if _, err := Dial(testCtx(t), o); !IsProblem(err, ccp.TitleAuthenticationFailed) {
		t.Fatalf("Dial with a wrong key: %v", err)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	s := newTestServer(t)
	block := make(chan struct{})
	defer close(block)
	s.set(func(s *testServer) { s.stall = block })
	o := s.options(newTestIdentity(t, "dev-x"), HTTP2)
	o.HandshakeTimeout = 300 * time.Millisecond
	o.Server = &ServerInfo{Domain: testDomain, NoisePublic: s.key.Public}
	start := time.Now()
	_, err := Dial(context.Background(), o)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("Dial: %v after %v", err, time.Since(start))
	}
}

// TestBackpressure: when nobody calls Recv the reader stops reading, the
// server's writes stall, and nothing is lost or reordered.
func TestBackpressure(t *testing.T) {
	s := newTestServer(t)
	o := s.options(newTestIdentity(t, "dev-bp"), HTTP2)
	o.Versions = []int{1}
	c := dialTest(t, o)
	sc := s.nextConn(t)
	const total = 20000
	payload := bytes.Repeat([]byte{'p'}, 1024)
	var pushed sync.WaitGroup
	var count int64
	var mu sync.Mutex
	pushed.Go(func() {
		for range total {
			if _, err := sc.send(ccp.Msg, 1, payload); err != nil {
				return
			}
			mu.Lock()
			count++
			mu.Unlock()
		}
	})
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	stalled := count
	mu.Unlock()
	if stalled >= total {
		t.Fatalf("server wrote all %d frames although nobody read them", total)
	}
	if n := len(c.recvq); n > recvQueueLen {
		t.Fatalf("queue %d", n)
	}
	t.Logf("server stalled after %d frames", stalled)
	last := uint32(2)
	for range total {
		f := mustRecv(t, c)
		if f.Sequence != last+1 || len(f.Payload) != 1024 {
			t.Fatalf("frame %v after %d", f, last)
		}
		last = f.Sequence
	}
	pushed.Wait()
	c.Close()
}

func TestServerEndsStream(t *testing.T) {
	s := newTestServer(t)
	c := dialTest(t, s.options(newTestIdentity(t, "dev-end"), HTTP2))
	sc := s.nextConn(t)
	p := ccp.NewProblem(ccp.TitleReplaced, "device connected elsewhere")
	sc.push(t, ccp.Error, 0, p.JSON())
	sc.close()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection did not end")
	}
	if !errors.Is(c.Err(), ErrStreamEnded) || !IsProblem(c.Err(), ccp.TitleReplaced) {
		t.Fatalf("Err = %v", c.Err())
	}
	// The queued ERROR is still delivered, then ErrClosed.
	if f := mustRecv(t, c); f.Type != ccp.Error {
		t.Fatalf("Recv %v", f)
	}
	if _, err := recvTimeout(t, c, time.Second); !errors.Is(err, ErrClosed) || !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("Recv after end: %v", err)
	}
}

func TestCloseAbruptly(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			s := newTestServer(t)
			c := dialTest(t, s.options(newTestIdentity(t, "dev-crash"), tr))
			sc := s.nextConn(t)
			c.CloseAbruptly()
			if err := sc.waitEnded(t); err == io.EOF {
				t.Fatal("server saw a clean end of stream")
			}
			if !errors.Is(c.Err(), ErrClosed) {
				t.Fatalf("Err = %v", c.Err())
			}
		})
	}
}

// TestNoGoroutineLeak: every goroutine of Dial, Conn and Client stops.
func TestNoGoroutineLeak(t *testing.T) {
	s := newTestServer(t)
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()
	for _, tr := range transports {
		for _, v := range []int{1, 2} {
			o := s.options(newTestIdentity(t, "dev-leak"), tr)
			o.Versions = []int{v}
			c, err := Dial(testCtx(t), o)
			if err != nil {
				t.Fatal(err)
			}
			sc := s.nextConn(t)
			if _, err := c.Request(testCtx(t), ccp.Msg, 1, []byte("x")); err != nil {
				t.Fatal(err)
			}
			sc.push(t, ccp.Msg, 1, []byte("y"))
			mustRecv(t, c)
			sc.push(t, ccp.Msg, 1, []byte("unread"))
			if v == 2 {
				c.CloseAbruptly()
			} else if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			sc.waitEnded(t)
		}
	}
	// A Client that connects, then stops.
	ctx, cancel := context.WithCancel(context.Background())
	cl := New(s.options(newTestIdentity(t, "dev-leak"), HTTP2))
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	if _, err := cl.WaitConnected(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	cancel()
	for range cl.Events() {
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A failed dial.
	o := s.options(newTestIdentity(t, "dev-leak"), HTTP2)
	o.Server = &ServerInfo{Domain: testDomain}
	if _, err := Dial(testCtx(t), o); err == nil {
		t.Fatal("dial with a zero server key succeeded")
	}

	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, want <= %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

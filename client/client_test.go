package client

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/noiseconn"
)

// runClient starts Run in the background; the returned function stops it
// and returns Run's error.
func runClient(t *testing.T, cl *Client) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	var once atomic.Bool
	stop = func() error {
		if !once.CompareAndSwap(false, true) {
			return nil
		}
		cancel()
		go func() {
			for range cl.Events() {
			}
		}()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return")
			return nil
		}
	}
	t.Cleanup(func() { stop() })
	return stop
}

func clientOptions(s *testServer, id *Identity, tr Transport) Options {
	o := s.options(id, tr)
	o.ReconnectMin, o.ReconnectMax = 10*time.Millisecond, 50*time.Millisecond
	return o
}

// nextEvent returns the next event of one of the wanted kinds, skipping
// the others.
func nextEvent[T Event](t *testing.T, cl *Client) T {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-cl.Events():
			if !ok {
				t.Fatal("event channel closed")
			}
			if e, ok := ev.(T); ok {
				return e
			}
		case <-timeout:
			var zero T
			t.Fatalf("no %T event", zero)
		}
	}
}

// TestClientRedelivery: the Client acknowledges delivered durable frames;
// frames whose ACKs were lost are redelivered after the server drops the
// stream, acknowledged again, and the inbox drains.
func TestClientRedelivery(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			s := newTestServer(t)
			s.addInbox(ccp.Msg, 7, []byte("m1"))
			s.addInbox(ccp.GroupEvent, 7, []byte(`{"sender":"dev-b","x":1}`))
			s.setDropAcks(true) // the first connection's ACKs get lost
			id := newTestIdentity(t, "dev-a")
			cl := New(clientOptions(s, id, tr))
			stop := runClient(t, cl)

			c1 := nextEvent[*Connected](t, cl)
			sc1 := s.nextConn(t)
			m1 := nextEvent[*Message](t, cl)
			m2 := nextEvent[*Message](t, cl)
			if string(m1.Payload) != "m1" || m1.ServerSeq != 3 || !m1.Durable || m1.Type != ccp.Msg || m1.Channel != 7 {
				t.Fatalf("first message %+v", m1)
			}
			if m2.Type != ccp.GroupEvent || m2.Sender != "dev-b" || m2.ServerSeq != 4 {
				t.Fatalf("second message %+v", m2)
			}
			got := []uint32{sc1.nextAck(t), sc1.nextAck(t)}
			slices.Sort(got)
			if !slices.Equal(got, []uint32{3, 4}) {
				t.Fatalf("first connection acknowledged %v", got)
			}
			if s.inboxLen() != 2 {
				t.Fatal("inbox changed although the ACKs were dropped")
			}
			if id.CurrentCertificate() == nil || c1.Version != 2 {
				t.Fatal("certificate not stored by the Client")
			}

			// The server drops the stream; the Client reconnects, presents
			// its certificate, and acknowledges the redelivered frames.
			s.setDropAcks(false)
			sc1.close()
			d := nextEvent[*Disconnected](t, cl)
			if !errors.Is(d.Err, ErrStreamEnded) || d.RetryIn <= 0 {
				t.Fatalf("disconnected: %+v", d)
			}
			nextEvent[*Connected](t, cl)
			sc2 := s.nextConn(t)
			if sc2.hello.Certificate == nil || *sc2.hello.Certificate != sc1.cert {
				t.Fatal("the reconnect did not present the stored certificate")
			}
			r1 := nextEvent[*Message](t, cl)
			r2 := nextEvent[*Message](t, cl)
			if string(r1.Payload) != "m1" || r2.Type != ccp.GroupEvent {
				t.Fatalf("redelivered %+v %+v", r1, r2)
			}
			got = []uint32{sc2.nextAck(t), sc2.nextAck(t)}
			slices.Sort(got)
			if !slices.Equal(got, []uint32{3, 4}) {
				t.Fatalf("second connection acknowledged %v", got)
			}
			deadline := time.Now().Add(10 * time.Second)
			for s.inboxLen() != 0 {
				if time.Now().After(deadline) {
					t.Fatal("inbox not drained: redelivered frames were not acknowledged")
				}
				time.Sleep(10 * time.Millisecond)
			}

			// Live, non-durable frames and presence are never acknowledged.
			sc2.push(t, ccp.Typing, 7, []byte(`{"sender":"dev-b"}`))
			sc2.push(t, ccp.Presence, 0, []byte(`{"entity":"dev-b","expires_at":"2030-01-01T00:00:00+00:00","state":"away","user":{"handle":"bob","id":"u","user_id":"u"}}`))
			if m := nextEvent[*Message](t, cl); m.Type != ccp.Typing || m.Durable || m.Sender != "dev-b" {
				t.Fatalf("typing %+v", m)
			}
			if p := nextEvent[*Presence](t, cl); p.Entity != "dev-b" || p.State != "away" || p.User.Handle != "bob" {
				t.Fatalf("presence %+v", p)
			}
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if err := sc2.waitEnded(t); err == nil {
				t.Fatal("server stream still open")
			}
			select {
			case n := <-sc2.acks:
				t.Fatalf("client acknowledged server sequence %d of a live frame", n)
			default:
			}
		})
	}
}

// TestClientSendMessageRetry: a MSG whose connection is lost before the
// ACK is sent again on the next connection.
func TestClientSendMessageRetry(t *testing.T) {
	s := newTestServer(t)
	var first atomic.Bool
	s.setHook(func(sc *serverConn, f ccp.Frame) bool {
		if f.Type == ccp.Msg && first.CompareAndSwap(false, true) {
			sc.close() // drop the stream without answering
			return true
		}
		return false
	})
	cl := New(clientOptions(s, newTestIdentity(t, "dev-a"), HTTP2))
	runClient(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.SendMessage(ctx, 7, []byte("important")); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	sc1, sc2 := s.nextConn(t), s.nextConn(t)
	if f := sc1.nextFrame(t); string(f.Payload) != "important" {
		t.Fatal(f)
	}
	if f := sc2.nextFrame(t); string(f.Payload) != "important" {
		t.Fatal(f)
	}
	// Errors other than lost connections are returned.
	if err := cl.SendMessage(ctx, 7, []byte("forbidden")); !IsProblem(err, ccp.TitleForbidden) {
		t.Fatalf("SendMessage: %v", err)
	}
	if ack, err := cl.Join(ctx, 9, []string{"dev-b"}, "grp"); err != nil || string(ack) == "" {
		t.Fatalf("Join: %s %v", ack, err)
	}
	if err := cl.Typing(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if err := cl.SetPresence(ctx, "away"); err != nil {
		t.Fatal(err)
	}
	if err := cl.Leave(ctx, 9); err != nil {
		t.Fatal(err)
	}
	for _, want := range []ccp.FrameType{ccp.Msg, ccp.Join, ccp.Typing, ccp.Presence, ccp.Leave} {
		if f := sc2.nextFrame(t); f.Type != want {
			t.Fatalf("server got %v, want %v", f.Type, want)
		}
	}
	// The presence state is restored after a reconnect.
	sc2.close()
	sc3 := s.nextConn(t)
	if f := sc3.nextFrame(t); f.Type != ccp.Presence || string(f.Payload) != `{"state":"away"}` {
		t.Fatalf("after reconnect: %v %s", f, f.Payload)
	}
}

// TestClientPermanentFailures: Run gives up on errors a reconnect cannot
// fix.
func TestClientPermanentFailures(t *testing.T) {
	t.Run("pairing-required", func(t *testing.T) {
		s := newTestServer(t)
		s.set(func(s *testServer) { s.failHello = noiseconn.ErrPairingRequired })
		cl := New(clientOptions(s, newTestIdentity(t, "dev-a"), HTTP2))
		err := cl.Run(context.Background())
		if !IsProblem(err, ccp.TitlePairingRequired) {
			t.Fatalf("Run: %v", err)
		}
		if _, err := cl.WaitConnected(context.Background()); !errors.Is(err, ErrStopped) {
			t.Fatalf("WaitConnected: %v", err)
		}
	})
	t.Run("replaced", func(t *testing.T) {
		s := newTestServer(t)
		cl := New(clientOptions(s, newTestIdentity(t, "dev-a"), WebSocket))
		done := make(chan error, 1)
		go func() { done <- cl.Run(context.Background()) }()
		sc := s.nextConn(t)
		p := ccp.NewProblem(ccp.TitleReplaced, "device connected elsewhere")
		sc.push(t, ccp.Error, 0, p.JSON())
		sc.close()
		var sawError bool
		for ev := range cl.Events() {
			if e, ok := ev.(*ServerError); ok && e.Problem.Title == ccp.TitleReplaced {
				sawError = true
			}
		}
		if err := <-done; !IsProblem(err, ccp.TitleReplaced) || !sawError {
			t.Fatalf("Run: %v (ERROR event %v)", err, sawError)
		}
	})
	t.Run("bad-options", func(t *testing.T) {
		cl := New(Options{URL: "http://insecure"})
		if err := cl.Run(context.Background()); err == nil {
			t.Fatal("Run accepted bad options")
		}
	})
}

// TestClientRetriesTransientFailures: HTTP 503 answers are retried with
// backoff until the server accepts.
func TestClientRetriesTransientFailures(t *testing.T) {
	s := newTestServer(t)
	s.set(func(s *testServer) { s.rejectStatus = 503 })
	o := clientOptions(s, newTestIdentity(t, "dev-a"), HTTP1)
	cl := New(o)
	runClient(t, cl)
	d := nextEvent[*Disconnected](t, cl)
	var he *HTTPError
	if !errors.As(d.Err, &he) || he.StatusCode != 503 || d.RetryIn < 2*time.Second {
		t.Fatalf("disconnected %+v (the Retry-After of 2 s must be honoured)", d)
	}
	s.set(func(s *testServer) { s.rejectStatus = 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second
	for attempt := range 40 {
		want := min(lo<<min(attempt, 31), hi)
		if attempt >= 31 {
			want = hi
		}
		for range 20 {
			d := backoff(lo, hi, attempt, nil)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
	if d := backoff(lo, hi, 0, &HTTPError{RetryAfter: 5 * time.Second}); d != 5*time.Second {
		t.Fatalf("Retry-After ignored: %v", d)
	}
}

// TestClientFallbackURLs: when the node at URL does not answer, the Client
// tries the next of FallbackURLs and connects there; its server info comes
// from that node.
func TestClientFallbackURLs(t *testing.T) {
	s := newTestServer(t)
	o := clientOptions(s, newTestIdentity(t, "dev-a"), HTTP2)
	live := o.URL
	// A node that is down: a port nobody listens on.
	dead := newTestServer(t)
	deadURL := dead.url
	dead.hs.Close()
	o.URL, o.FallbackURLs = deadURL, []string{live}
	cl := New(o)
	runClient(t, cl)
	d := nextEvent[*Disconnected](t, cl)
	if d.Err == nil {
		t.Fatal("no error from the dead node")
	}
	if got := cl.currentURL(); got != live {
		t.Fatalf("next attempt at %s, want the fallback %s", got, live)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.WaitConnected(ctx); err != nil {
		t.Fatalf("not connected through the fallback: %v", err)
	}
}

func TestFallbackURLValidation(t *testing.T) {
	id := &Identity{DeviceID: "d"}
	for _, bad := range []string{"http://h:1", "https://", "ftp://x"} {
		if _, err := (Options{URL: "https://h:1", FallbackURLs: []string{bad}, Identity: id}).normalize(); err == nil {
			t.Errorf("fallback %q accepted", bad)
		}
	}
	o, err := Options{URL: "https://h:1/", FallbackURLs: []string{"wss://g:2/x/?q=1#f"}, Identity: id}.normalize()
	if err != nil || o.FallbackURLs[0] != "https://g:2/x" || o.URL != "https://h:1" {
		t.Fatalf("normalized %q %q, %v", o.URL, o.FallbackURLs, err)
	}
}

// TestClientResumesTLS: a Client's reconnect resumes the TLS session of
// its earlier connections (the Client adds a session cache to a TLSConfig
// without one), while Options.TLSConfig itself is left alone. HTTP/1.1 and
// WebSocket streams each have their own TLS connection; on HTTP/2 the
// reconnect reuses the connection, so there is no second handshake.
func TestClientResumesTLS(t *testing.T) {
	for _, tr := range []Transport{HTTP1, WebSocket} {
		t.Run(tr.String(), func(t *testing.T) {
			s := newTestServer(t)
			o := clientOptions(s, newTestIdentity(t, "dev-a"), tr)
			cl := New(o)
			if o.TLSConfig.ClientSessionCache != nil {
				t.Fatal("New changed the caller's TLSConfig")
			}
			runClient(t, cl)
			nextEvent[*Connected](t, cl)
			sc1 := s.nextConn(t)
			first := len(s.tlsResumed())
			sc1.close()
			nextEvent[*Disconnected](t, cl)
			nextEvent[*Connected](t, cl)
			s.nextConn(t)
			got := s.tlsResumed()
			if len(got) <= first || got[0] {
				t.Fatalf("TLS handshakes (resumed?) %v: want a full first one and one more after the reconnect", got)
			}
			if !got[len(got)-1] {
				t.Fatalf("the reconnect's TLS handshake did not resume: %v", got)
			}
		})
	}
}

package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/commucat/commucat/internal/session"
)

// TestWSPingsReportSilentPeer: startPings reports liveness lost when the
// peer answers no Ping for 3K (§3.6), and not while it answers.
func TestWSPingsReportSilentPeer(t *testing.T) {
	const k = 50 * time.Millisecond
	for _, answering := range []bool{false, true} {
		lost := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			tr := newWSTransport(c)
			live := new(session.Liveness)
			live.OnLost(func() { close(lost) })
			stop := tr.startPings(k, live)
			defer stop()
			// The server reads (so Pongs are processed) until the test ends.
			ctx, cancel := context.WithTimeout(context.Background(), 20*k)
			defer cancel()
			for {
				if _, _, err := c.Read(ctx); err != nil {
					break
				}
				tr.touch()
			}
			c.CloseNow()
		}))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, _, err := websocket.Dial(ctx, "ws"+srv.URL[len("http"):], nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if answering {
			// Reading answers Pings (coder/websocket replies while reading).
			go func() { _, _, _ = c.Read(context.Background()) }()
		}
		select {
		case <-lost:
			if answering {
				t.Error("liveness lost although the peer answered every Ping")
			}
		case <-time.After(10 * k):
			if !answering {
				t.Error("a peer answering no Ping was not reported within 10K")
			}
		}
		c.CloseNow()
		srv.Close()
	}
}

// TestLivenessOrder: the callback runs once, whichever of Lost and OnLost
// comes first.
func TestLivenessOrder(t *testing.T) {
	for _, lostFirst := range []bool{true, false} {
		l := new(session.Liveness)
		n := 0
		if lostFirst {
			l.Lost()
			l.OnLost(func() { n++ })
		} else {
			l.OnLost(func() { n++ })
			l.Lost()
		}
		l.Lost()
		if n != 1 {
			t.Errorf("lostFirst=%v: callback ran %d times, want 1", lostFirst, n)
		}
	}
}

package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/server"
)

// floodResult counts the answers a flood of /connect requests got.
type floodResult struct {
	accepted, tooMany, other atomic.Int64
}

// flood sends n POST /connect requests from workers goroutines. Each
// accepted stream is kept half-open (garbage=false: no byte is ever sent)
// or gets garbage bytes (garbage=true) and is then left open, so the
// server holds it until its handshake deadline or decode error.
func flood(t *testing.T, ctx context.Context, hc *http.Client, url string, n, workers int, garbage bool) *floodResult {
	t.Helper()
	res := &floodResult{}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				pr, pw := io.Pipe()
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/connect", pr)
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("Content-Type", "application/octet-stream")
				if garbage {
					go func() { _, _ = pw.Write(bytes.Repeat([]byte{0xff}, 64)) }()
				}
				resp, err := hc.Do(req)
				if err != nil {
					pw.Close()
					if ctx.Err() == nil {
						res.other.Add(1)
					}
					continue
				}
				switch resp.StatusCode {
				case http.StatusOK:
					res.accepted.Add(1)
					// Keep it open: the body is closed when ctx ends.
					go func() {
						<-ctx.Done()
						pw.Close()
						resp.Body.Close()
					}()
				case http.StatusTooManyRequests:
					res.tooMany.Add(1)
					if resp.Header.Get("Retry-After") == "" {
						t.Error("429 without Retry-After")
					}
					pw.Close()
					resp.Body.Close()
				default:
					res.other.Add(1)
					pw.Close()
					resp.Body.Close()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return res
}

// Issue 5 hardening: thousands of half-open and garbage /connect streams
// from one IP while two established clients chat. The flood gets 429s,
// the server never holds more handshaking streams for the IP than its
// cap, and the chat goes on: every message is delivered, in order.
func TestFloodOfConnectStreamsDoesNotStarveSessions(t *testing.T) {
	for _, tc := range []struct {
		name string
		// relaxZone turns the connect zone off, so the per-IP handshake
		// cap alone has to hold the flood.
		relaxZone bool
		garbage   bool
	}{
		{"connect-zone/half-open", false, false},
		{"handshake-cap/half-open", true, false},
		{"handshake-cap/garbage", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const capHandshakes = 16
			s := startServer(t, func(c *config.Config) {
				c.Security.MaxHandshakesPerIP = capHandshakes
				c.Server.HandshakeTimeout = 10 * time.Second
				if tc.relaxZone {
					c.Security.RateLimit.Connect.Burst = 1 << 20
				}
			})
			ida, idb := newIdentity(t, "flood-a"), newIdentity(t, "flood-b")
			a := dial(t, s, ida, uniqueHandle("flood-a"))
			b := dial(t, s, idb, uniqueHandle("flood-b"))
			ch := freshChannel()
			if _, err := a.Request(ctxWait(t), ccp.Join, ch, []byte(fmt.Sprintf(`{"members":[%q]}`, b.Ack().DeviceCertificate.DeviceID))); err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var maxHandshaking atomic.Int64
			stopWatch := make(chan struct{})
			watchDone := make(chan struct{})
			go func() {
				defer close(watchDone)
				for {
					_, hs := server.StreamCounts(s.Srv, "127.0.0.1")
					if int64(hs) > maxHandshaking.Load() {
						maxHandshaking.Store(int64(hs))
					}
					select {
					case <-stopWatch:
						return
					case <-time.After(time.Millisecond):
					}
				}
			}()
			hc := httpClientFor(t, s, true)
			floodDone := make(chan *floodResult, 1)
			go func() { floodDone <- flood(t, ctx, hc, s.URL, 2000, 32, tc.garbage) }()

			// The established clients chat through the flood.
			const msgs = 50
			for i := 0; i < msgs; i++ {
				if _, err := a.Request(ctxWait(t), ccp.Msg, ch, []byte(fmt.Sprintf("m%03d", i))); err != nil {
					t.Fatalf("MSG %d during the flood: %v", i, err)
				}
			}
			for i := 0; i < msgs; i++ {
				f := recvUntil(t, b, 20*time.Second, "MSG", func(f ccp.Frame) bool { return f.Type == ccp.Msg })
				if want := fmt.Sprintf("m%03d", i); string(f.Payload) != want {
					t.Fatalf("message %d = %q, want %q", i, f.Payload, want)
				}
			}
			res := <-floodDone
			close(stopWatch)
			<-watchDone
			t.Logf("flood: %d accepted, %d answered 429, %d other; max handshaking streams %d",
				res.accepted.Load(), res.tooMany.Load(), res.other.Load(), maxHandshaking.Load())
			if res.tooMany.Load() == 0 {
				t.Error("the flood got no 429")
			}
			if got := maxHandshaking.Load(); got > capHandshakes {
				t.Errorf("server held %d handshaking streams for one IP, cap %d", got, capHandshakes)
			}
			if !tc.garbage && tc.relaxZone && res.accepted.Load() < capHandshakes {
				t.Errorf("only %d half-open streams accepted; the cap is %d", res.accepted.Load(), capHandshakes)
			}
			cancel()
		})
	}
}

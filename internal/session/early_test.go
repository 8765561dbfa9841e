package session

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/store"
)

// gatedStore holds the inbox Writer's transactions while its gate is
// closed (hold … release), so a test can act while a commit is pending.
type gatedStore struct {
	store.Store
	mu   sync.Mutex
	gate chan struct{}
	// arrived receives a value for every transaction held at the gate.
	arrived chan struct{}
}

func (g *gatedStore) Tx(ctx context.Context, fn func(q store.Queries) error) error {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		select {
		case g.arrived <- struct{}{}:
		default:
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Store.Tx(ctx, fn)
}

func (g *gatedStore) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate == nil {
		g.gate = make(chan struct{})
	}
}

func (g *gatedStore) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
}

// newEarlyPair starts a node whose inbox Writer is gated, and two devices,
// early-a and early-b, sharing channel 7; early-b's connection is live
// (takes early deliveries).
func newEarlyPair(t *testing.T) (n *testNode, g *gatedStore, a, b *testClient) {
	t.Helper()
	n = newTestNodeWith(t, nil, func(st store.Store) store.Store {
		g = &gatedStore{Store: st, arrived: make(chan struct{}, 16)}
		return g
	})
	t.Cleanup(g.release) // before the node stops (cleanups run last first)
	a = n.dial(clientOpts{device: "early-a"})
	b = n.dial(clientOpts{device: "early-b"})
	a.mustOK(ccp.Join, 7, `{"members":["early-b"]}`)
	n.waitLive(t, "early-b")
	return n, g, a, b
}

// waitLive waits until the device's connection has finished its initial
// redelivery and is not catching up: from then on it takes early
// deliveries.
func (n *testNode) waitLive(t *testing.T, device string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c := n.connOf(device); c != nil {
			c.out.mu.Lock()
			live := !c.out.initial && !c.out.catchup
			c.out.mu.Unlock()
			if live {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: connection not live", device)
}

// ackFrame acknowledges a delivered frame (client ACKs take no sequence of
// their own here).
func (c *testClient) ackFrame(f ccp.Frame) {
	c.t.Helper()
	c.send(ccp.Ack, f.Channel, fmt.Sprintf(`{"ack":%d}`, f.Sequence))
	c.seq--
}

// noneButPresence checks that nothing but PRESENCE arrives within d.
func (c *testClient) noneButPresence(d time.Duration) {
	c.t.Helper()
	end := time.After(d)
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				c.t.Fatalf("%s: stream ended", c.device)
			}
			if f.Type != ccp.Presence {
				c.t.Fatalf("%s: unexpected frame %v %s", c.device, f, f.Payload)
			}
		case <-end:
			return
		}
	}
}

// counterOf returns a counter's value.
func counterOf(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// earlyRemembered returns how many early deliveries the device's
// connection remembers for de-duplication (outbound.early).
func (n *testNode) earlyRemembered(t *testing.T, device string) int {
	t.Helper()
	c := n.connOf(device)
	if c == nil {
		t.Fatalf("%s: not connected", device)
	}
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	return len(c.out.early)
}

func (n *testNode) waitInboxLen(t *testing.T, device string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.inboxLen(t, device) != want {
		if time.Now().After(deadline) {
			t.Fatalf("inbox of %s holds %d entries, want %d", device, n.inboxLen(t, device), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// §6.7 early delivery: a connected recipient gets a durable frame while its
// inbox entry still waits for the commit; the sender's ACK still waits for
// it. An entry acknowledged before a commit took it is never written; one
// acknowledged while its commit ran is written and then deleted; either
// way the recipient gets the frame once.
func TestEarlyDeliveryAckedBeforeAndDuringCommit(t *testing.T) {
	n, g, a, b := newEarlyPair(t)

	g.hold()
	// m1's commit takes it and waits at the gate; m2 waits behind it.
	s1 := a.send(ccp.Msg, 7, "m1")
	select {
	case <-g.arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("m1's commit did not start")
	}
	s2 := a.send(ccp.Msg, 7, "m2")
	for _, want := range []string{"m1", "m2"} {
		f := b.expectAfterPresence(ccp.Msg)
		if string(f.Payload) != want {
			t.Fatalf("b got %q, want %q", f.Payload, want)
		}
		b.ackFrame(f)
	}
	b.mustOK(ccp.Join, 8, `{}`) // the ACKs before it were handled
	a.noneButPresence(100 * time.Millisecond)
	if got := n.inboxLen(t, "early-b"); got != 0 {
		t.Fatalf("inbox holds %d entries before the commit", got)
	}

	g.release()
	for _, seq := range []uint32{s1, s2} {
		f := a.expectAfterPresence(ccp.Ack)
		if string(f.Payload) != fmt.Sprintf(`{"ack":%d}`, seq) {
			t.Fatalf("a got %s, want the ACK of %d", f.Payload, seq)
		}
	}
	if got := counterOf(t, n.metrics.RelayEnqueued); got != 1 {
		t.Errorf("entries written = %v, want 1 (m1, acknowledged while its commit ran)", got)
	}
	if got := counterOf(t, n.metrics.RelayEarlyAcked); got != 1 {
		t.Errorf("entries not written = %v, want 1 (m2, acknowledged before its commit)", got)
	}
	n.waitInboxLen(t, "early-b", 0) // m1 deleted by the writer
	b.none(200 * time.Millisecond)  // no second copy from the commit's hand-over
	if k := n.earlyRemembered(t, "early-b"); k != 0 {
		t.Errorf("b's connection still remembers %d early deliveries", k)
	}
	b.close()
	b = n.dial(clientOpts{device: "early-b"})
	b.noneButPresence(200 * time.Millisecond) // nothing to redeliver
	b.close()
	a.close()
}

// An early delivery the recipient does not acknowledge is stored, is not
// delivered a second time on the same connection, and is redelivered on
// the next one.
func TestEarlyDeliveryUnackedIsStoredAndRedelivered(t *testing.T) {
	n, g, a, b := newEarlyPair(t)

	g.hold()
	seq := a.send(ccp.Msg, 7, "kept")
	if f := b.expectAfterPresence(ccp.Msg); string(f.Payload) != "kept" {
		t.Fatalf("b got %q", f.Payload)
	}
	a.noneButPresence(100 * time.Millisecond)
	g.release()
	if f := a.expectAfterPresence(ccp.Ack); string(f.Payload) != fmt.Sprintf(`{"ack":%d}`, seq) {
		t.Fatalf("a got %s", f.Payload)
	}
	if got := n.inboxLen(t, "early-b"); got != 1 {
		t.Fatalf("inbox holds %d entries, want 1", got)
	}
	b.none(200 * time.Millisecond)
	b.close()

	b = n.dial(clientOpts{device: "early-b"})
	f := b.expectAfterPresence(ccp.Msg)
	if string(f.Payload) != "kept" {
		t.Fatalf("redelivery %q", f.Payload)
	}
	b.ackFrame(f)
	n.waitInboxLen(t, "early-b", 0)
	b.close()
	a.close()
}

// §6.7 order across early delivery, delivery after the commit and
// redelivery: while senders stream (each on its own channel with the
// recipient), the recipient acknowledges everything and reconnects several
// times. On every connection each sender's frames arrive in the order sent
// with no gap (a frame acknowledged on an earlier connection is not
// redelivered; one that was not, is), and every frame arrives.
func TestEarlyDeliveryOrderAcrossReconnects(t *testing.T) {
	for _, senders := range []int{1, 3} {
		t.Run(fmt.Sprintf("senders=%d", senders), func(t *testing.T) {
			testEarlyOrder(t, senders, 3000/senders)
		})
	}
}

func testEarlyOrder(t *testing.T, senders, perSender int) {
	n := newTestNode(t, nil)
	b := n.dial(clientOpts{device: "order-b"})
	total := senders * perSender
	sendDone := make(chan struct{}, senders)
	// The senders' replies must be read, or their readers stop at the
	// reply backlog.
	acks := make(chan error, senders)
	var as []*testClient
	for k := range senders {
		a := n.dial(clientOpts{device: fmt.Sprintf("order-a%d", k)})
		as = append(as, a)
		ch := uint32(7 + k)
		a.mustOK(ccp.Join, ch, `{"members":["order-b"]}`)
		go func() {
			defer func() { sendDone <- struct{}{} }()
			for i := range perSender {
				a.send(ccp.Msg, ch, fmt.Sprintf("s%d-m%05d", k, i))
				if i%10 == 9 {
					// Spread the streams over the reconnections.
					time.Sleep(time.Millisecond)
				}
			}
		}()
		go func() {
			for i := 0; i < perSender; {
				f, ok := <-a.frames
				if !ok {
					acks <- fmt.Errorf("%s's stream ended after %d ACKs", a.device, i)
					return
				}
				if f.Type == ccp.Ack && f.Channel == ch {
					i++
				} else if f.Type != ccp.Presence {
					acks <- fmt.Errorf("%s got %v %s", a.device, f, f.Payload)
					return
				}
			}
			acks <- nil
		}()
	}

	next := make([]int, senders) // per sender, the lowest index not yet received
	received := 0                // sum of next
	seen := 0                    // MSGs received, over all connections
	reconnectAt := map[int]bool{total / 10: true, total * 4 / 10: true, total * 6 / 10: true, total * 9 / 10: true}
	for conns := 1; received < total; conns++ {
		prev := make([]int, senders) // per sender, the last index on this connection
		for k := range prev {
			prev[k] = -1
		}
		for received < total {
			f := b.next()
			if f.Type == ccp.Presence {
				continue
			}
			if f.Type != ccp.Msg {
				t.Fatalf("b got %v %s", f, f.Payload)
			}
			var k, i int
			if _, err := fmt.Sscanf(string(f.Payload), "s%d-m%d", &k, &i); err != nil || k < 0 || k >= senders {
				t.Fatalf("payload %q", f.Payload)
			}
			switch {
			case prev[k] < 0 && i > next[k]:
				t.Fatalf("connection %d: sender %d starts at m%d: m%d..m%d lost", conns, k, i, next[k], i-1)
			case prev[k] >= 0 && i != prev[k]+1:
				t.Fatalf("connection %d: sender %d: m%d after m%d", conns, k, i, prev[k])
			}
			prev[k] = i
			if i+1 > next[k] {
				received += i + 1 - next[k]
				next[k] = i + 1
			}
			b.ackFrame(f)
			seen++
			if reconnectAt[seen] {
				delete(reconnectAt, seen)
				break
			}
		}
		if received < total {
			b.close()
			b = n.dial(clientOpts{device: "order-b"})
		}
	}
	for range senders {
		<-sendDone
		if err := <-acks; err != nil {
			t.Fatal(err)
		}
	}
	if early := counterOf(t, n.metrics.RelayEarlyAcked); early == 0 {
		t.Logf("no entry was acknowledged before its commit (timing); order checked all the same")
	}
	n.waitInboxLen(t, "order-b", 0)
	// Nothing is left in the connection's de-duplication memory.
	for deadline := time.Now().Add(5 * time.Second); n.earlyRemembered(t, "order-b") != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("b's connection still remembers %d early deliveries", n.earlyRemembered(t, "order-b"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.close()
	for _, a := range as {
		a.close()
	}
}

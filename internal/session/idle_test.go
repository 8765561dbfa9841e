package session

import (
	"bytes"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
)

// connOf returns the server side of a connected device.
func (n *testNode) connOf(device string) *conn {
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	for c := range n.m.conns {
		if c.device.ID == device {
			return c
		}
	}
	return nil
}

// senderIdle reports whether no sender goroutine runs for c and it holds
// no write buffers.
func senderIdle(c *conn) bool {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return !c.sendRunning && c.fw.buf == nil && c.fw.sealed == nil
}

// TestIdleConnectionHasNoSender: once its queues are empty a connection
// has no sender goroutine and no write buffers, and the next frame (a
// relayed MSG, a reply, a keepalive) starts one again.
func TestIdleConnectionHasNoSender(t *testing.T) {
	n := newTestNode(t, func(c *Config) { c.Keepalive = 200 * time.Millisecond })
	a := n.dial(clientOpts{device: "dev-a"})
	b := n.dial(clientOpts{device: "dev-b"})
	a.mustOK(ccp.Join, 5, `{"members":["dev-b"]}`)
	waitIdle := func(dev string) {
		t.Helper()
		c := n.connOf(dev)
		if c == nil {
			t.Fatalf("%s not connected", dev)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !senderIdle(c) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: sender still running after 5 s", dev)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for round := range 3 {
		waitIdle("dev-a")
		waitIdle("dev-b")
		seq := a.send(ccp.Msg, 5, "hello")
		if f := a.expectAfterPresence(ccp.Ack); f.Channel != 5 {
			t.Fatalf("round %d: ACK of MSG %d on channel %d", round, seq, f.Channel)
		}
		if f := b.expectAfterPresence(ccp.Msg); string(f.Payload) != "hello" {
			t.Fatalf("round %d: b got %q", round, f.Payload)
		}
	}
	// Keepalives (§3.6) come from a timer, not from a waiting goroutine.
	waitIdle("dev-b")
	select {
	case f := <-b.frames:
		if f.Type != ccp.Ack || f.Channel != 0 || !bytes.HasPrefix(f.Payload, []byte(`{"keepalive":`)) {
			t.Fatalf("idle b got %v %q, want a keepalive", f.Type, f.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no keepalive within 5 s (K = 200 ms)")
	}
	a.close()
	b.close()
}

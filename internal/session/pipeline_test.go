package session

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
)

// Durable frames are pipelined: a sender that does not wait for ACKs gets
// them in frame order, each only after its frame is stored (§6.7), and
// the recipient receives every frame once, in order. A JOIN between MSGs
// is answered in its place, not ahead of the MSGs before it.
func TestPipelinedDurableFramesKeepOrder(t *testing.T) {
	n := newTestNode(t, nil)
	a := n.dial(clientOpts{device: "pipe-a"})
	b := n.dial(clientOpts{device: "pipe-b"})
	a.mustOK(ccp.Join, 21, `{"members":["pipe-b"]}`)
	const count = 300
	type sent struct {
		ch  uint32
		seq uint32
	}
	var order []sent
	for i := 0; i < count; i++ {
		seq := a.send(ccp.Msg, 21, fmt.Sprintf("p%03d", i))
		order = append(order, sent{21, seq})
		if i == count/2 {
			// A control frame in the middle of the stream.
			js := a.send(ccp.Join, 22, `{"members":["pipe-b"]}`)
			order = append(order, sent{22, js})
		}
	}
	for i, want := range order {
		f := a.expect(ccp.Ack)
		if f.Channel != want.ch || string(f.Payload) != fmt.Sprintf(`{"ack":%d}`, want.seq) {
			t.Fatalf("reply %d: ch %d %s, want ch %d ack %d", i, f.Channel, f.Payload, want.ch, want.seq)
		}
	}
	for i := 0; i < count; i++ {
		f := b.expect(ccp.Msg)
		if want := fmt.Sprintf("p%03d", i); string(f.Payload) != want {
			t.Fatalf("b message %d = %q, want %q", i, f.Payload, want)
		}
	}
	// Every stored entry is in the store until b acknowledges.
	if got := n.inboxLen(t, "pipe-b"); got != count {
		t.Errorf("inbox of pipe-b holds %d entries, want %d", got, count)
	}
}

// inboxLen counts the device's stored inbox entries.
func (n *testNode) inboxLen(t *testing.T, device string) int {
	t.Helper()
	es, err := n.st.ListInbox(context.Background(), device, 0, time.Now(), 100000)
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

package session

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
)

func TestHandshakeAndMessage(t *testing.T) {
	for _, versions := range [][]int{{1}, {1, 2}} {
		t.Run(fmt.Sprint(versions), func(t *testing.T) {
			n := newTestNode(t, nil)
			a := n.dial(clientOpts{device: "dev-a", versions: versions})
			b := n.dial(clientOpts{device: "dev-b", versions: versions})
			if a.ack.Handshake != "ok" || a.ack.DeviceCertificate.DeviceID != "dev-a" {
				t.Fatalf("ack %+v", a.ack)
			}
			a.mustOK(ccp.Join, 5, `{"members":["dev-b"]}`)
			seq := a.send(ccp.Msg, 5, "hello")
			f := a.expectAfterPresence(ccp.Ack)
			if string(f.Payload) != fmt.Sprintf(`{"ack":%d}`, seq) || f.Channel != 5 {
				t.Fatalf("MSG ack %s", f.Payload)
			}
			got := b.expectAfterPresence(ccp.Msg)
			if string(got.Payload) != "hello" || got.Channel != 5 {
				t.Fatalf("b got %v %q", got, got.Payload)
			}
			a.close()
			b.close()
		})
	}
}

func TestOfflineDeliveryAndRedelivery(t *testing.T) {
	n := newTestNode(t, nil)
	b := n.dial(clientOpts{device: "dev-b"})
	b.close()
	a := n.dial(clientOpts{device: "dev-a"})
	a.mustOK(ccp.Join, 9, `{"members":["dev-b"]}`)
	for i := 0; i < 300; i++ {
		a.mustOK(ccp.Msg, 9, fmt.Sprintf("m%03d", i))
	}
	// v2 recipient: all 300 in order; no ACK → redelivered on reconnect.
	b = n.dial(clientOpts{device: "dev-b"})
	var last ccp.Frame
	for i := 0; i < 300; i++ {
		f := b.expect(ccp.Msg)
		if string(f.Payload) != fmt.Sprintf("m%03d", i) {
			t.Fatalf("message %d: %q", i, f.Payload)
		}
		last = f
	}
	b.close()
	b = n.dial(clientOpts{device: "dev-b"})
	for i := 0; i < 300; i++ {
		f := b.expect(ccp.Msg)
		if string(f.Payload) != fmt.Sprintf("m%03d", i) {
			t.Fatalf("redelivery %d: %q", i, f.Payload)
		}
		b.send(ccp.Ack, 9, fmt.Sprintf(`{"ack":%d}`, f.Sequence))
		b.seq-- // client ACKs need no sequence of their own here
	}
	_ = last
	time.Sleep(200 * time.Millisecond)
	b.close()
	b = n.dial(clientOpts{device: "dev-b"})
	b.none(300 * time.Millisecond)
	b.close()
	a.close()
}

func TestSequenceRules(t *testing.T) {
	n := newTestNode(t, nil)
	a := n.dial(clientOpts{device: "dev-a"})
	a.mustOK(ccp.Join, 3, `{}`)
	seq := a.send(ccp.Msg, 3, "x")
	ack1 := a.expect(ccp.Ack)
	// exact repeat: identical ACK payload
	a.writeFrame(ccp.Msg, 3, seq, []byte("x"))
	ack2 := a.expect(ccp.Ack)
	if string(ack1.Payload) != string(ack2.Payload) || ack2.Sequence <= ack1.Sequence {
		t.Fatalf("repeat ack %s/%d vs %s/%d", ack1.Payload, ack1.Sequence, ack2.Payload, ack2.Sequence)
	}
	a.writeFrame(ccp.Msg, 3, seq-1, []byte("x"))
	f := a.expect(ccp.Error)
	var p map[string]any
	json.Unmarshal(f.Payload, &p)
	if p["title"] != "Sequence Violation" || p["sequence"] != float64(seq-1) {
		t.Fatalf("got %s", f.Payload)
	}
	a.close()
}

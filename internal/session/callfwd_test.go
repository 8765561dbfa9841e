package session

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/media"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/router"
)

// fakeCluster records the published bus messages.
type fakeCluster struct {
	mu  sync.Mutex
	pub []router.BusMessage
	to  []string
	// callNode, when set, is the node that owns every channel's call.
	callNode string
}

func (f *fakeCluster) NodeID() string                                       { return "owner" }
func (f *fakeCluster) ClaimRoute(context.Context, string) (string, error)   { return "", nil }
func (f *fakeCluster) RefreshRoutes(context.Context, []string) error        { return nil }
func (f *fakeCluster) ReleaseRoute(context.Context, string) error           { return nil }
func (f *fakeCluster) RouteOf(context.Context, string) (string, error)      { return "", nil }
func (f *fakeCluster) Ping(context.Context) error                           { return nil }
func (f *fakeCluster) RefreshCalls(context.Context, []router.CallRef) error { return nil }
func (f *fakeCluster) ReleaseCall(context.Context, string, uint32) error    { return nil }
func (f *fakeCluster) CallOwner(context.Context, string) (string, error)    { return "", nil }
func (f *fakeCluster) ClaimCall(context.Context, string, uint32) (router.ClaimResult, error) {
	return router.Claimed, nil
}
func (f *fakeCluster) ChannelCall(context.Context, uint32) (string, string, error) {
	if f.callNode != "" {
		return "call-1", f.callNode, nil
	}
	return "", "", nil
}
func (f *fakeCluster) Run(context.Context, func(router.BusMessage), func()) error { return nil }
func (f *fakeCluster) Publish(_ context.Context, node string, m router.BusMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pub, f.to = append(f.pub, m), append(f.to, node)
	return nil
}

func (f *fakeCluster) take() ([]router.BusMessage, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, t := f.pub, f.to
	f.pub, f.to = nil, nil
	return p, t
}

type fakeOpus struct{}

func (fakeOpus) Encode([]byte) ([]byte, error) { return []byte("OPUS-PACKET"), nil }
func (fakeOpus) SetBitrate(int) error          { return nil }
func (fakeOpus) SetPacketLoss(int) error       { return nil }
func (fakeOpus) Close()                        {}

type delivery struct {
	dev     string
	t       ccp.FrameType
	payload []byte
}

// The owner side of §9.4: frames forwarded by another node are handled as
// if received from `device`, with the sender's capabilities from the
// message, and answered with call_reply.
func TestCallBusOwnerSide(t *testing.T) {
	var mu sync.Mutex
	var got []delivery
	calls := media.NewManager(media.Config{
		Codecs: media.Codecs{Audio: func(media.AudioConfig) (media.AudioEncoder, error) { return fakeOpus{}, nil }},
		Deliver: func(dev string, ft ccp.FrameType, _ uint32, p []byte) {
			mu.Lock()
			got = append(got, delivery{dev, ft, p})
			mu.Unlock()
		},
	})
	takeDelivered := func() []delivery {
		mu.Lock()
		defer mu.Unlock()
		d := got
		got = nil
		return d
	}
	fc := &fakeCluster{}
	rtr := &router.Router{Registry: router.NewRegistry(), Cluster: fc}
	bus := NewCallBus(CallBusConfig{Calls: calls, Router: rtr})
	const ch = 9
	if _, e := calls.Offer("dev-a", ch, 1, []byte(`{"call_id":"c1","from":"dev-a","to":["dev-b"]}`), []byte(`{}`), []string{"dev-a", "dev-b"}); e != nil {
		t.Fatal(e)
	}
	takeDelivered()
	callID := "c1"
	call := func(dev string, ft ccp.FrameType, seq uint32, payload []byte, caps ...string) router.BusMessage {
		return router.BusMessage{Kind: router.KindCall, CallID: &callID, Device: dev, FrameType: uint8(ft), Channel: ch,
			Sequence: seq, Payload: payload, ReplyTo: "node-b", RequestID: "req", Capabilities: caps}
	}
	reply := func(what string, ch uint32) router.BusMessage {
		t.Helper()
		pub, to := fc.take()
		if len(pub) != 1 || to[0] != "node-b" || pub[0].Kind != router.KindCallReply || pub[0].RequestID != "req" || pub[0].Device != "dev-b" || pub[0].Channel != ch {
			t.Fatalf("%s: published %+v to %v", what, pub, to)
		}
		return pub[0]
	}

	// CALL_ANSWER from dev-b: fanned out with sender attribution, ACK.
	bus.Handle(call("dev-b", ccp.CallAnswer, 5, []byte(`{"accept":true,"call_id":"c1","sender":"forged"}`)))
	r := reply("answer", ch)
	if ccp.FrameType(r.FrameType) != ccp.Ack || string(r.Payload) != `{"ack":5,"accept":true,"call_id":"c1"}` {
		t.Fatalf("answer reply %d %s", r.FrameType, r.Payload)
	}
	if d := takeDelivered(); len(d) != 1 || d[0].dev != "dev-a" || string(d[0].payload) != `{"accept":true,"call_id":"c1","sender":"dev-b"}` {
		t.Fatalf("answer fan-out %+v", d)
	}

	// Raw PCM without media.raw-audio: rejected, and the rejection is the
	// reply (ERROR with frame_type and sequence).
	pcm := append([]byte{1, 1, 1}, make([]byte, 1920)...)
	bus.Handle(call("dev-b", ccp.VoiceFrame, 6, pcm))
	r = reply("raw audio without capability", ch)
	p, err := ccp.ParseProblem(r.Payload)
	if ccp.FrameType(r.FrameType) != ccp.Error || err != nil || p.Title != ccp.TitleUnsupportedMedia || !p.HasSequence || p.Sequence != 6 {
		t.Fatalf("rejection %d %s", r.FrameType, r.Payload)
	}
	// With the capability in the message it is transcoded and relayed; an
	// accepted media frame gets no reply.
	bus.Handle(call("dev-b", ccp.VoiceFrame, 7, pcm, noiseconn.CapRawAudio))
	if pub, _ := fc.take(); len(pub) != 0 {
		t.Fatalf("accepted media frame got a reply: %+v", pub)
	}
	if d := takeDelivered(); len(d) != 1 || d[0].dev != "dev-a" || !bytes.Equal(d[0].payload, append([]byte{1, 0, 0}, "OPUS-PACKET"...)) {
		t.Fatalf("media fan-out %+v", d)
	}

	// CALL_STATS on another channel: the owner's ERROR.
	bus.Handle(router.BusMessage{Kind: router.KindCall, CallID: &callID, Device: "dev-b", FrameType: uint8(ccp.CallStats), Channel: ch + 1,
		Sequence: 8, Payload: []byte(`{"call_id":"c1","direction":"send"}`), ReplyTo: "node-b", RequestID: "req"})
	r = reply("stats on another channel", ch+1)
	if p, _ := ccp.ParseProblem(r.Payload); ccp.FrameType(r.FrameType) != ccp.Error || p.Title != ccp.TitleNotFound {
		t.Fatalf("stats reply %d %s", r.FrameType, r.Payload)
	}

	// The synthetic disconnect ends the call like a local disconnect.
	bus.Handle(router.BusMessage{Kind: router.KindCall, CallID: &callID, Device: "dev-b", FrameType: uint8(ccp.CallEnd), Channel: ch, ReplyTo: "node-b", Disconnect: true})
	if pub, _ := fc.take(); len(pub) != 0 {
		t.Fatalf("disconnect got a reply: %+v", pub)
	}
	d := takeDelivered()
	if len(d) != 1 || d[0].dev != "dev-a" || d[0].t != ccp.CallEnd {
		t.Fatalf("disconnect fan-out %+v", d)
	}
	var end struct {
		Reason   string `json:"reason"`
		Metadata struct {
			Cause string `json:"cause"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(d[0].payload, &end); err != nil || end.Reason != "failure" || end.Metadata.Cause != "disconnect" {
		t.Fatalf("CALL_END %s", d[0].payload)
	}
	if calls.HasCall("c1") {
		t.Fatal("the call survived the disconnect")
	}

	// A reply nobody waits for (late, or for an unknown device) is dropped.
	bus.Handle(router.BusMessage{Kind: router.KindCallReply, RequestID: "cgone", Device: "dev-x", FrameType: uint8(ccp.Ack), Payload: []byte(`{"ack":1}`)})
	bus.Handle(router.BusMessage{Kind: router.KindCallReply, RequestID: "mgone", Device: "dev-x", FrameType: uint8(ccp.Error), Payload: []byte(`{}`)})
}

// §6.2, §7.5 across nodes: a media frame forwarded to the call's owner node
// is accepted here at once; when the owner rejects it, the ERROR reaches
// the device and the frame does not advance the channel's last accepted
// sequence, so the device may send it again under the same sequence.
func TestForwardedMediaRejectionRollsBackSequence(t *testing.T) {
	n := newTestNode(t, nil)
	fc := &fakeCluster{callNode: "node-owner"}
	n.m.d.Router.Cluster = fc
	bus := NewCallBus(CallBusConfig{Calls: media.NewManager(media.Config{}), Router: n.m.d.Router, Store: n.st})
	n.m.d.CallBus = bus
	a := n.dial(clientOpts{device: "fwd-a"})
	a.mustOK(ccp.Join, 7, `{}`)
	forwarded := func(seq uint32) router.BusMessage {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if pub, _ := fc.take(); len(pub) > 0 {
				if len(pub) != 1 || pub[0].Kind != router.KindCall || pub[0].Sequence != seq {
					t.Fatalf("published %+v", pub)
				}
				return pub[0]
			}
		}
		t.Fatalf("media frame %d not forwarded", seq)
		return router.BusMessage{}
	}
	const frame = "\x01\x00\x00opus"
	a.writeFrame(ccp.VoiceFrame, 7, 10, []byte(frame))
	m := forwarded(10)
	// The owner rejects it.
	p := ccp.NewProblem(ccp.TitleForbidden, "not in the call")
	p.SetFrameType(ccp.VoiceFrame)
	p.SetSequence(10)
	bus.Handle(router.BusMessage{Kind: router.KindCallReply, RequestID: m.RequestID, Device: "fwd-a",
		FrameType: uint8(ccp.Error), Channel: 7, Payload: p.JSON()})
	if f := a.expectAfterPresence(ccp.Error); !strings.Contains(string(f.Payload), "not in the call") {
		t.Fatalf("ERROR %s", f.Payload)
	}
	// The same sequence again: forwarded, not dropped as a repeat.
	a.writeFrame(ccp.VoiceFrame, 7, 10, []byte(frame))
	forwarded(10)
	// Not rejected this time: the repeat is then dropped (L = 10), and a
	// lower sequence is a violation.
	a.writeFrame(ccp.VoiceFrame, 7, 10, []byte(frame))
	a.mustErr(ccp.Msg, 7, "x", ccp.TitleSequenceViolation)
	if pub, _ := fc.take(); len(pub) != 0 {
		t.Fatalf("the repeat was forwarded: %+v", pub)
	}
}

package redis

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/router"
)

func TestCallPins(t *testing.T) {
	a, b := newPair(t)
	ctx := context.Background()
	if res, err := a.ClaimCall(ctx, "call-1", 42); err != nil || res != router.Claimed {
		t.Fatalf("claim: %v %v", res, err)
	}
	// The spec's key forms and values (§9.4).
	if v, _ := a.rdb.Get(ctx, a.key("call", "call-1")).Result(); v != "node-a" {
		t.Fatalf("call: = %q", v)
	}
	if v, _ := a.rdb.Get(ctx, a.key("callchan", "42")).Result(); v != `{"call_id":"call-1","node":"node-a"}` {
		t.Fatalf("callchan: = %q", v)
	}
	if ttl, _ := a.rdb.PTTL(ctx, a.key("callchan", "42")).Result(); ttl <= 0 || ttl > 5*time.Second {
		t.Fatalf("callchan ttl = %v", ttl)
	}
	// A second offer on the channel (any node) fails the SET NX; a reused
	// call id too.
	if res, err := b.ClaimCall(ctx, "call-2", 42); err != nil || res != router.ChannelTaken {
		t.Fatalf("second claim on the channel: %v %v", res, err)
	}
	if res, err := b.ClaimCall(ctx, "call-1", 43); err != nil || res != router.CallIDTaken {
		t.Fatalf("reused call id: %v %v", res, err)
	}
	if _, err := b.rdb.Get(ctx, b.key("callchan", "43")).Result(); err == nil {
		t.Fatal("a refused claim left callchan:43")
	}
	// Lookups from the other node.
	if node, err := b.CallOwner(ctx, "call-1"); err != nil || node != "node-a" {
		t.Fatalf("CallOwner = %q %v", node, err)
	}
	if id, node, err := b.ChannelCall(ctx, 42); err != nil || id != "call-1" || node != "node-a" {
		t.Fatalf("ChannelCall = %q %q %v", id, node, err)
	}
	if node, err := b.CallOwner(ctx, "nope"); err != nil || node != "" {
		t.Fatalf("CallOwner(unknown) = %q %v", node, err)
	}
	if id, node, err := b.ChannelCall(ctx, 7); err != nil || id != "" || node != "" {
		t.Fatalf("ChannelCall(no call) = %q %q %v", id, node, err)
	}
	// Refresh renews; another node's refresh or release changes nothing.
	a.rdb.PExpire(ctx, a.key("call", "call-1"), time.Second)
	a.rdb.PExpire(ctx, a.key("callchan", "42"), time.Second)
	if err := b.RefreshCalls(ctx, []router.CallRef{{ID: "call-1", Channel: 42}}); err != nil {
		t.Fatal(err)
	}
	if ttl, _ := a.rdb.PTTL(ctx, a.key("call", "call-1")).Result(); ttl > time.Second {
		t.Fatalf("another node's refresh renewed the key: %v", ttl)
	}
	if err := a.RefreshCalls(ctx, []router.CallRef{{ID: "call-1", Channel: 42}}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{a.key("call", "call-1"), a.key("callchan", "42")} {
		if ttl, _ := a.rdb.PTTL(ctx, k).Result(); ttl <= time.Second {
			t.Fatalf("%s not renewed: %v", k, ttl)
		}
	}
	if err := b.ReleaseCall(ctx, "call-1", 42); err != nil {
		t.Fatal(err)
	}
	if node, _ := b.CallOwner(ctx, "call-1"); node != "node-a" {
		t.Fatal("another node's release deleted the call")
	}
	if err := a.ReleaseCall(ctx, "call-1", 42); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.rdb.Exists(ctx, a.key("call", "call-1"), a.key("callchan", "42")).Result(); n != 0 {
		t.Fatalf("%d keys left after release", n)
	}
	if res, err := b.ClaimCall(ctx, "call-3", 42); err != nil || res != router.Claimed {
		t.Fatalf("claim after release: %v %v", res, err)
	}
	if id, node, _ := a.ChannelCall(ctx, 42); id != "call-3" || node != "node-b" {
		t.Fatalf("ChannelCall after new claim = %q %q", id, node)
	}
	// An owner without heartbeat counts as gone.
	b.rdb.Del(ctx, b.key("node", "node-b"))
	if node, _ := a.CallOwner(ctx, "call-3"); node != "" {
		t.Fatalf("CallOwner of a dead node = %q", node)
	}
}

// RefreshCalls pipelines EVALSHA: it must work on a Redis that has not
// cached the script.
func TestRefreshCallsWithoutCachedScript(t *testing.T) {
	a, _ := newPair(t)
	ctx := context.Background()
	if _, err := a.ClaimCall(ctx, "call-r", 9); err != nil {
		t.Fatal(err)
	}
	if err := a.rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Skipf("SCRIPT FLUSH: %v", err)
	}
	if err := a.RefreshCalls(ctx, []router.CallRef{{ID: "call-r", Channel: 9}}); err != nil {
		t.Fatalf("RefreshCalls: %v", err)
	}
}

func TestCallBusMessages(t *testing.T) {
	id := "call-x"
	for _, m := range []router.BusMessage{
		{Kind: router.KindCall, CallID: &id, Device: "d1", FrameType: 0x0f, Channel: 5, Sequence: 9, Payload: []byte(`{"a":1}`), ReplyTo: "n1", RequestID: "r1"},
		{Kind: router.KindCall, Device: "d1", FrameType: 0x11, Channel: 5, Sequence: 10, Payload: []byte{1, 1, 1, 0, 255}, ReplyTo: "n1", RequestID: "mr2", Capabilities: []string{"media.raw-audio"}},
		{Kind: router.KindCall, CallID: &id, Device: "d1", FrameType: 0x10, Channel: 5, ReplyTo: "n1", Disconnect: true},
		{Kind: router.KindCallReply, Device: "d1", FrameType: 0x06, Channel: 5, Payload: []byte(`{"ack":9}`), RequestID: "r1"},
	} {
		b, err := EncodeMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMessage(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if got.Kind != m.Kind || got.Device != m.Device || got.FrameType != m.FrameType || got.Channel != m.Channel ||
			got.Sequence != m.Sequence || !bytes.Equal(got.Payload, m.Payload) || got.ReplyTo != m.ReplyTo ||
			got.RequestID != m.RequestID || !slices.Equal(got.Capabilities, m.Capabilities) || got.Disconnect != m.Disconnect ||
			(m.CallID == nil) != (got.CallID == nil) || (m.CallID != nil && *got.CallID != *m.CallID) {
			t.Fatalf("round trip of %s: %+v", b, got)
		}
	}
	// A media forward has "call_id": null and the base64 payload.
	b, _ := EncodeMessage(router.BusMessage{Kind: router.KindCall, Device: "d", FrameType: 0x11, Channel: 1, Payload: []byte{1, 0, 0}, ReplyTo: "n", RequestID: "r"})
	want := `{"call_id":null,"channel":1,"device":"d","frame_type":17,"kind":"call","payload":"AQAA","reply_to":"n","request_id":"r","sequence":0}`
	if string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
}

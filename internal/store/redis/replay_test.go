package redis

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/router"
	"github.com/commucat/commucat/internal/testenv"
)

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	steps := []struct {
		seq  uint64
		want bool
	}{
		{1, true}, {1, false}, // a repeat
		{3, true}, {2, true}, {2, false}, {3, false}, // overtaken, then taken once
		{1000, true}, {10, true}, {10, false}, // within the window behind the newest
		{1000 + busReplayWindow, true},
		{1000, false},               // exactly the window behind: refused
		{1001, true}, {1001, false}, // inside it
		{5000 + 3*busReplayWindow, true},     // a jump of more than the window
		{5000 + 3*busReplayWindow - 1, true}, // a stale bit from before the jump does not count
		{5000 + 3*busReplayWindow - 1, false},
	}
	for i, s := range steps {
		if got := w.take(s.seq); got != s.want {
			t.Fatalf("step %d: take(%d) = %v, want %v", i, s.seq, got, s.want)
		}
	}
}

func TestReplayGuard(t *testing.T) {
	g := newReplayGuard()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	msg := func(src string, seq uint64, to string, at time.Time) busMeta {
		return busMeta{src: src, seq: seq, to: to, ts: at.UnixMilli()}
	}
	if err := g.accept(msg("a", 1, "node-b", now), "node-b", now); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		m      busMeta
		err    string
		reason string
	}{
		"replay":          {msg("a", 1, "node-b", now), "replayed", RefusedReplayed},
		"other node":      {msg("a", 2, "node-c", now), "for node", RefusedMisaddressed},
		"too old":         {msg("a", 3, "node-b", now.Add(-busMaxAge-time.Second)), "away from this node's clock", RefusedClock},
		"from the future": {msg("a", 4, "node-b", now.Add(busMaxAge+time.Second)), "away from this node's clock", RefusedClock},
	} {
		err := g.accept(c.m, "node-b", now)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: %v, want an error containing %q", name, err, c.err)
		}
		var r *refusal
		if !errors.As(err, &r) || r.reason != c.reason {
			t.Errorf("%s: reason of %v, want %s", name, err, c.reason)
		}
	}
	// Clocks a little apart, another source, the same numbers: taken.
	for _, m := range []busMeta{msg("a", 2, "node-b", now.Add(-time.Minute)), msg("b", 1, "node-b", now.Add(time.Minute))} {
		if err := g.accept(m, "node-b", now); err != nil {
			t.Errorf("%+v: %v", m, err)
		}
	}
	// A source silent for busForget is forgotten; its messages are all
	// older than busMaxAge by then, so its last one is still refused.
	later := now.Add(busForget + time.Second)
	if err := g.accept(msg("c", 1, "node-b", later), "node-b", later); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	_, kept := g.srcs["a"]
	n := len(g.srcs)
	g.mu.Unlock()
	if kept || n != 1 {
		t.Fatalf("after busForget: source a kept %v, %d sources", kept, n)
	}
	if err := g.accept(msg("a", 2, "node-b", now.Add(-time.Minute)), "node-b", later); err == nil {
		t.Fatal("a forgotten source's message accepted")
	}
	// The number of sources is bounded.
	g = newReplayGuard()
	for i := range maxBusSources {
		if err := g.accept(msg(strings.Repeat("x", 8)+string(rune('A'+i%26))+itoa(i), 1, "n", now), "n", now); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.accept(msg("one-more", 1, "n", now), "n", now); err == nil {
		t.Fatal("source beyond maxBusSources accepted")
	}
}

func itoa(i int) string { return canonjson.IntValue(int64(i)).Num }

func TestReadMeta(t *testing.T) {
	good := busMeta{src: "0123456789abcdef", seq: 7, to: "node-b", ts: 1764158400000}
	v := canonjson.Value{Kind: canonjson.Object, Obj: good.members()}
	if m, err := readMeta(v); err != nil || m != good {
		t.Fatalf("readMeta = %+v, %v", m, err)
	}
	for name, edit := range map[string]func(*canonjson.Value){
		"no bus_src":    func(v *canonjson.Value) { v.Delete(memberSrc) },
		"no bus_seq":    func(v *canonjson.Value) { v.Delete(memberSeq) },
		"no bus_to":     func(v *canonjson.Value) { v.Delete(memberTo) },
		"no bus_ts":     func(v *canonjson.Value) { v.Delete(memberTS) },
		"seq 0":         func(v *canonjson.Value) { v.Set(memberSeq, canonjson.UintValue(0)) },
		"seq negative":  func(v *canonjson.Value) { v.Set(memberSeq, canonjson.IntValue(-1)) },
		"seq string":    func(v *canonjson.Value) { v.Set(memberSeq, canonjson.StringValue("7")) },
		"ts fraction":   func(v *canonjson.Value) { v.Set(memberTS, canonjson.Value{Kind: canonjson.Number, Num: "1.5"}) },
		"src empty":     func(v *canonjson.Value) { v.Set(memberSrc, canonjson.StringValue("")) },
		"src too long":  func(v *canonjson.Value) { v.Set(memberSrc, canonjson.StringValue(strings.Repeat("a", 65))) },
		"to not string": func(v *canonjson.Value) { v.Set(memberTo, canonjson.IntValue(1)) },
	} {
		w := canonjson.Value{Kind: canonjson.Object, Obj: good.members()}
		edit(&w)
		if _, err := readMeta(w); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestBusReplay: a message captured on the bus is taken once. Published
// again on the same channel it is refused (replayed), published on another
// node's channel it is refused (bus_to), and a message sealed with the
// right key but without the replay members is refused too.
func TestBusReplay(t *testing.T) {
	key := &[32]byte{4, 5, 6}
	var mu sync.Mutex
	refusedBy := map[string]map[string]int{} // node → reason → count
	var logs testenv.Buffer
	a, b := newPairWith(t, key, func(o *Options) {
		node := o.NodeID
		o.OnRefused = func(reason string) {
			mu.Lock()
			defer mu.Unlock()
			if refusedBy[node] == nil {
				refusedBy[node] = map[string]int{}
			}
			refusedBy[node][reason]++
		}
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	ctx := context.Background()

	// A third subscriber captures what is published for node-b.
	spy := a.rdb.Subscribe(ctx, b.nodeChannel("node-b"))
	defer spy.Close()
	if _, err := spy.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	gotA, stopA := runBus(t, a)
	gotB, stopB := runBus(t, b)

	m := router.BusMessage{Kind: router.KindDeliver, Device: "dev-1", FrameType: 5, Channel: 9, Payload: []byte("once")}
	if err := a.Publish(ctx, "node-b", m); err != nil {
		t.Fatal(err)
	}
	var captured []byte
	select {
	case msg := <-spy.Channel():
		captured = []byte(msg.Payload)
	case <-time.After(5 * time.Second):
		t.Fatal("nothing captured")
	}
	select {
	case got := <-gotB:
		if string(got.Payload) != "once" {
			t.Fatalf("took %+v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the message was not delivered")
	}
	raw, err := EncodeMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	unprotected, err := SealMessage(key, raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		channel string
		b       []byte
	}{
		{b.nodeChannel("node-b"), captured},    // replayed to its node
		{a.nodeChannel("node-a"), captured},    // sent to another node
		{b.nodeChannel("node-b"), unprotected}, // sealed, no replay members
	} {
		if err := a.rdb.Publish(ctx, p.channel, p.b).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// A fresh message after them shows they were processed (and dropped).
	fresh := router.BusMessage{Kind: router.KindDeliver, Device: "dev-1", FrameType: 5, Channel: 9, Payload: []byte("fresh")}
	if err := a.Publish(ctx, "node-b", fresh); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-gotB:
		if string(got.Payload) != "fresh" {
			t.Fatalf("took %q after the replays (a replay got through)", got.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the fresh message was not delivered")
	}
	if err := b.Publish(ctx, "node-a", fresh); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-gotA:
		if got.Kind != router.KindDeliver || string(got.Payload) != "fresh" {
			t.Fatalf("node-a took %+v (the message for node-b got through)", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("node-a's message was not delivered")
	}
	stopA()
	stopB()
	if len(gotA)+len(gotB) != 0 {
		t.Fatalf("%d more messages taken", len(gotA)+len(gotB))
	}
	// Each refusal is counted with its reason; the log holds one line per
	// node (the second refusal on node-b, within refusedLogEvery, is only
	// counted in the next line).
	mu.Lock()
	defer mu.Unlock()
	want := map[string]map[string]int{
		"node-b": {RefusedReplayed: 1, RefusedMalformed: 1},
		"node-a": {RefusedMisaddressed: 1},
	}
	if !reflect.DeepEqual(refusedBy, want) {
		t.Errorf("refused %v, want %v", refusedBy, want)
	}
	if n := strings.Count(logs.String(), "bus message refused"); n != 2 {
		t.Errorf("%d log lines about refused messages, want 2 (one per node):\n%s", n, logs.String())
	}
}

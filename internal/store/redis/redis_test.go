package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/router"
	"github.com/commucat/commucat/internal/testenv"
)

func newPair(t *testing.T) (*Cluster, *Cluster) {
	t.Helper()
	return newPairWith(t, nil)
}

// newPairWith is newPair with both nodes on the bus key key (nil: none).
func newPairWith(t *testing.T, key *[32]byte, mods ...func(*Options)) (*Cluster, *Cluster) {
	t.Helper()
	url := testenv.RedisURL(t)
	var b [8]byte
	rand.Read(b[:])
	prefix := "commucat-test-" + hex.EncodeToString(b[:]) + ":"
	open := func(node string) *Cluster {
		o := Options{URL: url, NodeID: node, RouteTTL: 5 * time.Second, Prefix: prefix, BusKey: key}
		for _, m := range mods {
			m(&o)
		}
		c, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx := context.Background()
			keys, _ := c.rdb.Keys(ctx, prefix+"*").Result()
			if len(keys) > 0 {
				c.rdb.Del(ctx, keys...)
			}
			c.Close()
		})
		if err := c.heartbeat(context.Background()); err != nil {
			t.Fatalf("redis: %v", err)
		}
		return c
	}
	return open("node-a"), open("node-b")
}

func TestRoutesAndKick(t *testing.T) {
	a, b := newPair(t)
	ctx := context.Background()
	if prev, err := a.ClaimRoute(ctx, "dev-1"); err != nil || prev != "" {
		t.Fatalf("first claim: %q %v", prev, err)
	}
	if node, _ := b.RouteOf(ctx, "dev-1"); node != "node-a" {
		t.Fatalf("RouteOf = %q", node)
	}
	// The device reconnects to node b: the claim names node a.
	if prev, err := b.ClaimRoute(ctx, "dev-1"); err != nil || prev != "node-a" {
		t.Fatalf("second claim: %q %v", prev, err)
	}
	// a's release must not delete b's route (compare-and-delete).
	if err := a.ReleaseRoute(ctx, "dev-1"); err != nil {
		t.Fatal(err)
	}
	if node, _ := a.RouteOf(ctx, "dev-1"); node != "node-b" {
		t.Fatalf("route after a's release = %q", node)
	}
	if err := b.ReleaseRoute(ctx, "dev-1"); err != nil {
		t.Fatal(err)
	}
	if node, _ := a.RouteOf(ctx, "dev-1"); node != "" {
		t.Fatalf("route after release = %q", node)
	}
	// A route naming a node without heartbeat counts as offline.
	a.rdb.Set(ctx, a.key("route", "dev-2"), "node-dead", time.Minute)
	if node, _ := a.RouteOf(ctx, "dev-2"); node != "" {
		t.Fatalf("dead node route = %q", node)
	}
}

func TestBusDelivery(t *testing.T) {
	a, b := newPair(t)
	ctx := context.Background()
	got, stop := runBus(t, b)
	env := "env-1"
	want := router.BusMessage{Kind: router.KindDeliver, Device: "dev-1", FrameType: 5, Channel: 9, Payload: []byte{0, 1, 2, 0xff}, EnvelopeID: &env}
	if err := a.Publish(ctx, "node-b", want); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Kind != want.Kind || m.Device != want.Device || m.FrameType != 5 || m.Channel != 9 || string(m.Payload) != string(want.Payload) || m.EnvelopeID == nil || *m.EnvelopeID != env {
			t.Fatalf("got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}
	stop()
}

func TestEncodeCanonical(t *testing.T) {
	b, err := EncodeMessage(router.BusMessage{Kind: router.KindDeliver, Device: "d", FrameType: 5, Channel: 1, Payload: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"channel":1,"device":"d","envelope_id":null,"frame_type":5,"kind":"deliver","payload":"aGk="}`
	if string(b) != want {
		t.Fatalf("got %s", b)
	}
	k, _ := EncodeMessage(router.BusMessage{Kind: router.KindKick, Device: "d", Reason: "replaced", Session: "s"})
	if string(k) != `{"device":"d","kind":"kick","reason":"replaced","session":"s"}` {
		t.Fatalf("kick %s", k)
	}
	for _, bad := range []string{`{`, `{"kind":"deliver"}`, `{"kind":"deliver","device":"d","payload":"!!"}`} {
		if _, err := DecodeMessage([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestPresence(t *testing.T) {
	a, b := newPair(t)
	ctx := context.Background()
	now := time.Now()
	e := router.PresenceEntry{Device: "dev-1", State: "online", ExpiresAt: now.Add(time.Minute), Payload: []byte(`{"entity":"dev-1","expires_at":"` + now.Add(time.Minute).UTC().Format(time.RFC3339Nano) + `","state":"online","user":{}}`)}
	if err := a.Set(ctx, e); err != nil {
		t.Fatal(err)
	}
	got, ok, err := b.Get(ctx, "dev-1", now)
	if err != nil || !ok || got.State != "online" || string(got.Payload) != string(e.Payload) {
		t.Fatalf("Get: %+v %v %v", got, ok, err)
	}
	if _, ok, _ := b.Get(ctx, "dev-1", now.Add(2*time.Minute)); ok {
		t.Fatal("expired entry returned")
	}
	if _, ok, _ := b.Get(ctx, "nobody", now); ok {
		t.Fatal("unknown device present")
	}
}

// RefreshRoutes pipelines EVALSHA; on a Redis that has not cached the
// script (fresh, restarted or flushed) it must still renew the routes.
func TestRefreshRoutesWithoutCachedScript(t *testing.T) {
	a, _ := newPair(t)
	ctx := context.Background()
	if _, err := a.ClaimRoute(ctx, "dev-r"); err != nil {
		t.Fatal(err)
	}
	if err := a.rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	a.rdb.PExpire(ctx, a.key("route", "dev-r"), time.Second)
	if err := a.RefreshRoutes(ctx, []string{"dev-r"}); err != nil {
		t.Fatalf("RefreshRoutes: %v", err)
	}
	if ttl := a.rdb.PTTL(ctx, a.key("route", "dev-r")).Val(); ttl <= 2*time.Second {
		t.Fatalf("route TTL after refresh = %v, want about 5 s", ttl)
	}
}

// The queue_id extension member of deliver round-trips, and a message
// without it (another implementation) decodes with QueueID 0.
func TestDeliverQueueID(t *testing.T) {
	env := "e"
	b, err := EncodeMessage(router.BusMessage{Kind: router.KindDeliver, Device: "d", FrameType: 5, Channel: 1, Payload: []byte("hi"), EnvelopeID: &env, QueueID: 42})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"channel":1,"device":"d","envelope_id":"e","frame_type":5,"kind":"deliver","payload":"aGk=","queue_id":42}`; string(b) != want {
		t.Fatalf("got %s", b)
	}
	m, err := DecodeMessage(b)
	if err != nil || m.QueueID != 42 {
		t.Fatalf("decode: %+v %v", m, err)
	}
	m, err = DecodeMessage([]byte(`{"channel":1,"device":"d","envelope_id":"e","frame_type":5,"kind":"deliver","payload":"aGk="}`))
	if err != nil || m.QueueID != 0 || m.EnvelopeID == nil {
		t.Fatalf("decode without queue_id: %+v %v", m, err)
	}
}

// With a bus key, a node takes only messages sealed with it: a message
// published by a Redis client that is not a node (no mac, or a mac under
// another key) is dropped.
func TestBusMAC(t *testing.T) {
	key := &[32]byte{1, 2, 3}
	a, b := newPairWith(t, key)
	ctx := context.Background()
	got, stop := runBus(t, b)
	forged := router.BusMessage{Kind: router.KindDeliver, Device: "victim", FrameType: 5, Channel: 9, Payload: []byte("forged")}
	raw, err := EncodeMessage(forged)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := SealMessage(&[32]byte{9}, raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range [][]byte{raw, otherKey} {
		if err := a.rdb.Publish(ctx, b.nodeChannel("node-b"), m).Err(); err != nil {
			t.Fatal(err)
		}
	}
	real := router.BusMessage{Kind: router.KindDeliver, Device: "dev-1", FrameType: 5, Channel: 9, Payload: []byte("real")}
	if err := a.Publish(ctx, "node-b", real); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Device != "dev-1" || string(m.Payload) != "real" {
			t.Fatalf("first message taken: %+v (a forged one got through)", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the sealed message was not delivered")
	}
	stop()
	if len(got) != 0 {
		t.Fatalf("%d more messages taken", len(got))
	}
}

func TestSealOpenMessage(t *testing.T) {
	key := &[32]byte{7}
	raw, err := EncodeMessage(router.BusMessage{Kind: router.KindDeliver, Device: "d", FrameType: 5, Channel: 1, Payload: []byte("p")})
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := SealMessage(key, raw)
	if err != nil {
		t.Fatal(err)
	}
	if opened, err := OpenMessage(key, sealed); err != nil || string(opened) != string(raw) {
		t.Fatalf("OpenMessage = %s, %v; want %s", opened, err, raw)
	}
	// Members in another order: the same message.
	reordered := []byte(strings.Replace(string(sealed), `{"channel":1,`, `{`, 1))
	reordered = append(reordered[:len(reordered)-1], []byte(`,"channel":1}`)...)
	if _, err := OpenMessage(key, reordered); err != nil {
		t.Errorf("reordered members refused: %v (%s)", err, reordered)
	}
	for name, b := range map[string][]byte{
		"unsealed":  raw,
		"tampered":  []byte(strings.Replace(string(sealed), `"device":"d"`, `"device":"e"`, 1)),
		"other key": func() []byte { b, _ := SealMessage(&[32]byte{8}, raw); return b }(),
		"bad mac":   []byte(strings.Replace(string(raw), `{`, `{"mac":"zz",`, 1)),
		"not json":  []byte("mac"),
	} {
		if _, err := OpenMessage(key, b); err == nil {
			t.Errorf("%s message accepted", name)
		}
	}
}

// runBus runs c's bus until stop (or the end of the test) and returns the
// messages it takes; it returns once c is subscribed.
func runBus(t *testing.T, c *Cluster) (got chan router.BusMessage, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	got = make(chan router.BusMessage, 4)
	subscribed := make(chan struct{}, 4)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.Run(ctx, func(m router.BusMessage) { got <- m }, func() { subscribed <- struct{}{} })
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	select {
	case <-subscribed:
	case <-time.After(5 * time.Second):
		t.Fatal("no subscription")
	}
	return got, stop
}

package server_test

// §14 "Session", items 52-72 and 74.
//
// A note on ordering: wherever a live-relayed MSG is involved, the sender
// sends nothing more until the recipient has received it. This keeps these
// tests independent of the relay bug documented by
// TestItem23MsgsRelayedIntactWhileSenderContinues.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/server"
	"github.com/commucat/commucat/internal/servertest"
)

// ackSeq returns the "ack" of an ACK payload.
func ackSeq(t testing.TB, payload []byte) uint32 {
	t.Helper()
	n, ok := client.AckNumber(payload)
	if !ok {
		t.Fatalf("ACK payload %s", payload)
	}
	return n
}

// nextMsg returns the next MSG received by c (skipping PRESENCE pushes and
// failing on anything else).
func nextMsg(t testing.TB, c *client.Conn) ccp.Frame {
	t.Helper()
	f := recvNonPresence(t, c, wait)
	if f.Type != ccp.Msg {
		t.Fatalf("got %v %s, want a MSG", f, f.Payload)
	}
	return f
}

// channelWith makes a connect, list members on a fresh channel and returns it.
func channelWith(t testing.TB, c *client.Conn, members ...string) uint32 {
	t.Helper()
	ch := freshChannel()
	if _, err := c.Join(ctxWait(t), ch, members, ""); err != nil {
		t.Fatalf("JOIN: %v", err)
	}
	return ch
}

// Item 52: A member's MSG is acknowledged with `{"ack":<its sequence>}` on
// the same channel.
func TestItem52MsgAck(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			r := openRawHTTP(t, s, true)
			r.connect(r.clientConfig(newIdentity(t, "ack"), uniqueHandle("ack"), []int{v}, nil))
			ch := freshChannel()
			r.expectAck(ch, r.next(ccp.Join, ch, []byte(`{}`)))
			r.send(ccp.Msg, ch, 41, []byte("hello"))
			f := r.frame(wait)
			if f.Type != ccp.Ack || f.Channel != ch || string(f.Payload) != `{"ack":41}` {
				t.Fatalf("got %v %s, want ACK {\"ack\":41} on channel %d", f, f.Payload, ch)
			}
		})
	}
}

// Item 53: Resending a MSG with the same sequence returns an identical ACK
// payload and the recipient receives the message once.
func TestItem53DuplicateMsg(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "dup-b")
	b := dial(t, s, idb, uniqueHandle("dup-b"))
	r := openRawHTTP(t, s, true)
	r.connect(r.clientConfig(newIdentity(t, "dup-a"), uniqueHandle("dup-a"), []int{2}, nil))
	ch := freshChannel()
	r.expectAck(ch, r.next(ccp.Join, ch, []byte(`{"members":["`+idb.DeviceID+`"]}`)))

	seq := r.next(ccp.Msg, ch, []byte("once"))
	first := r.expectAck(ch, seq)
	if f := nextMsg(t, b); string(f.Payload) != "once" {
		t.Fatalf("recipient got %q", f.Payload)
	}
	r.send(ccp.Msg, ch, seq, []byte("once"))
	second := r.expectAck(ch, seq)
	if string(first) != string(second) {
		t.Fatalf("duplicate ACK %s differs from %s", second, first)
	}
	r.expectAck(ch, r.next(ccp.Msg, ch, []byte("marker")))
	if f := nextMsg(t, b); string(f.Payload) != "marker" {
		t.Fatalf("recipient got %q after the duplicate, want the marker (the duplicate was delivered again)", f.Payload)
	}
}

// Item 54: A frame whose sequence is below the channel's last accepted one
// gets `Sequence Violation` (409) and the connection stays open.
func TestItem54SequenceViolation(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			r := openRawHTTP(t, s, true)
			r.connect(r.clientConfig(newIdentity(t, "seqv"), uniqueHandle("seqv"), []int{v}, nil))
			ch := freshChannel()
			r.expectAck(ch, r.next(ccp.Join, ch, []byte(`{}`)))
			r.send(ccp.Msg, ch, 10, []byte("ten"))
			r.expectAck(ch, 10)
			r.send(ccp.Msg, ch, 9, []byte("nine"))
			p := r.expectError(ccp.TitleSequenceViolation)
			if p.Status != 409 || !p.HasSequence || p.Sequence != 9 {
				t.Fatalf("Sequence Violation %+v", p)
			}
			r.send(ccp.Msg, ch, 11, []byte("eleven"))
			r.expectAck(ch, 11)
		})
	}
}

// Item 55: Server sequences on one connection strictly increase across all
// channels: AUTH 1, ACK 2, then 3, 4, …
func TestItem55ServerSequences(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			idb := newIdentity(t, "seq-b")
			b := dial(t, s, idb, uniqueHandle("seq-b"))
			r := openRawHTTP(t, s, true)
			ida := newIdentity(t, "seq-a")
			res := r.connect(r.clientConfig(ida, uniqueHandle("seq-a"), []int{v}, []string{"noise", "presence.push"}))
			if res.auth.Sequence != 1 || res.ack.Sequence != 2 {
				t.Fatalf("AUTH sequence %d, ACK sequence %d", res.auth.Sequence, res.ack.Sequence)
			}
			ch1, ch2 := freshChannel(), freshChannel()
			if _, err := b.Join(ctxWait(t), ch2, []string{ida.DeviceID}, ""); err != nil {
				t.Fatal(err)
			}
			r.next(ccp.Join, ch1, []byte(`{}`))
			r.next(ccp.Msg, ch1, []byte("x"))
			r.next(ccp.Typing, ch2, []byte(`{}`))
			r.next(ccp.Msg, freshChannel(), []byte("unknown channel"))
			r.sendBytes(mustHex(t, "04ff030400"))
			if err := b.Typing(ctxWait(t), ch2); err != nil {
				t.Fatal(err)
			}
			marker := r.next(ccp.Join, ch2, []byte(`{}`))
			want := uint32(3)
			n := 0
			r.frameUntil(wait, "the marker ACK", func(f ccp.Frame) bool {
				if f.Sequence != want {
					t.Fatalf("frame %v %s has server sequence %d, want %d", f, f.Payload, f.Sequence, want)
				}
				want++
				n++
				m, ok := client.AckNumber(f.Payload)
				return f.Type == ccp.Ack && f.Channel == ch2 && ok && m == marker
			})
			if n < 6 {
				t.Fatalf("only %d frames", n)
			}
		})
	}
}

// Item 56: The first JOIN creates the channel with the listed members; a
// JOIN by an unlisted device gets `Forbidden`; with `security.open_channels
// = true` it succeeds.
func TestItem56JoinMembership(t *testing.T) {
	t.Parallel()
	for _, open := range []bool{false, true} {
		t.Run(fmt.Sprintf("open_channels=%v", open), func(t *testing.T) {
			t.Parallel()
			s := startServer(t, func(c *config.Config) { c.Security.OpenChannels = open })
			idb := newIdentity(t, "listed")
			b := dial(t, s, idb, uniqueHandle("listed"))
			c := dial(t, s, newIdentity(t, "unlisted"), uniqueHandle("unlisted"))
			a := dial(t, s, newIdentity(t, "creator"), uniqueHandle("creator"))
			ch := channelWith(t, a, idb.DeviceID)
			// The listed device is a member: it may relay on the channel
			// and JOIN again.
			if err := b.Typing(ctxWait(t), ch); err != nil {
				t.Fatalf("listed member: %v", err)
			}
			if _, err := b.Join(ctxWait(t), ch, nil, ""); err != nil {
				t.Fatalf("listed member JOIN: %v", err)
			}
			_, err := c.Join(ctxWait(t), ch, nil, "")
			if !open {
				requestProblem(t, err, ccp.TitleForbidden)
				return
			}
			if err != nil {
				t.Fatalf("JOIN with open_channels: %v", err)
			}
			if err := c.Typing(ctxWait(t), ch); err != nil {
				t.Fatalf("after an open JOIN: %v", err)
			}
		})
	}
}

// Item 57: A JOIN listing an unknown device gets `Not Found` and changes no
// membership.
func TestItem57JoinUnknownDevice(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb, idc := newIdentity(t, "member"), newIdentity(t, "bystander")
	register(t, s, idb, uniqueHandle("member"))
	c := dial(t, s, idc, uniqueHandle("bystander"))
	a := dial(t, s, newIdentity(t, "owner"), uniqueHandle("owner"))
	ch := channelWith(t, a, idb.DeviceID)

	_, err := a.Join(ctxWait(t), ch, []string{idc.DeviceID, "ghost-device"}, "")
	ef := requestProblem(t, err, ccp.TitleNotFound)
	if ef.Problem.Status != 404 {
		t.Fatalf("status %d", ef.Problem.Status)
	}
	// The known device listed beside the unknown one was not added.
	requestProblem(t, c.Typing(ctxWait(t), ch), ccp.TitleForbidden)

	// On a new channel nothing is created either.
	ch2 := freshChannel()
	_, err = a.Join(ctxWait(t), ch2, []string{"ghost-device"}, "")
	requestProblem(t, err, ccp.TitleNotFound)
	requestProblem(t, a.Typing(ctxWait(t), ch2), ccp.TitleNotFound)
}

// Item 58: JOINs never remove members; LEAVE removes only the sender; after
// the last LEAVE a MSG on the channel gets `Not Found`.
func TestItem58JoinLeave(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "stay")
	b := dial(t, s, idb, uniqueHandle("stay"))
	a := dial(t, s, newIdentity(t, "leaver"), uniqueHandle("leaver"))
	ch := channelWith(t, a, idb.DeviceID)
	ctx := ctxWait(t)
	if _, err := a.Join(ctx, ch, []string{}, ""); err != nil {
		t.Fatal(err)
	}
	if err := b.Typing(ctx, ch); err != nil {
		t.Fatalf("a JOIN removed a member: %v", err)
	}
	if _, err := a.Leave(ctx, ch); err != nil {
		t.Fatal(err)
	}
	requestProblem(t, a.Typing(ctx, ch), ccp.TitleForbidden)
	if err := b.Typing(ctx, ch); err != nil {
		t.Fatalf("LEAVE removed another member: %v", err)
	}
	if _, err := b.Leave(ctx, ch); err != nil {
		t.Fatal(err)
	}
	requestProblem(t, a.SendMessage(ctx, ch, []byte("anyone?")), ccp.TitleNotFound)
}

// Item 59: A MSG by a non-member gets `Forbidden`, on an unknown channel
// `Not Found`; the connection stays open in both cases.
func TestItem59MsgPermission(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			a := dial(t, s, newIdentity(t, "owner"), uniqueHandle("owner"))
			c := dial(t, s, newIdentity(t, "outsider"), uniqueHandle("outsider"), withVersions(v))
			ch := channelWith(t, a)
			ctx := ctxWait(t)
			requestProblem(t, c.SendMessage(ctx, ch, []byte("let me in")), ccp.TitleForbidden)
			requestProblem(t, c.SendMessage(ctx, freshChannel(), []byte("anyone?")), ccp.TitleNotFound)
			if _, err := c.Join(ctx, freshChannel(), nil, ""); err != nil {
				t.Fatalf("connection no longer works: %v", err)
			}
		})
	}
}

// Item 60: Relayed TYPING, GROUP_EVENT and CALL_* objects carry `sender`
// equal to the real sending device id, replacing a forged value.
//
// CALL_* frames are not covered: calls are not implemented by the server
// yet (CALL_OFFER is answered with Internal Error), so no CALL_* frame is
// ever relayed.
func TestItem60SenderAttribution(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "rcpt")
	b := dial(t, s, idb, uniqueHandle("rcpt"))
	ida := newIdentity(t, "real")
	a := dial(t, s, ida, uniqueHandle("real"))
	ch := channelWith(t, a, idb.DeviceID)
	for _, typ := range []ccp.FrameType{ccp.Typing, ccp.GroupEvent} {
		if _, err := a.Request(ctxWait(t), typ, ch, []byte(`{"sender":"mallory","x":{"n":1}}`)); err != nil {
			t.Fatalf("%v: %v", typ, err)
		}
		f := recvNonPresence(t, b, wait)
		if f.Type != typ || f.Channel != ch {
			t.Fatalf("got %v %s, want %v", f, f.Payload, typ)
		}
		var m struct {
			Sender string          `json:"sender"`
			X      json.RawMessage `json:"x"`
		}
		if err := json.Unmarshal(f.Payload, &m); err != nil {
			t.Fatal(err)
		}
		if m.Sender != ida.DeviceID {
			t.Fatalf("%v relayed with sender %q, want %q (payload %s)", typ, m.Sender, ida.DeviceID, f.Payload)
		}
		if string(m.X) != `{"n":1}` {
			t.Fatalf("%v relayed as %s: other members changed", typ, f.Payload)
		}
	}
}

// Item 61: A MSG for an offline v2 recipient is acknowledged to the sender
// and delivered when the recipient connects.
func TestItem61OfflineDelivery(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "offline")
	handle := uniqueHandle("offline")
	register(t, s, idb, handle)
	a := dial(t, s, newIdentity(t, "sender"), uniqueHandle("sender"))
	ch := channelWith(t, a, idb.DeviceID)
	if err := a.SendMessage(ctxWait(t), ch, []byte("while you were away")); err != nil {
		t.Fatalf("MSG to an offline recipient: %v", err)
	}
	b := dial(t, s, idb, handle)
	if b.Version() != 2 {
		t.Fatalf("version %d", b.Version())
	}
	f := nextMsg(t, b)
	if f.Channel != ch || string(f.Payload) != "while you were away" {
		t.Fatalf("got %v %q", f, f.Payload)
	}
}

// Item 62: A v2 recipient that disconnects without acknowledging receives
// the same MSG again on reconnect; once acknowledged it is never delivered
// again.
func TestItem62RedeliveryUntilAck(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "forgetful")
	handle := uniqueHandle("forgetful")
	b := dial(t, s, idb, handle)
	a := dial(t, s, newIdentity(t, "sender"), uniqueHandle("sender"))
	ch := channelWith(t, a, idb.DeviceID)
	if err := a.SendMessage(ctxWait(t), ch, []byte("important")); err != nil {
		t.Fatal(err)
	}
	if f := nextMsg(t, b); string(f.Payload) != "important" {
		t.Fatalf("got %q", f.Payload)
	}
	if err := b.Close(); err != nil { // no client ACK
		t.Fatal(err)
	}
	b = dial(t, s, idb, handle)
	f := nextMsg(t, b)
	if f.Channel != ch || string(f.Payload) != "important" {
		t.Fatalf("redelivered %v %q", f, f.Payload)
	}
	if err := b.AckDelivery(ctxWait(t), f.Channel, f.Sequence); err != nil {
		t.Fatal(err)
	}
	// A round trip after the ACK: the server has handled the ACK (frames
	// are processed in order) before this JOIN is answered.
	if _, err := b.Join(ctxWait(t), freshChannel(), nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.SendMessage(ctxWait(t), ch, []byte("marker")); err != nil {
		t.Fatal(err)
	}
	b = dial(t, s, idb, handle)
	if f := nextMsg(t, b); string(f.Payload) != "marker" {
		t.Fatalf("after the ACK the first MSG is %q, want the marker", f.Payload)
	}
}

// Item 63: 300 MSGs queued for an offline device are all delivered on
// reconnect, in the order sent.
func TestItem63ThreeHundredQueued(t *testing.T) {
	t.Parallel()
	// The default frame burst (200 per second) would refuse some of the
	// 300 frames sent back to back.
	s := startServer(t, func(c *config.Config) { c.Security.RateLimit.Frame.Burst = 10000 })
	idb := newIdentity(t, "bulk-b")
	handle := uniqueHandle("bulk-b")
	register(t, s, idb, handle)
	a := dial(t, s, newIdentity(t, "bulk-a"), uniqueHandle("bulk-a"))
	ch := channelWith(t, a, idb.DeviceID)
	const n = 300
	ctx := ctxWait(t)
	for i := 0; i < n; i++ {
		if _, err := a.Send(ctx, ccp.Msg, ch, []byte(fmt.Sprintf("msg-%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for acked := 0; acked < n; {
		f := recvNonPresence(t, a, wait)
		if f.Type != ccp.Ack {
			t.Fatalf("sender got %v %s", f, f.Payload)
		}
		acked++
	}
	b := dial(t, s, idb, handle)
	for i := 0; i < n; i++ {
		f := nextMsg(t, b)
		if want := fmt.Sprintf("msg-%03d", i); string(f.Payload) != want {
			t.Fatalf("message %d is %q, want %q", i, f.Payload, want)
		}
		if err := b.AckDelivery(ctx, f.Channel, f.Sequence); err != nil {
			t.Fatal(err)
		}
	}
}

// clockServer starts a server like servertest.Start whose clock is the real
// time plus an offset the test moves forward.
func clockServer(t *testing.T, mutate func(*config.Config)) (*servertest.Server, *atomic.Int64) {
	t.Helper()
	dir := t.TempDir()
	c, pool := servertest.Config(t, dir)
	if mutate != nil {
		mutate(c)
	}
	offset := new(atomic.Int64)
	reg := prometheus.NewRegistry()
	srv, err := server.New(context.Background(), server.Options{
		Config: c, Logger: slog.New(slog.DiscardHandler), Registry: reg,
		Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(c.Server.Bind); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	return &servertest.Server{URL: "https://" + srv.Addr().String(), Config: c, Registry: reg, CertPool: pool, Srv: srv, Dir: dir}, offset
}

// Item 64: A queued MSG older than `limits.relay_ttl` is never delivered.
//
// The server runs with an injected clock (server.Options.Now), which the
// test moves past relay_ttl = 60 s.
func TestItem64RelayTTL(t *testing.T) {
	t.Parallel()
	s, offset := clockServer(t, func(c *config.Config) { c.Limits.RelayTTL = 60 * time.Second })
	idb := newIdentity(t, "late")
	handle := uniqueHandle("late")
	register(t, s, idb, handle)
	a := dial(t, s, newIdentity(t, "early"), uniqueHandle("early"))
	ch := channelWith(t, a, idb.DeviceID)
	if err := a.SendMessage(ctxWait(t), ch, []byte("stale")); err != nil {
		t.Fatal(err)
	}
	offset.Store(int64(61 * time.Second))
	if err := a.SendMessage(ctxWait(t), ch, []byte("fresh")); err != nil {
		t.Fatal(err)
	}
	b := dial(t, s, idb, handle)
	if f := nextMsg(t, b); string(f.Payload) != "fresh" {
		t.Fatalf("first delivery %q, want \"fresh\" (the expired MSG was delivered)", f.Payload)
	}
}

// Item 65: A v1 recipient without `delivery.ack` receives a queued MSG
// exactly once.
func TestItem65V1ExactlyOnce(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "legacy")
	handle := uniqueHandle("legacy")
	connectB := func() *rawConn {
		r := openRawHTTP(t, s, true)
		res := r.connect(r.legacyConfig(idb, handle))
		var a authFields
		if err := json.Unmarshal(res.auth.Payload, &a); err != nil {
			t.Fatal(err)
		}
		if a.ProtocolVersion != 1 || slices.Contains(a.AcceptedCapabilities, "delivery.ack") {
			t.Fatalf("AUTH %s: want version 1 without delivery.ack", res.auth.Payload)
		}
		return r
	}
	disconnect := func(r *rawConn) {
		if err := r.closeW(); err != nil {
			t.Fatal(err)
		}
		r.expectEOF(wait)
	}
	nextB := func(r *rawConn) ccp.Frame {
		return r.frameUntil(wait, "a MSG", func(f ccp.Frame) bool { return f.Type != ccp.Presence })
	}
	disconnect(connectB())
	a := dial(t, s, newIdentity(t, "sender"), uniqueHandle("sender"))
	ch := channelWith(t, a, idb.DeviceID)
	if err := a.SendMessage(ctxWait(t), ch, []byte("queued")); err != nil {
		t.Fatal(err)
	}
	r := connectB()
	if f := nextB(r); f.Type != ccp.Msg || string(f.Payload) != "queued" {
		t.Fatalf("got %v %q", f, f.Payload)
	}
	if err := a.SendMessage(ctxWait(t), ch, []byte("marker-1")); err != nil {
		t.Fatal(err)
	}
	if f := nextB(r); f.Type != ccp.Msg || string(f.Payload) != "marker-1" {
		t.Fatalf("got %v %q, want marker-1", f, f.Payload)
	}
	disconnect(r)
	if err := a.SendMessage(ctxWait(t), ch, []byte("marker-2")); err != nil {
		t.Fatal(err)
	}
	r = connectB()
	if f := nextB(r); f.Type != ccp.Msg || string(f.Payload) != "marker-2" {
		t.Fatalf("after reconnecting got %v %q, want marker-2 (the queued MSG came twice)", f, f.Payload)
	}
}

// Item 66: A TYPING for an offline device is never delivered later; media
// frames and PRESENCE are never acknowledged.
func TestItem66LiveNotQueuedNoAcks(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "away")
	handle := uniqueHandle("away")
	register(t, s, idb, handle)
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			r := openRawHTTP(t, s, true)
			r.connect(r.clientConfig(newIdentity(t, "typist"), uniqueHandle("typist"), []int{v}, nil))
			ch := freshChannel()
			r.expectAck(ch, r.next(ccp.Join, ch, []byte(`{"members":["`+idb.DeviceID+`"]}`)))
			r.expectAck(ch, r.next(ccp.Typing, ch, []byte(`{"typing":true}`)))

			noAck := []uint32{
				r.next(ccp.VoiceFrame, ch, []byte{1, 0, 0, 0xfc}),
				r.next(ccp.VideoFrame, ch, []byte{1, 0, 1, 0x10}),
				r.next(ccp.Presence, 0, []byte(`{"state":"away"}`)),
			}
			marker := r.next(ccp.Join, ch, []byte(`{}`))
			r.frameUntil(wait, "the marker ACK", func(f ccp.Frame) bool {
				if f.Type != ccp.Ack {
					return false
				}
				n, _ := client.AckNumber(f.Payload)
				if slices.Contains(noAck, n) {
					t.Fatalf("media or PRESENCE frame acknowledged: %v %s", f, f.Payload)
				}
				return n == marker
			})
			r.expectAck(ch, r.next(ccp.Msg, ch, []byte(fmt.Sprintf("marker-%d", v))))
			if err := r.closeW(); err != nil {
				t.Fatal(err)
			}
			r.expectEOF(wait)
		})
	}
	b := dial(t, s, idb, handle)
	for _, want := range []string{"marker-1", "marker-2"} {
		f := recvNonPresence(t, b, wait)
		if f.Type != ccp.Msg || string(f.Payload) != want {
			t.Fatalf("got %v %s, want MSG %q (a TYPING was queued?)", f, f.Payload, want)
		}
	}
}

// groupCreate sends GROUP_CREATE on ch and returns the ACK payload.
func groupCreate(t testing.TB, c *client.Conn, ch uint32, payload string) ([]byte, error) {
	t.Helper()
	return c.Request(ctxWait(t), ccp.GroupCreate, ch, []byte(payload))
}

// Item 67: GROUP_CREATE with an existing `group_id` gets `Conflict` and the
// group's owner is unchanged.
func TestItem67GroupCreateConflict(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "member")
	b := dial(t, s, idb, uniqueHandle("member"))
	ida := newIdentity(t, "owner")
	a := dial(t, s, ida, uniqueHandle("owner"))
	gid := uniqueHandle("group")
	ack, err := groupCreate(t, a, freshChannel(), `{"group_id":"`+gid+`","members":["`+idb.DeviceID+`"]}`)
	if err != nil {
		t.Fatal(err)
	}
	if m := jsonObject(t, ack); m["group_id"] != gid {
		t.Fatalf("ACK %s", ack)
	}
	recvUntil(t, b, wait, "GROUP_CREATE", func(f ccp.Frame) bool { return f.Type == ccp.GroupCreate })
	_, err = groupCreate(t, b, freshChannel(), `{"group_id":"`+gid+`"}`)
	requestProblem(t, err, ccp.TitleConflict)
	if n := countRows(t, s, "SELECT count(*) FROM groups WHERE group_id = ? AND owner_device = ?", gid, ida.DeviceID); n != 1 {
		t.Fatal("the group's owner changed")
	}
	if n := countRows(t, s, "SELECT count(*) FROM group_members WHERE group_id = ? AND device_id = ? AND role = 'member'", gid, idb.DeviceID); n != 1 {
		t.Fatal("the conflicting creator's role changed")
	}
}

// Item 68: GROUP_INVITE by a plain member gets `Forbidden`; by the owner it
// is acknowledged with `device` and `group_id` and the invitee receives it.
func TestItem68GroupInvite(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb, idc := newIdentity(t, "plain"), newIdentity(t, "invitee")
	b := dial(t, s, idb, uniqueHandle("plain"))
	c := dial(t, s, idc, uniqueHandle("invitee"))
	ida := newIdentity(t, "owner")
	a := dial(t, s, ida, uniqueHandle("owner"))
	gid := uniqueHandle("group")
	ch := freshChannel()
	if _, err := groupCreate(t, a, ch, `{"group_id":"`+gid+`","members":["`+idb.DeviceID+`"]}`); err != nil {
		t.Fatal(err)
	}
	invite := []byte(`{"device":"` + idc.DeviceID + `","group_id":"` + gid + `"}`)
	_, err := b.Request(ctxWait(t), ccp.GroupInvite, ch, invite)
	requestProblem(t, err, ccp.TitleForbidden)

	ack, err := a.Request(ctxWait(t), ccp.GroupInvite, ch, invite)
	if err != nil {
		t.Fatal(err)
	}
	m := jsonObject(t, ack)
	if m["device"] != idc.DeviceID || m["group_id"] != gid || m["ack"] == nil {
		t.Fatalf("ACK %s, want ack, device and group_id", ack)
	}
	f := recvNonPresence(t, c, wait)
	if f.Type != ccp.GroupInvite || f.Channel != ch {
		t.Fatalf("invitee got %v %s, want the GROUP_INVITE", f, f.Payload)
	}
	if m := jsonObject(t, f.Payload); m["device"] != idc.DeviceID || m["group_id"] != gid || m["sender"] != ida.DeviceID {
		t.Fatalf("invitee got %s", f.Payload)
	}
}

// checkPresence checks the §6.8 shape of a PRESENCE push about entity.
func checkPresence(t testing.TB, f ccp.Frame, entity, state, userID string) {
	t.Helper()
	if f.Type != ccp.Presence || f.Channel != 0 {
		t.Fatalf("got %v %s, want PRESENCE on channel 0", f, f.Payload)
	}
	var p struct {
		Entity    string          `json:"entity"`
		ExpiresAt string          `json:"expires_at"`
		State     string          `json:"state"`
		User      json.RawMessage `json:"user"`
	}
	if err := json.Unmarshal(f.Payload, &p); err != nil {
		t.Fatal(err)
	}
	if p.Entity != entity || p.State != state {
		t.Fatalf("PRESENCE %s, want entity %s state %s", f.Payload, entity, state)
	}
	if _, err := time.Parse(time.RFC3339, p.ExpiresAt); err != nil {
		t.Fatalf("expires_at %q: %v", p.ExpiresAt, err)
	}
	var u struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(p.User, &u); err != nil || u.ID != userID {
		t.Fatalf("PRESENCE user %s, want user %s", p.User, userID)
	}
}

// presenceOfDevice waits for a PRESENCE about entity.
func presenceOfDevice(t testing.TB, c *client.Conn, entity string, d time.Duration) ccp.Frame {
	t.Helper()
	return recvUntil(t, c, d, "PRESENCE of "+entity, func(f ccp.Frame) bool {
		if f.Type != ccp.Presence {
			return false
		}
		e, _ := presenceOf(t, f)
		return e == entity
	})
}

// Item 69: When device B connects, an online co-member A receives within
// 2 s PRESENCE `{"entity":B,"expires_at":…,"state":"online","user":…}` on
// channel 0, and one with `"state":"offline"` when B disconnects.
func TestItem69PresencePush(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "b")
	handle := uniqueHandle("b")
	register(t, s, idb, handle)
	a := dial(t, s, newIdentity(t, "a"), uniqueHandle("a"))
	channelWith(t, a, idb.DeviceID)
	b := dial(t, s, idb, handle)
	checkPresence(t, presenceOfDevice(t, a, idb.DeviceID, 2*time.Second), idb.DeviceID, "online", b.UserID())
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	checkPresence(t, presenceOfDevice(t, a, idb.DeviceID, 2*time.Second), idb.DeviceID, "offline", b.UserID())
}

// Item 70: A v1 connection receives presence pushes although it did not
// offer `presence.push`.
func TestItem70V1PresencePush(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "b")
	handle := uniqueHandle("b")
	register(t, s, idb, handle)
	r := openRawHTTP(t, s, true)
	r.connect(r.legacyConfig(newIdentity(t, "v1"), uniqueHandle("v1"))) // capabilities ["noise","zstd"]
	ch := freshChannel()
	r.expectAck(ch, r.next(ccp.Join, ch, []byte(`{"members":["`+idb.DeviceID+`"]}`)))
	b := dial(t, s, idb, handle)
	f := r.frameUntil(2*time.Second, "PRESENCE", func(f ccp.Frame) bool { return f.Type == ccp.Presence })
	checkPresence(t, f, idb.DeviceID, "online", b.UserID())
}

// Item 71: A device that connects receives a PRESENCE snapshot for each
// co-member that is online.
func TestItem71PresenceSnapshot(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "late")
	handle := uniqueHandle("late")
	register(t, s, idb, handle)
	ida, idc, idd := newIdentity(t, "a"), newIdentity(t, "c"), newIdentity(t, "offline")
	register(t, s, idd, uniqueHandle("offline"))
	a := dial(t, s, ida, uniqueHandle("a"))
	c := dial(t, s, idc, uniqueHandle("c"))
	channelWith(t, a, idb.DeviceID, idd.DeviceID)
	channelWith(t, c, idb.DeviceID)
	b := dial(t, s, idb, handle)
	got := map[string]string{}
	for len(got) < 2 {
		f := recv(t, b, wait)
		if f.Type != ccp.Presence {
			t.Fatalf("got %v %s before the snapshot was complete", f, f.Payload)
		}
		e, st := presenceOf(t, f)
		got[e] = st
	}
	if got[ida.DeviceID] != "online" || got[idc.DeviceID] != "online" {
		t.Fatalf("snapshot %v, want %s and %s online", got, ida.DeviceID, idc.DeviceID)
	}
	if _, ok := got[idd.DeviceID]; ok {
		t.Fatalf("snapshot %v includes the offline co-member", got)
	}
}

// Item 72: Connecting the same device a second time sends ERROR titled
// `Replaced` on the first connection and ends it; the second connection
// works and no offline push is sent.
func TestItem72Replaced(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "twice")
	handle := uniqueHandle("twice")
	register(t, s, idb, handle)
	a := dial(t, s, newIdentity(t, "watcher"), uniqueHandle("watcher"))
	ch := channelWith(t, a, idb.DeviceID)
	first := dial(t, s, idb, handle)
	presenceOfDevice(t, a, idb.DeviceID, wait) // online
	second := dial(t, s, idb, handle)

	f := recvUntil(t, first, wait, "Replaced", func(f ccp.Frame) bool { return f.Type == ccp.Error })
	p := wantProblem(t, f, ccp.TitleReplaced, 409, "")
	if f.Channel != 0 || p.HasSequence || p.HasFrameType {
		t.Fatalf("Replaced ERROR %v %s: want channel 0 without sequence and frame_type", f, f.Payload)
	}
	expectEnded(t, first, wait)

	if err := second.Typing(ctxWait(t), ch); err != nil {
		t.Fatalf("second connection: %v", err)
	}
	recvUntil(t, a, wait, "the TYPING of the second connection", func(f ccp.Frame) bool {
		if f.Type == ccp.Presence {
			if e, st := presenceOf(t, f); e == idb.DeviceID && st == "offline" {
				t.Fatalf("offline push after a replacement: %s", f.Payload)
			}
		}
		return f.Type == ccp.Typing
	})
}

// Item 74: Frames beyond the frame-zone burst get `Too Many Requests` with
// `retry_after`; the same frame resent with the same sequence after the
// wait is accepted.
func TestItem74FrameRateLimit(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *config.Config) {
		c.Security.RateLimit.Frame = config.RateLimit{Burst: 5, Window: time.Second, Penalty: 0}
	})
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			r := openRawHTTP(t, s, true)
			r.connect(r.clientConfig(newIdentity(t, "flood"), uniqueHandle("flood"), []int{v}, nil))
			ch := freshChannel()
			// Six frames in one write: the burst of 5 admits the JOIN and
			// four MSGs; the sixth frame is refused.
			var b []byte
			b = append(b, encodeFrame(t, ccp.Join, ch, 3, []byte(`{}`))...)
			for seq := uint32(4); seq <= 8; seq++ {
				b = append(b, encodeFrame(t, ccp.Msg, ch, seq, []byte("m"))...)
			}
			r.sendBytes(b)
			for seq := uint32(3); seq <= 7; seq++ {
				r.expectAck(ch, seq)
			}
			p := r.expectError(ccp.TitleTooManyRequests)
			if p.Status != 429 || !p.HasRetryAfter || p.RetryAfter < 1 || !p.HasSequence || p.Sequence != 8 {
				t.Fatalf("Too Many Requests %+v: want retry_after ≥ 1 for sequence 8", p)
			}
			time.Sleep(time.Duration(p.RetryAfter) * time.Second) // the wait the server asked for
			r.send(ccp.Msg, ch, 8, []byte("m"))
			r.expectAck(ch, 8)
		})
	}
}

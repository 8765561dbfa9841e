package redis

import (
	"bytes"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/router"
)

// Bus messages come from Redis, which any node (or anyone with access to
// it) writes: decoding never panics, and a decoded message re-encodes to
// a message that decodes to the same value.
func FuzzDecodeMessage(f *testing.F) {
	env := "e1"
	for _, m := range []router.BusMessage{
		{Kind: router.KindDeliver, Device: "d", FrameType: 5, Channel: 1, Payload: []byte("hi"), EnvelopeID: &env, QueueID: 7},
		{Kind: router.KindKick, Device: "d", Reason: "replaced", Session: "s"},
	} {
		b, err := EncodeMessage(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"kind":"deliver","device":"d","payload":"!!"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			return
		}
		out, err := EncodeMessage(m)
		if err != nil {
			return // a kind this node does not send
		}
		m2, err := DecodeMessage(out)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v\n%s", err, out)
		}
		out2, err := EncodeMessage(m2)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("encoding not stable:\n%s\n%s", out, out2)
		}
	})
}

// Checking a bus message's mac never panics, and a message that opens
// opens again, to the same bytes, once sealed anew.
func FuzzOpenMessage(f *testing.F) {
	key := &[32]byte{5}
	raw, err := EncodeMessage(router.BusMessage{Kind: router.KindDeliver, Device: "d", FrameType: 5, Channel: 1, Payload: []byte("hi")})
	if err != nil {
		f.Fatal(err)
	}
	sealed, err := SealMessage(key, raw)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed)
	f.Add(raw)
	f.Add([]byte(`{"mac":1}`))
	meta := busMeta{src: "0123456789abcdef", seq: 1, to: "node-b", ts: 1764158400000}
	if protected, err := SealMessage(key, raw, meta.members()...); err == nil {
		f.Add(protected)
	} else {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, opened, err := openMessage(key, b)
		if err != nil {
			return
		}
		// The replay members are read without panicking, and a message
		// whose members read is judged without panicking either.
		if m, err := readMeta(v); err == nil {
			_ = newReplayGuard().accept(m, "node-b", time.UnixMilli(1764158400000))
		}
		again, err := SealMessage(key, opened)
		if err != nil {
			t.Fatalf("an opened message does not seal: %v", err)
		}
		if o2, err := OpenMessage(key, again); err != nil || !bytes.Equal(o2, opened) {
			t.Fatalf("resealed message opens to %q, %v; want %q", o2, err, opened)
		}
	})
}

package redis

import (
	"bytes"
	"testing"

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

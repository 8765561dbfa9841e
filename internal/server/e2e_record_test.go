package server_test

// §14 "Record layer (v2)", items 48-51, on hand-driven streams: the test
// seals and opens records itself (chacha20poly1305, §5.4).

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/noiseconn"
)

// Item 48: The server's first bytes after the ACK form a record that
// decrypts with the server→client key and nonce 0 and contains a
// well-formed frame stream.
func TestItem48FirstRecordAfterAck(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, pattern := range []string{noiseconn.PatternXK, noiseconn.PatternIK} {
		t.Run(pattern, func(t *testing.T) {
			t.Parallel()
			r := openRawHTTP(t, s, true)
			cfg := r.clientConfig(newIdentity(t, "rec"), uniqueHandle("rec"), []int{2}, nil)
			cfg.Pattern = pattern
			res := r.connect(cfg)
			if res.sess.Version != 2 {
				t.Fatalf("version %d", res.sess.Version)
			}
			ch := freshChannel()
			seq := r.next(ccp.Join, ch, []byte(`{}`))
			r.expectAck(ch, seq)
			r.mu.Lock()
			first := bytes.Clone(r.recRaw[0])
			r.mu.Unlock()
			n := int(binary.BigEndian.Uint16(first))
			if n+2 != len(first) {
				t.Fatalf("record length %d for %d bytes", n, len(first))
			}
			data, err := openRecord(res.sess.RecvKey, 0, first[2:])
			if err != nil {
				t.Fatalf("first record does not open with the server→client key and nonce 0: %v", err)
			}
			f, used, err := ccp.Decode(data, ccp.V2)
			if err != nil || used != len(data) {
				t.Fatalf("record data %x is not a frame stream: %v", data, err)
			}
			if f.Type != ccp.Ack || f.Channel != ch {
				t.Fatalf("first frame %v %s", f, f.Payload)
			}
		})
	}
}

// Item 49: A client record with a corrupted tag makes the server end the
// stream without sending another frame.
func TestItem49CorruptedTag(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	r := openRawHTTP(t, s, true)
	r.connect(r.clientConfig(newIdentity(t, "tag"), uniqueHandle("tag"), []int{2}, nil))
	ch := freshChannel()
	seq := r.next(ccp.Join, ch, []byte(`{}`))
	r.expectAck(ch, seq)
	rec := r.sealRecord(encodeFrame(t, ccp.Join, freshChannel(), seq+1, []byte(`{}`)), nil)
	rec[len(rec)-1] ^= 0x01
	if err := r.writeRaw(rec); err != nil {
		t.Fatal(err)
	}
	if got := r.expectEOF(wait); len(got) != 0 {
		t.Fatalf("the server sent %v after a corrupted record", got)
	}
}

// Item 50: With `security.padding = "buckets"` every server record is
// 274, 1042, 4114 or 16 402 bytes long.
func TestItem50PaddingBuckets(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *config.Config) { c.Security.Padding = config.PaddingBuckets })
	r := openRawHTTP(t, s, true)
	ida := newIdentity(t, "pad-a")
	r.connect(r.clientConfig(ida, uniqueHandle("pad-a"), []int{2}, []string{"noise", "presence.push", "delivery.ack"}))
	b := dial(t, s, newIdentity(t, "pad-b"), uniqueHandle("pad-b"))
	ch := freshChannel()
	if _, err := b.Join(ctxWait(t), ch, []string{ida.DeviceID}, ""); err != nil {
		t.Fatal(err)
	}
	// Small replies and pushes, then relayed MSGs of several sizes, one of
	// them larger than a bucket.
	seq := r.next(ccp.Join, ch, []byte(`{}`))
	r.expectAck(ch, seq)
	for _, n := range []int{1, 500, 900, 3000, 10000, 16000, 40000} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		if err := b.SendMessage(ctxWait(t), ch, msg); err != nil {
			t.Fatal(err)
		}
		f := r.frameUntil(wait, fmt.Sprintf("the %d-byte MSG", n), func(f ccp.Frame) bool { return f.Type == ccp.Msg })
		if !bytes.Equal(f.Payload, msg) {
			t.Fatalf("MSG of %d bytes relayed as %d bytes", n, len(f.Payload))
		}
		if err := b.SetPresence(ctxWait(t), fmt.Sprintf("state-%d", n)); err != nil {
			t.Fatal(err)
		}
	}
	seq = r.next(ccp.Typing, ch, []byte(`{}`))
	r.expectAck(ch, seq)
	sizes := r.records()
	if len(sizes) < 10 {
		t.Fatalf("only %d records", len(sizes))
	}
	for i, n := range sizes {
		switch n {
		case 274, 1042, 4114, 16402:
		default:
			t.Fatalf("record %d is %d bytes (all sizes %v)", i, n, sizes)
		}
	}
}

// Item 51: A client record with a non-zero padding byte ends the stream.
func TestItem51NonZeroPadding(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	r := openRawHTTP(t, s, true)
	r.connect(r.clientConfig(newIdentity(t, "padbyte"), uniqueHandle("padbyte"), []int{2}, nil))
	ch := freshChannel()
	seq := r.next(ccp.Join, ch, []byte(`{}`))
	r.expectAck(ch, seq)
	rec := r.sealRecord(encodeFrame(t, ccp.Join, freshChannel(), seq+1, []byte(`{}`)), []byte{0, 0, 1, 0})
	if err := r.writeRaw(rec); err != nil {
		t.Fatal(err)
	}
	if got := r.expectEOF(wait); len(got) != 0 {
		t.Fatalf("the server answered %v to a record with non-zero padding", got)
	}
}

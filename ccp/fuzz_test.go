package ccp

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzDecode checks that the decoder never panics or stalls, that the
// streaming Reader agrees with Decode, and that every frame the strict
// decoder accepts encodes back to the input (or, when the input used a
// non-minimal varint, which §2.2 requires decoders to accept, to a shorter
// encoding of the same frame).
func FuzzDecode(f *testing.F) {
	g := loadGolden(f)
	for _, v := range g.Decoder {
		f.Add(mustHex(f, v.Input))
	}
	for _, v := range g.Encoder {
		fr := Frame{Type: FrameType(v.Type), Channel: v.Channel, Sequence: v.Sequence, Payload: mustHex(f, v.PayloadHex)}
		b, _ := AppendFrame(nil, fr)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, mode := range []Mode{V1, V2} {
			fr, n, err := Decode(in, mode)
			switch {
			case err == nil:
				if n <= 0 || n > len(in) {
					t.Fatalf("consumed %d of %d", n, len(in))
				}
				if mode == V2 {
					checkReencode(t, in[:n], fr)
				}
				// A frame accepted by the strict decoder is accepted by the lenient one.
				if mode == V2 {
					if _, n1, err1 := Decode(in, V1); err1 != nil || n1 != n {
						t.Fatalf("v1 rejects what v2 accepts: %v", err1)
					}
				}
			case err == ErrShortBuffer:
				if n != 0 {
					t.Fatal("short buffer with consumption")
				}
				if fl, pl, perr := PeekFrameLen(in); perr == nil && fl+pl <= len(in) {
					t.Fatalf("complete frame (%d bytes) reported short", fl+pl)
				}
			default:
				var fe *FrameError
				if !errors.As(err, &fe) {
					t.Fatalf("unexpected error type %T %v", err, err)
				}
				if !fe.Fatal {
					fl, pl, perr := PeekFrameLen(in)
					if perr != nil || fe.Consumed != fl+pl {
						t.Fatalf("skippable error consumed %d, frame is %d+%d", fe.Consumed, pl, fl)
					}
				}
				_ = fe.Problem().JSON()
			}
		}
		// The Reader terminates and agrees with Decode frame by frame.
		r := NewReader(iotest.HalfReader(bytes.NewReader(in)), V2)
		rest := in
		for i := 0; i < len(in)+2; i++ {
			fr, err := r.ReadFrame()
			want, n, derr := Decode(rest, V2)
			if err == io.EOF {
				if len(rest) != 0 {
					t.Fatalf("EOF with %d bytes left", len(rest))
				}
				return
			}
			var fe *FrameError
			if errors.As(err, &fe) {
				if fe.Fatal {
					if derr == ErrShortBuffer && !errors.Is(err, ErrTruncatedFrame) {
						t.Fatalf("stream end inside a frame gave %v", err)
					}
					return
				}
				var dfe *FrameError
				if !errors.As(derr, &dfe) || dfe.Err != fe.Err {
					t.Fatalf("reader %v, decode %v", err, derr)
				}
				rest = rest[fe.Consumed:]
				continue
			}
			if err != nil {
				t.Fatalf("reader error %v", err)
			}
			if derr != nil || fr.Type != want.Type || fr.Channel != want.Channel || fr.Sequence != want.Sequence || !bytes.Equal(fr.Payload, want.Payload) {
				t.Fatalf("reader %v, decode %v %v", fr, want, derr)
			}
			rest = rest[n:]
		}
		t.Fatal("reader did not terminate")
	})
}

func checkReencode(t *testing.T, in []byte, fr Frame) {
	t.Helper()
	enc, err := AppendFrame(nil, fr)
	if err != nil {
		t.Fatalf("decoded frame does not encode: %v", err)
	}
	if len(enc) == len(in) {
		if !bytes.Equal(enc, in) {
			t.Fatalf("re-encode differs:\n in %x\nout %x", in, enc)
		}
		return
	}
	if len(enc) > len(in) {
		t.Fatalf("re-encode longer than input: %x -> %x", in, enc)
	}
	back, n, err := Decode(enc, V2)
	if err != nil || n != len(enc) || back.Type != fr.Type || back.Channel != fr.Channel || back.Sequence != fr.Sequence || !bytes.Equal(back.Payload, fr.Payload) {
		t.Fatalf("minimal re-encoding does not decode to the same frame: %v", err)
	}
}

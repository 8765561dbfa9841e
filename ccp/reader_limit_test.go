package ccp

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// A frame announcing more than SetMaxFrame fails on its prefix and type
// byte, before its payload is read (the source would block after them).
func TestReaderMaxFrame(t *testing.T) {
	for _, tc := range []struct {
		typ  FrameType
		want error
	}{
		{Hello, ErrControlTooLarge},
		{Msg, ErrFrameTooLarge},
	} {
		payload := make([]byte, 100) // a JSON string, valid for both classes
		for i := range payload {
			payload[i] = 'x'
		}
		payload[0], payload[99] = '"', '"'
		big, err := AppendFrame(nil, Frame{Type: tc.typ, Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		pr, pw := io.Pipe()
		go func() { _, _ = pw.Write(big[:3]) }() // prefix, type, a little more; then nothing
		r := NewReader(pr, V1)
		r.SetMaxFrame(50)
		_, err = r.ReadFrame()
		var fe *FrameError
		if !errors.As(err, &fe) || !fe.Fatal || !errors.Is(err, tc.want) {
			t.Errorf("%v: %v, want fatal %v", tc.typ, err, tc.want)
		}
		pw.Close()
		// Within the limit, and without a limit, the frame decodes.
		for _, max := range []int{len(big), 0} {
			r := NewReader(&sliceReader{b: big}, V1)
			r.SetMaxFrame(max)
			if f, err := r.ReadFrame(); err != nil || f.Type != tc.typ || len(f.Payload) != 100 {
				t.Errorf("%v with limit %d: %v %v", tc.typ, max, f, err)
			}
		}
	}
}

type sliceReader struct{ b []byte }

func (s *sliceReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	return n, nil
}

// TestReaderIdleBuffer: once drained after a small frame the Reader reads
// into its in-struct array; after a large frame it keeps the heap buffer
// (a stream of large frames does not reallocate per frame).
func TestReaderIdleBuffer(t *testing.T) {
	var stream []byte
	sizes := []int{10, 3000, 3000, 10, 20}
	for i, n := range sizes {
		stream, _ = AppendFrame(stream, Frame{Type: Msg, Channel: 1, Sequence: uint32(i + 1), Payload: bytes.Repeat([]byte{byte(i)}, n)})
	}
	r := NewReader(iotest.OneByteReader(bytes.NewReader(stream)), V1)
	for i, n := range sizes {
		f, err := r.ReadFrame()
		if err != nil || len(f.Payload) != n || f.Payload[n-1] != byte(i) {
			t.Fatalf("frame %d: %v", i, err)
		}
		if n > smallReadBuf && r.usesSmall() {
			t.Fatalf("frame %d of %d bytes in the small buffer", i, n)
		}
	}
	if _, err := r.ReadFrame(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	if !r.usesSmall() {
		t.Errorf("drained after a small frame, the reader holds a %d-byte buffer", len(r.buf))
	}
	// A zero Reader (not from NewReader) works too.
	z := &Reader{src: bytes.NewReader(stream), mode: V1}
	if f, err := z.ReadFrame(); err != nil || len(f.Payload) != 10 {
		t.Fatalf("zero Reader: %v", err)
	}
}

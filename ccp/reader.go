package ccp

import (
	"errors"
	"io"
)

const (
	minReadBuf  = 4 << 10
	keepReadBuf = 64 << 10
)

// Reader reads CCP-1 frames from a byte stream.
//
// ReadFrame returns a frame as soon as its last byte has been read, without
// waiting for further input (§3.3 step 5). Buffer memory grows with the
// bytes actually received, never ahead of them, so a peer that announces a
// 16 MiB frame and sends nothing costs nothing. While nothing is buffered
// and the last frame was small, it reads into a small array of its own
// instead of a heap buffer, so an idle connection holds no read buffer
// (memory per connection).
type Reader struct {
	src     io.Reader
	mode    Mode
	small   [smallReadBuf]byte
	buf     []byte // small[:] or a heap buffer
	r, w    int    // unread bytes are buf[r:w]
	err     error
	max     int // SetMaxFrame; 0: only the limits of §2.5
	lastLen int // length of the last frame decoded
}

// smallReadBuf is the size of the in-struct buffer.
const smallReadBuf = 512

// usesSmall reports whether r.buf is the in-struct array.
func (r *Reader) usesSmall() bool { return len(r.buf) > 0 && &r.buf[0] == &r.small[0] }

// SetMaxFrame bounds the length prefix of the following frames to n
// bytes (0 removes the bound). A frame announcing more fails as soon as
// its length prefix and type byte have arrived, fatally, with Control Too
// Large for a Control type and Frame Too Large otherwise, instead of being
// buffered first. The server sets it during the handshake, where only
// HELLO and AUTH (Control, at most 256 KiB of payload) are valid, so a
// peer that has not authenticated cannot make it buffer megabytes.
func (r *Reader) SetMaxFrame(n int) { r.max = n }

// NewReader returns a Reader that decodes src with the rules of mode.
func NewReader(src io.Reader, mode Mode) *Reader {
	r := &Reader{src: src, mode: mode}
	r.buf = r.small[:]
	return r
}

// SetMode changes the decoding rules for the following frames.
func (r *Reader) SetMode(m Mode) { r.mode = m }

// Buffered returns the bytes read from the source but not yet decoded.
// They belong to the stream after the last frame returned, e.g. the first
// v2 records that followed the client's final AUTH frame in one read.
func (r *Reader) Buffered() []byte { return r.buf[r.r:r.w] }

// ReadFrame returns the next frame. The payload stays valid until the next
// call of ReadFrame.
//
// Errors:
//   - a non-fatal *FrameError: the frame was skipped; call ReadFrame again;
//   - a fatal *FrameError (Varint Overflow or Frame Too Large in the length
//     prefix, Truncated Frame at the end of the stream): stop reading;
//   - io.EOF: the stream ended at a frame boundary;
//   - any other error from the source.
func (r *Reader) ReadFrame() (Frame, error) {
	if r.r == r.w && (cap(r.buf) > keepReadBuf || r.lastLen <= smallReadBuf) && !r.usesSmall() {
		// Drop the heap buffer when empty after a small frame (it
		// comes back when a large frame does) or a large one that
		// needed more than keepReadBuf.
		r.buf, r.r, r.w = r.small[:], 0, 0
	}
	for {
		if r.r < r.w {
			f, n, err := Decode(r.buf[r.r:r.w], r.mode)
			if err == nil {
				r.r += n
				r.lastLen = n
				return f, nil
			}
			if r.max > 0 && errors.Is(err, ErrShortBuffer) {
				if fe := r.overLimit(); fe != nil {
					r.err = fe
					return Frame{}, fe
				}
			}
			var fe *FrameError
			if errors.As(err, &fe) {
				if fe.Fatal {
					r.err = fe
				} else {
					r.r += fe.Consumed
				}
				return Frame{}, fe
			}
		}
		if r.err != nil {
			return Frame{}, r.err
		}
		if err := r.fill(); err != nil {
			if err == io.EOF {
				if end := EndOfStream(r.buf[r.r:r.w]); end != nil {
					err = end
				}
			}
			r.err = err
			return Frame{}, err
		}
	}
}

// overLimit reports a buffered frame start whose length exceeds r.max.
func (r *Reader) overLimit() *FrameError {
	b := r.buf[r.r:r.w]
	fl, pl, err := PeekFrameLen(b)
	if err != nil || fl <= r.max || len(b) <= pl {
		return nil
	}
	t := FrameType(b[pl])
	var e *FrameError
	if t.Valid() && t.Class() == Control {
		e = frameErr(ErrControlTooLarge, 0, "frame of %d bytes exceeds %d while only handshake frames are allowed", fl, r.max)
	} else {
		e = frameErr(ErrFrameTooLarge, 0, "frame of %d bytes exceeds %d while only handshake frames are allowed", fl, r.max)
	}
	e.Fatal = true
	return e
}

// fill reads at least one more byte into the buffer.
func (r *Reader) fill() error {
	if r.r == r.w {
		r.r, r.w = 0, 0
	}
	if r.w == len(r.buf) {
		pending := r.w - r.r
		need := pending + 1
		known := false
		if fl, pl, err := PeekFrameLen(r.buf[r.r:r.w]); err == nil {
			need, known = pl+fl, true
		}
		if r.r > 0 && need <= len(r.buf) {
			copy(r.buf, r.buf[r.r:r.w])
		} else {
			// Double, but never beyond the announced frame.
			size := max(2*len(r.buf), minReadBuf)
			if known && size > need {
				size = max(need, minReadBuf)
			}
			nb := make([]byte, size)
			copy(nb, r.buf[r.r:r.w])
			r.buf = nb
		}
		r.r, r.w = 0, pending
	}
	for range 100 {
		n, err := r.src.Read(r.buf[r.w:])
		r.w += n
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

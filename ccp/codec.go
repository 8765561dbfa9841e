package ccp

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// AppendUvarint appends the minimal LEB128 encoding of v (§2.2).
func AppendUvarint(dst []byte, v uint64) []byte { return binary.AppendUvarint(dst, v) }

// UvarintLen returns the length of the minimal encoding of v.
func UvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// uvarint decodes a varint from the front of b: n > 0 on success, n == 0
// when b ends inside the varint, n < 0 on overflow (§2.2: more than 10
// bytes, or a 10th byte greater than 1). Non-minimal forms are accepted.
//
// Unlike binary.Uvarint, a 10th byte with the continuation bit set is an
// overflow at once instead of a request for an 11th byte.
func uvarint(b []byte) (uint64, int) {
	var x uint64
	var s uint
	for i, c := range b {
		if i == MaxVarintLen-1 && c > 1 {
			return 0, -(i + 1)
		}
		if c < 0x80 {
			return x | uint64(c)<<s, i + 1
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	return 0, 0
}

// PeekFrameLen implements steps 1 and 2 of §2.6: it returns the frame_len
// and the number of bytes of its varint. It returns ErrShortBuffer while
// the varint is incomplete, and a fatal *FrameError for Varint Overflow or
// Frame Too Large.
func PeekFrameLen(buf []byte) (frameLen int, prefixLen int, err error) {
	v, n := uvarint(buf)
	if n == 0 {
		return 0, 0, ErrShortBuffer
	}
	if n < 0 {
		e := frameErr(ErrVarintOverflow, 0, "frame length varint overflows 64 bits")
		e.Fatal = true
		return 0, 0, e
	}
	if v > MaxFrameLen {
		e := frameErr(ErrFrameTooLarge, 0, "frame length %d exceeds %d", v, MaxFrameLen)
		e.Fatal = true
		return 0, 0, e
	}
	return int(v), n, nil
}

// Decode decodes the frame at the front of buf with the rules of mode
// (§2.6, §2.7). On success it returns the frame and the number of bytes it
// occupies; the payload aliases buf.
//
// If buf does not yet hold the whole frame, Decode returns ErrShortBuffer
// (and 0); at the end of the stream the caller turns that into Truncated
// Frame (see EndOfStream). Every other error is a *FrameError: when it is
// not Fatal, its Consumed bytes are the delimited frame to skip.
func Decode(buf []byte, mode Mode) (Frame, int, error) {
	frameLen, prefix, err := PeekFrameLen(buf)
	if err != nil {
		return Frame{}, 0, err
	}
	total := prefix + frameLen
	if len(buf) < total {
		return Frame{}, 0, ErrShortBuffer
	}
	f, ferr := decodeBody(buf[prefix:total], mode)
	if ferr != nil {
		ferr.Consumed = total
		return Frame{}, 0, ferr
	}
	return f, total, nil
}

// decodeBody implements steps 5 to 11 of §2.6 on a complete body.
func decodeBody(body []byte, mode Mode) (Frame, *FrameError) {
	if len(body) == 0 {
		return Frame{}, frameErr(ErrMalformedFrame, 0, "empty frame body")
	}
	t := FrameType(body[0])
	if !t.Valid() {
		e := frameErr(ErrInvalidFrameType, 0, "unknown frame type 0x%02x", body[0])
		e.Type, e.HasType = t, true
		return Frame{}, e
	}
	rest := body[1:]
	withType := func(e *FrameError) *FrameError {
		e.Type, e.HasType = t, true
		return e
	}

	ch, n := uvarint(rest)
	switch {
	case n == 0:
		return Frame{}, withType(frameErr(ErrMalformedFrame, 0, "frame body ends inside the channel id"))
	case n < 0:
		return Frame{}, withType(frameErr(ErrVarintOverflow, 0, "channel id varint overflows 64 bits"))
	case ch > MaxChannelID:
		return Frame{}, withType(frameErr(ErrChannelIDTooLarge, 0, "channel id %d exceeds %d", ch, uint64(MaxChannelID)))
	}
	rest = rest[n:]
	withChannel := func(e *FrameError) *FrameError {
		withType(e)
		e.Channel, e.HasChannel = uint32(ch), true
		return e
	}

	seq, n := uvarint(rest)
	switch {
	case n == 0:
		return Frame{}, withChannel(frameErr(ErrMalformedFrame, 0, "frame body ends inside the sequence"))
	case n < 0:
		return Frame{}, withChannel(frameErr(ErrVarintOverflow, 0, "sequence varint overflows 64 bits"))
	case seq > MaxSequence:
		return Frame{}, withChannel(frameErr(ErrSequenceTooLarge, 0, "sequence %d exceeds %d", seq, uint64(MaxSequence)))
	}
	rest = rest[n:]
	withSeq := func(e *FrameError) *FrameError {
		withChannel(e)
		e.Sequence, e.HasSequence = uint32(seq), true
		return e
	}

	plen, n := uvarint(rest)
	switch {
	case n == 0:
		return Frame{}, withSeq(frameErr(ErrMalformedFrame, 0, "frame body ends inside the payload length"))
	case n < 0:
		return Frame{}, withSeq(frameErr(ErrVarintOverflow, 0, "payload length varint overflows 64 bits"))
	}
	rest = rest[n:]
	if plen > uint64(len(rest)) {
		return Frame{}, withSeq(frameErr(ErrMalformedFrame, 0, "payload length %d exceeds the %d bytes left in the frame body", plen, len(rest)))
	}
	payload := rest[:plen:plen]
	if mode == V2 && int(plen) != len(rest) {
		return Frame{}, withSeq(frameErr(ErrMalformedFrame, 0, "%d trailing bytes after the payload", len(rest)-int(plen)))
	}
	if t.Class() == Control {
		if len(payload) > MaxControlPayload {
			return Frame{}, withSeq(frameErr(ErrControlTooLarge, 0, "control payload of %d bytes exceeds %d", len(payload), MaxControlPayload))
		}
		if !ValidControlJSON(payload) {
			return Frame{}, withSeq(frameErr(ErrInvalidControlJSON, 0, "control payload is not one JSON value"))
		}
	}
	return Frame{Type: t, Channel: uint32(ch), Sequence: uint32(seq), Payload: payload}, nil
}

// ValidControlJSON reports whether p is exactly one JSON value, optionally
// surrounded by JSON whitespace, in valid UTF-8 (§2.4).
func ValidControlJSON(p []byte) bool {
	return len(p) > 0 && utf8.Valid(p) && json.Valid(p)
}

// EndOfStream returns the error for a stream that ended with rest still
// unconsumed: nil when rest is empty, otherwise Truncated Frame (fatal).
func EndOfStream(rest []byte) error {
	if len(rest) == 0 {
		return nil
	}
	e := frameErr(ErrTruncatedFrame, 0, "stream ended inside a frame (%d bytes buffered)", len(rest))
	e.Fatal = true
	return e
}

// ErrEncode is wrapped by every error of AppendFrame.
var ErrEncode = errors.New("ccp: cannot encode frame")

// EncodedLen returns the number of bytes AppendFrame appends for a frame
// of type t, channel ch, sequence seq and a payload of n bytes.
func EncodedLen(ch, seq uint32, n int) int {
	body := 1 + UvarintLen(uint64(ch)) + UvarintLen(uint64(seq)) + UvarintLen(uint64(n)) + n
	return UvarintLen(uint64(body)) + body
}

// AppendFrame appends the encoding of f to dst. It refuses (ErrEncode, with
// the matching decode error) a frame that violates a limit of §2.5: an
// invalid type, a body over 16 MiB or a Control payload over 256 KiB. It
// does not check that a Control payload is valid JSON; use
// ValidControlJSON where the payload is not produced by trusted code.
func AppendFrame(dst []byte, f Frame) ([]byte, error) {
	if !f.Type.Valid() {
		return dst, fmt.Errorf("%w: %w: code 0x%02x", ErrEncode, ErrInvalidFrameType, uint8(f.Type))
	}
	n := len(f.Payload)
	if f.Type.Class() == Control && n > MaxControlPayload {
		return dst, fmt.Errorf("%w: %w: %d bytes", ErrEncode, ErrControlTooLarge, n)
	}
	body := 1 + UvarintLen(uint64(f.Channel)) + UvarintLen(uint64(f.Sequence)) + UvarintLen(uint64(n)) + n
	if body > MaxFrameLen {
		return dst, fmt.Errorf("%w: %w: body of %d bytes", ErrEncode, ErrFrameTooLarge, body)
	}
	dst = binary.AppendUvarint(dst, uint64(body))
	dst = append(dst, byte(f.Type))
	dst = binary.AppendUvarint(dst, uint64(f.Channel))
	dst = binary.AppendUvarint(dst, uint64(f.Sequence))
	dst = binary.AppendUvarint(dst, uint64(n))
	return append(dst, f.Payload...), nil
}

package ccp

import (
	"errors"
	"fmt"
)

// DecodeError is one row of the decoder error table of §2.6. The exported
// Err* values are the only instances; compare with errors.Is.
type DecodeError struct {
	title  string
	status int
}

func (e *DecodeError) Error() string { return "ccp: " + e.title }

// Title is the problem title of §2.6 and §6.4, e.g. "Invalid Frame Type".
func (e *DecodeError) Title() string { return e.title }

// Status is the HTTP-style status of the problem.
func (e *DecodeError) Status() int { return e.status }

// The decoder errors of §2.6, one value per row of its table.
var (
	ErrVarintOverflow     = &DecodeError{TitleVarintOverflow, 400}
	ErrFrameTooLarge      = &DecodeError{TitleFrameTooLarge, 413}
	ErrTruncatedFrame     = &DecodeError{TitleTruncatedFrame, 400}
	ErrMalformedFrame     = &DecodeError{TitleMalformedFrame, 400}
	ErrInvalidFrameType   = &DecodeError{TitleInvalidFrameType, 400}
	ErrChannelIDTooLarge  = &DecodeError{TitleChannelIDTooLarge, 400}
	ErrSequenceTooLarge   = &DecodeError{TitleSequenceTooLarge, 400}
	ErrControlTooLarge    = &DecodeError{TitleControlTooLarge, 413}
	ErrInvalidControlJSON = &DecodeError{TitleInvalidControlJSON, 400}
)

// ErrShortBuffer is returned by Decode when the buffer ends before the
// frame is complete: the caller must wait for more bytes. It is never
// returned for a complete frame, however malformed.
var ErrShortBuffer = errors.New("ccp: need more bytes")

// FrameError describes a frame that could not be decoded. It wraps one of
// the Err* decode errors.
//
// When Fatal is false the frame was delimited: Consumed bytes must be
// skipped and decoding can continue with the next frame (after the
// handshake the server answers with an ERROR and keeps the connection).
// When Fatal is true (Varint Overflow in frame_len, Frame Too Large,
// Truncated Frame) the stream cannot be resynchronised and must be closed.
type FrameError struct {
	Err      *DecodeError
	Detail   string
	Fatal    bool
	Consumed int

	// Fields decoded before the error, each valid when its Has flag is set
	// (§13a.1: the type when its byte was read, the channel and sequence
	// when they decoded within limits).
	Type        FrameType
	HasType     bool
	Channel     uint32
	HasChannel  bool
	Sequence    uint32
	HasSequence bool
}

func (e *FrameError) Error() string {
	if e.Detail == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + ": " + e.Detail
}

func (e *FrameError) Unwrap() error { return e.Err }

// Problem returns the ERROR payload for this decode error (§6.4, §13a.1).
func (e *FrameError) Problem() Problem {
	p := NewProblem(e.Err.title, e.Detail)
	if e.HasType {
		p.SetFrameType(e.Type)
	}
	if e.HasSequence {
		p.SetSequence(e.Sequence)
	}
	return p
}

// ReplyChannel is the channel an ERROR answering this frame goes on after
// the handshake: the frame's channel when it decoded, else 0.
func (e *FrameError) ReplyChannel() uint32 {
	if e.HasChannel {
		return e.Channel
	}
	return 0
}

func frameErr(err *DecodeError, consumed int, format string, args ...any) *FrameError {
	return &FrameError{Err: err, Consumed: consumed, Detail: fmt.Sprintf(format, args...)}
}

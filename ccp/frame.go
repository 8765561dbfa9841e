// Package ccp implements the CCP-1 frame codec of the CommuCat protocol
// (spec §2): frame types and payload classes, LEB128 varints, the limits of
// §2.5 and the decoding procedure of §2.6 with one exported error value per
// row of its error table.
//
// The codec is pure: it performs no I/O except in Reader, which reads frames
// from an io.Reader and tells "need more bytes" from "malformed". Decoding an
// Opaque payload never copies it.
//
// Wire layout (§2.1):
//
//	frame = frame_len:varint body[frame_len]
//	body  = type:u8 channel_id:varint sequence:varint payload_len:varint payload[payload_len] [trailing]
package ccp

import "fmt"

// FrameType is the one-byte type code of a frame (§2.3).
type FrameType uint8

// The frame types of CCP-1. Codes 0x00 and 0x14..0xff are not frame types.
const (
	Hello       FrameType = 0x01
	Auth        FrameType = 0x02
	Join        FrameType = 0x03
	Leave       FrameType = 0x04
	Msg         FrameType = 0x05
	Ack         FrameType = 0x06
	Typing      FrameType = 0x07
	Presence    FrameType = 0x08
	KeyUpdate   FrameType = 0x09
	GroupCreate FrameType = 0x0a
	GroupInvite FrameType = 0x0b
	GroupEvent  FrameType = 0x0c
	Error       FrameType = 0x0d
	CallOffer   FrameType = 0x0e
	CallAnswer  FrameType = 0x0f
	CallEnd     FrameType = 0x10
	VoiceFrame  FrameType = 0x11
	VideoFrame  FrameType = 0x12
	CallStats   FrameType = 0x13

	minFrameType = Hello
	maxFrameType = CallStats
)

var typeNames = [...]string{
	Hello:       "HELLO",
	Auth:        "AUTH",
	Join:        "JOIN",
	Leave:       "LEAVE",
	Msg:         "MSG",
	Ack:         "ACK",
	Typing:      "TYPING",
	Presence:    "PRESENCE",
	KeyUpdate:   "KEY_UPDATE",
	GroupCreate: "GROUP_CREATE",
	GroupInvite: "GROUP_INVITE",
	GroupEvent:  "GROUP_EVENT",
	Error:       "ERROR",
	CallOffer:   "CALL_OFFER",
	CallAnswer:  "CALL_ANSWER",
	CallEnd:     "CALL_END",
	VoiceFrame:  "VOICE_FRAME",
	VideoFrame:  "VIDEO_FRAME",
	CallStats:   "CALL_STATS",
}

// AllFrameTypes lists every frame type in code order.
func AllFrameTypes() []FrameType {
	out := make([]FrameType, 0, maxFrameType)
	for t := minFrameType; t <= maxFrameType; t++ {
		out = append(out, t)
	}
	return out
}

// Valid reports whether t is a CCP-1 frame type (0x01..0x13).
func (t FrameType) Valid() bool { return t >= minFrameType && t <= maxFrameType }

// String returns the spec name of t ("MSG", "KEY_UPDATE", ...), or
// "0xNN" for a code that is not a frame type.
func (t FrameType) String() string {
	if t.Valid() {
		return typeNames[t]
	}
	return fmt.Sprintf("0x%02x", uint8(t))
}

// ParseFrameType returns the frame type with the given spec name.
func ParseFrameType(name string) (FrameType, bool) {
	for t := minFrameType; t <= maxFrameType; t++ {
		if typeNames[t] == name {
			return t, true
		}
	}
	return 0, false
}

// PayloadClass says how a payload is interpreted (§2.4).
type PayloadClass uint8

const (
	// Opaque payloads are any bytes, relayed byte for byte.
	Opaque PayloadClass = iota
	// Control payloads are exactly one JSON value, at most
	// MaxControlPayload bytes.
	Control
)

func (c PayloadClass) String() string {
	if c == Control {
		return "control"
	}
	return "opaque"
}

// Class returns the payload class of t. Only MSG, KEY_UPDATE, VOICE_FRAME
// and VIDEO_FRAME are Opaque; every other type (and every invalid code) is
// Control.
func (t FrameType) Class() PayloadClass {
	switch t {
	case Msg, KeyUpdate, VoiceFrame, VideoFrame:
		return Opaque
	}
	return Control
}

// Limits of §2.5.
const (
	MaxFrameLen       = 16 << 20   // largest frame_len (body length); 16 MiB exactly is allowed
	MaxControlPayload = 256 << 10  // largest Control payload
	MaxChannelID      = 0xffffffff // largest channel id
	MaxSequence       = 0xffffffff // largest sequence
	MaxVarintLen      = 10         // longest varint encoding
	// MaxEncodedFrameLen is the longest possible encoded frame, frame_len
	// varint included.
	MaxEncodedFrameLen = MaxFrameLen + 4
)

// Frame is one decoded CCP-1 frame. A decoded Payload aliases the input.
type Frame struct {
	Type     FrameType
	Channel  uint32
	Sequence uint32
	Payload  []byte
}

func (f Frame) String() string {
	return fmt.Sprintf("%s ch=%d seq=%d len=%d", f.Type, f.Channel, f.Sequence, len(f.Payload))
}

// Mode selects the decoding strictness of §2.7.
type Mode uint8

const (
	// V1 is the lenient mode: trailing bytes inside a body are ignored. It
	// is also used for every handshake frame.
	V1 Mode = iota
	// V2 is the strict mode: trailing bytes are Malformed Frame.
	V2
)

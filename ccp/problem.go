package ccp

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/commucat/commucat/internal/canonjson"
)

// Problem titles of §6.4.
const (
	TitleVarintOverflow          = "Varint Overflow"
	TitleFrameTooLarge           = "Frame Too Large"
	TitleTruncatedFrame          = "Truncated Frame"
	TitleMalformedFrame          = "Malformed Frame"
	TitleInvalidFrameType        = "Invalid Frame Type"
	TitleChannelIDTooLarge       = "Channel Id Too Large"
	TitleSequenceTooLarge        = "Sequence Too Large"
	TitleControlTooLarge         = "Control Too Large"
	TitleInvalidControlJSON      = "Invalid Control Json"
	TitleInvalidHandshake        = "Invalid Handshake"
	TitleProtocolVersionMismatch = "Protocol Version Mismatch"
	TitleAuthenticationFailed    = "Authentication Failed"
	TitlePairingRequired         = "PairingRequired"
	TitleHandshakeTimeout        = "Handshake Timeout"
	TitleInvalidPayload          = "Invalid Payload"
	TitleUnexpectedFrame         = "Unexpected Frame"
	TitleSequenceViolation       = "Sequence Violation"
	TitleForbidden               = "Forbidden"
	TitleNotFound                = "Not Found"
	TitleConflict                = "Conflict"
	TitleTooManyRequests         = "Too Many Requests"
	TitleUnsupportedMedia        = "Unsupported Media"
	TitleReplaced                = "Replaced"
	TitleDeviceRevoked           = "Device Revoked"
	TitleKeepaliveTimeout        = "Keepalive Timeout"
	TitleInternalError           = "Internal Error"
	TitleServerShuttingDown      = "Server Shutting Down"
)

// Problem classes: the `error` member of an ERROR payload.
const (
	ClassHandshake = "handshake"
	ClassDecode    = "decode"
	ClassProtocol  = "protocol"
)

// ProblemKind is one row of the table of §6.4.
type ProblemKind struct {
	Title  string
	Slug   string
	Status int
	Class  string
}

// ProblemKinds is the table of §6.4, in its order.
var ProblemKinds = []ProblemKind{
	{TitleVarintOverflow, "varint-overflow", 400, ClassDecode},
	{TitleFrameTooLarge, "frame-too-large", 413, ClassDecode},
	{TitleTruncatedFrame, "truncated-frame", 400, ClassDecode},
	{TitleMalformedFrame, "malformed-frame", 400, ClassDecode},
	{TitleInvalidFrameType, "invalid-frame-type", 400, ClassDecode},
	{TitleChannelIDTooLarge, "channel-id-too-large", 400, ClassDecode},
	{TitleSequenceTooLarge, "sequence-too-large", 400, ClassDecode},
	{TitleControlTooLarge, "control-too-large", 413, ClassDecode},
	{TitleInvalidControlJSON, "invalid-control-json", 400, ClassDecode},
	{TitleInvalidHandshake, "invalid-handshake", 400, ClassHandshake},
	{TitleProtocolVersionMismatch, "protocol-version-mismatch", 400, ClassHandshake},
	{TitleAuthenticationFailed, "authentication-failed", 401, ClassHandshake},
	{TitlePairingRequired, "pairing-required", 403, ClassHandshake},
	{TitleHandshakeTimeout, "handshake-timeout", 408, ClassHandshake},
	{TitleInvalidPayload, "invalid-payload", 400, ClassProtocol},
	{TitleUnexpectedFrame, "unexpected-frame", 400, ClassProtocol},
	{TitleSequenceViolation, "sequence-violation", 409, ClassProtocol},
	{TitleForbidden, "forbidden", 403, ClassProtocol},
	{TitleNotFound, "not-found", 404, ClassProtocol},
	{TitleConflict, "conflict", 409, ClassProtocol},
	{TitleTooManyRequests, "too-many-requests", 429, ClassProtocol},
	{TitleUnsupportedMedia, "unsupported-media", 415, ClassProtocol},
	{TitleReplaced, "replaced", 409, ClassProtocol},
	{TitleDeviceRevoked, "device-revoked", 403, ClassProtocol},
	{TitleKeepaliveTimeout, "keepalive-timeout", 408, ClassProtocol},
	{TitleInternalError, "internal-error", 500, ClassProtocol},
	{TitleServerShuttingDown, "server-shutting-down", 503, ClassProtocol},
}

// LookupProblem returns the row of §6.4 with the given title.
func LookupProblem(title string) (ProblemKind, bool) {
	for _, k := range ProblemKinds {
		if k.Title == title {
			return k, true
		}
	}
	return ProblemKind{}, false
}

// ProblemTypePrefix is the prefix of every problem `type` URI.
const ProblemTypePrefix = "urn:commucat:problem:"

// Problem is the payload of an ERROR frame: an RFC 9457 problem object with
// the CCP-1 members of §6.4.
type Problem struct {
	Type   string
	Title  string
	Status int
	Detail string
	Error  string // ClassHandshake, ClassDecode or ClassProtocol

	FrameType       uint8
	HasFrameType    bool
	Sequence        uint32
	HasSequence     bool
	RetryAfter      int64
	HasRetryAfter   bool
	PairingRequired bool
}

// NewProblem returns the problem for a title of §6.4 with its type, status
// and class filled in. An unknown title yields an Internal Error problem
// carrying the title in its detail, so a typo can never produce a
// non-conforming ERROR.
func NewProblem(title, detail string) Problem {
	k, ok := LookupProblem(title)
	if !ok {
		k, _ = LookupProblem(TitleInternalError)
		detail = "unknown problem " + strconv.Quote(title) + ": " + detail
	}
	return Problem{Type: ProblemTypePrefix + k.Slug, Title: k.Title, Status: k.Status, Detail: detail, Error: k.Class}
}

// SetFrameType sets the frame_type extension member.
func (p *Problem) SetFrameType(t FrameType) { p.FrameType, p.HasFrameType = uint8(t), true }

// SetSequence sets the sequence extension member.
func (p *Problem) SetSequence(seq uint32) { p.Sequence, p.HasSequence = seq, true }

// SetRetryAfter sets the retry_after extension member (seconds).
func (p *Problem) SetRetryAfter(seconds int64) { p.RetryAfter, p.HasRetryAfter = seconds, true }

// AppendJSON appends the canonical JSON form of p (§1.2: members sorted).
func (p Problem) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"detail":`...)
	dst = canonjson.AppendString(dst, p.Detail)
	dst = append(dst, `,"error":`...)
	dst = canonjson.AppendString(dst, p.Error)
	if p.HasFrameType {
		dst = append(dst, `,"frame_type":`...)
		dst = strconv.AppendUint(dst, uint64(p.FrameType), 10)
	}
	if p.PairingRequired {
		dst = append(dst, `,"pairing_required":true`...)
	}
	if p.HasRetryAfter {
		dst = append(dst, `,"retry_after":`...)
		dst = strconv.AppendInt(dst, p.RetryAfter, 10)
	}
	if p.HasSequence {
		dst = append(dst, `,"sequence":`...)
		dst = strconv.AppendUint(dst, uint64(p.Sequence), 10)
	}
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(p.Status), 10)
	dst = append(dst, `,"title":`...)
	dst = canonjson.AppendString(dst, p.Title)
	dst = append(dst, `,"type":`...)
	dst = canonjson.AppendString(dst, p.Type)
	return append(dst, '}')
}

// JSON returns the canonical JSON form of p.
func (p Problem) JSON() []byte { return p.AppendJSON(nil) }

// ParseProblem parses an ERROR payload. Only `title` is required; members
// of the wrong type are an error, unknown members are ignored.
func ParseProblem(payload []byte) (Problem, error) {
	var raw struct {
		Type            *string `json:"type"`
		Title           *string `json:"title"`
		Status          *int    `json:"status"`
		Detail          *string `json:"detail"`
		Error           *string `json:"error"`
		FrameType       *uint8  `json:"frame_type"`
		Sequence        *uint32 `json:"sequence"`
		RetryAfter      *int64  `json:"retry_after"`
		PairingRequired *bool   `json:"pairing_required"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return Problem{}, err
	}
	if raw.Title == nil {
		return Problem{}, errors.New("ccp: problem without title")
	}
	var p Problem
	p.Title = *raw.Title
	if raw.Type != nil {
		p.Type = *raw.Type
	}
	if raw.Status != nil {
		p.Status = *raw.Status
	}
	if raw.Detail != nil {
		p.Detail = *raw.Detail
	}
	if raw.Error != nil {
		p.Error = *raw.Error
	}
	if raw.FrameType != nil {
		p.SetFrameType(FrameType(*raw.FrameType))
	}
	if raw.Sequence != nil {
		p.SetSequence(*raw.Sequence)
	}
	if raw.RetryAfter != nil {
		p.SetRetryAfter(*raw.RetryAfter)
	}
	if raw.PairingRequired != nil {
		p.PairingRequired = *raw.PairingRequired
	}
	return p, nil
}

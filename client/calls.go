package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/commucat/commucat/ccp"
)

// This file holds typed helpers for calls (spec §7): the signalling
// payloads of CALL_OFFER, CALL_ANSWER, CALL_END and CALL_STATS, their
// senders on Conn and Client, the 3-byte media frame header of
// VOICE_FRAME and VIDEO_FRAME (§7.3) and the parsing of the call frames a
// Client reports as *Message events (ParseCall).

// Media header values (§7.3).
const (
	MediaVersion = 1 // byte 0 of every media payload

	SourceEncoded = 0 // byte 1
	SourceRaw     = 1
	SourceHybrid  = 2

	AudioOpus   = 0 // byte 2 of a VOICE_FRAME
	AudioRawPCM = 1

	VideoRawI420      = 0 // byte 2 of a VIDEO_FRAME
	VideoVP8          = 1
	VideoVP9          = 2
	VideoH264Baseline = 3
	VideoH264Main     = 4
	VideoH265Main     = 5
	VideoAV1Main      = 6
)

// MediaHeaderLen is the length of the media frame header (§7.3).
const MediaHeaderLen = 3

// ErrMediaHeader is returned by ParseMedia for a payload without a valid
// §7.3 header (what the server answers with Unsupported Media).
var ErrMediaHeader = errors.New("client: invalid media frame header")

// MediaHeader is the 3-byte header of a media payload (§7.3).
type MediaHeader struct {
	Version byte
	Source  byte // SourceEncoded, SourceRaw or SourceHybrid
	Codec   byte // AudioOpus/AudioRawPCM for voice, Video* for video
}

// Valid reports whether h is a valid header for a frame of type t (§7.3):
// version 1; voice: encoded or hybrid Opus, or raw PCM; video: encoded or
// hybrid codes 1-6, or raw I420.
func (h MediaHeader) Valid(t ccp.FrameType) bool {
	if h.Version != MediaVersion {
		return false
	}
	coded := h.Source == SourceEncoded || h.Source == SourceHybrid
	switch t {
	case ccp.VoiceFrame:
		return coded && h.Codec == AudioOpus || h.Source == SourceRaw && h.Codec == AudioRawPCM
	case ccp.VideoFrame:
		return coded && h.Codec >= VideoVP8 && h.Codec <= VideoAV1Main || h.Source == SourceRaw && h.Codec == VideoRawI420
	}
	return false
}

// Raw reports whether the header announces raw media.
func (h MediaHeader) Raw() bool { return h.Source == SourceRaw }

// AppendMedia appends the header and data to dst.
func AppendMedia(dst []byte, h MediaHeader, data []byte) []byte {
	dst = append(dst, h.Version, h.Source, h.Codec)
	return append(dst, data...)
}

// VoiceFrame returns a VOICE_FRAME payload: the header (version 1, source,
// codec) followed by data (one Opus packet, or one 20 ms raw PCM frame,
// §7.4).
func VoiceFrame(source, codec byte, data []byte) []byte {
	return AppendMedia(make([]byte, 0, MediaHeaderLen+len(data)), MediaHeader{MediaVersion, source, codec}, data)
}

// VideoFrame returns a VIDEO_FRAME payload: the header followed by data
// (one encoded frame, or one raw I420 frame, §7.4).
func VideoFrame(source, codec byte, data []byte) []byte {
	return AppendMedia(make([]byte, 0, MediaHeaderLen+len(data)), MediaHeader{MediaVersion, source, codec}, data)
}

// OpusFrame is VoiceFrame(SourceEncoded, AudioOpus, packet).
func OpusFrame(packet []byte) []byte { return VoiceFrame(SourceEncoded, AudioOpus, packet) }

// RawPCMFrame is VoiceFrame(SourceRaw, AudioRawPCM, pcm).
func RawPCMFrame(pcm []byte) []byte { return VoiceFrame(SourceRaw, AudioRawPCM, pcm) }

// VP8Frame is VideoFrame(SourceEncoded, VideoVP8, frame).
func VP8Frame(frame []byte) []byte { return VideoFrame(SourceEncoded, VideoVP8, frame) }

// RawI420Frame is VideoFrame(SourceRaw, VideoRawI420, i420).
func RawI420Frame(i420 []byte) []byte { return VideoFrame(SourceRaw, VideoRawI420, i420) }

// ParseMedia splits a media payload received on a version 2 connection
// (or sent by anyone) into its header and data; ErrMediaHeader when the
// header is missing or invalid for t. data aliases payload.
func ParseMedia(t ccp.FrameType, payload []byte) (MediaHeader, []byte, error) {
	if len(payload) < MediaHeaderLen {
		return MediaHeader{}, nil, fmt.Errorf("%w: %d bytes, shorter than the header", ErrMediaHeader, len(payload))
	}
	h := MediaHeader{payload[0], payload[1], payload[2]}
	if !h.Valid(t) {
		return h, nil, fmt.Errorf("%w: %v version %d source %d codec %d", ErrMediaHeader, t, h.Version, h.Source, h.Codec)
	}
	return h, payload[MediaHeaderLen:], nil
}

// LegacyMedia interprets a media payload received on a version 1
// connection, where the server removes the header and delivers only Opus
// voice and VP8 video (§7.8): it returns the implied header and data.
func LegacyMedia(t ccp.FrameType, payload []byte) (MediaHeader, []byte) {
	if t == ccp.VideoFrame {
		return MediaHeader{MediaVersion, SourceEncoded, VideoVP8}, payload
	}
	return MediaHeader{MediaVersion, SourceEncoded, AudioOpus}, payload
}

// RawPCMSize is the size of one 20 ms s16le frame (§7.4):
// sample_rate/50 × channels × 2.
func RawPCMSize(sampleRate, channels int) int { return sampleRate / 50 * channels * 2 }

// RawI420Size is the size of one W×H I420 frame without padding (§7.4):
// W·H + 2·⌈W/2⌉·⌈H/2⌉.
func RawI420Size(w, h int) int { return w*h + 2*((w+1)/2)*((h+1)/2) }

// ---------------------------------------------------------------------------
// Signalling payloads (§7.1).

// Resolution is {width, height}.
type Resolution struct {
	Width  uint16 `json:"width"`
	Height uint16 `json:"height"`
}

// AudioParameters of §7.1. Codec is "opus" or "raw_pcm"; Source
// "encoded" (the default), "raw" or "hybrid".
type AudioParameters struct {
	Codec            string          `json:"codec"`
	Bitrate          uint32          `json:"bitrate"`
	SampleRate       uint32          `json:"sample_rate"`
	Channels         uint8           `json:"channels"`
	FEC              bool            `json:"fec,omitempty"`
	DTX              bool            `json:"dtx,omitempty"`
	Source           string          `json:"source,omitempty"`
	AvailableCodecs  json.RawMessage `json:"available_codecs,omitempty"`
	AllowPassthrough *bool           `json:"allow_passthrough,omitempty"`
}

// VideoParameters of §7.1. Codec is one of raw_i420, vp8, vp9,
// h264_baseline, h264_main, h265_main, av1_main.
type VideoParameters struct {
	Codec            string          `json:"codec"`
	MaxBitrate       uint32          `json:"max_bitrate"`
	MaxResolution    Resolution      `json:"max_resolution"`
	FrameRate        uint8           `json:"frame_rate"`
	Adaptive         *bool           `json:"adaptive,omitempty"`
	Source           string          `json:"source,omitempty"`
	AvailableCodecs  json.RawMessage `json:"available_codecs,omitempty"`
	Hardware         []string        `json:"hardware,omitempty"`
	AllowPassthrough *bool           `json:"allow_passthrough,omitempty"`
	Capabilities     json.RawMessage `json:"capabilities,omitempty"`
}

// MediaProfile is CallMediaProfile of §7.1.
type MediaProfile struct {
	Audio        AudioParameters  `json:"audio"`
	Video        *VideoParameters `json:"video,omitempty"`
	Mode         string           `json:"mode,omitempty"` // full_duplex (default) or half_duplex
	Capabilities json.RawMessage  `json:"capabilities,omitempty"`
}

// RawPCMSize is the size of one raw PCM frame of the profile's audio.
func (p *MediaProfile) RawPCMSize() int {
	return RawPCMSize(int(p.Audio.SampleRate), int(p.Audio.Channels))
}

// RawI420Size is the size of one raw I420 frame of the profile's video (0
// without video).
func (p *MediaProfile) RawI420Size() int {
	if p.Video == nil {
		return 0
	}
	return RawI420Size(int(p.Video.MaxResolution.Width), int(p.Video.MaxResolution.Height))
}

// DefaultMediaProfile is the profile the server uses for a CALL_OFFER
// without media (§7.1): Opus 16 000 bit/s, 48 kHz mono, FEC and DTX,
// source raw, no video.
func DefaultMediaProfile() MediaProfile {
	return MediaProfile{Audio: AudioParameters{Codec: "opus", Bitrate: 16000, SampleRate: 48000, Channels: 1, FEC: true, DTX: true, Source: "raw"}, Mode: "full_duplex"}
}

// CallOffer is the CALL_OFFER payload.
type CallOffer struct {
	CallID       string          `json:"call_id"`
	From         string          `json:"from"`
	To           []string        `json:"to"`
	Media        *MediaProfile   `json:"media,omitempty"`
	Metadata     json.RawMessage `json:"metadata,omitempty"`
	Transport    json.RawMessage `json:"transport,omitempty"`
	ExpiresAt    uint64          `json:"expires_at,omitempty"` // Unix seconds; 0: the server's default ring time
	EphemeralKey string          `json:"ephemeral_key,omitempty"`
	// Sender is set by the server on relayed offers (§6.6.1); it is
	// replaced by the server when sent.
	Sender string `json:"sender,omitempty"`
}

// CallAnswer is the CALL_ANSWER payload. Reason (busy, decline,
// unsupported, timeout, error) goes with Accept false.
type CallAnswer struct {
	CallID             string          `json:"call_id"`
	Accept             bool            `json:"accept"`
	Media              *MediaProfile   `json:"media,omitempty"`
	Transport          json.RawMessage `json:"transport,omitempty"`
	Reason             string          `json:"reason,omitempty"`
	Metadata           json.RawMessage `json:"metadata,omitempty"`
	SelectedAudioCodec string          `json:"selected_audio_codec,omitempty"`
	SelectedVideoCodec string          `json:"selected_video_codec,omitempty"`
	AudioSource        string          `json:"audio_source,omitempty"`
	VideoSource        string          `json:"video_source,omitempty"`
	VideoHardware      string          `json:"video_hardware,omitempty"`
	Sender             string          `json:"sender,omitempty"`
}

// CallEnd is the CALL_END payload. Reason is hangup, cancel, failure or
// timeout.
type CallEnd struct {
	CallID   string          `json:"call_id"`
	Reason   string          `json:"reason"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
	Sender   string          `json:"sender,omitempty"`
}

// System reports whether the server generated the CALL_END (ring timeout,
// a participant's disconnect, §6.10, §7.2): metadata.system is true and
// there is no sender.
func (e *CallEnd) System() bool {
	var m struct {
		System bool `json:"system"`
	}
	return e.Sender == "" && len(e.Metadata) > 0 && json.Unmarshal(e.Metadata, &m) == nil && m.System
}

// MediaStats is the Stats structure of §7.1. PacketLoss is a fraction
// 0.0-1.0.
type MediaStats struct {
	Bitrate         uint32   `json:"bitrate"`
	PacketLoss      *float64 `json:"packet_loss,omitempty"`
	JitterMs        *uint32  `json:"jitter_ms,omitempty"`
	RTTMs           *uint32  `json:"rtt_ms,omitempty"`
	FramesPerSecond *uint8   `json:"frames_per_second,omitempty"`
	KeyFrames       *uint32  `json:"key_frames,omitempty"`
	Codec           string   `json:"codec,omitempty"`
	Source          string   `json:"source,omitempty"`
	Hardware        string   `json:"hardware,omitempty"`
}

// Loss returns s with PacketLoss set (a convenience for literals).
func (s MediaStats) Loss(fraction float64) MediaStats {
	s.PacketLoss = &fraction
	return s
}

// CallStats is the CALL_STATS payload. Direction is "send" or "receive";
// receive reports with packet loss drive the server's adaptive bitrate
// (§7.7).
type CallStats struct {
	CallID    string      `json:"call_id"`
	Direction string      `json:"direction"`
	Audio     *MediaStats `json:"audio,omitempty"`
	Video     *MediaStats `json:"video,omitempty"`
	Timestamp uint64      `json:"timestamp,omitempty"`
	Sender    string      `json:"sender,omitempty"`
}

// NewCallID returns a random call id (32 hex digits).
func NewCallID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func oneOf(name, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return fmt.Errorf("client: %s %q is not one of %v", name, v, allowed)
}

func (p *MediaProfile) check() error {
	if p == nil {
		return nil
	}
	if err := oneOf("audio codec", p.Audio.Codec, "opus", "raw_pcm"); err != nil {
		return err
	}
	if p.Audio.Source != "" {
		if err := oneOf("audio source", p.Audio.Source, "encoded", "raw", "hybrid"); err != nil {
			return err
		}
	}
	if p.Mode != "" {
		if err := oneOf("mode", p.Mode, "full_duplex", "half_duplex"); err != nil {
			return err
		}
	}
	if v := p.Video; v != nil {
		if err := oneOf("video codec", v.Codec, "raw_i420", "vp8", "vp9", "h264_baseline", "h264_main", "h265_main", "av1_main"); err != nil {
			return err
		}
		if v.Source != "" {
			if err := oneOf("video source", v.Source, "encoded", "raw", "hybrid"); err != nil {
				return err
			}
		}
	}
	return nil
}

// Payload returns the JSON payload after checking the required members.
// A nil To is sent as [] (the member is required).
func (o CallOffer) Payload() ([]byte, error) {
	if o.CallID == "" {
		return nil, errors.New("client: CallOffer needs a call_id")
	}
	if o.To == nil {
		o.To = []string{}
	}
	if err := o.Media.check(); err != nil {
		return nil, err
	}
	o.Sender = ""
	return json.Marshal(o)
}

// Payload returns the JSON payload after checking the required members.
func (a CallAnswer) Payload() ([]byte, error) {
	if a.CallID == "" {
		return nil, errors.New("client: CallAnswer needs a call_id")
	}
	if a.Reason != "" {
		if err := oneOf("reject reason", a.Reason, "busy", "decline", "unsupported", "timeout", "error"); err != nil {
			return nil, err
		}
	}
	if err := a.Media.check(); err != nil {
		return nil, err
	}
	a.Sender = ""
	return json.Marshal(a)
}

// Payload returns the JSON payload; an empty Reason is sent as "hangup".
func (e CallEnd) Payload() ([]byte, error) {
	if e.CallID == "" {
		return nil, errors.New("client: CallEnd needs a call_id")
	}
	if e.Reason == "" {
		e.Reason = "hangup"
	}
	if err := oneOf("end reason", e.Reason, "hangup", "cancel", "failure", "timeout"); err != nil {
		return nil, err
	}
	e.Sender = ""
	return json.Marshal(e)
}

// Payload returns the JSON payload; an empty Direction is sent as
// "receive".
func (s CallStats) Payload() ([]byte, error) {
	if s.CallID == "" {
		return nil, errors.New("client: CallStats needs a call_id")
	}
	if s.Direction == "" {
		s.Direction = "receive"
	}
	if err := oneOf("direction", s.Direction, "send", "receive"); err != nil {
		return nil, err
	}
	for _, st := range []*MediaStats{s.Audio, s.Video} {
		if st != nil && st.PacketLoss != nil && *st.PacketLoss < 0 {
			return nil, errors.New("client: packet_loss must be a fraction 0.0-1.0")
		}
	}
	s.Sender = ""
	return json.Marshal(s)
}

// CallAck is the server's answer to a CALL_* frame (§6.3).
type CallAck struct {
	Ack       uint32 `json:"ack"`
	CallID    string `json:"call_id"`
	Accept    *bool  `json:"accept,omitempty"`    // CALL_ANSWER
	Reason    string `json:"reason,omitempty"`    // CALL_END, rejecting CALL_ANSWER
	Direction string `json:"direction,omitempty"` // CALL_STATS
}

func callRequest(ctx context.Context, req func(context.Context, ccp.FrameType, uint32, []byte) ([]byte, error), t ccp.FrameType, ch uint32, payload []byte, err error) (*CallAck, error) {
	if err != nil {
		return nil, err
	}
	resp, err := req(ctx, t, ch, payload)
	if err != nil {
		return nil, err
	}
	var a CallAck
	if err := json.Unmarshal(resp, &a); err != nil {
		return nil, fmt.Errorf("client: %v ACK %q: %w", t, resp, err)
	}
	return &a, nil
}

// OfferCall sends CALL_OFFER on channel ch and waits for the ACK. An
// empty CallID gets NewCallID, an empty From the connection's device id.
func (c *Conn) OfferCall(ctx context.Context, ch uint32, o CallOffer) (*CallAck, error) {
	if o.CallID == "" {
		o.CallID = NewCallID()
	}
	if o.From == "" && c.opts.Identity != nil {
		o.From = c.opts.Identity.DeviceID
	}
	p, err := o.Payload()
	return callRequest(ctx, c.Request, ccp.CallOffer, ch, p, err)
}

// AnswerCall sends CALL_ANSWER on the call's channel and waits for the
// ACK.
func (c *Conn) AnswerCall(ctx context.Context, ch uint32, a CallAnswer) (*CallAck, error) {
	p, err := a.Payload()
	return callRequest(ctx, c.Request, ccp.CallAnswer, ch, p, err)
}

// EndCall sends CALL_END on the call's channel and waits for the ACK.
func (c *Conn) EndCall(ctx context.Context, ch uint32, e CallEnd) (*CallAck, error) {
	p, err := e.Payload()
	return callRequest(ctx, c.Request, ccp.CallEnd, ch, p, err)
}

// SendCallStats sends CALL_STATS on the call's channel and waits for the
// ACK.
func (c *Conn) SendCallStats(ctx context.Context, ch uint32, s CallStats) (*CallAck, error) {
	p, err := s.Payload()
	return callRequest(ctx, c.Request, ccp.CallStats, ch, p, err)
}

// SendVoice sends a VOICE_FRAME payload (see VoiceFrame). Media is never
// acknowledged (§6.3); a rejected frame comes back as an ERROR frame
// (Recv) or a *ServerError event (Client).
func (c *Conn) SendVoice(ctx context.Context, ch uint32, payload []byte) error {
	_, err := c.Send(ctx, ccp.VoiceFrame, ch, payload)
	return err
}

// SendVideo sends a VIDEO_FRAME payload (see VideoFrame).
func (c *Conn) SendVideo(ctx context.Context, ch uint32, payload []byte) error {
	_, err := c.Send(ctx, ccp.VideoFrame, ch, payload)
	return err
}

// The Client variants use the current connection only: calls are live
// and end when a participant disconnects (§6.10), so they are not resent
// after a reconnect.

// OfferCall sends CALL_OFFER on the current connection (see
// Conn.OfferCall).
func (c *Client) OfferCall(ctx context.Context, ch uint32, o CallOffer) (*CallAck, error) {
	conn, err := c.WaitConnected(ctx)
	if err != nil {
		return nil, err
	}
	return conn.OfferCall(ctx, ch, o)
}

// AnswerCall sends CALL_ANSWER on the current connection.
func (c *Client) AnswerCall(ctx context.Context, ch uint32, a CallAnswer) (*CallAck, error) {
	conn, err := c.WaitConnected(ctx)
	if err != nil {
		return nil, err
	}
	return conn.AnswerCall(ctx, ch, a)
}

// EndCall sends CALL_END on the current connection.
func (c *Client) EndCall(ctx context.Context, ch uint32, e CallEnd) (*CallAck, error) {
	conn, err := c.WaitConnected(ctx)
	if err != nil {
		return nil, err
	}
	return conn.EndCall(ctx, ch, e)
}

// SendCallStats sends CALL_STATS on the current connection.
func (c *Client) SendCallStats(ctx context.Context, ch uint32, s CallStats) (*CallAck, error) {
	conn, err := c.WaitConnected(ctx)
	if err != nil {
		return nil, err
	}
	return conn.SendCallStats(ctx, ch, s)
}

// SendVoice sends a VOICE_FRAME on the current connection.
func (c *Client) SendVoice(ctx context.Context, ch uint32, payload []byte) error {
	conn, err := c.WaitConnected(ctx)
	if err != nil {
		return err
	}
	return conn.SendVoice(ctx, ch, payload)
}

// SendVideo sends a VIDEO_FRAME on the current connection.
func (c *Client) SendVideo(ctx context.Context, ch uint32, payload []byte) error {
	conn, err := c.WaitConnected(ctx)
	if err != nil {
		return err
	}
	return conn.SendVideo(ctx, ch, payload)
}

// ---------------------------------------------------------------------------
// Incoming call frames.

// CallEvent is a parsed call frame: *OfferEvent, *AnswerEvent, *EndEvent,
// *StatsEvent or *MediaEvent.
type CallEvent interface{ callChannel() uint32 }

// OfferEvent is a relayed CALL_OFFER.
type OfferEvent struct {
	Channel uint32
	Offer   CallOffer
	Raw     []byte
}

// AnswerEvent is a relayed CALL_ANSWER.
type AnswerEvent struct {
	Channel uint32
	Answer  CallAnswer
	Raw     []byte
}

// EndEvent is a relayed or server-generated CALL_END.
type EndEvent struct {
	Channel uint32
	End     CallEnd
	Raw     []byte
}

// StatsEvent is a relayed CALL_STATS.
type StatsEvent struct {
	Channel uint32
	Stats   CallStats
	Raw     []byte
}

// MediaEvent is a VOICE_FRAME or VIDEO_FRAME. On a version 1 connection
// the server strips the header (§7.8) and Header is the implied one.
type MediaEvent struct {
	Type    ccp.FrameType // ccp.VoiceFrame or ccp.VideoFrame
	Channel uint32
	Header  MediaHeader
	Data    []byte // the Opus packet, encoded video frame or raw frame
}

func (e *OfferEvent) callChannel() uint32  { return e.Channel }
func (e *AnswerEvent) callChannel() uint32 { return e.Channel }
func (e *EndEvent) callChannel() uint32    { return e.Channel }
func (e *StatsEvent) callChannel() uint32  { return e.Channel }
func (e *MediaEvent) callChannel() uint32  { return e.Channel }

// IsCall reports whether t is a call or media frame type.
func IsCall(t ccp.FrameType) bool {
	switch t {
	case ccp.CallOffer, ccp.CallAnswer, ccp.CallEnd, ccp.CallStats, ccp.VoiceFrame, ccp.VideoFrame:
		return true
	}
	return false
}

// ParseCall parses a call or media frame received on a connection of the
// given protocol version (media payloads carry the header only in
// version 2, §7.8). It returns an error for other frame types and for
// payloads that do not parse.
func ParseCall(version int, t ccp.FrameType, ch uint32, payload []byte) (CallEvent, error) {
	var err error
	switch t {
	case ccp.VoiceFrame, ccp.VideoFrame:
		e := &MediaEvent{Type: t, Channel: ch}
		if version == 1 {
			e.Header, e.Data = LegacyMedia(t, payload)
			return e, nil
		}
		if e.Header, e.Data, err = ParseMedia(t, payload); err != nil {
			return nil, err
		}
		return e, nil
	case ccp.CallOffer:
		e := &OfferEvent{Channel: ch, Raw: payload}
		if err = json.Unmarshal(payload, &e.Offer); err != nil {
			return nil, wrapCallErr(t, err)
		}
		return e, nil
	case ccp.CallAnswer:
		e := &AnswerEvent{Channel: ch, Raw: payload}
		if err = json.Unmarshal(payload, &e.Answer); err != nil {
			return nil, wrapCallErr(t, err)
		}
		return e, nil
	case ccp.CallEnd:
		e := &EndEvent{Channel: ch, Raw: payload}
		if err = json.Unmarshal(payload, &e.End); err != nil {
			return nil, wrapCallErr(t, err)
		}
		return e, nil
	case ccp.CallStats:
		e := &StatsEvent{Channel: ch, Raw: payload}
		if err = json.Unmarshal(payload, &e.Stats); err != nil {
			return nil, wrapCallErr(t, err)
		}
		return e, nil
	}
	return nil, fmt.Errorf("client: %v is not a call frame", t)
}

func wrapCallErr(t ccp.FrameType, err error) error {
	return fmt.Errorf("client: %v payload: %w", t, err)
}

// CallEvent parses a call or media *Message (see ParseCall); version is
// the connection's protocol version (Connected.Version).
func (m *Message) CallEvent(version int) (CallEvent, error) {
	return ParseCall(version, m.Type, m.Channel, m.Payload)
}

package media

import (
	"slices"
	"sync"
	"time"

	"github.com/commucat/commucat/ccp"
)

// AudioEncoder produces Opus packets from 20 ms s16le frames.
type AudioEncoder interface {
	Encode(pcm []byte) ([]byte, error)
	SetBitrate(bps int) error
	SetPacketLoss(percent int) error
	Close()
}

// VideoEncoder produces VP8 frames from I420 frames.
type VideoEncoder interface {
	Encode(i420 []byte) (frame []byte, key bool, err error)
	SetBitrateKbps(kbps int) error
	Close()
}

// AudioConfig is what an audio encoder is created with (§7.6).
type AudioConfig struct {
	SampleRate, Channels, Bitrate int
	FEC, DTX                      bool
	PacketLossPercent             int
}

// VideoConfig is what a video encoder is created with (§7.6).
type VideoConfig struct {
	Width, Height, FrameRate, BitrateKbps int
}

// Codecs are the encoders this build has; a nil constructor means the
// codec is unavailable (§7.9).
type Codecs struct {
	Audio func(AudioConfig) (AudioEncoder, error)
	Video func(VideoConfig) (VideoEncoder, error)
}

// encoder is one transcoder of a (call, sender, kind).
type encoder struct {
	mu    sync.Mutex
	audio AudioEncoder
	video VideoEncoder
	fec   bool
}

func (e *encoder) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.audio != nil {
		e.audio.Close()
		e.audio = nil
	}
	if e.video != nil {
		e.video.Close()
		e.video = nil
	}
}

// apply sets the target bitrate (bit/s) and, for audio, the loss hint.
func (e *encoder) apply(bps, lossPct int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.audio != nil {
		_ = e.audio.SetBitrate(min(max(bps, 6000), 510000))
		if e.fec {
			_ = e.audio.SetPacketLoss(lossPct)
		}
	}
	if e.video != nil {
		_ = e.video.SetBitrateKbps(max(1, bps/1000))
	}
}

// Media header (§7.3).
const (
	headerVersion = 1
	srcEncoded    = 0
	srcRaw        = 1
	srcHybrid     = 2
	voiceOpus     = 0
	voiceRawPCM   = 1
	videoRawI420  = 0
	videoVP8      = 1
)

// checkHeader validates the 3-byte header of §7.3.
func checkHeader(t ccp.FrameType, p []byte) *Error {
	if len(p) < 3 {
		return fail(TitleUnsupported, "media frame shorter than its 3-byte header")
	}
	if p[0] != headerVersion {
		return fail(TitleUnsupported, "unsupported media header version")
	}
	src, codec := p[1], p[2]
	ok := false
	switch t {
	case ccp.VoiceFrame:
		ok = (src == srcEncoded || src == srcHybrid) && codec == voiceOpus || src == srcRaw && codec == voiceRawPCM
	case ccp.VideoFrame:
		ok = (src == srcEncoded || src == srcHybrid) && codec >= 1 && codec <= 6 || src == srcRaw && codec == videoRawI420
	}
	if !ok {
		return fail(TitleUnsupported, "invalid source/codec combination in the media header")
	}
	return nil
}

// opusRates are the sample rates Opus accepts (§7.6).
var opusRates = []int{8000, 12000, 16000, 24000, 48000}

// Sender describes the device that sent a media frame.
type Sender struct {
	Device   string
	RawAudio bool // accepted media.raw-audio
	RawVideo bool // accepted media.raw-video
}

// Media handles a VOICE_FRAME or VIDEO_FRAME (§7.5): it checks it,
// transcodes raw frames when the profile asks for it and delivers the
// result to the call's other accepted participants.
func (m *Manager) Media(s Sender, t ccp.FrameType, ch uint32, payload []byte) *Error {
	m.mu.Lock()
	c := m.byChannel[ch]
	m.mu.Unlock()
	if c == nil {
		return fail(TitleNotFound, "no active call on this channel")
	}
	c.mu.Lock()
	accepted := c.accepted[s.Device]
	prof := c.profile
	c.mu.Unlock()
	if !accepted {
		return fail(TitleForbidden, "not an accepted participant of the call")
	}
	if e := checkHeader(t, payload); e != nil {
		return e
	}
	out := payload
	if payload[1] == srcRaw {
		var e *Error
		if out, e = m.transcode(c, s, t, prof, payload); e != nil {
			return e
		}
	}
	// §7.5 step 5: the counters count accepted inbound frames, including
	// raw frames whose encoder output is not forwarded.
	if mt := m.cfg.Metrics; mt != nil {
		if t == ccp.VoiceFrame {
			mt.CallVoiceFrames.Inc()
		} else {
			mt.CallVideoFrames.Inc()
		}
	}
	if out == nil {
		return nil // DTX or no packet: nothing to forward
	}
	c.mu.Lock()
	targets := make([]string, 0, len(c.accepted))
	for _, p := range c.Participants {
		if p != s.Device && c.accepted[p] {
			targets = append(targets, p)
		}
	}
	c.mu.Unlock()
	for _, p := range targets {
		m.cfg.Deliver(p, t, ch, out)
	}
	return nil
}

// transcode handles a raw frame (§7.5 step 4, §7.6).
// It returns the payload to forward: the frame itself when the profile
// asks for raw media, the encoded frame, or nil when the encoder produced
// nothing to forward.
func (m *Manager) transcode(c *Call, s Sender, t ccp.FrameType, prof Profile, payload []byte) ([]byte, *Error) {
	raw := payload[3:]
	if t == ccp.VoiceFrame {
		if !s.RawAudio {
			return nil, fail(TitleUnsupported, "raw audio needs the media.raw-audio capability")
		}
		want := prof.SampleRate / 50 * prof.Channels * 2
		if len(raw) != want {
			return nil, fail(TitleUnsupported, "raw PCM frame of the wrong length")
		}
		switch prof.AudioCodec {
		case "raw_pcm":
			return payload, nil // relayed unchanged
		case "opus":
		default:
			return nil, fail(TitleUnsupported, "profile audio codec cannot be produced from raw PCM")
		}
		return m.encodeAudio(c, s.Device, prof, raw)
	}
	if !s.RawVideo {
		return nil, fail(TitleUnsupported, "raw video needs the media.raw-video capability")
	}
	if !prof.HasVideo {
		return nil, fail(TitleUnsupported, "the call has no video")
	}
	w, h := prof.Width, prof.Height
	if len(raw) != w*h+2*((w+1)/2)*((h+1)/2) {
		return nil, fail(TitleUnsupported, "raw I420 frame of the wrong size")
	}
	switch prof.VideoCodec {
	case "raw_i420":
		return payload, nil
	case "vp8":
	default:
		return nil, fail(TitleUnsupported, "profile video codec cannot be produced from raw I420")
	}
	return m.encodeVideo(c, s.Device, prof, raw)
}

// getEncoder returns the (call, device, kind) encoder, creating it on the
// first raw frame (§7.6).
func (c *Call) getEncoder(device string, kind int, create func() (*encoder, error)) (*encoder, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return nil, errEnded
	}
	k := encKey{device, kind}
	if e := c.encoders[k]; e != nil {
		return e, nil
	}
	e, err := create()
	if err != nil {
		return nil, err
	}
	e.apply(c.adapt[kind].target, c.adapt[kind].lossPct)
	c.encoders[k] = e
	return e, nil
}

type endedErr struct{}

func (endedErr) Error() string { return "call ended" }

var errEnded = endedErr{}

func (m *Manager) encodeAudio(c *Call, device string, prof Profile, pcm []byte) ([]byte, *Error) {
	if m.cfg.Codecs.Audio == nil {
		return nil, fail(TitleUnsupported, "Opus is not available in this build")
	}
	if !slices.Contains(opusRates, prof.SampleRate) || prof.Channels < 1 || prof.Channels > 2 {
		return nil, fail(TitleUnsupported, "unsupported sample rate or channel count for Opus")
	}
	enc, err := c.getEncoder(device, kindAudio, func() (*encoder, error) {
		a, err := m.cfg.Codecs.Audio(AudioConfig{SampleRate: prof.SampleRate, Channels: prof.Channels, Bitrate: min(max(prof.AudioRate, 6000), 510000), FEC: prof.FEC, DTX: prof.DTX, PacketLossPercent: 5})
		if err != nil {
			return nil, err
		}
		return &encoder{audio: a, fec: prof.FEC}, nil
	})
	if err != nil {
		return nil, fail(TitleUnsupported, "Opus encoder: "+err.Error())
	}
	start := time.Now()
	enc.mu.Lock()
	if enc.audio == nil {
		enc.mu.Unlock()
		return nil, fail(TitleNotFound, "the call ended")
	}
	pkt, err := enc.audio.Encode(pcm)
	enc.mu.Unlock()
	if err != nil {
		return nil, fail(TitleUnsupported, "Opus encoding failed")
	}
	if mt := m.cfg.Metrics; mt != nil {
		mt.MediaTranscodeDuration.WithLabelValues("audio").Observe(time.Since(start).Seconds())
		if prof.FEC {
			mt.SecurityFECPackets.Inc()
		}
	}
	if prof.DTX && len(pkt) <= 2 {
		return nil, nil // §7.6: DTX packets of 2 bytes or fewer are not forwarded
	}
	return append([]byte{headerVersion, srcEncoded, voiceOpus}, pkt...), nil
}

func (m *Manager) encodeVideo(c *Call, device string, prof Profile, i420 []byte) ([]byte, *Error) {
	if m.cfg.Codecs.Video == nil {
		return nil, fail(TitleUnsupported, "VP8 is not available in this build")
	}
	enc, err := c.getEncoder(device, kindVideo, func() (*encoder, error) {
		v, err := m.cfg.Codecs.Video(VideoConfig{Width: prof.Width, Height: prof.Height, FrameRate: prof.FrameRate, BitrateKbps: max(1, prof.VideoRate/1000)})
		if err != nil {
			return nil, err
		}
		return &encoder{video: v}, nil
	})
	if err != nil {
		return nil, fail(TitleUnsupported, "VP8 encoder: "+err.Error())
	}
	start := time.Now()
	enc.mu.Lock()
	if enc.video == nil {
		enc.mu.Unlock()
		return nil, fail(TitleNotFound, "the call ended")
	}
	frame, _, err := enc.video.Encode(i420)
	enc.mu.Unlock()
	if err != nil {
		return nil, fail(TitleUnsupported, "VP8 encoding failed")
	}
	if mt := m.cfg.Metrics; mt != nil {
		mt.MediaTranscodeDuration.WithLabelValues("video").Observe(time.Since(start).Seconds())
	}
	if frame == nil {
		return nil, nil
	}
	return append([]byte{headerVersion, srcEncoded, videoVP8}, frame...), nil
}

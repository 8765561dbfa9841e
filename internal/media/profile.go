// Package media holds call sessions (spec §7): signalling state, media
// frame checks, server transcoding of raw PCM to Opus and raw I420 to VP8
// through injected codecs, and the adaptive-bitrate rule.
package media

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Enumerations of §7.1.
var (
	audioCodecs   = []string{"opus", "raw_pcm"}
	videoCodecs   = []string{"raw_i420", "vp8", "vp9", "h264_baseline", "h264_main", "h265_main", "av1_main"}
	mediaSources  = []string{"encoded", "raw", "hybrid"}
	hardwares     = []string{"cpu", "nvidia", "amd", "intel", "apple"}
	callModes     = []string{"full_duplex", "half_duplex"}
	rejectReasons = []string{"busy", "decline", "unsupported", "timeout", "error"}
	endReasons    = []string{"hangup", "cancel", "failure", "timeout"}
	directions    = []string{"send", "receive"}
	protocols     = []string{"tcp", "udp"}
)

// ErrInvalid marks a payload that does not match its §7.1 structure.
var ErrInvalid = errors.New("invalid call payload")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func checkEnum(name string, v *string, allowed []string) error {
	if v != nil && !slices.Contains(allowed, *v) {
		return invalid("%s %q is not one of %v", name, *v, allowed)
	}
	return nil
}

// AudioParameters of §7.1.
type AudioParameters struct {
	Codec      *string `json:"codec"`
	Bitrate    *uint32 `json:"bitrate"`
	SampleRate *uint32 `json:"sample_rate"`
	Channels   *uint8  `json:"channels"`
	FEC        *bool   `json:"fec"`
	DTX        *bool   `json:"dtx"`
	Source     *string `json:"source"`
	Available  []struct {
		Codec      *string `json:"codec"`
		Bitrate    *uint32 `json:"bitrate"`
		SampleRate *uint32 `json:"sample_rate"`
		Channels   *uint8  `json:"channels"`
		Priority   *uint8  `json:"priority"`
	} `json:"available_codecs"`
	AllowPassthrough *bool `json:"allow_passthrough"`
}

// Resolution is {width, height}.
type Resolution struct {
	Width  *uint16 `json:"width"`
	Height *uint16 `json:"height"`
}

// VideoParameters of §7.1.
type VideoParameters struct {
	Codec         *string     `json:"codec"`
	MaxBitrate    *uint32     `json:"max_bitrate"`
	MaxResolution *Resolution `json:"max_resolution"`
	FrameRate     *uint8      `json:"frame_rate"`
	Adaptive      *bool       `json:"adaptive"`
	Source        *string     `json:"source"`
	Available     []struct {
		Codec         *string     `json:"codec"`
		MaxBitrate    *uint32     `json:"max_bitrate"`
		MaxResolution *Resolution `json:"max_resolution"`
		FrameRate     *uint8      `json:"frame_rate"`
		Hardware      []string    `json:"hardware"`
		Priority      *uint8      `json:"priority"`
		Scalability   *bool       `json:"supports_scalability"`
	} `json:"available_codecs"`
	Hardware         []string        `json:"hardware"`
	AllowPassthrough *bool           `json:"allow_passthrough"`
	Capabilities     json.RawMessage `json:"capabilities"`
}

// MediaProfile is CallMediaProfile of §7.1.
type MediaProfile struct {
	Audio        *AudioParameters `json:"audio"`
	Video        *VideoParameters `json:"video"`
	Mode         *string          `json:"mode"`
	Capabilities json.RawMessage  `json:"capabilities"`
}

// Profile is a validated media profile with defaults applied.
type Profile struct {
	AudioCodec  string
	AudioRate   int // bit/s
	SampleRate  int
	Channels    int
	FEC, DTX    bool
	HasVideo    bool
	VideoCodec  string
	VideoRate   int // bit/s (max_bitrate)
	Width       int
	Height      int
	FrameRate   int
	Mode        string
	AudioSource string
	VideoSource string
}

// DefaultProfile is the profile of a CALL_OFFER without media (§7.1).
func DefaultProfile() Profile {
	return Profile{AudioCodec: "opus", AudioRate: 16000, SampleRate: 48000, Channels: 1, FEC: true, DTX: true, AudioSource: "raw", Mode: "full_duplex"}
}

// resolve validates a CallMediaProfile and applies defaults.
func (m *MediaProfile) resolve() (Profile, error) {
	if m.Audio == nil {
		return Profile{}, invalid("media.audio is required")
	}
	a := m.Audio
	if a.Codec == nil || a.Bitrate == nil || a.SampleRate == nil || a.Channels == nil {
		return Profile{}, invalid("media.audio needs codec, bitrate, sample_rate and channels")
	}
	for _, e := range []error{
		checkEnum("audio codec", a.Codec, audioCodecs), checkEnum("audio source", a.Source, mediaSources),
		checkEnum("mode", m.Mode, callModes),
	} {
		if e != nil {
			return Profile{}, e
		}
	}
	for _, c := range a.Available {
		if c.Codec == nil {
			return Profile{}, invalid("available_codecs entries need codec")
		}
		if e := checkEnum("audio codec", c.Codec, audioCodecs); e != nil {
			return Profile{}, e
		}
	}
	p := Profile{
		AudioCodec: *a.Codec, AudioRate: int(*a.Bitrate), SampleRate: int(*a.SampleRate), Channels: int(*a.Channels),
		FEC: a.FEC != nil && *a.FEC, DTX: a.DTX != nil && *a.DTX, AudioSource: "encoded", Mode: "full_duplex",
	}
	if a.Source != nil {
		p.AudioSource = *a.Source
	}
	if m.Mode != nil {
		p.Mode = *m.Mode
	}
	if v := m.Video; v != nil {
		if v.Codec == nil || v.MaxBitrate == nil || v.MaxResolution == nil || v.MaxResolution.Width == nil || v.MaxResolution.Height == nil || v.FrameRate == nil {
			return Profile{}, invalid("media.video needs codec, max_bitrate, max_resolution and frame_rate")
		}
		if e := checkEnum("video codec", v.Codec, videoCodecs); e != nil {
			return Profile{}, e
		}
		if e := checkEnum("video source", v.Source, mediaSources); e != nil {
			return Profile{}, e
		}
		for _, h := range v.Hardware {
			if !slices.Contains(hardwares, h) {
				return Profile{}, invalid("hardware %q", h)
			}
		}
		for _, c := range v.Available {
			if c.Codec == nil {
				return Profile{}, invalid("available_codecs entries need codec")
			}
			if e := checkEnum("video codec", c.Codec, videoCodecs); e != nil {
				return Profile{}, e
			}
			for _, h := range c.Hardware {
				if !slices.Contains(hardwares, h) {
					return Profile{}, invalid("hardware %q", h)
				}
			}
		}
		p.HasVideo = true
		p.VideoCodec, p.VideoRate = *v.Codec, int(*v.MaxBitrate)
		p.Width, p.Height, p.FrameRate = int(*v.MaxResolution.Width), int(*v.MaxResolution.Height), int(*v.FrameRate)
		p.VideoSource = "encoded"
		if v.Source != nil {
			p.VideoSource = *v.Source
		}
	}
	return p, nil
}

// transport is CallTransport of §7.1 (validated only).
type transport struct {
	PreferRelay *bool `json:"prefer_relay"`
	UDP         []struct {
		Address  *string `json:"address"`
		Port     *uint16 `json:"port"`
		Protocol *string `json:"protocol"`
	} `json:"udp_candidates"`
	Fingerprints []string `json:"fingerprints"`
}

func (t *transport) check() error {
	if t == nil {
		return nil
	}
	for _, c := range t.UDP {
		if c.Address == nil || c.Port == nil {
			return invalid("udp_candidates need address and port")
		}
		if e := checkEnum("protocol", c.Protocol, protocols); e != nil {
			return e
		}
	}
	return nil
}

// Offer is CallOffer of §7.1.
type Offer struct {
	CallID       *string         `json:"call_id"`
	From         *string         `json:"from"`
	To           []string        `json:"to"`
	Media        *MediaProfile   `json:"media"`
	Metadata     json.RawMessage `json:"metadata"`
	Transport    *transport      `json:"transport"`
	ExpiresAt    *uint64         `json:"expires_at"`
	EphemeralKey *string         `json:"ephemeral_key"`
}

// Answer is CallAnswer of §7.1.
type Answer struct {
	CallID             *string         `json:"call_id"`
	Accept             *bool           `json:"accept"`
	Media              *MediaProfile   `json:"media"`
	Transport          *transport      `json:"transport"`
	Reason             *string         `json:"reason"`
	Metadata           json.RawMessage `json:"metadata"`
	SelectedAudioCodec *string         `json:"selected_audio_codec"`
	SelectedVideoCodec *string         `json:"selected_video_codec"`
	AudioSource        *string         `json:"audio_source"`
	VideoSource        *string         `json:"video_source"`
	VideoHardware      *string         `json:"video_hardware"`
}

// End is CallEnd of §7.1.
type End struct {
	CallID   *string         `json:"call_id"`
	Reason   *string         `json:"reason"`
	Metadata json.RawMessage `json:"metadata"`
}

// Stats is the Stats structure of §7.1.
type Stats struct {
	Bitrate         *uint32  `json:"bitrate"`
	PacketLoss      *float64 `json:"packet_loss"`
	JitterMs        *uint32  `json:"jitter_ms"`
	RTTMs           *uint32  `json:"rtt_ms"`
	FramesPerSecond *uint8   `json:"frames_per_second"`
	KeyFrames       *uint32  `json:"key_frames"`
	Codec           *string  `json:"codec"`
	Source          *string  `json:"source"`
	Hardware        *string  `json:"hardware"`
}

// CallStats is CallStats of §7.1.
type CallStats struct {
	CallID    *string `json:"call_id"`
	Direction *string `json:"direction"`
	Audio     *Stats  `json:"audio"`
	Video     *Stats  `json:"video"`
	Timestamp *uint64 `json:"timestamp"`
}

// decodeStrict unmarshals a JSON object (type errors are Invalid Payload).
func decodeStrict(payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return invalid("%v", err)
	}
	return nil
}

// ParseOffer validates a CALL_OFFER payload.
func ParseOffer(payload []byte) (*Offer, Profile, error) {
	var o Offer
	if err := decodeStrict(payload, &o); err != nil {
		return nil, Profile{}, err
	}
	if o.CallID == nil || *o.CallID == "" || o.From == nil || o.To == nil {
		return nil, Profile{}, invalid("call_id (non-empty), from and to are required")
	}
	if err := o.Transport.check(); err != nil {
		return nil, Profile{}, err
	}
	p := DefaultProfile()
	if o.Media != nil {
		var err error
		if p, err = o.Media.resolve(); err != nil {
			return nil, Profile{}, err
		}
	}
	return &o, p, nil
}

// ParseAnswer validates a CALL_ANSWER payload; the profile is set when
// media is present.
func ParseAnswer(payload []byte) (*Answer, *Profile, error) {
	var a Answer
	if err := decodeStrict(payload, &a); err != nil {
		return nil, nil, err
	}
	if a.CallID == nil || *a.CallID == "" || a.Accept == nil {
		return nil, nil, invalid("call_id and accept are required")
	}
	for _, e := range []error{
		checkEnum("reason", a.Reason, rejectReasons), checkEnum("selected_audio_codec", a.SelectedAudioCodec, audioCodecs),
		checkEnum("selected_video_codec", a.SelectedVideoCodec, videoCodecs), checkEnum("audio_source", a.AudioSource, mediaSources),
		checkEnum("video_source", a.VideoSource, mediaSources), checkEnum("video_hardware", a.VideoHardware, hardwares), a.Transport.check(),
	} {
		if e != nil {
			return nil, nil, e
		}
	}
	if a.Media == nil {
		return &a, nil, nil
	}
	p, err := a.Media.resolve()
	if err != nil {
		return nil, nil, err
	}
	return &a, &p, nil
}

// ParseEnd validates a CALL_END payload.
func ParseEnd(payload []byte) (*End, error) {
	var e End
	if err := decodeStrict(payload, &e); err != nil {
		return nil, err
	}
	if e.CallID == nil || *e.CallID == "" || e.Reason == nil {
		return nil, invalid("call_id and reason are required")
	}
	if err := checkEnum("reason", e.Reason, endReasons); err != nil {
		return nil, err
	}
	return &e, nil
}

// ParseStats validates a CALL_STATS payload.
func ParseStats(payload []byte) (*CallStats, error) {
	var s CallStats
	if err := decodeStrict(payload, &s); err != nil {
		return nil, err
	}
	if s.CallID == nil || *s.CallID == "" || s.Direction == nil {
		return nil, invalid("call_id and direction are required")
	}
	if err := checkEnum("direction", s.Direction, directions); err != nil {
		return nil, err
	}
	for _, st := range []*Stats{s.Audio, s.Video} {
		if st == nil {
			continue
		}
		if st.Bitrate == nil {
			return nil, invalid("stats need bitrate")
		}
		if st.PacketLoss != nil && *st.PacketLoss < 0 {
			return nil, invalid("packet_loss must be a fraction 0.0-1.0")
		}
		if err := checkEnum("source", st.Source, mediaSources); err != nil {
			return nil, err
		}
		if err := checkEnum("hardware", st.Hardware, hardwares); err != nil {
			return nil, err
		}
	}
	return &s, nil
}

// loss returns the packet loss of a report, clamped to [0, 1].
func loss(s *Stats) float64 {
	if s == nil || s.PacketLoss == nil {
		return 0
	}
	return min(*s.PacketLoss, 1)
}

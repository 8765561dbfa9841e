//go:build !cgo || nocodecs || noopus

package opus

// Available reports whether this build can encode and decode Opus: this
// build was made without cgo or with the tag nocodecs/noopus, so it cannot.
func Available() bool { return false }

// Encoder is unavailable in this build.
type Encoder struct{}

// NewEncoder returns ErrUnavailable in this build.
func NewEncoder(cfg EncoderConfig) (*Encoder, error) { return nil, ErrUnavailable }

// FrameBytes is 0 in this build.
func (e *Encoder) FrameBytes() int { return 0 }

// Lookahead is 0 in this build.
func (e *Encoder) Lookahead() int { return 0 }

// Encode returns ErrUnavailable in this build.
func (e *Encoder) Encode(pcm []byte) ([]byte, error) { return nil, ErrUnavailable }

// SetBitrate returns ErrUnavailable in this build.
func (e *Encoder) SetBitrate(bps int) error { return ErrUnavailable }

// SetPacketLoss returns ErrUnavailable in this build.
func (e *Encoder) SetPacketLoss(percent int) error { return ErrUnavailable }

// Close does nothing in this build.
func (e *Encoder) Close() {}

// Decoder is unavailable in this build.
type Decoder struct{}

// NewDecoder returns ErrUnavailable in this build.
func NewDecoder(sampleRate, channels int) (*Decoder, error) { return nil, ErrUnavailable }

// Decode returns ErrUnavailable in this build.
func (d *Decoder) Decode(packet []byte) ([]byte, error) { return nil, ErrUnavailable }

// Close does nothing in this build.
func (d *Decoder) Close() {}

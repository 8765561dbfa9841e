//go:build !cgo || nocodecs || novpx

package vp8

// Available reports whether this build can encode and decode VP8: this
// build was made without cgo or with the tag nocodecs/novpx, so it cannot.
func Available() bool { return false }

// Encoder is unavailable in this build.
type Encoder struct{}

// NewEncoder returns ErrUnavailable in this build.
func NewEncoder(cfg EncoderConfig) (*Encoder, error) { return nil, ErrUnavailable }

// FrameBytes is 0 in this build.
func (e *Encoder) FrameBytes() int { return 0 }

// Encode returns ErrUnavailable in this build.
func (e *Encoder) Encode(i420 []byte) (frame []byte, key bool, err error) {
	return nil, false, ErrUnavailable
}

// SetBitrateKbps returns ErrUnavailable in this build.
func (e *Encoder) SetBitrateKbps(kbps int) error { return ErrUnavailable }

// Close does nothing in this build.
func (e *Encoder) Close() {}

// Decoder is unavailable in this build.
type Decoder struct{}

// NewDecoder returns ErrUnavailable in this build.
func NewDecoder() (*Decoder, error) { return nil, ErrUnavailable }

// Decode returns ErrUnavailable in this build.
func (d *Decoder) Decode(frame []byte) (i420 []byte, w, h int, err error) {
	return nil, 0, 0, ErrUnavailable
}

// Close does nothing in this build.
func (d *Decoder) Close() {}

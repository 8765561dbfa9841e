//go:build !cgo || nocodecs || noopus

package opus

import (
	"errors"
	"testing"
)

func TestUnavailable(t *testing.T) {
	if Available() {
		t.Fatal("Available() is true in a build without libopus")
	}
	if _, err := NewEncoder(EncoderConfig{SampleRate: 48000, Channels: 1, Bitrate: 16000}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("NewEncoder: %v, want ErrUnavailable", err)
	}
	if _, err := NewDecoder(48000, 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("NewDecoder: %v, want ErrUnavailable", err)
	}
	var e Encoder
	if _, err := e.Encode(make([]byte, 1920)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Encode: %v", err)
	}
	if err := e.SetBitrate(16000); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("SetBitrate: %v", err)
	}
	if err := e.SetPacketLoss(5); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("SetPacketLoss: %v", err)
	}
	e.Close()
	var d Decoder
	if _, err := d.Decode([]byte{0xf8}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Decode: %v", err)
	}
	d.Close()
}

//go:build !cgo || nocodecs || novpx

package vp8

import (
	"errors"
	"testing"
)

func TestUnavailable(t *testing.T) {
	if Available() {
		t.Fatal("Available() is true in a build without libvpx")
	}
	if _, err := NewEncoder(EncoderConfig{Width: 640, Height: 360, FrameRate: 30, BitrateKbps: 500}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("NewEncoder: %v, want ErrUnavailable", err)
	}
	if _, err := NewDecoder(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("NewDecoder: %v, want ErrUnavailable", err)
	}
	var e Encoder
	if _, _, err := e.Encode(make([]byte, FrameSize(2, 2))); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Encode: %v", err)
	}
	if err := e.SetBitrateKbps(100); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("SetBitrateKbps: %v", err)
	}
	e.Close()
	var d Decoder
	if _, _, _, err := d.Decode([]byte{0}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Decode: %v", err)
	}
	d.Close()
}

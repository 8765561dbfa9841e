// Package vp8 is a minimal binding to libvpx's VP8 encoder and decoder for
// the server transcoder (spec §7.6): it turns raw I420 frames (§7.4) into
// VP8 frames and, for tests and tools, decodes them again.
//
// The binding uses cgo and libvpx (Debian: libvpx-dev, found with
// pkg-config). A build without cgo, or with the build tag nocodecs (or
// novpx), compiles a twin whose constructors return ErrUnavailable and
// whose Available reports false (§7.9):
//
//	go build -tags nocodecs ./...   # without libopus and libvpx
//	CGO_ENABLED=0 go build ./...    # always works
package vp8

import (
	"errors"
	"fmt"
)

// ErrUnavailable is returned by every constructor of a build without
// libvpx.
var ErrUnavailable = errors.New("vp8: codec not available in this build")

// MaxDimension is the largest width or height VP8 can code (14 bits).
const MaxDimension = 16383

// MaxBitrateKbps bounds the target bitrate (libvpx multiplies it by 1000
// into an int).
const MaxBitrateKbps = 1_000_000

// EncoderConfig is what an Encoder is created with (§7.6).
type EncoderConfig struct {
	// Width and Height of every frame, 1..MaxDimension; odd values work.
	Width, Height int
	// FrameRate in frames per second; 0 counts as 1.
	FrameRate int
	// BitrateKbps is the CBR target in kbit/s; values below 1 count as 1.
	BitrateKbps int
}

// FrameSize is the size of one I420 frame of w×h without padding (§7.4):
// W·H + 2·⌈W/2⌉·⌈H/2⌉.
func FrameSize(w, h int) int { return w*h + 2*((w+1)/2)*((h+1)/2) }

func checkConfig(cfg EncoderConfig) (EncoderConfig, error) {
	if cfg.Width < 1 || cfg.Width > MaxDimension || cfg.Height < 1 || cfg.Height > MaxDimension {
		return cfg, fmt.Errorf("vp8: frame size %dx%d out of range 1..%d", cfg.Width, cfg.Height, MaxDimension)
	}
	if cfg.FrameRate < 0 || cfg.FrameRate > 1000 {
		return cfg, fmt.Errorf("vp8: frame rate %d out of range 0..1000", cfg.FrameRate)
	}
	if cfg.FrameRate == 0 {
		cfg.FrameRate = 1
	}
	cfg.BitrateKbps = clampKbps(cfg.BitrateKbps)
	return cfg, nil
}

func clampKbps(k int) int { return min(max(k, 1), MaxBitrateKbps) }

// cpuUsed is the speed setting of §7.6.
func cpuUsed(w, h int) int {
	if w*h <= 640*480 {
		return 8
	}
	return 16
}

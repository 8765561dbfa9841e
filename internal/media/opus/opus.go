// Package opus is a minimal binding to libopus for the server transcoder
// (spec §7.6): it turns 20 ms frames of raw s16le PCM into Opus packets
// and, for tests and tools, decodes them again.
//
// The binding uses cgo and libopus (Debian: libopus-dev, found with
// pkg-config). A build without cgo, or with the build tag nocodecs (or
// noopus), compiles a twin whose constructors return ErrUnavailable and
// whose Available reports false (§7.9):
//
//	go build -tags nocodecs ./...   # without libopus and libvpx
//	CGO_ENABLED=0 go build ./...    # always works
package opus

import (
	"errors"
	"fmt"
)

// ErrUnavailable is returned by every constructor of a build without
// libopus.
var ErrUnavailable = errors.New("opus: codec not available in this build")

// Bitrate limits of §7.6; SetBitrate and NewEncoder clamp into them.
const (
	MinBitrate = 6000
	MaxBitrate = 510000
)

// MaxPacketBytes is the largest packet Encode produces (§7.6).
const MaxPacketBytes = 4000

// minLossHint is the smallest packet-loss hint used with in-band FEC (§7.6).
const minLossHint = 5

// EncoderConfig is what an Encoder is created with (§7.6).
type EncoderConfig struct {
	// SampleRate is 8000, 12000, 16000, 24000 or 48000 Hz.
	SampleRate int
	// Channels is 1 or 2 (interleaved input).
	Channels int
	// Bitrate in bit/s, clamped to MinBitrate..MaxBitrate.
	Bitrate int
	// FEC turns in-band forward error correction on; the packet-loss hint
	// is then max(PacketLossPercent, 5).
	FEC bool
	// DTX turns discontinuous transmission on: silence then yields packets
	// of one or two bytes.
	DTX bool
	// PacketLossPercent is the latest reported loss in percent (0..100).
	PacketLossPercent int
}

// checkFormat reports whether Opus supports the sample rate and channel
// count (§7.6).
func checkFormat(sampleRate, channels int) error {
	switch sampleRate {
	case 8000, 12000, 16000, 24000, 48000:
	default:
		return fmt.Errorf("opus: unsupported sample rate %d (want 8000, 12000, 16000, 24000 or 48000)", sampleRate)
	}
	if channels != 1 && channels != 2 {
		return fmt.Errorf("opus: unsupported channel count %d (want 1 or 2)", channels)
	}
	return nil
}

// frameBytes is the size of one 20 ms s16le frame (§7.4).
func frameBytes(sampleRate, channels int) int { return sampleRate / 50 * channels * 2 }

func clampBitrate(bps int) int { return min(max(bps, MinBitrate), MaxBitrate) }

// lossHint is the packet-loss hint given to the encoder when FEC is on.
func lossHint(percent int) int { return min(max(percent, minLossHint), 100) }

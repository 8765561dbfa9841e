package server

import (
	"github.com/commucat/commucat/internal/media"
	"github.com/commucat/commucat/internal/media/opus"
	"github.com/commucat/commucat/internal/media/vp8"
	"github.com/commucat/commucat/internal/noiseconn"
)

// codecs returns the encoders of this build when media.transcode is on
// (§7.6), and the matching server features: a codec the build lacks (no
// cgo, or built with -tags nocodecs/noopus/novpx) has a nil constructor
// and its capabilities are not offered (§7.9).
func codecs(transcode bool) (media.Codecs, noiseconn.ServerFeatures) {
	f := noiseconn.ServerFeatures{V2: true}
	var c media.Codecs
	if !transcode {
		return c, f
	}
	if opus.Available() {
		f.Opus = true
		c.Audio = newOpusEncoder
	}
	if vp8.Available() {
		f.VP8 = true
		c.Video = newVP8Encoder
	}
	return c, f
}

func newOpusEncoder(cfg media.AudioConfig) (media.AudioEncoder, error) {
	e, err := opus.NewEncoder(opus.EncoderConfig{
		SampleRate: cfg.SampleRate, Channels: cfg.Channels, Bitrate: cfg.Bitrate,
		FEC: cfg.FEC, DTX: cfg.DTX, PacketLossPercent: cfg.PacketLossPercent,
	})
	if err != nil {
		return nil, err // an untyped nil, never a nil *opus.Encoder
	}
	return e, nil
}

func newVP8Encoder(cfg media.VideoConfig) (media.VideoEncoder, error) {
	e, err := vp8.NewEncoder(vp8.EncoderConfig{
		Width: cfg.Width, Height: cfg.Height, FrameRate: cfg.FrameRate, BitrateKbps: cfg.BitrateKbps,
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

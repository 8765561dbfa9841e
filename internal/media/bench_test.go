package media_test

// Benchmarks of the call media path, to size a node:
//
//   - BenchmarkMediaPassthrough: the cost of forwarding one encoded media
//     frame through Manager.Media (header check, call lookup, fan-out to a
//     no-op Deliver).
//   - BenchmarkMediaTranscodeAudio / BenchmarkMediaTranscodeVideo: one
//     raw frame in, one Opus packet / VP8 frame out, with the §7.6
//     settings. They report the CPU time per frame (user+system of the
//     process, so libvpx's second thread counts) and how many real-time
//     streams one core sustains: 20 ms of audio, or 1/30 s of video, per
//     frame.
//
//	go test -run '^$' -bench . -benchtime=2s ./internal/media/

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/media"
	"github.com/commucat/commucat/internal/media/opus"
	"github.com/commucat/commucat/internal/media/vp8"
	"github.com/commucat/commucat/internal/metrics"
)

func codecs() media.Codecs {
	var c media.Codecs
	if opus.Available() {
		c.Audio = func(cfg media.AudioConfig) (media.AudioEncoder, error) {
			e, err := opus.NewEncoder(opus.EncoderConfig{SampleRate: cfg.SampleRate, Channels: cfg.Channels, Bitrate: cfg.Bitrate, FEC: cfg.FEC, DTX: cfg.DTX, PacketLossPercent: cfg.PacketLossPercent})
			if err != nil {
				return nil, err
			}
			return e, nil
		}
	}
	if vp8.Available() {
		c.Video = func(cfg media.VideoConfig) (media.VideoEncoder, error) {
			e, err := vp8.NewEncoder(vp8.EncoderConfig{Width: cfg.Width, Height: cfg.Height, FrameRate: cfg.FrameRate, BitrateKbps: cfg.BitrateKbps})
			if err != nil {
				return nil, err
			}
			return e, nil
		}
	}
	return c
}

// newCall returns a manager with one accepted call on channel 1 between
// "dev-0" and n-1 other devices, each of which has accepted.
func newCall(tb testing.TB, mcfg media.Config, n int, offer string) *media.Manager {
	tb.Helper()
	m := media.NewManager(mcfg)
	tb.Cleanup(m.Close)
	members := make([]string, n)
	for i := range members {
		members[i] = fmt.Sprintf("dev-%d", i)
	}
	if _, e := m.Offer("dev-0", 1, 1, []byte(offer), []byte(offer), members); e != nil {
		tb.Fatal(e)
	}
	for _, d := range members[1:] {
		if _, e := m.Answer(d, 1, 1, []byte(`{"call_id":"c1","accept":true}`), nil); e != nil {
			tb.Fatal(e)
		}
	}
	return m
}

func offerJSON(audio, video string) string {
	s := `{"call_id":"c1","from":"dev-0","to":[],"media":{"audio":` + audio
	if video != "" {
		s += `,"video":` + video
	}
	return s + `}}`
}

// cpuTime is the user+system CPU time of the process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRealtime reports CPU per frame and real-time streams per core for
// a stream with one frame every period.
func reportRealtime(b *testing.B, cpu time.Duration, period time.Duration) {
	if b.N == 0 || cpu <= 0 {
		return
	}
	per := float64(cpu) / float64(b.N)
	b.ReportMetric(per, "cpu-ns/frame")
	b.ReportMetric(float64(period)/per, "streams/core")
}

func BenchmarkMediaPassthrough(b *testing.B) {
	for _, c := range []struct {
		name    string
		typ     ccp.FrameType
		size    int
		members int
	}{
		{"voice-opus-80B-2party", ccp.VoiceFrame, 80, 2},
		{"video-vp8-4KiB-2party", ccp.VideoFrame, 4096, 2},
		{"voice-opus-80B-8party", ccp.VoiceFrame, 80, 8},
	} {
		b.Run(c.name, func(b *testing.B) {
			var delivered int
			m := newCall(b, media.Config{Deliver: func(_ string, t ccp.FrameType, _ uint32, _ []byte) {
				if t == c.typ {
					delivered++
				}
			}}, c.members,
				offerJSON(`{"codec":"opus","bitrate":32000,"sample_rate":48000,"channels":1}`, ""))
			codec := byte(0)
			if c.typ == ccp.VideoFrame {
				codec = 1
			}
			payload := append([]byte{1, 0, codec}, make([]byte, c.size)...)
			s := media.Sender{Device: "dev-0"}
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				if e := m.Media(s, c.typ, 1, payload); e != nil {
					b.Fatal(e)
				}
			}
			cpu := cpuTime() - cpu0
			if b.N > 0 {
				b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/frame")
			}
			if delivered != b.N*(c.members-1) {
				b.Fatalf("delivered %d, want %d", delivered, b.N*(c.members-1))
			}
		})
	}
}

// pcmFrames returns n 20 ms frames of a tone with noise (s16le).
func pcmFrames(rate, channels, n int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 1))
	per := rate / 50
	out := make([][]byte, n)
	for i := range out {
		f := make([]byte, per*channels*2)
		for s := range per {
			v := 8000*math.Sin(2*math.Pi*440*float64(i*per+s)/float64(rate)) + rng.NormFloat64()*1000
			for ch := range channels {
				binary.LittleEndian.PutUint16(f[2*(s*channels+ch):], uint16(int16(v)))
			}
		}
		out[i] = append([]byte{1, 1, 1}, f...)
	}
	return out
}

func BenchmarkMediaTranscodeAudio(b *testing.B) {
	if !opus.Available() {
		b.Skip("Opus not in this build")
	}
	for _, c := range []struct {
		rate, channels, bitrate int
		fec                     bool
	}{
		{48000, 1, 32000, false},
		{48000, 1, 16000, true}, // the default profile of §7.1 (without DTX)
		{16000, 1, 24000, false},
		{48000, 2, 64000, false},
	} {
		b.Run(fmt.Sprintf("%dHz-%dch-%dbps-fec=%v", c.rate, c.channels, c.bitrate, c.fec), func(b *testing.B) {
			var out int
			audio := fmt.Sprintf(`{"codec":"opus","bitrate":%d,"sample_rate":%d,"channels":%d,"fec":%v,"source":"raw"}`, c.bitrate, c.rate, c.channels, c.fec)
			m := newCall(b, media.Config{Codecs: codecs(), Deliver: func(_ string, t ccp.FrameType, _ uint32, p []byte) {
				if t == ccp.VoiceFrame {
					out += len(p)
				}
			}}, 2, offerJSON(audio, ""))
			frames := pcmFrames(c.rate, c.channels, 250)
			s := media.Sender{Device: "dev-0", RawAudio: true}
			if e := m.Media(s, ccp.VoiceFrame, 1, frames[0]); e != nil { // create the encoder
				b.Fatal(e)
			}
			b.ReportAllocs()
			i := 0
			cpu0 := cpuTime()
			for b.Loop() {
				if e := m.Media(s, ccp.VoiceFrame, 1, frames[i%len(frames)]); e != nil {
					b.Fatal(e)
				}
				i++
			}
			reportRealtime(b, cpuTime()-cpu0, 20*time.Millisecond)
			if i > 0 {
				b.ReportMetric(float64(out)/float64(i+1)*8*50/1000, "out-kbit/s")
			}
		})
	}
}

// i420Frames returns n frames of a moving gradient with noise.
func i420Frames(w, h, n int) [][]byte {
	rng := rand.New(rand.NewPCG(2, 2))
	size := vp8.FrameSize(w, h)
	out := make([][]byte, n)
	for i := range out {
		f := make([]byte, 3+size)
		f[0], f[1], f[2] = 1, 1, 0
		p := f[3:]
		for y := range h {
			for x := range w {
				p[y*w+x] = byte(16 + (x+y+3*i)%200 + rng.IntN(8))
			}
		}
		for j := w * h; j < size; j++ {
			p[j] = byte(128 + (j+i)%32)
		}
		out[i] = f
	}
	return out
}

func BenchmarkMediaTranscodeVideo(b *testing.B) {
	if !vp8.Available() {
		b.Skip("VP8 not in this build")
	}
	for _, c := range []struct{ w, h, fps, bitrate int }{
		{320, 240, 30, 500000},
		{640, 360, 30, 800000},
		{1280, 720, 30, 2000000},
	} {
		b.Run(fmt.Sprintf("%dx%d@%d-%dkbps", c.w, c.h, c.fps, c.bitrate/1000), func(b *testing.B) {
			var out int
			video := fmt.Sprintf(`{"codec":"vp8","max_bitrate":%d,"max_resolution":{"width":%d,"height":%d},"frame_rate":%d,"source":"raw"}`, c.bitrate, c.w, c.h, c.fps)
			m := newCall(b, media.Config{Codecs: codecs(), Deliver: func(_ string, t ccp.FrameType, _ uint32, p []byte) {
				if t == ccp.VideoFrame {
					out += len(p)
				}
			}}, 2,
				offerJSON(`{"codec":"opus","bitrate":32000,"sample_rate":48000,"channels":1}`, video))
			frames := i420Frames(c.w, c.h, 60)
			s := media.Sender{Device: "dev-0", RawVideo: true}
			if e := m.Media(s, ccp.VideoFrame, 1, frames[0]); e != nil { // create the encoder, key frame
				b.Fatal(e)
			}
			b.SetBytes(int64(len(frames[0])))
			i := 0
			cpu0 := cpuTime()
			for b.Loop() {
				if e := m.Media(s, ccp.VideoFrame, 1, frames[i%len(frames)]); e != nil {
					b.Fatal(e)
				}
				i++
			}
			reportRealtime(b, cpuTime()-cpu0, time.Second/time.Duration(c.fps))
			if i > 0 {
				b.ReportMetric(float64(out)/float64(i+1)*8*float64(c.fps)/1000, "out-kbit/s")
			}
		})
	}
}

// TestMediaFrameMetricCountsSuppressedOutput: a raw frame that is
// accepted but produces nothing to forward (a DTX packet of ≤ 2 bytes,
// §7.6) is still an accepted inbound frame for
// commucat_call_voice_frames (§7.5 step 5, §13).
func TestMediaFrameMetricCountsSuppressedOutput(t *testing.T) {
	reg := prometheus.NewRegistry()
	mt := metrics.New(reg)
	dtx := media.Codecs{Audio: func(media.AudioConfig) (media.AudioEncoder, error) { return dtxEncoder{}, nil }}
	var delivered int
	m := newCall(t, media.Config{Codecs: dtx, Metrics: mt, Deliver: func(_ string, t ccp.FrameType, _ uint32, _ []byte) {
		if t == ccp.VoiceFrame {
			delivered++
		}
	}}, 2,
		offerJSON(`{"codec":"opus","bitrate":16000,"sample_rate":48000,"channels":1,"dtx":true,"source":"raw"}`, ""))
	frame := append([]byte{1, 1, 1}, make([]byte, 1920)...)
	for range 3 {
		if e := m.Media(media.Sender{Device: "dev-0", RawAudio: true}, ccp.VoiceFrame, 1, frame); e != nil {
			t.Fatal(e)
		}
	}
	if delivered != 0 {
		t.Fatalf("%d DTX packets forwarded", delivered)
	}
	if got := counter(t, reg, metrics.NameCallVoiceFrames); got != 3 {
		t.Fatalf("commucat_call_voice_frames = %v after 3 accepted frames", got)
	}
}

// dtxEncoder stands for an Opus encoder in DTX silence: 1-byte packets.
type dtxEncoder struct{}

func (dtxEncoder) Encode([]byte) ([]byte, error) { return []byte{0xf8}, nil }
func (dtxEncoder) SetBitrate(int) error          { return nil }
func (dtxEncoder) SetPacketLoss(int) error       { return nil }
func (dtxEncoder) Close()                        {}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

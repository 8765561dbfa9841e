//go:build cgo && !nocodecs && !noopus

package opus

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/commucat/commucat/internal/media/mediafile"
)

// sine returns n samples per channel of a sine of freq Hz at amplitude amp
// (full scale 1), interleaved over channels; channel c is shifted by c/4
// of a period so that stereo channels differ.
func sine(rate, channels, n int, freq, amp float64) []int16 {
	out := make([]int16, n*channels)
	for i := range n {
		for c := range channels {
			phase := 2*math.Pi*freq*float64(i)/float64(rate) + float64(c)*math.Pi/2
			out[i*channels+c] = int16(math.Round(amp * 32767 * math.Sin(phase)))
		}
	}
	return out
}

func toBytes(s []int16) []byte {
	b := make([]byte, 2*len(s))
	for i, v := range s {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
	}
	return b
}

func fromBytes(b []byte) []int16 {
	s := make([]int16, len(b)/2)
	for i := range s {
		s[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
	}
	return s
}

// roundTrip encodes pcm frame by frame and decodes every packet.
func roundTrip(t testing.TB, cfg EncoderConfig, pcm []byte) (packets [][]byte, decoded []byte) {
	t.Helper()
	enc, err := NewEncoder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	dec, err := NewDecoder(cfg.SampleRate, cfg.Channels)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	fb := enc.FrameBytes()
	if len(pcm)%fb != 0 {
		t.Fatalf("input of %d bytes is not a whole number of %d-byte frames", len(pcm), fb)
	}
	for off := 0; off < len(pcm); off += fb {
		p, err := enc.Encode(pcm[off : off+fb])
		if err != nil {
			t.Fatal(err)
		}
		if len(p) == 0 || len(p) > MaxPacketBytes {
			t.Fatalf("packet of %d bytes", len(p))
		}
		packets = append(packets, p)
		out, err := dec.Decode(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != fb {
			t.Fatalf("decoded %d bytes, want %d", len(out), fb)
		}
		decoded = append(decoded, out...)
	}
	return packets, decoded
}

// bestSNR returns the SNR in dB of out against in for channel c of
// channels, after searching the codec delay in 0..maxLag samples. The
// first skip samples are left out (encoder start-up).
func bestSNR(in, out []int16, channels, c, maxLag, skip int) (snr float64, lag int) {
	n := len(in) / channels
	snr = math.Inf(-1)
	for l := 0; l <= maxLag; l++ {
		var sig, noise float64
		for i := skip; i+l < n; i++ {
			x := float64(in[i*channels+c])
			y := float64(out[(i+l)*channels+c])
			sig += x * x
			noise += (x - y) * (x - y)
		}
		if s := 10 * math.Log10(sig/noise); s > snr {
			snr, lag = s, l
		}
	}
	return snr, lag
}

// minSNR is the SNR a 440 Hz tone must keep through Opus at 16 kbit/s.
// Opus at 16 kbit/s in VoIP mode codes wideband SILK, a waveform-matching
// (analysis-by-synthesis) coder, so a steady low tone keeps its phase and
// amplitude: libopus 1.3.1 measures 29.3 dB. Aligning to whole samples
// alone caps the SNR near 1/(2π·440·0.5/48000)² ≈ 31 dB. (On a pure tone
// the best lag may be an alias of the true 312-sample delay shifted by
// whole periods, which is harmless.) 15 dB, an error power of 3 % of the
// signal, still fails clearly on a broken pipeline (wrong rate, channel
// order, byte order or delay gives about 3 dB or less) while leaving room
// for other libopus versions.
const minSNR = 15

func TestSineSNRMono(t *testing.T) {
	const rate = 48000
	in := sine(rate, 1, 2*rate, 440, 0.5)
	_, out := roundTrip(t, EncoderConfig{SampleRate: rate, Channels: 1, Bitrate: 16000, FEC: true, PacketLossPercent: 0}, toBytes(in))
	snr, lag := bestSNR(in, fromBytes(out), 1, 0, 400, rate/10)
	t.Logf("mono 440 Hz at 16 kbit/s: SNR %.1f dB at lag %d samples", snr, lag)
	if snr < minSNR {
		t.Fatalf("SNR %.1f dB below %d dB", snr, minSNR)
	}
}

func TestSineSNRStereo(t *testing.T) {
	const rate = 48000
	// Left 440 Hz, right 660 Hz: a swapped or down-mixed decode fails.
	left, right := sine(rate, 1, 2*rate, 440, 0.5), sine(rate, 1, 2*rate, 660, 0.4)
	in := make([]int16, 0, 2*len(left))
	for i := range left {
		in = append(in, left[i], right[i])
	}
	// Stereo needs well above the mono rate: with FEC on, libopus 1.3.1
	// gives each channel 11-20 dB at 32 kbit/s, 19-21 dB at 48 kbit/s and
	// 22-25 dB at 64 kbit/s (FEC spends bits and keeps SILK longer).
	_, out := roundTrip(t, EncoderConfig{SampleRate: rate, Channels: 2, Bitrate: 64000, FEC: true}, toBytes(in))
	dec := fromBytes(out)
	for c := range 2 {
		snr, lag := bestSNR(in, dec, 2, c, 400, rate/10)
		t.Logf("stereo channel %d at 64 kbit/s: SNR %.1f dB at lag %d", c, snr, lag)
		if snr < minSNR {
			t.Fatalf("channel %d: SNR %.1f dB below %d dB", c, snr, minSNR)
		}
	}
}

func TestAllRates(t *testing.T) {
	for _, rate := range []int{8000, 12000, 16000, 24000, 48000} {
		for _, ch := range []int{1, 2} {
			enc, err := NewEncoder(EncoderConfig{SampleRate: rate, Channels: ch, Bitrate: 16000, DTX: true})
			if err != nil {
				t.Fatalf("%d Hz %d ch: %v", rate, ch, err)
			}
			if got, want := enc.FrameBytes(), rate/50*ch*2; got != want {
				t.Errorf("%d Hz %d ch: FrameBytes %d, want %d", rate, ch, got, want)
			}
			if _, err := enc.Encode(toBytes(sine(rate, ch, rate/50, 300, 0.3))); err != nil {
				t.Errorf("%d Hz %d ch: %v", rate, ch, err)
			}
			enc.Close()
		}
	}
}

// speechLike is a harmonic-rich signal with a wobbling pitch and noise,
// so the encoder has something to spend bits on.
func speechLike(rate, n int) []int16 {
	out := make([]int16, n)
	seed := uint32(1)
	for i := range n {
		t := float64(i) / float64(rate)
		f0 := 140 + 30*math.Sin(2*math.Pi*3*t)
		var v float64
		for h := 1; h <= 20; h++ {
			v += math.Sin(2*math.Pi*f0*float64(h)*t) / float64(h)
		}
		seed = seed*1664525 + 1013904223
		v += (float64(seed>>16)/65536 - 0.5) * 0.3
		out[i] = int16(max(-32767, min(32767, v*8000)))
	}
	return out
}

func meanSize(packets [][]byte) float64 {
	total := 0
	for _, p := range packets {
		total += len(p)
	}
	return float64(total) / float64(len(packets))
}

func TestLowerBitrateSmallerPackets(t *testing.T) {
	const rate = 48000
	pcm := toBytes(speechLike(rate, 2*rate))
	var sizes []float64
	for _, bps := range []int{64000, 24000, 8000} {
		p, _ := roundTrip(t, EncoderConfig{SampleRate: rate, Channels: 1, Bitrate: bps}, pcm)
		sizes = append(sizes, meanSize(p))
		t.Logf("%d bit/s: %.1f bytes per packet (%.0f bit/s)", bps, meanSize(p), meanSize(p)*8*50)
	}
	for i := 1; i < len(sizes); i++ {
		if sizes[i] >= sizes[i-1] {
			t.Fatalf("mean packet sizes %v do not decrease with the bitrate", sizes)
		}
	}
}

func TestSetBitrate(t *testing.T) {
	const rate = 48000
	enc, err := NewEncoder(EncoderConfig{SampleRate: rate, Channels: 1, Bitrate: 64000, FEC: true})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	pcm := toBytes(speechLike(rate, 4*rate))
	fb := enc.FrameBytes()
	var hi, lo [][]byte
	for i, off := 0, 0; off < len(pcm); i, off = i+1, off+fb {
		if i == 100 {
			if err := enc.SetBitrate(10000); err != nil {
				t.Fatal(err)
			}
			if err := enc.SetPacketLoss(20); err != nil {
				t.Fatal(err)
			}
		}
		p, err := enc.Encode(pcm[off : off+fb])
		if err != nil {
			t.Fatal(err)
		}
		if i < 100 {
			hi = append(hi, p)
		} else if i >= 110 {
			lo = append(lo, p)
		}
	}
	t.Logf("before SetBitrate %.1f bytes, after %.1f", meanSize(hi), meanSize(lo))
	if meanSize(lo) >= meanSize(hi)/2 {
		t.Fatalf("SetBitrate(10000) after 64000: mean packet %.1f -> %.1f bytes", meanSize(hi), meanSize(lo))
	}
	// Out-of-range values are clamped, not rejected.
	for _, bps := range []int{-1, 0, 1, 1 << 30} {
		if err := enc.SetBitrate(bps); err != nil {
			t.Errorf("SetBitrate(%d): %v", bps, err)
		}
	}
	for _, pct := range []int{-5, 0, 3, 50, 100, 1000} {
		if err := enc.SetPacketLoss(pct); err != nil {
			t.Errorf("SetPacketLoss(%d): %v", pct, err)
		}
	}
}

func TestDTXSilence(t *testing.T) {
	const rate = 48000
	packets, _ := roundTrip(t, EncoderConfig{SampleRate: rate, Channels: 1, Bitrate: 16000, FEC: true, DTX: true}, make([]byte, 2*rate*2))
	small := 0
	for _, p := range packets[20:] {
		if len(p) <= 2 {
			small++
		}
	}
	t.Logf("DTX on silence: %d of %d packets after the first 20 are <= 2 bytes; sizes %v", small, len(packets)-20, sizesOf(packets[:40]))
	// libopus sends a refresh frame about every 400 ms in DTX; everything
	// else must be a 1-2 byte DTX packet.
	if small < (len(packets)-20)*8/10 {
		t.Fatalf("only %d of %d silent packets are <= 2 bytes", small, len(packets)-20)
	}
	// Without DTX silence is still coded as regular frames.
	packets, _ = roundTrip(t, EncoderConfig{SampleRate: rate, Channels: 1, Bitrate: 16000}, make([]byte, rate/5*2))
	t.Logf("no DTX on silence: sizes %v", sizesOf(packets))
}

func sizesOf(p [][]byte) []int {
	s := make([]int, len(p))
	for i := range p {
		s[i] = len(p[i])
	}
	return s
}

func TestWrongInput(t *testing.T) {
	for _, cfg := range []EncoderConfig{
		{SampleRate: 44100, Channels: 1, Bitrate: 16000},
		{SampleRate: 0, Channels: 1},
		{SampleRate: 48000, Channels: 0},
		{SampleRate: 48000, Channels: 3},
		{SampleRate: -8000, Channels: 1},
	} {
		if enc, err := NewEncoder(cfg); err == nil {
			enc.Close()
			t.Errorf("NewEncoder(%+v) succeeded", cfg)
		}
		if dec, err := NewDecoder(cfg.SampleRate, cfg.Channels); err == nil {
			dec.Close()
			t.Errorf("NewDecoder(%d, %d) succeeded", cfg.SampleRate, cfg.Channels)
		}
	}
	enc, err := NewEncoder(EncoderConfig{SampleRate: 48000, Channels: 2, Bitrate: 16000})
	if err != nil {
		t.Fatal(err)
	}
	fb := enc.FrameBytes()
	if fb != 3840 {
		t.Fatalf("FrameBytes %d, want 3840 (48 kHz stereo)", fb)
	}
	for _, n := range []int{0, 1, fb / 2, fb - 1, fb + 1, 2 * fb} {
		if _, err := enc.Encode(make([]byte, n)); err == nil {
			t.Errorf("Encode of %d bytes succeeded", n)
		}
	}
	if _, err := enc.Encode(nil); err == nil {
		t.Error("Encode(nil) succeeded")
	}
	enc.Close()
	enc.Close() // idempotent
	if _, err := enc.Encode(make([]byte, fb)); err == nil {
		t.Error("Encode after Close succeeded")
	}
	if err := enc.SetBitrate(16000); err == nil {
		t.Error("SetBitrate after Close succeeded")
	}

	dec, err := NewDecoder(48000, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dec.Decode(nil); err == nil {
		t.Error("Decode(nil) succeeded")
	}
	// A code 3 packet claiming 63 frames of 20 ms (1.26 s) is invalid.
	if _, err := dec.Decode([]byte{0xfb, 0x3f, 0, 0}); err == nil {
		t.Error("Decode of an invalid packet succeeded")
	}
	dec.Close()
	dec.Close()
	if _, err := dec.Decode([]byte{0xf8}); err == nil {
		t.Error("Decode after Close succeeded")
	}
}

// TestConcurrentClose checks that Close racing with Encode is safe.
func TestConcurrentClose(t *testing.T) {
	for range 20 {
		enc, err := NewEncoder(EncoderConfig{SampleRate: 16000, Channels: 1, Bitrate: 16000})
		if err != nil {
			t.Fatal(err)
		}
		frame := make([]byte, enc.FrameBytes())
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 10 {
					_, _ = enc.Encode(frame)
				}
			})
		}
		enc.Close()
		wg.Wait()
	}
}

// TestCleanupWithoutClose drops encoders and decoders without Close: the
// runtime cleanup frees their C memory (this must not crash or leak much).
func TestCleanupWithoutClose(t *testing.T) {
	for range 200 {
		if _, err := NewEncoder(EncoderConfig{SampleRate: 48000, Channels: 2, Bitrate: 32000}); err != nil {
			t.Fatal(err)
		}
		if _, err := NewDecoder(48000, 2); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.GC()
}

// TestOggOpusdec writes the encoder's packets into an Ogg Opus file and
// decodes it with opusdec and ffmpeg when they are installed (§7.6).
func TestOggOpusdec(t *testing.T) {
	const rate = 48000
	in := sine(rate, 1, rate, 440, 0.5)
	enc, err := NewEncoder(EncoderConfig{SampleRate: rate, Channels: 1, Bitrate: 16000, FEC: true, DTX: true})
	if err != nil {
		t.Fatal(err)
	}
	if la := enc.Lookahead(); la != mediafile.OpusPreSkip {
		t.Errorf("encoder lookahead %d, mediafile.OpusPreSkip %d", la, mediafile.OpusPreSkip)
	}
	pcm := toBytes(in)
	var packets [][]byte
	for off := 0; off < len(pcm); off += enc.FrameBytes() {
		p, err := enc.Encode(pcm[off : off+enc.FrameBytes()])
		if err != nil {
			t.Fatal(err)
		}
		packets = append(packets, p)
	}
	enc.Close()
	var buf bytes.Buffer
	if err := mediafile.WriteOggOpus(&buf, rate, 1, packets); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "tone.opus")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ran := false
	if path, err := exec.LookPath("opusdec"); err == nil {
		ran = true
		wav := filepath.Join(dir, "opusdec.wav")
		if out, err := exec.Command(path, "--quiet", file, wav).CombinedOutput(); err != nil {
			t.Fatalf("opusdec: %v\n%s", err, out)
		}
		checkDecodedLength(t, "opusdec", wav, rate)
	}
	if path, err := exec.LookPath("ffmpeg"); err == nil {
		ran = true
		wav := filepath.Join(dir, "ffmpeg.wav")
		if out, err := exec.Command(path, "-hide_banner", "-loglevel", "error", "-xerror", "-i", file, "-ar", "48000", wav).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg: %v\n%s", err, out)
		}
		checkDecodedLength(t, "ffmpeg", wav, rate)
	}
	if !ran {
		t.Skip("neither opusdec nor ffmpeg is installed")
	}
}

// checkDecodedLength checks that a decoded 16-bit WAV file holds about
// want samples (1 s at 48 kHz, pre-skip removed).
func checkDecodedLength(t *testing.T, tool, wav string, want int) {
	t.Helper()
	b, err := os.ReadFile(wav)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte("data"))
	if i < 0 || len(b) < i+8 {
		t.Fatalf("%s: no data chunk in the WAV output", tool)
	}
	samples := (len(b) - i - 8) / 2
	t.Logf("%s decoded %d samples", tool, samples)
	if samples < want-960 || samples > want+960 {
		t.Fatalf("%s decoded %d samples, want about %d", tool, samples, want)
	}
}

func benchmarkEncode(b *testing.B, channels int) {
	const rate = 48000
	enc, err := NewEncoder(EncoderConfig{SampleRate: rate, Channels: channels, Bitrate: 16000 * channels, FEC: true, PacketLossPercent: 5})
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	var frames [][]byte
	pcm := toBytes(speechLike(rate, rate*channels))
	fb := enc.FrameBytes()
	for off := 0; off+fb <= len(pcm); off += fb {
		frames = append(frames, pcm[off:off+fb])
	}
	b.SetBytes(int64(fb))
	b.ResetTimer()
	var out, n int
	for i := 0; b.Loop(); i++ {
		p, err := enc.Encode(frames[i%len(frames)])
		if err != nil {
			b.Fatal(err)
		}
		out += len(p)
		n++
	}
	b.ReportMetric(float64(out)/float64(n), "B/packet")
}

func BenchmarkEncodeMono48k(b *testing.B)   { benchmarkEncode(b, 1) }
func BenchmarkEncodeStereo48k(b *testing.B) { benchmarkEncode(b, 2) }

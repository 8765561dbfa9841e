package mediafile_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commucat/commucat/internal/media/mediafile"
	"github.com/commucat/commucat/internal/media/opus"
	"github.com/commucat/commucat/internal/media/vp8"
)

// opusPackets returns 1 s of Opus packets: a real encoded tone when this
// build has libopus, else 50 one-byte packets (TOC only: a valid 20 ms
// SILK frame of length zero, which decoders conceal as silence).
func opusPackets(t *testing.T, rate, channels int) [][]byte {
	t.Helper()
	var packets [][]byte
	if !opus.Available() {
		for range 50 {
			packets = append(packets, []byte{0x08})
		}
		return packets
	}
	enc, err := opus.NewEncoder(opus.EncoderConfig{SampleRate: rate, Channels: channels, Bitrate: 24000, FEC: true})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	frame := make([]byte, enc.FrameBytes())
	samples := len(frame) / 2 / channels
	for i := range 50 {
		for s := range samples {
			v := int16(10000 * math.Sin(2*math.Pi*440*float64(i*samples+s)/float64(rate)))
			for c := range channels {
				binary.LittleEndian.PutUint16(frame[2*(s*channels+c):], uint16(v))
			}
		}
		p, err := enc.Encode(frame)
		if err != nil {
			t.Fatal(err)
		}
		packets = append(packets, p)
	}
	return packets
}

// TestOggOpusTools decodes the written Ogg Opus files with opusdec and
// ffmpeg and inspects them with opusinfo, as far as they are installed.
func TestOggOpusTools(t *testing.T) {
	ran := false
	for _, c := range [][2]int{{48000, 1}, {16000, 2}} {
		rate, channels := c[0], c[1]
		packets := opusPackets(t, rate, channels)
		var buf bytes.Buffer
		if err := mediafile.WriteOggOpus(&buf, rate, channels, packets); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		file := filepath.Join(dir, "a.opus")
		if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		// 50 packets of 20 ms minus the pre-skip, at 48 kHz.
		want := 50*960 - mediafile.OpusPreSkip
		if path, err := exec.LookPath("opusdec"); err == nil {
			ran = true
			out := filepath.Join(dir, "opusdec.raw")
			if msg, err := exec.Command(path, "--quiet", "--rate", "48000", "--force-stereo", file, out).CombinedOutput(); err != nil {
				t.Fatalf("opusdec: %v\n%s", err, msg)
			}
			checkSamples(t, "opusdec", out, 2, want)
		}
		if path, err := exec.LookPath("ffmpeg"); err == nil {
			ran = true
			out := filepath.Join(dir, "ffmpeg.raw")
			if msg, err := exec.Command(path, "-hide_banner", "-loglevel", "error", "-xerror", "-i", file,
				"-f", "s16le", "-ar", "48000", "-ac", "2", out).CombinedOutput(); err != nil {
				t.Fatalf("ffmpeg: %v\n%s", err, msg)
			}
			checkSamples(t, "ffmpeg", out, 2, want)
		}
		if path, err := exec.LookPath("opusinfo"); err == nil {
			ran = true
			msg, err := exec.Command(path, file).CombinedOutput()
			if err != nil || bytes.Contains(bytes.ToUpper(msg), []byte("WARNING")) || bytes.Contains(bytes.ToUpper(msg), []byte("ERROR")) {
				t.Fatalf("opusinfo: %v\n%s", err, msg)
			}
			if !strings.Contains(string(msg), "Pre-skip: 312") {
				t.Fatalf("opusinfo does not report the pre-skip:\n%s", msg)
			}
		}
	}
	if !ran {
		t.Skip("none of opusdec, ffmpeg, opusinfo is installed")
	}
}

func checkSamples(t *testing.T, tool, file string, channels, want int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	got := len(b) / 2 / channels
	// ffmpeg's resampler and end trimming may move the end by a few samples.
	if got < want-64 || got > want+64 {
		t.Fatalf("%s decoded %d samples per channel, want %d", tool, got, want)
	}
}

// TestIVFFfmpeg encodes a few frames with libvpx, writes them as IVF and
// decodes the file with ffmpeg and ffprobe.
func TestIVFFfmpeg(t *testing.T) {
	if !vp8.Available() {
		t.Skip("VP8 not available in this build")
	}
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Skip("ffmpeg not installed")
	}
	const w, h, n = 161, 97, 12
	enc, err := vp8.NewEncoder(vp8.EncoderConfig{Width: w, Height: h, FrameRate: 15, BitrateKbps: 300})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var frames [][]byte
	img := make([]byte, enc.FrameBytes())
	for i := range n {
		for j := range img {
			img[j] = byte(j*3 + i*5)
		}
		f, _, err := enc.Encode(img)
		if err != nil {
			t.Fatal(err)
		}
		if f != nil {
			frames = append(frames, f)
		}
	}
	var buf bytes.Buffer
	if err := mediafile.WriteIVF(&buf, w, h, 15, 1, frames); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "v.ivf")
	if err := os.WriteFile(in, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "v.yuv")
	if msg, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-xerror", "-i", in,
		"-f", "rawvideo", "-pix_fmt", "yuv420p", out).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, msg)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(frames) * vp8.FrameSize(w, h); len(raw) != want {
		t.Fatalf("ffmpeg decoded %d bytes, want %d", len(raw), want)
	}
	if ffprobe, err := exec.LookPath("ffprobe"); err == nil {
		msg, err := exec.Command(ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
			"stream=codec_name,width,height,r_frame_rate", "-of", "csv=p=0", in).CombinedOutput()
		if err != nil {
			t.Fatalf("ffprobe: %v\n%s", err, msg)
		}
		if got := strings.TrimSpace(string(msg)); got != "vp8,161,97,15/1" {
			t.Fatalf("ffprobe: %q, want vp8,161,97,15/1", got)
		}
	}
}

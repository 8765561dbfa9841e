package cli

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/commucat/commucat/internal/media/opus"
	"github.com/commucat/commucat/internal/media/vp8"
)

var callSimLine = regexp.MustCompile(`^simulated_frames=([0-9]+) encoded_bytes=([0-9]+)$`)

// callSimOK runs call-simulate in a codec build and returns the frames
// and bytes of its first line and the other key=value lines.
func callSimOK(t *testing.T, args ...string) (frames, encoded int, rest *kv) {
	t.Helper()
	out, errOut, code := run(t, "", append([]string{"call-simulate"}, args...)...)
	if code != ExitOK || errOut != "" {
		t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
	}
	first, others, _ := strings.Cut(out, "\n")
	m := callSimLine.FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("first line %q", first)
	}
	frames, _ = strconv.Atoi(m[1])
	encoded, _ = strconv.Atoi(m[2])
	return frames, encoded, parseKV(t, others)
}

func dB(t *testing.T, r *kv, k string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(r.get(k), 64)
	if err != nil || !regexp.MustCompile(`^-?[0-9]+\.[0-9]$`).MatchString(r.get(k)) {
		t.Fatalf("%s=%q is not a number with one decimal", k, r.get(k))
	}
	return v
}

func TestCallSimulate(t *testing.T) {
	if !opus.Available() {
		out, errOut, code := run(t, "", "call-simulate")
		if code != ExitFail || out != "" || errOut != "error: media codecs not available in this build\n" {
			t.Errorf("without codecs: exit %d, %q, %q", code, out, errOut)
		}
		if _, errOut, code := run(t, "", "call-simulate", "10", "--video"); code != ExitFail || errOut != "error: media codecs not available in this build\n" {
			t.Errorf("--video without codecs: exit %d, %q", code, errOut)
		}
		return
	}
	// Default: 64 frames (§14 item 111), with the SNR of the decoded
	// signal. At 16 kbit/s a 440 Hz tone comes back well above 15 dB
	// (about 29 dB with libopus 1.x); a misaligned or broken decode is
	// far below.
	frames, encoded, rest := callSimOK(t)
	if frames != 64 || encoded <= 0 {
		t.Errorf("frames %d, encoded %d", frames, encoded)
	}
	// 16 kbit/s for 1.28 s is 2560 bytes; VBR and FEC stay within 2×.
	if encoded > 2*2560 {
		t.Errorf("%d bytes for 64 frames at 16 kbit/s", encoded)
	}
	if len(rest.keys) != 1 || dB(t, rest, "snr_db") < 15 {
		t.Errorf("extra lines %v", rest.m)
	}
	// Explicit counts.
	for _, n := range []int{1, 3, 150} {
		frames, encoded, rest := callSimOK(t, strconv.Itoa(n))
		if frames != n || encoded <= 0 || !rest.has("snr_db") {
			t.Errorf("%d: frames %d, encoded %d, %v", n, frames, encoded, rest.m)
		}
	}
}

func TestCallSimulateVideo(t *testing.T) {
	if !opus.Available() {
		t.Skip("no codecs in this build (covered by TestCallSimulate)")
	}
	if !vp8.Available() {
		out, errOut, code := run(t, "", "call-simulate", "--video")
		if code != ExitFail || out != "" || errOut != "error: VP8 codec not available in this build\n" {
			t.Errorf("exit %d, %q, %q", code, out, errOut)
		}
		return
	}
	frames, _, rest := callSimOK(t, "--video", "20")
	if frames != 20 {
		t.Errorf("frames %d", frames)
	}
	want := []string{"snr_db", "video_frames", "video_encoded_bytes", "psnr_db"}
	if strings.Join(rest.keys, ",") != strings.Join(want, ",") {
		t.Fatalf("lines %v", rest.keys)
	}
	if rest.get("video_frames") != "10" || rest.int(t, "video_encoded_bytes") <= 0 {
		t.Errorf("%v", rest.m)
	}
	// 640×480 at 1 Mbit/s: a moving pattern decodes far above 30 dB.
	if p := dB(t, rest, "psnr_db"); p < 30 {
		t.Errorf("psnr_db %v", p)
	}
}

func TestCallSimulateUsage(t *testing.T) {
	// Usage errors come before the codec check, in every build.
	for _, args := range [][]string{{"0"}, {"100001"}, {"-5"}, {"+5"}, {"abc"}, {"64x"}, {"1", "2"}, {"--bogus"}, {"--video=yes"}, {"--video", "--video"}, {""}} {
		out, errOut, code := run(t, "", append([]string{"call-simulate"}, args...)...)
		if code != ExitUsage || out != "" || !strings.HasPrefix(errOut, callSimulateUsage+" (") {
			t.Errorf("%q: exit %d, %q, %q", args, code, out, errOut)
		}
	}
	// The bounds themselves are accepted.
	for _, c := range []struct {
		args   []string
		frames int
		video  bool
	}{
		{nil, 64, false},
		{[]string{"1"}, 1, false},
		{[]string{"100000"}, 100000, false},
		{[]string{"--video", "7"}, 7, true},
		{[]string{"7", "--video"}, 7, true},
	} {
		frames, video, msg := parseCallSimArgs(c.args)
		if msg != "" || frames != c.frames || video != c.video {
			t.Errorf("%v: %d %v %q", c.args, frames, video, msg)
		}
	}
}

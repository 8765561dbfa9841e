package opus

import "testing"

// Tests of the helpers shared by both builds.

func TestFormatChecks(t *testing.T) {
	for _, r := range []int{8000, 12000, 16000, 24000, 48000} {
		for _, c := range []int{1, 2} {
			if err := checkFormat(r, c); err != nil {
				t.Errorf("checkFormat(%d, %d): %v", r, c, err)
			}
		}
	}
	for _, rc := range [][2]int{{44100, 1}, {0, 1}, {48000, 0}, {48000, 3}, {-1, 1}} {
		if checkFormat(rc[0], rc[1]) == nil {
			t.Errorf("checkFormat(%d, %d) accepted", rc[0], rc[1])
		}
	}
	// §7.4 sizes.
	for _, c := range []struct{ r, ch, want int }{{8000, 1, 320}, {16000, 1, 640}, {24000, 1, 960}, {48000, 1, 1920}, {48000, 2, 3840}} {
		if got := frameBytes(c.r, c.ch); got != c.want {
			t.Errorf("frameBytes(%d, %d) = %d, want %d", c.r, c.ch, got, c.want)
		}
	}
	if clampBitrate(1) != 6000 || clampBitrate(1e9) != 510000 || clampBitrate(16000) != 16000 {
		t.Error("clampBitrate")
	}
	if lossHint(0) != 5 || lossHint(12) != 12 || lossHint(-3) != 5 || lossHint(500) != 100 {
		t.Error("lossHint")
	}
}

package vp8

import "testing"

// Tests of the helpers shared by both builds.

func TestFrameSize(t *testing.T) {
	// §7.4 sizes.
	for _, c := range []struct{ w, h, want int }{
		{640, 360, 345600}, {1280, 720, 1382400}, {1920, 1080, 3110400},
		{321, 241, 321*241 + 2*161*121}, {1, 1, 3},
	} {
		if got := FrameSize(c.w, c.h); got != c.want {
			t.Errorf("FrameSize(%d, %d) = %d, want %d", c.w, c.h, got, c.want)
		}
	}
}

func TestConfigChecks(t *testing.T) {
	cfg, err := checkConfig(EncoderConfig{Width: 640, Height: 360, FrameRate: 0, BitrateKbps: 0})
	if err != nil || cfg.FrameRate != 1 || cfg.BitrateKbps != 1 {
		t.Fatalf("checkConfig: %+v, %v; want frame rate 1 and 1 kbit/s", cfg, err)
	}
	for _, bad := range []EncoderConfig{{Width: 0, Height: 1}, {Width: 1, Height: 0}, {Width: MaxDimension + 1, Height: 1}, {Width: 1, Height: 1, FrameRate: -1}} {
		if _, err := checkConfig(bad); err == nil {
			t.Errorf("checkConfig(%+v) accepted", bad)
		}
	}
	if cpuUsed(640, 480) != 8 || cpuUsed(640, 360) != 8 || cpuUsed(1280, 720) != 16 || cpuUsed(641, 480) != 16 {
		t.Error("cpuUsed does not follow §7.6")
	}
}

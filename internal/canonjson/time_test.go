package canonjson

import (
	"testing"
	"time"
)

func TestFormatTime(t *testing.T) {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		t    time.Time
		want string
	}{
		{base, "2025-01-01T00:00:00+00:00"},
		{base.Add(5 * time.Millisecond), "2025-01-01T00:00:00.005+00:00"},
		{base.Add(120 * time.Millisecond), "2025-01-01T00:00:00.120+00:00"},
		{base.Add(1500 * time.Microsecond), "2025-01-01T00:00:00.001500+00:00"},
		{base.Add(7), "2025-01-01T00:00:00.000000007+00:00"},
		{base.In(time.FixedZone("x", 3600)), "2025-01-01T00:00:00+00:00"},
	}
	for _, c := range cases {
		got := FormatTime(c.t)
		if got != c.want {
			t.Errorf("FormatTime(%v) = %s, want %s", c.t, got, c.want)
		}
		back, err := ParseTime(got)
		if err != nil || !back.Equal(c.t) {
			t.Errorf("ParseTime(%s) = %v, %v", got, back, err)
		}
	}
	if _, err := ParseTime("2025-01-01T00:00:00Z"); err != nil {
		t.Error("Z form must be accepted")
	}
}

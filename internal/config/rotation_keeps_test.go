package config

import (
	"testing"
	"time"
)

// TestRotationPolicyKeeps: the one pruning rule of §10.4 for Noise keys
// and admin tokens.
func TestRotationPolicyKeeps(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p := RotationPolicy{MaxVersions: 3}
	for _, c := range []struct {
		rank    int
		expires time.Time
		want    bool
	}{
		{0, now.Add(time.Hour), true},
		{2, now.Add(time.Hour), true},
		{3, now.Add(time.Hour), false},    // beyond max_versions
		{1, now, false},                   // expired at now
		{1, now.Add(-time.Second), false}, // expired before
		{1, now.Add(time.Nanosecond), true},
	} {
		if got := p.Keeps(c.rank, c.expires, now); got != c.want {
			t.Errorf("Keeps(rank %d, expires %v) = %v, want %v", c.rank, c.expires.Sub(now), got, c.want)
		}
	}
}

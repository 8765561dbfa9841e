package bench

import (
	"testing"
	"time"
)

func TestScheduleDue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	for _, c := range []struct {
		rate float64
		at   time.Duration // now − start
		want int64
	}{
		{4, -time.Nanosecond, 0},
		{4, 0, 1}, // message 0 is due at start
		{4, 249 * ms, 1},
		{4, 250 * ms, 2},
		{4, time.Second - 1, 4},
		{4, time.Second, 5},
		{0.5, 1999 * ms, 1},
		{0.5, 2 * time.Second, 2},
		{3, time.Second, 4}, // 1/3 s is not a whole number of nanoseconds
		{1250, 10 * time.Second, 12501},
		{20000, time.Hour, 72000001},
	} {
		s := schedule{start: t0, rate: c.rate}
		if got := s.due(t0.Add(c.at)); got != c.want {
			t.Errorf("rate %v, start+%v: due %d, want %d", c.rate, c.at, got, c.want)
		}
	}
	// due and at agree everywhere: at(due−1) <= now < at(due).
	for _, rate := range []float64{1, 3, 7, 333.3, 1250, 99999} {
		s := schedule{start: t0, rate: rate}
		for d := time.Duration(0); d < 3*time.Second; d += 977 * time.Microsecond {
			now := t0.Add(d)
			k := s.due(now)
			if k < 1 || s.at(k-1).After(now) || !s.at(k).After(now) {
				t.Fatalf("rate %v, now start+%v: due %d, at(k-1) %v, at(k) %v", rate, d, k, s.at(k-1).Sub(t0), s.at(k).Sub(t0))
			}
		}
	}
}

// fakePacer returns a pacer on a fake clock: wait advances the clock by
// the requested time plus oversleep.
func fakePacer(s schedule, clock *time.Time, oversleep time.Duration, waits *int) *pacer {
	return &pacer{
		s:   s,
		now: func() time.Time { return *clock },
		wait: func(d time.Duration) bool {
			if d <= 0 {
				panic("wait with a non-positive duration")
			}
			*waits++
			*clock = clock.Add(d + oversleep)
			return true
		},
	}
}

// TestPacerCatchUp: a timer that oversleeps makes bursts, never drift;
// every message goes out at or after its intended time, with the
// intended time it was scheduled for, with at most oversleep delay.
func TestPacerCatchUp(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const rate, n = 1000.0, 5000 // 1 ms apart
	for _, oversleep := range []time.Duration{0, 50 * time.Microsecond, 3500 * time.Microsecond} {
		clock, waits := t0, 0
		s := schedule{start: t0.Add(10 * time.Millisecond), rate: rate}
		p := fakePacer(s, &clock, oversleep, &waits)
		p.send = func(k int64, at time.Time) bool {
			if !at.Equal(s.at(k)) {
				t.Fatalf("message %d: intended %v, want %v", k, at, s.at(k))
			}
			if late := clock.Sub(at); late < 0 || late > oversleep {
				t.Fatalf("oversleep %v: message %d sent %v after its time", oversleep, k, late)
			}
			return k < n-1
		}
		p.run()
		if got := p.sent.Load(); got != n-1 {
			t.Errorf("oversleep %v: sent %d, want %d", oversleep, got, n-1)
		}
		// The schedule, not the wake-ups, sets the rate: the last message
		// went at its own intended time (plus at most one oversleep).
		if end := clock.Sub(s.at(n - 1)); end < 0 || end > oversleep {
			t.Errorf("oversleep %v: finished %v after the last intended time", oversleep, end)
		}
		// One wait per burst: a wake-up o late finds 1 + ⌊o × rate⌋
		// messages due.
		maxWaits := n/(1+int(oversleep.Seconds()*rate)) + 1
		if waits > maxWaits {
			t.Errorf("oversleep %v: %d waits for %d messages, want at most %d", oversleep, waits, n, maxWaits)
		}
		t.Logf("oversleep %v: %d waits for %d messages", oversleep, waits, n)
	}
}

// TestPacerBlockedSend: a send that blocks (full window) delays the
// messages behind it, which keep their intended times and then go out in
// a burst without waiting; the backlog counts them meanwhile.
func TestPacerBlockedSend(t *testing.T) {
	t0 := time.Unix(1000, 0)
	clock, waits := t0, 0
	s := schedule{start: t0, rate: 100} // 10 ms apart
	p := fakePacer(s, &clock, 0, &waits)
	var sentAt []time.Time
	p.send = func(k int64, at time.Time) bool {
		if !at.Equal(s.at(k)) {
			t.Fatalf("message %d: intended %v, want %v", k, at, s.at(k))
		}
		if k == 30 {
			return false // stop: message 30 is not sent
		}
		if k == 10 {
			// The window stays full for 95 ms.
			clock = clock.Add(95 * time.Millisecond)
			if b := p.backlog(clock); b != 10 { // messages 10 (blocked) to 19
				t.Errorf("backlog during the stall: %d, want 10", b)
			}
		}
		sentAt = append(sentAt, clock)
		return true
	}
	p.run()
	if len(sentAt) != 30 || p.sent.Load() != 30 {
		t.Fatalf("%d messages sent (counted %d), want 30", len(sentAt), p.sent.Load())
	}
	stallEnd := s.at(10).Add(95 * time.Millisecond)
	for k := 11; k <= 19; k++ {
		if !sentAt[k].Equal(stallEnd) {
			t.Errorf("message %d sent at %v, want %v (in the burst after the stall)", k, sentAt[k].Sub(t0), stallEnd.Sub(t0))
		}
	}
	for k := 20; k < 30; k++ {
		if !sentAt[k].Equal(s.at(int64(k))) {
			t.Errorf("message %d sent at %v, want its intended time %v", k, sentAt[k].Sub(t0), s.at(int64(k)).Sub(t0))
		}
	}
	if b := p.backlog(clock); b != 1 { // message 30, refused
		t.Errorf("backlog at the end: %d, want 1", b)
	}
}

func TestRateNotSustained(t *testing.T) {
	for _, c := range []struct {
		delivered int64
		elapsed   time.Duration
		offered   float64
		streams   int
		want      bool
	}{
		{20000, time.Second, 20000, 16, false},
		{19100, time.Second, 20000, 16, false}, // 4.5 % short
		{18900, time.Second, 20000, 16, true},  // 5.5 % short
		{94000, 5 * time.Second, 20000, 16, true},
		{0, time.Second, 200, 2, true},
		{1, time.Second, 2, 2, false}, // one message short per stream is rounding
		{180, time.Second, 200, 2, true},
	} {
		if got := rateNotSustained(c.delivered, c.elapsed, c.offered, c.streams); got != c.want {
			t.Errorf("rateNotSustained(%d, %v, %v, %d) = %v, want %v", c.delivered, c.elapsed, c.offered, c.streams, got, c.want)
		}
	}
}

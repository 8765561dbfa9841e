package bench

import (
	"context"
	"sync/atomic"
	"time"
)

// schedule is an open-loop send schedule: message k (k = 0, 1, ...) is
// intended to be sent at start + k/rate.
type schedule struct {
	start time.Time
	rate  float64 // messages per second, > 0
}

// at returns the intended send time of message k.
func (s schedule) at(k int64) time.Time {
	return s.start.Add(time.Duration(float64(k) * float64(time.Second) / s.rate))
}

// due returns how many messages are due at now: the number of k with
// at(k) <= now (0 before start).
func (s schedule) due(now time.Time) int64 {
	d := now.Sub(s.start)
	if d < 0 {
		return 0
	}
	k := int64(d.Seconds()*s.rate) + 1
	// Make due agree exactly with at despite float rounding.
	for k > 0 && s.at(k-1).After(now) {
		k--
	}
	for !s.at(k).After(now) {
		k++
	}
	return k
}

// pacer hands out the messages of a schedule, each once its intended time
// has passed. After each wake-up it hands out every message already due,
// in a burst, so that a late wake-up (timer slack, a descheduled process)
// or a blocked send (the window was full) never shifts the schedule: the
// offered rate stays the scheduled one and the delay shows up as latency
// from the intended time. It sleeps only when nothing is due, with one
// timer (wait), never once per message.
type pacer struct {
	s    schedule
	now  func() time.Time
	wait func(d time.Duration) bool       // sleep about d (> 0); false: stop
	send func(k int64, at time.Time) bool // hand out message k; false: stop
	sent atomic.Int64                     // messages handed out so far
}

// run paces until send or wait returns false.
func (p *pacer) run() {
	k := p.sent.Load()
	for {
		for due := p.s.due(p.now()); k < due; k++ {
			if !p.send(k, p.s.at(k)) {
				return
			}
			p.sent.Store(k + 1)
		}
		if d := p.s.at(k).Sub(p.now()); d > 0 && !p.wait(d) {
			return
		}
	}
}

// backlog returns how many messages are due at now but not handed out yet.
func (p *pacer) backlog(now time.Time) int64 {
	return max(0, p.s.due(now)-p.sent.Load())
}

// timerWait returns a wait function for a pacer: one reusable timer,
// stopped early by ctx. Call the returned stop function when done.
func timerWait(ctx context.Context) (wait func(time.Duration) bool, stop func()) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	wait = func(d time.Duration) bool {
		t.Reset(d)
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
	return wait, func() { t.Stop() }
}

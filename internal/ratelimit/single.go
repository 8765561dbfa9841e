package ratelimit

import (
	"fmt"
	"time"
)

// Single is the §8.3 algorithm for a single key, without a map: the
// per-connection frame limiter of §6.12 (one Single per connection).
//
// A Single is not safe for concurrent use; it belongs to the goroutine that
// reads the connection. Its memory is a few dozen bytes plus 8 bytes per hit
// inside the window (at most Burst hits; the buffer grows on demand).
type Single struct {
	now     func() time.Time
	base    time.Time
	burst   int
	window  int64
	penalty int64
	st      state
}

// NewSingle returns a Single with the given configuration (MaxKeys is
// ignored), reading time from now. It panics if cfg is invalid (see
// Config.Validate): configuration is validated at start (§10.3), so an
// invalid value here is a programming error.
func NewSingle(cfg Config, now func() time.Time) *Single {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("ratelimit.NewSingle: %v", err))
	}
	if now == nil {
		panic("ratelimit.NewSingle: nil clock")
	}
	s := &Single{now: now, base: now()}
	s.st.reset()
	s.apply(cfg)
	return s
}

func (s *Single) apply(cfg Config) {
	s.burst = cfg.Burst
	s.window = int64(cfg.Window)
	s.penalty = int64(cfg.Penalty)
}

// SetConfig replaces the configuration for subsequent calls. The recorded
// hits and blocked_until are kept. An invalid cfg is rejected and the old
// configuration stays in effect.
func (s *Single) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.apply(cfg)
	return nil
}

// Allow runs the algorithm once. When it denies, retryAfter is the time
// after which a new attempt can succeed (use RetryAfterSeconds for the
// retry_after member of the ERROR frame, §13a.3).
func (s *Single) Allow() (ok bool, retryAfter time.Duration) {
	t := int64(s.now().Sub(s.base))
	return s.st.allow(t, s.burst, s.window, s.penalty)
}

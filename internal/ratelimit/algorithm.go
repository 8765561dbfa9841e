// Package ratelimit implements the rate-limiting algorithm of CCP-1 §8.3
// (used by the http, connect and pairing zones, keyed by client IP) and
// §6.12 (the per-connection frame zone), plus the client-IP and key rules of
// §3.2 and §8.3.
//
// The algorithm, per key: the limiter keeps the times of accepted hits and a
// blocked_until time.
//
//  1. If now < blocked_until: deny; retry after blocked_until − now.
//  2. Forget hits older than the window.
//  3. If fewer than burst hits remain: accept and record the hit.
//  4. Else if the penalty is 0: deny; retry after oldest hit + window − now.
//  5. Else set blocked_until = now + penalty; deny; retry after the penalty.
//
// Denials are not recorded.
//
// A hit recorded at time h is inside the window at time now while
// now − h < window; at now − h == window it is forgotten. With this reading
// the retry-after of step 4 is exact: a new request exactly retry-after later
// is accepted.
//
// Times are measured with the injected clock as offsets from the time the
// limiter was created (time.Time.Sub), so a clock that carries a monotonic
// reading (time.Now) is immune to wall-clock steps.
package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Config holds the parameters of one zone (§8.3, §10.2).
type Config struct {
	// Burst is the number of hits accepted within Window. Must be > 0.
	Burst int
	// Window is the sliding window. Must be > 0.
	Window time.Duration
	// Penalty is how long a key is blocked once it exceeds Burst; 0 means
	// no blocking (step 4). Must be >= 0.
	Penalty time.Duration
	// MaxKeys caps the number of keys a Limiter tracks; 0 means
	// DefaultMaxKeys. Ignored by Single. See Limiter for what happens at
	// the cap.
	MaxKeys int
}

// DefaultMaxKeys is the default cap on the number of keys a Limiter tracks.
const DefaultMaxKeys = 1_000_000

// MaxBurst bounds Config.Burst so that a per-key ring buffer stays small
// (the largest ring is MaxBurst × 8 bytes).
const MaxBurst = 1 << 20

// ErrInvalidConfig is wrapped by the error Config.Validate returns.
var ErrInvalidConfig = errors.New("ratelimit: invalid config")

// Validate reports whether c is usable: Burst in 1..MaxBurst, Window > 0,
// Penalty >= 0, MaxKeys >= 0.
func (c Config) Validate() error {
	switch {
	case c.Burst < 1 || c.Burst > MaxBurst:
		return fmt.Errorf("%w: burst %d out of range 1..%d", ErrInvalidConfig, c.Burst, MaxBurst)
	case c.Window <= 0:
		return fmt.Errorf("%w: window %v must be positive", ErrInvalidConfig, c.Window)
	case c.Penalty < 0:
		return fmt.Errorf("%w: penalty %v must not be negative", ErrInvalidConfig, c.Penalty)
	case c.MaxKeys < 0:
		return fmt.Errorf("%w: max keys %d must not be negative", ErrInvalidConfig, c.MaxKeys)
	}
	return nil
}

// RetryAfterSeconds converts a retry-after duration to the whole seconds
// announced to clients: max(1, ⌈seconds⌉) (§8.3 Retry-After header, §13a.3
// retry_after of ERROR frames). 0.2 s → 1, 1.0 s → 1, 1.2 s → 2.
func RetryAfterSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 1
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return max(1, s)
}

// state is the per-key state of the algorithm: the accepted hits still
// possibly inside the window, in a ring buffer that grows on demand up to
// burst entries, and blocked_until. All times are nanoseconds since the
// owning limiter's base time.
//
// The ring never holds more than burst hits: while it holds burst hits in
// the window every request is denied (steps 4 and 5), and denials are not
// recorded, so an unbounded list would never be longer either. When burst is
// lowered by a live reconfiguration, only the newest burst hits are kept;
// this gives the same accept/deny decisions as keeping all of them (the
// decision only depends on whether the burst-th newest hit is inside the
// window), and step 4 then announces the time at which a slot frees up.
type state struct {
	hits    []int64 // ring buffer; len(hits) is its capacity (<= burst)
	head    int32   // index of the oldest hit
	n       int32   // number of hits stored
	blocked int64   // blocked_until; notBlocked when never blocked
}

// notBlocked is the initial blocked_until: earlier than any clock reading.
const notBlocked = math.MinInt64

func (s *state) reset() {
	s.head, s.n, s.blocked = 0, 0, notBlocked
}

// ringInitial is the capacity of a ring when its first hit is recorded. It
// grows by doubling up to burst, so keys that send a single request cost
// only a few bytes.
const ringInitial = 2

// allow runs steps 1-5 at time now (ns) with the given parameters.
func (s *state) allow(now int64, burst int, window, penalty int64) (bool, time.Duration) {
	// Step 1.
	if now < s.blocked {
		return false, time.Duration(s.blocked - now)
	}
	// Step 2: forget hits with now − hit >= window.
	s.expire(now, window)
	if int(s.n) > burst {
		s.shrink(burst)
	}
	// Step 3.
	if int(s.n) < burst {
		s.push(now, burst)
		return true, 0
	}
	// Step 4.
	if penalty == 0 {
		retry := s.hits[s.head] + window - now
		if retry <= 0 { // only if the clock went backwards past the hit
			retry = 1
		}
		return false, time.Duration(retry)
	}
	// Step 5.
	s.blocked = satAdd(now, penalty)
	return false, time.Duration(penalty)
}

// expire drops hits that are no longer inside the window at time now.
func (s *state) expire(now, window int64) {
	for s.n > 0 && now-s.hits[s.head] >= window {
		s.head++
		if int(s.head) == len(s.hits) {
			s.head = 0
		}
		s.n--
	}
	if s.n == 0 {
		s.head = 0
	}
}

// push records a hit; the caller guarantees n < burst.
func (s *state) push(t int64, burst int) {
	if int(s.n) == len(s.hits) {
		newCap := min(burst, max(ringInitial, 2*len(s.hits)))
		s.resize(newCap)
	}
	i := int(s.head) + int(s.n)
	if i >= len(s.hits) {
		i -= len(s.hits)
	}
	s.hits[i] = t
	s.n++
}

// shrink keeps only the newest burst hits (after a live burst reduction).
func (s *state) shrink(burst int) {
	drop := int(s.n) - burst
	s.head = int32((int(s.head) + drop) % len(s.hits))
	s.n = int32(burst)
	s.resize(burst)
}

// resize copies the stored hits, oldest first, into a ring of capacity c
// (c >= n).
func (s *state) resize(c int) {
	if c == len(s.hits) {
		return
	}
	nh := make([]int64, c)
	for k := 0; k < int(s.n); k++ {
		nh[k] = s.hits[(int(s.head)+k)%len(s.hits)]
	}
	s.hits = nh
	s.head = 0
}

// idleAt returns the time from which the state is indistinguishable from a
// fresh one: every hit is outside the window and the block has ended. It is
// at most max(window, penalty) after the last access.
func (s *state) idleAt(window int64) int64 {
	t := s.blocked
	if s.n > 0 {
		newest := int(s.head) + int(s.n) - 1
		if newest >= len(s.hits) {
			newest -= len(s.hits)
		}
		t = max(t, satAdd(s.hits[newest], window))
	}
	return t
}

// satAdd returns a+b for b >= 0, saturating at math.MaxInt64.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

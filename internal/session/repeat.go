package session

import (
	"sync"
	"time"
)

// Repeater calls a function periodically on a timer, so that no goroutine
// waits between the calls (memory per idle connection). The session uses
// it for keepalives and presence refresh, the WebSocket transport for its
// Pings.
type Repeater struct {
	mu      sync.Mutex
	stopped bool
	t       *time.Timer
}

// Repeat calls fn every d, the first time after d, until fn returns false
// or Stop is called. Calls never overlap.
func Repeat(d time.Duration, fn func() bool) *Repeater {
	r := &Repeater{}
	r.mu.Lock() // the callback reads r.t
	defer r.mu.Unlock()
	r.t = time.AfterFunc(d, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.stopped || !fn() {
			return
		}
		r.t.Reset(d)
	})
	return r
}

// Stop ends the repetition: when it returns, fn is not running and will
// not run again. A nil Repeater is stopped already.
func (r *Repeater) Stop() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.stopped = true
	r.t.Stop()
	r.mu.Unlock()
}

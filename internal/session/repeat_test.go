package session

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestRepeat: fn runs until it returns false; after Stop it never runs.
func TestRepeat(t *testing.T) {
	var n atomic.Int32
	done := make(chan struct{})
	Repeat(time.Millisecond, func() bool {
		if n.Add(1) == 3 {
			close(done)
			return false
		}
		return true
	})
	<-done
	time.Sleep(20 * time.Millisecond)
	if got := n.Load(); got != 3 {
		t.Fatalf("fn ran %d times, want 3 (it returned false on the third)", got)
	}

	var m atomic.Int32
	r := Repeat(time.Millisecond, func() bool { m.Add(1); return true })
	for m.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	r.Stop()
	after := m.Load()
	time.Sleep(20 * time.Millisecond)
	if got := m.Load(); got != after {
		t.Fatalf("fn ran %d more times after Stop", got-after)
	}
	var nilR *Repeater
	nilR.Stop()
}

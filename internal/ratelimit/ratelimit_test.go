package ratelimit

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is a manually advanced clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// allower is implemented by both limiter kinds, so the algorithm tests run
// against each.
type allower interface {
	allow() (bool, time.Duration)
	setConfig(Config) error
}

type keyed struct {
	l   *Limiter
	key string
}

func (k keyed) allow() (bool, time.Duration) { return k.l.Allow(k.key) }
func (k keyed) setConfig(c Config) error     { return k.l.SetConfig(c) }

type single struct{ s *Single }

func (s single) allow() (bool, time.Duration) { return s.s.Allow() }
func (s single) setConfig(c Config) error     { return s.s.SetConfig(c) }

var kinds = []struct {
	name string
	make func(Config, func() time.Time) allower
}{
	{"Limiter", func(c Config, now func() time.Time) allower { return keyed{New(c, now), "k"} }},
	{"Single", func(c Config, now func() time.Time) allower { return single{NewSingle(c, now)} }},
}

func forEachKind(t *testing.T, f func(t *testing.T, mk func(Config) (allower, *fakeClock))) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			f(t, func(c Config) (allower, *fakeClock) {
				clk := newFakeClock()
				return k.make(c, clk.Now), clk
			})
		})
	}
}

func expect(t *testing.T, a allower, wantOK bool, wantRetry time.Duration, step string) {
	t.Helper()
	ok, retry := a.allow()
	if ok != wantOK || retry != wantRetry {
		t.Fatalf("%s: Allow() = (%v, %v), want (%v, %v)", step, ok, retry, wantOK, wantRetry)
	}
}

func TestBurstThenPenaltyZero(t *testing.T) {
	forEachKind(t, func(t *testing.T, mk func(Config) (allower, *fakeClock)) {
		a, clk := mk(Config{Burst: 3, Window: time.Second})
		// Step 3: hits at 0, 100ms, 300ms accepted.
		expect(t, a, true, 0, "hit 1")
		clk.Advance(100 * time.Millisecond)
		expect(t, a, true, 0, "hit 2")
		clk.Advance(200 * time.Millisecond)
		expect(t, a, true, 0, "hit 3")
		// Step 4 at 400ms: oldest hit (0) + window - now = 600ms.
		clk.Advance(100 * time.Millisecond)
		expect(t, a, false, 600*time.Millisecond, "step 4")
		// Denials are not recorded: still the same retry, shifted.
		clk.Advance(500 * time.Millisecond) // 900ms
		expect(t, a, false, 100*time.Millisecond, "step 4 again")
		// At exactly oldest + window the oldest hit leaves the window.
		clk.Advance(100 * time.Millisecond) // 1000ms
		expect(t, a, true, 0, "slot freed at oldest+window")
		// Window now holds 100ms, 300ms, 1000ms: next slot at 1100ms.
		expect(t, a, false, 100*time.Millisecond, "full again")
		clk.Advance(100 * time.Millisecond) // 1100ms
		expect(t, a, true, 0, "second slot")
	})
}

func TestPenalty(t *testing.T) {
	forEachKind(t, func(t *testing.T, mk func(Config) (allower, *fakeClock)) {
		a, clk := mk(Config{Burst: 2, Window: time.Second, Penalty: 5 * time.Second})
		expect(t, a, true, 0, "hit 1")
		expect(t, a, true, 0, "hit 2")
		clk.Advance(10 * time.Millisecond)
		// Step 5: blocked_until = now + penalty; retry after the penalty.
		expect(t, a, false, 5*time.Second, "step 5")
		// Step 1: inside the block, retry after blocked_until - now.
		clk.Advance(2 * time.Second)
		expect(t, a, false, 3*time.Second, "step 1")
		clk.Advance(3*time.Second - time.Nanosecond)
		expect(t, a, false, time.Nanosecond, "step 1, last ns")
		// The block ends; the old hits have left the window: accept.
		clk.Advance(time.Nanosecond)
		expect(t, a, true, 0, "after the block")
		expect(t, a, true, 0, "after the block 2")
		expect(t, a, false, 5*time.Second, "blocked again")
	})
}

func TestPenaltyShorterThanWindow(t *testing.T) {
	// When the block ends while the hits are still in the window, step 5
	// runs again (the algorithm is applied literally).
	forEachKind(t, func(t *testing.T, mk func(Config) (allower, *fakeClock)) {
		a, clk := mk(Config{Burst: 1, Window: 10 * time.Second, Penalty: time.Second})
		expect(t, a, true, 0, "hit")
		expect(t, a, false, time.Second, "block")
		clk.Advance(time.Second)
		expect(t, a, false, time.Second, "block again")
		clk.Advance(9 * time.Second) // 10s: hit left the window, block over at 2s
		expect(t, a, true, 0, "accepted")
	})
}

func TestDenialsNotRecorded(t *testing.T) {
	forEachKind(t, func(t *testing.T, mk func(Config) (allower, *fakeClock)) {
		a, clk := mk(Config{Burst: 2, Window: time.Second})
		expect(t, a, true, 0, "hit 1")
		expect(t, a, true, 0, "hit 2")
		for i := range 100 {
			if ok, _ := a.allow(); ok {
				t.Fatalf("denial %d accepted", i)
			}
		}
		clk.Advance(time.Second)
		// Both hits left the window; had the denials been recorded, the
		// key would still be over its burst.
		expect(t, a, true, 0, "hit 3")
		expect(t, a, true, 0, "hit 4")
		expect(t, a, false, time.Second, "full")
	})
}

func TestWindowSlides(t *testing.T) {
	forEachKind(t, func(t *testing.T, mk func(Config) (allower, *fakeClock)) {
		a, clk := mk(Config{Burst: 5, Window: time.Second})
		// One hit every 250ms is sustainable forever with burst 5: at most
		// 4 hits lie in any window of 1s.
		for i := range 40 {
			if ok, _ := a.allow(); !ok {
				t.Fatalf("hit %d denied", i)
			}
			clk.Advance(250 * time.Millisecond)
		}
		// Now 10s; the window holds 9.25s, 9.5s, 9.75s.
		expect(t, a, true, 0, "fast 1") // 10.0s
		clk.Advance(100 * time.Millisecond)
		expect(t, a, true, 0, "fast 2") // 10.1s: 5 hits in window
		clk.Advance(100 * time.Millisecond)
		// 10.2s: full; 9.25s leaves the window at 10.25s.
		expect(t, a, false, 50*time.Millisecond, "fast 3 denied")
		clk.Advance(50 * time.Millisecond)
		expect(t, a, true, 0, "slid at 10.25s")
		// 9.5s leaves at 10.5s.
		expect(t, a, false, 250*time.Millisecond, "full again")
	})
}

func TestSetConfig(t *testing.T) {
	forEachKind(t, func(t *testing.T, mk func(Config) (allower, *fakeClock)) {
		a, clk := mk(Config{Burst: 2, Window: time.Second})
		expect(t, a, true, 0, "hit 1")
		expect(t, a, true, 0, "hit 2")
		expect(t, a, false, time.Second, "full")
		// Raising the burst applies to the next call.
		if err := a.setConfig(Config{Burst: 4, Window: time.Second}); err != nil {
			t.Fatal(err)
		}
		expect(t, a, true, 0, "hit 3 after raise")
		expect(t, a, true, 0, "hit 4 after raise")
		expect(t, a, false, time.Second, "full at 4")
		// Lowering the burst and adding a penalty.
		clk.Advance(500 * time.Millisecond)
		if err := a.setConfig(Config{Burst: 1, Window: time.Second, Penalty: 3 * time.Second}); err != nil {
			t.Fatal(err)
		}
		expect(t, a, false, 3*time.Second, "penalty after lower")
		clk.Advance(3 * time.Second)
		expect(t, a, true, 0, "after block")
		// A shorter window applies at once.
		if err := a.setConfig(Config{Burst: 1, Window: 100 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		expect(t, a, false, 100*time.Millisecond, "short window")
		clk.Advance(100 * time.Millisecond)
		expect(t, a, true, 0, "short window slid")
		// An invalid config is rejected and the old one kept.
		if err := a.setConfig(Config{Burst: 0, Window: time.Second}); !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("invalid config: err = %v", err)
		}
		clk.Advance(100 * time.Millisecond)
		expect(t, a, true, 0, "old config kept")
	})
}

func TestBurstShrinkKeepsNewest(t *testing.T) {
	forEachKind(t, func(t *testing.T, mk func(Config) (allower, *fakeClock)) {
		a, clk := mk(Config{Burst: 4, Window: time.Second})
		for range 4 {
			expect(t, a, true, 0, "fill")
			clk.Advance(100 * time.Millisecond)
		}
		// Hits at 0,100,200,300; now 400. Lower burst to 2: the two newest
		// (200, 300) are kept, so the next slot frees at 1200.
		if err := a.setConfig(Config{Burst: 2, Window: time.Second}); err != nil {
			t.Fatal(err)
		}
		expect(t, a, false, 800*time.Millisecond, "after shrink")
		clk.Advance(800 * time.Millisecond)
		expect(t, a, true, 0, "slot at 1200")
	})
}

func TestClockBackwards(t *testing.T) {
	clk := newFakeClock()
	s := NewSingle(Config{Burst: 1, Window: time.Second}, clk.Now)
	clk.Advance(-time.Hour)
	expect(t, single{s}, true, 0, "before base")
	clk.Advance(time.Hour)
	expect(t, single{s}, true, 0, "after base")
	clk.Advance(-2 * time.Second)
	if ok, retry := s.Allow(); ok || retry <= 0 {
		t.Fatalf("clock moved back behind the hit: (%v, %v)", ok, retry)
	}
}

func TestInvalidConfigPanics(t *testing.T) {
	for _, c := range []Config{
		{Burst: 0, Window: time.Second},
		{Burst: 1, Window: 0},
		{Burst: 1, Window: time.Second, Penalty: -1},
		{Burst: 1, Window: time.Second, MaxKeys: -1},
		{Burst: MaxBurst + 1, Window: time.Second},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: Validate accepted", c)
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%+v: New did not panic", c)
				}
			}()
			New(c, time.Now)
		}()
	}
}

func TestKeysIndependent(t *testing.T) {
	clk := newFakeClock()
	l := New(Config{Burst: 1, Window: time.Second, Penalty: time.Minute}, clk.Now)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("a denied")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("a accepted twice")
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("b denied because of a")
	}
}

func TestEvictionIsLossless(t *testing.T) {
	clk := newFakeClock()
	l := New(Config{Burst: 2, Window: time.Second, Penalty: 5 * time.Second}, clk.Now)
	l.Allow("hits")
	l.Allow("blocked")
	l.Allow("blocked")
	l.Allow("blocked") // blocked until 5s
	if n := l.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	if n := l.Sweep(); n != 0 {
		t.Fatalf("Sweep evicted %d active keys", n)
	}
	clk.Advance(time.Second) // "hits" idle (window), "blocked" not (penalty)
	if n := l.Sweep(); n != 1 {
		t.Fatalf("Sweep after window evicted %d, want 1", n)
	}
	if ok, retry := l.Allow("blocked"); ok || retry != 4*time.Second {
		t.Fatalf("blocked key after sweep: (%v, %v), want (false, 4s)", ok, retry)
	}
	clk.Advance(4 * time.Second) // max(window, penalty) after the block
	if n := l.Sweep(); n != 1 {
		t.Fatalf("Sweep after penalty evicted %d, want 1", n)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d after sweeping all", n)
	}
	if ok, _ := l.Allow("blocked"); !ok {
		t.Fatal("evicted key not fresh")
	}
}

func TestLazyEviction(t *testing.T) {
	clk := newFakeClock()
	l := New(Config{Burst: 1, Window: time.Second}, clk.Now)
	// Each new key, one per second: the previous ones are idle and the
	// lazy scan on access keeps the map small without Sweep.
	for i := range 1000 {
		l.Allow(fmt.Sprint("k", i))
		clk.Advance(time.Second)
	}
	// At most the newest key of each shard is left.
	if n := l.Len(); n > len(l.shards) {
		t.Fatalf("Len = %d without Sweep; lazy eviction not working", n)
	}
}

func TestCapFailsClosed(t *testing.T) {
	clk := newFakeClock()
	l := New(Config{Burst: 2, Window: time.Second, Penalty: 10 * time.Second, MaxKeys: 3}, clk.Now)
	for _, k := range []string{"a", "b", "c"} {
		if ok, _ := l.Allow(k); !ok {
			t.Fatalf("%s denied", k)
		}
		clk.Advance(100 * time.Millisecond)
	}
	// Now 300ms; a,b,c active (hits at 0,100,200). A fourth key is refused
	// until the least recently used one ("a") goes idle at 1s.
	ok, retry := l.Allow("d")
	if ok || retry != 700*time.Millisecond {
		t.Fatalf("new key at the cap: (%v, %v), want (false, 700ms)", ok, retry)
	}
	if n := l.Len(); n != 3 {
		t.Fatalf("Len = %d, want 3 (cap)", n)
	}
	// Tracked keys still work (and are still limited).
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("tracked key b denied at the cap")
	}
	if ok, _ := l.Allow("b"); ok {
		t.Fatal("tracked key b over its burst accepted at the cap")
	}
	// b is now blocked for 10s; a is the oldest idle one at 1s.
	clk.Advance(700 * time.Millisecond) // 1s
	if ok, _ := l.Allow("d"); !ok {
		t.Fatal("d denied although a is idle")
	}
	if n := l.Len(); n != 3 {
		t.Fatalf("Len = %d, want 3", n)
	}
	// The blocked key was not evicted to make room.
	if ok, retry := l.Allow("b"); ok || retry <= 0 {
		t.Fatalf("blocked key b lost its block: (%v, %v)", ok, retry)
	}
	// Lowering the cap by SetConfig keeps active keys and refuses new ones.
	if err := l.SetConfig(Config{Burst: 2, Window: time.Second, Penalty: 10 * time.Second, MaxKeys: 1}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := l.Allow("e"); ok {
		t.Fatal("new key accepted above the lowered cap")
	}
}

func TestCapSharded(t *testing.T) {
	clk := newFakeClock()
	const capKeys = numShards * minPerShard
	l := New(Config{Burst: 1, Window: time.Minute, MaxKeys: capKeys}, clk.Now)
	if len(l.shards) != numShards {
		t.Fatalf("shards = %d, want %d", len(l.shards), numShards)
	}
	denied := 0
	for i := range 2 * capKeys {
		if ok, _ := l.Allow(fmt.Sprint(i)); !ok {
			denied++
		}
	}
	if n := l.Len(); n != capKeys {
		t.Fatalf("Len = %d, want exactly the cap %d", n, capKeys)
	}
	if denied != capKeys {
		t.Fatalf("denied %d new keys, want %d", denied, capKeys)
	}
	clk.Advance(time.Minute)
	if n := l.Sweep(); n != capKeys {
		t.Fatalf("Sweep evicted %d, want %d", n, capKeys)
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int64
	}{
		{0, 1},
		{-time.Second, 1},
		{time.Nanosecond, 1},
		{200 * time.Millisecond, 1},
		{time.Second, 1},
		{time.Second + time.Nanosecond, 2},
		{1200 * time.Millisecond, 2},
		{2 * time.Second, 2},
		{10 * time.Second, 10},
		{120 * time.Second, 120},
		{time.Duration(1<<63 - 1), 9223372037},
	} {
		if got := RetryAfterSeconds(c.d); got != c.want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", c.d, got, c.want)
		}
	}
}

func TestConcurrent(t *testing.T) {
	clk := newFakeClock()
	const burst = 50
	l := New(Config{Burst: burst, Window: time.Hour, MaxKeys: 1 << 20}, clk.Now)
	const goroutines, keys, perG = 16, 8, 200
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted = make(map[string]int)
	)
	for g := range goroutines {
		wg.Go(func() {
			local := make(map[string]int)
			for i := range perG {
				k := fmt.Sprint("key", (g+i)%keys)
				if ok, _ := l.Allow(k); ok {
					local[k]++
				}
				if i%50 == 0 {
					clk.Advance(time.Millisecond)
					l.Sweep()
				}
			}
			mu.Lock()
			for k, n := range local {
				accepted[k] += n
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	for k := range keys {
		key := fmt.Sprint("key", k)
		if accepted[key] != burst {
			t.Errorf("%s: %d accepted, want exactly burst %d", key, accepted[key], burst)
		}
	}
}

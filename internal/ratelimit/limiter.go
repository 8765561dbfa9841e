package ratelimit

import (
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Sharding. A Limiter whose cap allows at least minPerShard keys per shard
// uses numShards shards (each with its own mutex, map and LRU list);
// smaller limiters use a single shard so that the cap is exact.
const (
	numShards   = 64
	minPerShard = 1024
)

// capScan is the number of least recently used entries a shard at its cap
// examines for an idle one before refusing a new key.
const capScan = 8

// lazyScan is the number of least recently used entries examined, and
// evicted when idle, on every call to Allow.
const lazyScan = 2

// Limiter is the keyed §8.3 limiter of one zone (http, connect, pairing).
// It is safe for concurrent use.
//
// Memory. A key is idle once every recorded hit is outside the window and
// its block has ended (at most max(window, penalty) after its last request);
// an idle key is in exactly the state of a key never seen, so evicting it
// changes no decision. Idle keys are evicted lazily (each Allow examines the
// least recently used entries of its shard) and by Sweep, which the owner
// should call periodically (e.g. every few seconds). Each tracked key costs
// roughly 150 bytes plus 8 bytes per hit inside the window (at most Burst).
//
// The cap. At most Config.MaxKeys keys are tracked (the cap is split evenly
// across the shards). When a request for a key that is not tracked finds
// its shard full, the least recently used entries of the shard are examined
// and the idle ones are evicted, oldest first. When none of them is idle,
// the request is DENIED (fail closed) with a retry-after lasting until the
// earliest of them becomes idle; keys already tracked are unaffected. The
// cap therefore never lets requests through unchecked and never releases a
// blocked key early: a flood from more than MaxKeys distinct keys costs new
// keys their service until entries go idle, not the limit itself.
type Limiter struct {
	now    func() time.Time
	base   time.Time
	seed   maphash.Seed
	cfg    atomic.Pointer[Config]
	shards []shard
}

type shard struct {
	mu   sync.Mutex
	m    map[string]*entry
	root entry // sentinel of the LRU list: root.next is the most recent
	_    [64]byte
}

type entry struct {
	key        string
	prev, next *entry
	st         state
}

// New returns a Limiter with the given configuration, reading time from
// now. It panics if cfg is invalid (see Config.Validate): configuration is
// validated at start (§10.3), so an invalid value here is a programming
// error.
func New(cfg Config, now func() time.Time) *Limiter {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("ratelimit.New: %v", err))
	}
	if now == nil {
		panic("ratelimit.New: nil clock")
	}
	n := 1
	if maxKeys(cfg) >= numShards*minPerShard {
		n = numShards
	}
	l := &Limiter{
		now:    now,
		base:   now(),
		seed:   maphash.MakeSeed(),
		shards: make([]shard, n),
	}
	for i := range l.shards {
		sh := &l.shards[i]
		sh.m = make(map[string]*entry)
		sh.root.prev, sh.root.next = &sh.root, &sh.root
	}
	c := cfg
	l.cfg.Store(&c)
	return l
}

func maxKeys(cfg Config) int {
	if cfg.MaxKeys == 0 {
		return DefaultMaxKeys
	}
	return cfg.MaxKeys
}

// Config returns the configuration in effect.
func (l *Limiter) Config() Config { return *l.cfg.Load() }

// SetConfig replaces the configuration for subsequent calls (live reload).
// Recorded hits and blocked_until times are kept: a key blocked under the
// old penalty stays blocked until its blocked_until. A lower MaxKeys takes
// effect as keys are added or swept (no key is dropped unless idle); the
// number of shards is fixed at New. An invalid cfg is rejected and the old
// configuration stays in effect.
func (l *Limiter) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	c := cfg
	l.cfg.Store(&c)
	return nil
}

func (l *Limiter) clock() int64 { return int64(l.now().Sub(l.base)) }

func (l *Limiter) shardFor(key string) *shard {
	if len(l.shards) == 1 {
		return &l.shards[0]
	}
	return &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
}

func (l *Limiter) perShardCap(cfg *Config) int {
	return max(1, maxKeys(*cfg)/len(l.shards))
}

// Allow runs the algorithm for key. When it denies, retryAfter is the time
// after which a new attempt can succeed (use RetryAfterSeconds for the
// Retry-After header).
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	cfg := l.cfg.Load()
	window, penalty := int64(cfg.Window), int64(cfg.Penalty)
	t := l.clock()
	sh := l.shardFor(key)

	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	if e != nil {
		sh.moveToFront(e)
	} else {
		if len(sh.m) >= l.perShardCap(cfg) {
			if retry, full := sh.makeRoom(t, window, l.perShardCap(cfg)); full {
				return false, retry
			}
		}
		e = &entry{key: key}
		e.st.reset()
		sh.m[key] = e
		sh.pushFront(e)
	}
	sh.evictIdleTail(t, window, lazyScan, e)
	return e.st.allow(t, cfg.Burst, window, penalty)
}

// Sweep evicts every idle key and returns how many were evicted. The owner
// of the Limiter calls it periodically; it locks one shard at a time.
func (l *Limiter) Sweep() int {
	cfg := l.cfg.Load()
	window := int64(cfg.Window)
	t := l.clock()
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for e := sh.root.prev; e != &sh.root; {
			prev := e.prev
			if e.st.idleAt(window) <= t {
				sh.remove(e)
				n++
			}
			e = prev
		}
		sh.mu.Unlock()
	}
	return n
}

// Len returns the number of tracked keys.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// makeRoom is called when the shard holds at least limit keys and a new key
// arrives. It evicts the idle entries among the capScan least recently used
// ones. If the shard is still full it reports full with the time until the
// earliest examined entry becomes idle.
func (sh *shard) makeRoom(t, window int64, limit int) (retry time.Duration, full bool) {
	earliest := int64(-1)
	e := sh.root.prev
	for i := 0; i < capScan && e != &sh.root; i++ {
		prev := e.prev
		at := e.st.idleAt(window)
		if at <= t {
			sh.remove(e)
		} else if earliest < 0 || at < earliest {
			earliest = at
		}
		e = prev
	}
	if len(sh.m) < limit {
		return 0, false
	}
	if earliest < 0 {
		// Cannot happen: a full shard has at least one entry, and
		// each examined entry is either evicted or sets earliest.
		return time.Second, true
	}
	return time.Duration(earliest - t), true
}

// evictIdleTail evicts idle entries among the n least recently used ones,
// never keep.
func (sh *shard) evictIdleTail(t, window int64, n int, keep *entry) {
	e := sh.root.prev
	for i := 0; i < n && e != &sh.root; i++ {
		prev := e.prev
		if e != keep && e.st.idleAt(window) <= t {
			sh.remove(e)
		}
		e = prev
	}
}

func (sh *shard) pushFront(e *entry) {
	e.prev = &sh.root
	e.next = sh.root.next
	e.next.prev = e
	sh.root.next = e
}

func (sh *shard) unlink(e *entry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
}

func (sh *shard) moveToFront(e *entry) {
	if sh.root.next == e {
		return
	}
	sh.unlink(e)
	sh.pushFront(e)
}

func (sh *shard) remove(e *entry) {
	sh.unlink(e)
	delete(sh.m, e.key)
}

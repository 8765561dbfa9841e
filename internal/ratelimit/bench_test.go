package ratelimit

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "198.51." + strconv.Itoa(i>>8&0xff) + "." + strconv.Itoa(i&0xff) + "/" + strconv.Itoa(i)
	}
	return keys
}

// BenchmarkAllowParallel: many goroutines, 100k keys, real clock.
func BenchmarkAllowParallel(b *testing.B) {
	keys := benchKeys(100_000)
	l := New(Config{Burst: 60, Window: time.Second, Penalty: 10 * time.Second}, time.Now)
	var ctr atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(ctr.Add(1) * 7919)
		for pb.Next() {
			l.Allow(keys[i%len(keys)])
			i++
		}
	})
}

// BenchmarkAllowParallelHotKey: every goroutine hits the same key.
func BenchmarkAllowParallelHotKey(b *testing.B) {
	l := New(Config{Burst: 60, Window: time.Second, Penalty: 10 * time.Second}, time.Now)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Allow("198.51.100.1")
		}
	})
}

// BenchmarkAllowManyKeys: one goroutine, 1M keys (the default cap).
func BenchmarkAllowManyKeys(b *testing.B) {
	keys := benchKeys(1_000_000)
	l := New(Config{Burst: 60, Window: time.Second, Penalty: 10 * time.Second}, time.Now)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Allow(keys[i%len(keys)])
		i++
	}
}

func BenchmarkSingle(b *testing.B) {
	s := NewSingle(Config{Burst: 200, Window: time.Second}, time.Now)
	b.ReportAllocs()
	for b.Loop() {
		s.Allow()
	}
}

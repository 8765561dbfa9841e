package multinode

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	benchOnce    sync.Mutex
	benchCl      *cluster
	benchChannel atomic.Uint32
)

// benchCluster returns a two-node cluster shared by every benchmark of the
// run (started on first use, stopped by TestMain).
func benchCluster(b *testing.B) *cluster {
	b.Helper()
	benchOnce.Lock()
	defer benchOnce.Unlock()
	if benchCl == nil {
		benchCl = newClusterWith(b, clusterOptions{}, func(f func()) {
			fixtureMu.Lock()
			fixtureCleanups = append(fixtureCleanups, f)
			fixtureMu.Unlock()
		})
	}
	return benchCl
}

func nextChannel() uint32 { return 1000 + benchChannel.Add(1) }

// BenchmarkCrossNodeDelivery measures the latency of one MSG from a device
// on node 1 to a device on node 2: from just before the send to its
// arrival at the recipient, one message at a time.
func BenchmarkCrossNodeDelivery(b *testing.B) {
	c := benchCluster(b)
	a, r := newDevice(b, c, "lat-a"), newDevice(b, c, "lat-b")
	r.discard = true
	r.tap = make(chan received, 16)
	sa := a.mustConnect(c.Nodes[0])
	r.mustConnect(c.Nodes[1])
	ch := nextChannel()
	sa.join(b, ch, r.ID)
	ctx := context.Background()
	// Warm up the path.
	for i := 0; i < 5; i++ {
		if err := sa.send(ctx, ch, []byte("warm-up")); err != nil {
			b.Fatal(err)
		}
		<-r.tap
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		errc := make(chan error, 1)
		go func() { errc <- sa.send(ctx, ch, []byte(fmt.Sprintf("lat-%d", i))) }()
		select {
		case m := <-r.tap:
			lat = append(lat, m.At.Sub(start))
		case <-time.After(wait):
			b.Fatalf("message %d not delivered within %v", i, wait)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkOneNodeVsTwoNodes measures MSG throughput (messages per
// second, from the first send to the last arrival) with 4 sender/receiver
// pairs: all on node 1, or senders on node 1 and receivers on node 2.
func BenchmarkOneNodeVsTwoNodes(b *testing.B) {
	for _, mode := range []string{"one-node", "two-nodes"} {
		b.Run(mode, func(b *testing.B) {
			c := benchCluster(b)
			const pairs = 4
			rn := c.Nodes[0]
			if mode == "two-nodes" {
				rn = c.Nodes[1]
			}
			senders := make([]*session, pairs)
			chans := make([]uint32, pairs)
			recv := make([]*device, pairs)
			for i := 0; i < pairs; i++ {
				s, r := newDevice(b, c, "tp-s"), newDevice(b, c, "tp-r")
				r.discard = true
				senders[i] = s.mustConnect(c.Nodes[0])
				r.mustConnect(rn)
				chans[i] = nextChannel()
				senders[i].join(b, chans[i], r.ID)
				recv[i] = r
			}
			ctx := context.Background()
			per := (b.N + pairs - 1) / pairs
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i := 0; i < pairs; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := 0; j < per; j++ {
						if err := senders[i].send(ctx, chans[i], []byte(fmt.Sprintf("tp-%d-%d", i, j))); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			for _, r := range recv {
				r.waitFor(60*time.Second, "all messages", func() bool { return r.nMsg >= per })
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(per*pairs)/el.Seconds(), "msgs/s")
		})
	}
}

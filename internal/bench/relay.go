package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
)

// Relay phases.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// receiver is one receiving connection of the relay scenario.
type receiver struct {
	c   *client.Conn
	a   *acker
	lat []time.Duration // send-to-receive latencies in the measured interval
}

// runRelay measures durable MSG relay: Senders devices, each in its own
// channel with ChannelSize-1 receivers. Each sender keeps up to Window
// MSGs unacknowledged (Window goroutines calling Request); receivers
// acknowledge every delivery (ack mode). Deliveries and their latencies
// are counted while the measured interval lasts, after a warm-up.
func runRelay(ctx context.Context, e *env, res *Result) error {
	p := e.p
	nrecv := p.ChannelSize - 1
	senders := make([]*device, p.Senders)
	var recvDevs []*device
	members := make([][]string, p.Senders)
	for i := range senders {
		d, err := e.newDevice(fmt.Sprintf("s%d", i))
		if err != nil {
			return err
		}
		senders[i] = d
		for j := range nrecv {
			r, err := e.newDevice(fmt.Sprintf("r%d-%d", i, j))
			if err != nil {
				return err
			}
			recvDevs = append(recvDevs, r)
			members[i] = append(members[i], r.id.DeviceID)
		}
	}

	var phase atomic.Int32
	var delivered, sent, received atomic.Int64
	var wg sync.WaitGroup
	receivers := make([]*receiver, len(recvDevs))
	e.note("relay: connecting %d receivers and %d senders", len(recvDevs), len(senders))
	rconns, err := e.dialAll(ctx, recvDevs, 32, func(i int, c *client.Conn) {
		r := &receiver{c: c, a: newAcker(c, &e.errs)}
		receivers[i] = r
		wg.Go(func() {
			defer r.a.close()
			for {
				f, err := c.Recv(context.Background())
				if err != nil {
					return
				}
				if f.Type != ccp.Msg {
					continue
				}
				now := time.Now()
				received.Add(1)
				if phase.Load() == phaseMeasure {
					if st, _, ok := parsePayload(f.Payload); ok {
						r.lat = append(r.lat, now.Sub(st))
					}
					delivered.Add(1)
				}
				r.a.ack(f.Channel, f.Sequence)
			}
		})
	})
	if err != nil {
		return err
	}
	sconns, err := e.dialAll(ctx, senders, 32, func(i int, c *client.Conn) { go drain(c) })
	if err != nil {
		closeAll(rconns)
		wg.Wait()
		return err
	}
	all := append(append([]*client.Conn{}, sconns...), rconns...)
	defer func() {
		closeAll(all)
		wg.Wait()
	}()
	base := randomChannelBase()
	for i, c := range sconns {
		if _, err := c.Join(ctx, base+uint32(i), members[i], ""); err != nil {
			return fmt.Errorf("JOIN: %w", err)
		}
	}

	// Traffic.
	sctx, stopSenders := context.WithCancel(ctx)
	defer stopSenders()
	var swg sync.WaitGroup
	var counter atomic.Uint64
	next := func() (uint64, bool) { return counter.Add(1), phase.Load() != phaseStop }
	onAck := func() {
		if phase.Load() == phaseMeasure {
			sent.Add(1)
		}
	}
	for i, c := range sconns {
		for range p.Window {
			swg.Go(func() { sendLoop(sctx, c, base+uint32(i), p.Size, next, onAck, &e.errs) })
		}
	}
	rc := newRate(0)
	cpu0, _ := e.serverCPUNow()
	cpuRate := newRate(cpu0.Microseconds())
	pr := e.startProgress(func() string {
		n := delivered.Load()
		nerr, _ := e.errs.get()
		label := "measuring"
		if phase.Load() == phaseWarmup {
			label = "warm-up"
		}
		s := fmt.Sprintf("relay %dx%d %dB  %s  delivered %d  %.0f msg/s  errors %d", p.Senders, p.ChannelSize, p.Size, label, n, rc.rate(n), nerr)
		if c, ok := e.serverCPUNow(); ok {
			s += fmt.Sprintf("  server CPU %.0f%%", 100*cpuRate.rate(c.Microseconds())/1e6)
		}
		return s
	})
	pause(ctx, p.Warmup)
	m := startMeter(e.srv.PID)
	phase.Store(phaseMeasure)
	pause(ctx, p.Duration)
	phase.Store(phaseStop)
	m.stop()
	pr.end()

	// Let the MSGs in flight arrive (so that closing does not cut them
	// off), then stop.
	stopSenders()
	swg.Wait()
	settle(ctx, received.Load, 3*time.Second)

	closeAll(all)
	wg.Wait()
	all = nil
	var lat []time.Duration
	for _, r := range receivers {
		lat = append(lat, r.lat...)
	}
	sortDurations(lat)
	n := delivered.Load()
	m.fill(res)
	res.RelayResult = &RelayResult{
		Sent:              sent.Load(),
		Delivered:         n,
		MsgsPerS:          float64(n) / m.elapsed.Seconds(),
		P50MS:             percentileMS(lat, 0.50),
		P95MS:             percentileMS(lat, 0.95),
		P99MS:             percentileMS(lat, 0.99),
		MaxMS:             percentileMS(lat, 1),
		ServerCPUUSPerMsg: m.perUnitUS(n),
	}
	if n == 0 {
		_, first := e.errs.get()
		return fmt.Errorf("no message delivered (first error: %s)", first)
	}
	return ctx.Err()
}

// settle waits until count stops changing for 300 ms, at most max.
func settle(ctx context.Context, count func() int64, max time.Duration) {
	deadline := time.Now().Add(max)
	last := count()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		pause(ctx, 300*time.Millisecond)
		n := count()
		if n == last {
			return
		}
		last = n
	}
}

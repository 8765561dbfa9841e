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
//
// Without Rate the senders run closed loop: each of the Window goroutines
// sends its next MSG as soon as the previous one is acknowledged, and the
// latency counts from the actual send. With Rate the senders run open
// loop: each sends Rate/Senders MSGs per second on a fixed schedule (see
// pacer), still at most Window unacknowledged, and the latency counts
// from each MSG's intended send time, so that waiting for a full window
// or a stalled server shows up as latency rather than as a lower rate.
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
	onAck := func() {
		if phase.Load() == phaseMeasure {
			sent.Add(1)
		}
	}
	var pacers []*pacer
	if p.Rate > 0 {
		pacers = startPacers(sctx, e, sconns, base, &swg, &counter, &phase, onAck)
	} else {
		next := func() (uint64, bool) { return counter.Add(1), phase.Load() != phaseStop }
		for i, c := range sconns {
			for range p.Window {
				swg.Go(func() { sendLoop(sctx, c, base+uint32(i), p.Size, next, onAck, &e.errs) })
			}
		}
	}
	backlog := func(now time.Time) int64 {
		var n int64
		for _, pc := range pacers {
			n += pc.backlog(now)
		}
		return n
	}
	offered := p.Rate * float64(nrecv) // deliveries per second offered
	rc := newRate(0)
	sentRate := newRate(0)
	cpu0, _ := e.serverCPUNow()
	cpuRate := newRate(cpu0.Microseconds())
	pr := e.startProgress(func() string {
		n := delivered.Load()
		nerr, _ := e.errs.get()
		label := "measuring"
		if phase.Load() == phaseWarmup {
			label = "warm-up"
		}
		// The rate counts every delivery, warm-up included.
		s := fmt.Sprintf("relay %dx%d %dB  %s  delivered %d  %.0f msg/s", p.Senders, p.ChannelSize, p.Size, label, n, rc.rate(received.Load()))
		if p.Rate > 0 {
			// Achieved against offered deliveries per second, the
			// MSGs handed to Request per second against --rate, and
			// the MSGs due but waiting for a free window slot.
			s += fmt.Sprintf(" of %.0f offered  sending %.0f of %g MSG/s", offered, sentRate.rate(int64(counter.Load())), p.Rate)
			if b := backlog(time.Now()); b > 0 {
				s += fmt.Sprintf("  backlog %d", b)
			}
		}
		s += fmt.Sprintf("  errors %d", nerr)
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
	behind := backlog(time.Now())
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
	if p.Rate > 0 {
		r := res.RelayResult
		rate, notSustained := p.Rate, rateNotSustained(n, m.elapsed, offered, len(receivers))
		r.OfferedRate, r.RateNotSustained, r.BacklogAtEnd = &rate, &notSustained, &behind
		if notSustained {
			// Not a progress note: shown with --quiet too.
			fmt.Fprintf(e.stderr, "commucat-bench: warning: offered rate not sustained: %.0f deliveries/s achieved, %.0f offered (--rate %g × %d recipients per MSG), %d MSGs due but unsent at the end; the latencies describe an overloaded server (or client)\n",
				r.MsgsPerS, offered, p.Rate, nrecv, behind)
		}
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

// startPacers starts the open-loop senders: for each sender connection a
// pacer goroutine on the sender's share of e.p.Rate, handing MSGs with
// their intended send time to e.p.Window goroutines that send them with
// Request. The hand-off is unbuffered, so at most Window MSGs per sender
// are unacknowledged; while the window is full the pacer waits and the
// MSGs falling due meanwhile go out in a burst when a slot frees, with
// their original intended times. The senders' schedules are staggered by
// 1/Rate, so that together they offer evenly spaced MSGs.
func startPacers(ctx context.Context, e *env, sconns []*client.Conn, base uint32, wg *sync.WaitGroup, counter *atomic.Uint64, phase *atomic.Int32, onAck func()) []*pacer {
	p := e.p
	type job struct {
		n  uint64
		at time.Time
	}
	perSender := p.Rate / float64(len(sconns))
	e.note("relay: open loop, %g MSGs/s offered (%g per sender), at most %d unacknowledged per sender; latency from the intended send time", p.Rate, perSender, p.Window)
	t0 := time.Now()
	pacers := make([]*pacer, len(sconns))
	for i, c := range sconns {
		ch := base + uint32(i)
		jobs := make(chan job)
		for range p.Window {
			wg.Go(func() {
				for j := range jobs {
					if !sendMsg(ctx, c, ch, func() []byte { return makePayloadAt(p.Size, j.n, j.at) }, onAck, &e.errs) {
						return
					}
				}
			})
		}
		wait, stopTimer := timerWait(ctx)
		pc := &pacer{
			s:    schedule{start: t0.Add(time.Duration(float64(i) * float64(time.Second) / p.Rate)), rate: perSender},
			now:  time.Now,
			wait: wait,
			send: func(_ int64, at time.Time) bool {
				if phase.Load() == phaseStop {
					return false
				}
				select {
				case jobs <- job{n: counter.Add(1), at: at}:
					return true
				case <-ctx.Done():
					return false
				}
			},
		}
		pacers[i] = pc
		wg.Go(func() {
			defer close(jobs)
			defer stopTimer()
			pc.run()
		})
	}
	return pacers
}

// rateNotSustained reports whether delivered, over elapsed, falls more
// than 5 % short of the offered deliveries per second. Each of the streams
// receiving connections may count about one message fewer at the ends of
// the interval; that much is allowed for (it matters only for tiny runs).
func rateNotSustained(delivered int64, elapsed time.Duration, offered float64, streams int) bool {
	expected := offered * elapsed.Seconds()
	return float64(delivered) < 0.95*expected-float64(streams)
}

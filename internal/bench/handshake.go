package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runHandshake measures complete sessions per second: each of
// Concurrency workers owns one device (registered before the measurement)
// and repeatedly dials (a new TLS connection, the Noise handshake, the
// handshake ACK) and closes (the server ends the stream). The rate counts
// completed dial+close cycles. With Resume each device keeps a TLS
// session cache, so after its first session every TLS handshake resumes.
func runHandshake(ctx context.Context, e *env, res *Result) error {
	p := e.p
	devs := make([]*device, p.Concurrency)
	for i := range devs {
		d, err := e.newDevice(fmt.Sprintf("h%d", i))
		if err != nil {
			return err
		}
		if p.Resume {
			d.tls = e.tls.Clone()
			d.tls.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		}
		devs[i] = d
	}
	// Register the devices (first handshake: user and device creation,
	// certificate issue), outside the measurement.
	e.note("handshake: registering %d devices", len(devs))
	conns, err := e.dialAll(ctx, devs, min(p.Concurrency, 32), nil)
	if err != nil {
		return err
	}
	closeAll(conns)

	var done atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	rc := newRate(0)
	pr := e.startProgress(func() string {
		n := done.Load()
		nerr, _ := e.errs.get()
		return fmt.Sprintf("handshake v%d pq=%v  sessions %d  %.0f/s  errors %d", p.Version, p.PQ, n, rc.rate(n), nerr)
	})
	m := startMeter(e.srv.PID)
	deadline := m.start.Add(p.Duration)
	rctx, cancel := context.WithDeadline(ctx, deadline.Add(time.Minute))
	defer cancel()
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Go(func() {
			var local []time.Duration
			for time.Now().Before(deadline) && rctx.Err() == nil {
				t0 := time.Now()
				c, err := e.dial(rctx, d)
				if err != nil {
					e.errs.add(err)
					pause(rctx, 10*time.Millisecond)
					continue
				}
				if err := c.Close(); err != nil {
					e.errs.add(err)
					continue
				}
				local = append(local, time.Since(t0))
				done.Add(1)
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	m.stop()
	pr.end()

	n := done.Load()
	sortDurations(lat)
	m.fill(res)
	res.HandshakeResult = &HandshakeResult{
		Sessions:              n,
		SessionsPerS:          float64(n) / m.elapsed.Seconds(),
		HandshakeP50MS:        percentileMS(lat, 0.50),
		HandshakeP99MS:        percentileMS(lat, 0.99),
		ServerCPUUSPerSession: m.perUnitUS(n),
	}
	if n == 0 {
		_, first := e.errs.get()
		return fmt.Errorf("no handshake completed (first error: %s)", first)
	}
	return ctx.Err()
}

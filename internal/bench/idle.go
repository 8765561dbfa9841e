package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/client"
)

// runIdle opens Connections idle connections (new devices, one TLS
// connection each: the SDK makes one HTTP client per Dial) and reports
// the growth of the server's VmRSS divided by the number of connections,
// read Settle after the last connection was established.
func runIdle(ctx context.Context, e *env, res *Result) error {
	p := e.p
	devs := make([]*device, p.Connections)
	for i := range devs {
		d, err := e.newDevice(fmt.Sprintf("i%d", i))
		if err != nil {
			return err
		}
		devs[i] = d
	}
	pid := e.srv.PID
	var before, after *int64
	if pid > 0 {
		pause(ctx, 500*time.Millisecond) // let the start-up garbage be collected
		if v, err := readProcRSS(pid); err == nil {
			before = &v
		}
	}
	clientBefore := selfRSS()

	var connected atomic.Int64
	rc := newRate(0)
	pr := e.startProgress(func() string {
		n := connected.Load()
		s := fmt.Sprintf("idle  connected %d/%d  %.0f/s", n, p.Connections, rc.rate(n))
		if pid > 0 {
			if v, err := readProcRSS(pid); err == nil {
				s += fmt.Sprintf("  server RSS %.1f MiB", float64(v)/(1<<20))
			}
		}
		return s
	})
	m := startMeter(pid)
	conns, err := e.dialAll(ctx, devs, 32, func(int, *client.Conn) { connected.Add(1) })
	connectS := time.Since(m.start).Seconds()
	if err != nil {
		pr.end()
		return err
	}
	defer closeAll(conns)
	pause(ctx, p.Settle)
	m.stop()
	if pid > 0 {
		if v, err := readProcRSS(pid); err == nil {
			after = &v
		}
	}
	clientAfter := selfRSS()
	pr.end()
	// Every connection must still be alive.
	alive := int64(0)
	for _, c := range conns {
		select {
		case <-c.Done():
			e.errs.add(fmt.Errorf("connection ended while idle: %v", c.Err()))
		default:
			alive++
		}
	}

	m.fill(res)
	ir := &IdleResult{
		Connections:           alive,
		ConnectS:              connectS,
		ServerRSSBefore:       before,
		ServerRSSAfter:        after,
		ClientRSSBytesPerConn: float64(clientAfter-clientBefore) / float64(p.Connections),
	}
	if before != nil && after != nil {
		v := float64(*after-*before) / float64(p.Connections)
		ir.ServerRSSBytesPerConn = &v
	}
	res.IdleResult = ir
	return ctx.Err()
}

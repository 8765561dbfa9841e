package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/ccp"
)

// runInbox fills the inbox of an offline device with Messages MSGs (one
// sender, Window in flight), then connects that device and measures the
// time from the start of its dial until every message has been received
// (each one acknowledged as it arrives, ack mode).
func runInbox(ctx context.Context, e *env, res *Result) error {
	p := e.p
	sd, err := e.newDevice("inbox-s")
	if err != nil {
		return err
	}
	rd, err := e.newDevice("inbox-r")
	if err != nil {
		return err
	}
	// Register the receiver, then take it offline.
	rc0, err := e.dial(ctx, rd)
	if err != nil {
		return fmt.Errorf("connecting the receiver: %w", err)
	}
	sc, err := e.dial(ctx, sd)
	if err != nil {
		rc0.Close()
		return fmt.Errorf("connecting the sender: %w", err)
	}
	defer sc.Close()
	go drain(sc)
	ch := randomChannelBase()
	if _, err := sc.Join(ctx, ch, []string{rd.id.DeviceID}, ""); err != nil {
		rc0.Close()
		return fmt.Errorf("JOIN: %w", err)
	}
	if err := rc0.Close(); err != nil {
		return fmt.Errorf("closing the receiver: %w", err)
	}

	// Fill.
	var counter, acked atomic.Int64
	total := int64(p.Messages)
	rate := newRate(0)
	pr := e.startProgress(func() string {
		n := acked.Load()
		return fmt.Sprintf("inbox  filling %d/%d  %.0f msg/s", n, total, rate.rate(n))
	})
	fillStart := time.Now()
	next := func() (uint64, bool) {
		n := counter.Add(1)
		return uint64(n), n <= total
	}
	var wg sync.WaitGroup
	for range p.Window {
		wg.Go(func() { sendLoop(ctx, sc, ch, p.Size, next, func() { acked.Add(1) }, &e.errs) })
	}
	wg.Wait()
	fill := time.Since(fillStart)
	pr.end()
	if err := ctx.Err(); err != nil {
		return err
	}
	if acked.Load() < total {
		_, first := e.errs.get()
		return fmt.Errorf("only %d of %d messages were stored (first error: %s)", acked.Load(), total, first)
	}

	// Drain: connect and receive.
	seen := make([]bool, total+1)
	var got, dups atomic.Int64
	rate = newRate(0)
	pr = e.startProgress(func() string {
		n := got.Load()
		return fmt.Sprintf("inbox  received %d/%d  %.0f msg/s", n, total, rate.rate(n))
	})
	timeout := 60*time.Second + time.Duration(total)*time.Millisecond
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m := startMeter(e.srv.PID)
	rc, err := e.dial(dctx, rd)
	if err != nil {
		pr.end()
		return fmt.Errorf("reconnecting the receiver: %w", err)
	}
	a := newAcker(rc, &e.errs)
	for got.Load() < total {
		f, err := rc.Recv(dctx)
		if err != nil {
			e.errs.add(fmt.Errorf("receiving the inbox: %w", err))
			break
		}
		if f.Type != ccp.Msg {
			continue
		}
		a.ack(f.Channel, f.Sequence)
		_, n, ok := parsePayload(f.Payload)
		if !ok || n < 1 || int64(n) > total {
			e.errs.add(fmt.Errorf("unexpected MSG payload (%d bytes)", len(f.Payload)))
			continue
		}
		if seen[n] {
			dups.Add(1)
			continue
		}
		seen[n] = true
		got.Add(1)
	}
	m.stop()
	pr.end()
	rc.Close()
	a.close()

	n := got.Load()
	m.fill(res)
	res.InboxResult = &InboxResult{
		Messages:               total,
		Received:               n,
		Duplicates:             dups.Load(),
		FillS:                  fill.Seconds(),
		FillMsgsPerS:           float64(total) / fill.Seconds(),
		InboxMsgsPerS:          float64(n) / m.elapsed.Seconds(),
		ServerCPUUSPerInboxMsg: m.perUnitUS(n),
	}
	if n < total {
		_, first := e.errs.get()
		return fmt.Errorf("received %d of %d queued messages (first error: %s)", n, total, first)
	}
	return nil
}

package session

import (
	"context"
	"strconv"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/store"
)

// maxFramesPerWrite bounds the frames coalesced into one write.
const maxFramesPerWrite = 256

// The sender runs only while there is something to write: an idle
// connection has no sender goroutine (memory per idle connection, issue 7).
// kickSender starts one when frames are queued (outbound.signal), a timer
// fires (keepalive, presence refresh) or the connection closes; it drains
// the queues with sendRound and exits when they are empty. At most one runs
// at a time (sendMu), so it is still the only writer after the handshake,
// and c.seq and the frameWriter belong to whichever run is active.

// kickSender makes sure a sender runs after this call (once the sender is
// enabled: before the handshake ACK is written nothing else may be).
func (c *conn) kickSender() {
	c.sendMu.Lock()
	if c.sendDead || !c.sendReady {
		c.sendMu.Unlock()
		return
	}
	if c.sendRunning {
		c.sendAgain = true
		c.sendMu.Unlock()
		return
	}
	c.sendRunning = true
	c.sendMu.Unlock()
	go c.senderRun()
}

// enableSender allows senders from now on and starts the first one (the
// inbox catch-up, §6.7, and whatever was queued meanwhile).
func (c *conn) enableSender() {
	c.sendMu.Lock()
	c.sendReady = true
	c.sendMu.Unlock()
	c.kickSender()
}

// senderRun is one sender goroutine: it drains the queues, and exits when
// they are empty and no kick came meanwhile. The run that sees the
// connection closed (or a write fail) ends the sender for good and closes
// senderDone.
func (c *conn) senderRun() {
	for {
		c.sendMu.Lock()
		c.sendAgain = false
		c.sendMu.Unlock()
		if !c.sendRound() {
			c.sendMu.Lock()
			c.sendDead, c.sendRunning = true, false
			c.sendMu.Unlock()
			c.stopTimers()
			close(c.senderDone)
			return
		}
		c.sendMu.Lock()
		if c.sendAgain {
			c.sendMu.Unlock()
			continue
		}
		// Do not keep the write buffers of a burst while idle (under
		// sendMu: the next sender may start as soon as it is released).
		c.fw.release()
		c.sendRunning = false
		c.sendMu.Unlock()
		return
	}
}

// sendRound writes what is queued until nothing is; false when the
// connection is closed (everything written) or a write failed.
func (c *conn) sendRound() bool {
	w := &c.fw
	w.c = c
	for {
		b, needRead, last := c.out.takeRound(c.ackMode)
		if !b.empty() {
			if !w.write(b) {
				return false
			}
		}
		if needRead {
			c.readInbox(last)
			continue
		}
		if !b.empty() {
			continue
		}
		if c.out.inboxDrained() {
			continue // live frames held back during redelivery may now go
		}
		return !c.out.isClosed()
	}
}

// startTimers arms the keepalive (§3.6: v2 peers get
// {"keepalive":<unix time>} on channel 0 every K) and the presence refresh,
// and watches the transport's liveness signal; stopTimers ends them.
func (c *conn) startTimers() {
	m := c.m
	if c.version == noiseconn.Version2 && m.cfg.Keepalive > 0 {
		c.keepalive = Repeat(m.cfg.Keepalive, func() bool {
			p := strconv.AppendInt([]byte(`{"keepalive":`), m.d.Now().Unix(), 10)
			c.out.pushUrgent(outFrame{t: ccp.Ack, ch: 0, payload: append(p, '}')})
			return true
		})
	}
	refreshEvery := m.cfg.PresenceTTL / 2
	if refreshEvery <= 0 {
		refreshEvery = 30 * time.Second
	}
	c.refresh = Repeat(refreshEvery, func() bool {
		c.refreshPresence()
		return true
	})
	if live := c.meta.Liveness; live != nil {
		// WebSocket only: its ping loop reports a peer that stopped
		// answering.
		live.OnLost(func() {
			c.sendMu.Lock()
			ended := c.sendDead
			c.sendMu.Unlock()
			if !ended {
				c.kickWith(ccp.TitleKeepaliveTimeout, "no pong or message within 3x the keepalive interval", EndKeepalive)
			}
		})
	}
}

// stopTimers stops the timers; when it returns, no timer callback runs or
// will run (a presence refresh can no longer race with the cleanup).
func (c *conn) stopTimers() {
	c.keepalive.Stop()
	c.refresh.Stop()
}

// readInbox reads the next page of the device's inbox after last (catch-up
// and redelivery, §6.7).
func (c *conn) readInbox(last int64) {
	m := c.m
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	entries, err := m.d.Store.ListInbox(ctx, c.device.ID, last, m.d.Now(), inboxPage)
	cancel()
	if err != nil {
		if c.ctx.Err() != nil {
			return
		}
		c.log.Warn("reading the inbox", "err", err)
		select {
		case <-time.After(time.Second):
		case <-c.ctx.Done():
		}
		c.out.requestCatchup()
		return
	}
	c.out.readDone(entries, len(entries) == inboxPage)
}

// frameWriter encodes a batch, assigns server sequences and writes it.
// Its buffers live while the sender runs (release drops them).
type frameWriter struct {
	c      *conn
	buf    []byte
	sealed []byte
	chunks [][]byte
	starts []int // frame boundaries in buf (message-oriented v1)
}

// release drops the buffers (the sender goes idle).
func (w *frameWriter) release() {
	w.buf, w.sealed, w.chunks, w.starts = nil, nil, nil, nil
}

// write writes one batch; false when the connection must end.
func (w *frameWriter) write(b batch) bool {
	c := w.c
	m := c.m
	now := m.d.Now()
	w.buf, w.starts = w.buf[:0], w.starts[:0]
	closeAfter := false
	var reason EndReason
	type delivered struct {
		seq uint32
		ref inflightRef
	}
	var inboxSeqs []delivered
	var latencies []time.Duration
	exhausted := false
	add := func(t ccp.FrameType, ch uint32, payload []byte) (uint32, bool) {
		if exhausted {
			return 0, false
		}
		if c.seq >= ccp.MaxSequence-1 {
			// §6.2: the last value carries Internal Error and the stream ends.
			c.seq = ccp.MaxSequence
			p := ccp.NewProblem(ccp.TitleInternalError, "sequence space exhausted")
			w.starts = append(w.starts, len(w.buf))
			w.buf, _ = ccp.AppendFrame(w.buf, ccp.Frame{Type: ccp.Error, Sequence: c.seq, Payload: p.JSON()})
			exhausted, closeAfter, reason = true, true, EndInternal
			return 0, false
		}
		c.seq++
		start := len(w.buf)
		var err error
		w.buf, err = ccp.AppendFrame(w.buf, ccp.Frame{Type: t, Channel: ch, Sequence: c.seq, Payload: payload})
		if err != nil {
			c.log.Error("encoding an outbound frame", "type", t, "err", err)
			w.buf = w.buf[:start]
			c.seq--
			return 0, false
		}
		w.starts = append(w.starts, start)
		return c.seq, true
	}
	for _, f := range b.control {
		add(f.t, f.ch, f.payload)
		if f.closeAfter {
			closeAfter, reason = true, f.reason
			break
		}
	}
	if !closeAfter {
		for _, f := range b.live {
			if _, ok := add(f.t, f.ch, f.payload); ok && !f.accepted.IsZero() {
				latencies = append(latencies, now.Sub(f.accepted))
			}
		}
		for _, e := range b.inbox {
			if !now.Before(e.ExpiresAt) {
				continue // §6.7: an expired entry is never delivered
			}
			if seq, ok := add(ccp.FrameType(e.FrameType), e.Channel, e.Payload); ok {
				inboxSeqs = append(inboxSeqs, delivered{seq, inflightRef{qid: e.QueueID, early: e.early, env: e.EnvelopeID}})
				latencies = append(latencies, now.Sub(e.CreatedAt))
			}
		}
	}
	// Record in-flight deliveries before the bytes leave, so that a fast
	// client ACK always finds its entry.
	if c.ackMode && len(inboxSeqs) > 0 {
		c.out.mu.Lock()
		for _, d := range inboxSeqs {
			c.out.inflight[d.seq] = d.ref
		}
		c.out.mu.Unlock()
	}
	err := w.flush()
	for _, f := range b.control {
		if f.slot {
			<-c.out.slots
		}
	}
	if err != nil {
		c.setEnd(EndTransport)
		c.t.Abort(EndTransport)
		c.out.close()
		return false
	}
	m.d.Metrics.FramesEgress.Add(float64(len(w.starts)))
	for _, l := range latencies {
		m.d.Metrics.DeliveryLatency.Observe(l.Seconds())
	}
	if !c.ackMode && len(inboxSeqs) > 0 {
		// §6.7 non-ack mode: an entry is deleted once written.
		ids := make([]int64, len(inboxSeqs))
		for i, d := range inboxSeqs {
			ids[i] = d.ref.qid
		}
		m.d.Writer.Delete(c.device.ID, ids)
	}
	if closeAfter {
		c.setEnd(reason)
		c.out.close()
		c.t.Finish(c.endReason(reason))
		return false
	}
	return true
}

// flush seals (v2) and writes the encoded frames.
func (w *frameWriter) flush() error {
	c := w.c
	if len(w.buf) == 0 {
		return nil
	}
	w.chunks = w.chunks[:0]
	msg := c.t.MessageOriented()
	if c.sealer == nil {
		if !msg {
			return c.t.WriteChunks(append(w.chunks, w.buf))
		}
		for i, s := range w.starts {
			end := len(w.buf)
			if i+1 < len(w.starts) {
				end = w.starts[i+1]
			}
			w.chunks = append(w.chunks, w.buf[s:end])
		}
		return c.t.WriteChunks(w.chunks)
	}
	// v2: records; over WebSocket each record is one message.
	w.sealed = w.sealed[:0]
	per := noiseconn.MaxRecordData
	if c.m.cfg.Padding == noiseconn.PaddingBuckets {
		per = noiseconn.MaxBucketData
	}
	data := w.buf
	var bounds []int
	for len(data) > 0 {
		n := min(len(data), per)
		var err error
		w.sealed, err = c.sealer.AppendRecords(w.sealed, data[:n])
		if err != nil {
			return err
		}
		bounds = append(bounds, len(w.sealed))
		data = data[n:]
	}
	if !msg {
		return c.t.WriteChunks(append(w.chunks, w.sealed))
	}
	prev := 0
	for _, b := range bounds {
		w.chunks = append(w.chunks, w.sealed[prev:b])
		prev = b
	}
	return c.t.WriteChunks(w.chunks)
}

// takeRound wraps outbound.take and also returns the inbox cursor for a
// catch-up read.
func (o *outbound) takeRound(ackMode bool) (batch, bool, int64) {
	b, needRead := o.take(ackMode, maxFramesPerWrite)
	if !needRead {
		return b, false, 0
	}
	return b, true, o.beginRead()
}

func (o *outbound) isClosed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closed && len(o.control) == 0
}

var _ = store.InboxEntry{}

package session

import (
	"errors"
	"io"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/ratelimit"
)

// protoErr is a frame-handling problem answered with an ERROR (§6.4).
type protoErr struct {
	title  string
	detail string
	retry  time.Duration // Too Many Requests
}

func perr(title, detail string) *protoErr { return &protoErr{title: title, detail: detail} }

var errInternal = perr(ccp.TitleInternalError, "storage failure")

// readLoop handles the client's frames in order until the stream ends.
func (c *conn) readLoop(rd *ccp.Reader) EndReason {
	m := c.m
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			var fe *ccp.FrameError
			if c.idle != nil && c.idle.expired.Load() {
				c.sendProblem(0, ccp.NewProblem(ccp.TitleKeepaliveTimeout, "no data within 3x the keepalive interval"), true, EndKeepalive)
				return EndKeepalive
			}
			switch {
			case errors.As(err, &fe) && !fe.Fatal:
				c.skipped++
				c.sendDecodeError(fe, false)
				if c.skipped > maxSkipped {
					c.sendProblem(0, ccp.NewProblem(ccp.TitleMalformedFrame, "too many malformed frames"), true, EndDecode)
					return EndDecode
				}
				continue
			case errors.As(err, &fe):
				c.sendDecodeError(fe, true)
				return EndDecode
			case errors.Is(err, noiseconn.ErrRecord):
				// §5.6: stop reading at once, no ERROR.
				c.log.Info("record error", "err", err)
				return c.endReason(EndDecode)
			case err == io.EOF:
				return c.endReason(EndNormal)
			}
			return c.endReason(EndTransport)
		}
		received := m.d.Now()
		c.lastActive.Store(received.UnixMicro())
		m.d.Metrics.FramesIngress.Inc()
		c.handleFrame(f, received)
		if c.ctx.Err() != nil {
			return c.endReason(EndNormal)
		}
	}
}

// sendDecodeError answers a frame skipped by §2.6 (§13a.1).
func (c *conn) sendDecodeError(fe *ccp.FrameError, fatal bool) {
	reason := EndReason(0)
	if fatal {
		reason = EndDecode
	}
	c.sendProblem(fe.ReplyChannel(), fe.Problem(), fatal, reason)
}

// sendProblem queues an ERROR frame.
func (c *conn) sendProblem(ch uint32, p ccp.Problem, closeAfter bool, reason EndReason) {
	f := outFrame{t: ccp.Error, ch: ch, payload: p.JSON(), closeAfter: closeAfter, reason: reason}
	if closeAfter {
		c.setEnd(reason)
		c.out.pushUrgent(f)
		return
	}
	c.out.pushControl(c.ctx, f)
}

// reply queues the answer to frame f.
func (c *conn) replyError(f ccp.Frame, e *protoErr) {
	p := ccp.NewProblem(e.title, e.detail)
	p.SetFrameType(f.Type)
	p.SetSequence(f.Sequence)
	if e.retry > 0 {
		p.SetRetryAfter(ratelimitSeconds(e.retry))
	}
	c.sendProblem(f.Channel, p, false, 0)
}

// handleFrame applies §6.12, §6.2 and the per-type rules to one frame.
func (c *conn) handleFrame(f ccp.Frame, received time.Time) {
	m := c.m
	defer func() {
		m.d.Metrics.FrameHandlingDuration.WithLabelValues(frameLabel(f.Type)).Observe(m.d.Now().Sub(received).Seconds())
	}()
	exempt := f.Type == ccp.Ack || f.Type == ccp.Error
	media := f.Type == ccp.VoiceFrame || f.Type == ccp.VideoFrame
	if !exempt && !media {
		if ok, retry := c.limiter.Allow(); !ok {
			m.d.Metrics.RateLimitFrames.Inc()
			c.replyError(f, &protoErr{title: ccp.TitleTooManyRequests, detail: "frame rate limit exceeded", retry: retry})
			return
		}
	}
	c.applyMediaRollbacks()
	var st *chanState
	if !exempt {
		st = c.chans[f.Channel]
		if st != nil {
			if f.Sequence == st.last {
				if st.reply != nil {
					c.out.pushControl(c.ctx, c.ackFrame(f, st.reply, st.commit))
				}
				return
			}
			if f.Sequence < st.last {
				c.replyError(f, perr(ccp.TitleSequenceViolation, "sequence below the last accepted one"))
				return
			}
		}
	}
	c.pendingCommit = nil
	ack, e := c.dispatch(f, received)
	cm := c.pendingCommit
	c.pendingCommit = nil
	if e != nil {
		if media && !c.mediaErrorAllowed(received) {
			return
		}
		c.replyError(f, e)
		return
	}
	if !exempt {
		c.accept(f, ack, cm)
	}
	if ack != nil {
		c.out.pushControl(c.ctx, c.ackFrame(f, ack, cm))
	}
}

// accept advances L for the frame's channel (§6.2).
func (c *conn) accept(f ccp.Frame, reply []byte, cm *commit) {
	c.chanClock++
	st := c.chans[f.Channel]
	if st == nil {
		if len(c.chans) >= maxTrackedChannels {
			var oldest uint32
			var oldestUse uint64 = ^uint64(0)
			for ch, s := range c.chans {
				if s.used < oldestUse {
					oldest, oldestUse = ch, s.used
				}
			}
			delete(c.chans, oldest)
		}
		st = &chanState{}
		c.chans[f.Channel] = st
	}
	st.last, st.reply, st.commit, st.used = f.Sequence, reply, cm, c.chanClock
}

// ackFrame is the ACK reply to f; with a commit, the sender holds it (and
// every reply after it) until the commit is done, and sends ERROR
// Internal Error instead when the commit failed.
func (c *conn) ackFrame(f ccp.Frame, ack []byte, cm *commit) outFrame {
	o := outFrame{t: ccp.Ack, ch: f.Channel, payload: ack}
	if cm != nil {
		p := ccp.NewProblem(errInternal.title, errInternal.detail)
		p.SetFrameType(f.Type)
		p.SetSequence(f.Sequence)
		o.commit, o.failPayload = cm, p.JSON()
	}
	return o
}

// mediaErrorAllowed: at most one media-related ERROR per second (§7.5).
func (c *conn) mediaErrorAllowed(now time.Time) bool {
	if now.Sub(c.lastMedia) < time.Second {
		return false
	}
	c.lastMedia = now
	return true
}

func ratelimitSeconds(d time.Duration) int64 { return ratelimit.RetryAfterSeconds(d) }

// Media frames forwarded to another node's call are accepted here at
// once, before the owner has checked them (it replies only to reject).
// §6.2 and §7.5 say a rejected media frame does not advance L, so the
// channel's state before a forwarded frame is kept, and the owner's
// rejection rolls it back, provided no later frame was accepted on the
// channel meanwhile.

// forwardedMedia is the last media frame forwarded on a channel.
type forwardedMedia struct {
	req  string    // its request id
	seq  uint32    // its sequence
	had  bool      // the channel had a state before it
	prev chanState // that state
}

// noteForwardedMedia records f, about to be forwarded with request id req
// and then accepted (the reader goroutine only).
func (c *conn) noteForwardedMedia(f ccp.Frame, req string) {
	fm := forwardedMedia{req: req, seq: f.Sequence}
	if st := c.chans[f.Channel]; st != nil {
		fm.had, fm.prev = true, *st
	}
	if c.fwdMedia == nil {
		c.fwdMedia = make(map[uint32]forwardedMedia)
	}
	c.fwdMedia[f.Channel] = fm
}

// queueMediaRollback asks the reader to roll back the forwarded media frame
// with request id req (any goroutine).
func (c *conn) queueMediaRollback(req string) {
	c.rbMu.Lock()
	if len(c.rollbacks) < maxTrackedChannels {
		c.rollbacks = append(c.rollbacks, req)
	}
	c.rbPending.Store(true)
	c.rbMu.Unlock()
}

// applyMediaRollbacks applies the queued rollbacks (the reader goroutine
// only, before it handles a frame).
func (c *conn) applyMediaRollbacks() {
	if !c.rbPending.Load() {
		return
	}
	c.rbMu.Lock()
	reqs := c.rollbacks
	c.rollbacks = nil
	c.rbPending.Store(false)
	c.rbMu.Unlock()
	for _, req := range reqs {
		for ch, fm := range c.fwdMedia {
			if fm.req != req {
				continue
			}
			delete(c.fwdMedia, ch)
			st := c.chans[ch]
			if st == nil || st.last != fm.seq {
				break // a later frame was accepted: L stays
			}
			if fm.had {
				*st = fm.prev
			} else {
				delete(c.chans, ch)
			}
			break
		}
	}
}

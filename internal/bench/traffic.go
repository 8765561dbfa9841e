package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
)

// makePayload returns a MSG payload of size bytes: the send time (unix
// nanoseconds) and the message number, big-endian, then filler.
func makePayload(size int, n uint64) []byte { return makePayloadAt(size, n, time.Now()) }

// makePayloadAt is makePayload with the given send time: the open-loop
// relay puts the intended send time there, so that latency counts from
// the schedule, not from the moment the MSG actually left.
func makePayloadAt(size int, n uint64, at time.Time) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint64(b[0:8], uint64(at.UnixNano()))
	binary.BigEndian.PutUint64(b[8:16], n)
	for i := minPayload; i < size; i++ {
		b[i] = byte('a' + i%26)
	}
	return b
}

// parsePayload returns the send time and the message number of a payload
// made by makePayload.
func parsePayload(b []byte) (sent time.Time, n uint64, ok bool) {
	if len(b) < minPayload {
		return time.Time{}, 0, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b[0:8]))), binary.BigEndian.Uint64(b[8:16]), true
}

// randomChannelBase returns a channel id base in [2^24, 2^31): channels
// are server-wide, so a run against a shared server avoids old channels.
func randomChannelBase() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return 1<<24 + binary.BigEndian.Uint32(b[:])%(1<<30)
}

// acker acknowledges deliveries (§6.3) from a few goroutines so that the
// connection's writer can batch the ACK frames, and the receive loop never
// waits for a write.
type acker struct {
	c  *client.Conn
	q  chan [2]uint32
	wg sync.WaitGroup
}

const ackWorkers = 2

func newAcker(c *client.Conn, errs *errorLog) *acker {
	a := &acker{c: c, q: make(chan [2]uint32, 4096)}
	for range ackWorkers {
		a.wg.Go(func() {
			for x := range a.q {
				if err := c.AckDelivery(context.Background(), x[0], x[1]); err != nil {
					if !errors.Is(err, client.ErrClosed) {
						errs.add(err)
					}
					// The connection is gone: drop the rest.
					for range a.q {
					}
					return
				}
			}
		})
	}
	return a
}

func (a *acker) ack(ch, seq uint32) { a.q <- [2]uint32{ch, seq} }

// close stops the workers after the queued ACKs.
func (a *acker) close() {
	close(a.q)
	a.wg.Wait()
}

// drain reads and drops every frame of c until it ends, so that the
// replies to Requests are never held back behind unread frames.
func drain(c *client.Conn) {
	for {
		if _, err := c.Recv(context.Background()); err != nil {
			return
		}
	}
}

// sendLoop sends MSGs on ch with Request until ctx ends or stop returns
// true, numbering them with next; each successful send calls onAck.
// Several sendLoops on one connection make the sender's window.
func sendLoop(ctx context.Context, c *client.Conn, ch uint32, size int, next func() (uint64, bool), onAck func(), errs *errorLog) {
	for ctx.Err() == nil {
		n, ok := next()
		if !ok {
			return
		}
		if !sendMsg(ctx, c, ch, func() []byte { return makePayload(size, n) }, onAck, errs) {
			return
		}
	}
}

// sendMsg sends one MSG on ch with Request, the payload made by payload
// (again for each retry), and calls onAck when the server acknowledged
// it. Too Many Requests and Internal Error are retried after a pause;
// other errors drop the message. It returns false when the sender should
// stop (ctx ended or the connection is closed).
func sendMsg(ctx context.Context, c *client.Conn, ch uint32, payload func() []byte, onAck func(), errs *errorLog) bool {
	for {
		_, err := c.Request(ctx, ccp.Msg, ch, payload())
		if err == nil {
			onAck()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		var ef *client.ErrorFrame
		if errors.As(err, &ef) && (ef.Problem.Title == ccp.TitleTooManyRequests || ef.Problem.Title == ccp.TitleInternalError) {
			errs.add(err)
			pause(ctx, max(ef.RetryAfter(), 100*time.Millisecond))
			continue // the same message again
		}
		errs.add(err)
		return !errors.Is(err, client.ErrClosed)
	}
}

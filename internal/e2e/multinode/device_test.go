package multinode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
)

// received is a frame delivered to a device.
type received struct {
	Type    ccp.FrameType
	Channel uint32
	Payload []byte
	Sender  string
	Node    string // the node whose connection delivered it
	At      time.Time
}

// presenceEvent is a PRESENCE push or snapshot entry.
type presenceEvent struct {
	Entity, State string
	Node          string
}

// session is one connection of a device and what arrived on it.
type session struct {
	Conn *client.Conn
	Node *node
	done chan struct{} // closed when the pump stopped
	// ended is why the connection ended (set when done is closed).
	ended error
	// errs are the unsolicited ERRORs received on it.
	errs []ccp.Problem
}

// device is a device identity plus its connections, one at a time, made
// with the Go SDK (client.Dial, protocol version 2, HTTP/2 over TLS). A
// pump goroutine reads every frame, acknowledges durable ones (§6.7 ack
// mode) and records them.
type device struct {
	t  testing.TB
	c  *cluster
	ID string
	id *client.Identity

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every record
	msgs     []received
	presence []presenceEvent
	sessions []*session
	// noAck stops acknowledging deliveries (for redelivery tests).
	noAck bool
	// nMsg counts the MSG frames received.
	nMsg int
	// tap, if set before connect, receives every delivered frame
	// (benchmarks).
	tap chan received
	// keep false drops frames after counting them (benchmarks).
	discard bool
}

func newDevice(t testing.TB, c *cluster, name string) *device {
	t.Helper()
	devID := name + "-" + randHex(4)
	id, err := client.NewIdentity(devID, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &device{t: t, c: c, ID: devID, id: id, changed: make(chan struct{})}
}

func (d *device) notify() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// connect dials node n and starts the pump. The connection is closed at
// cleanup.
func (d *device) connect(ctx context.Context, n *node) (*session, error) {
	n.mu.Lock()
	u := n.URL
	n.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := client.Dial(dctx, client.Options{
		URL:          u,
		TLSConfig:    d.c.TLS(),
		Identity:     d.id,
		Handle:       d.ID, // admission hint: a new user per device (§4.9)
		Versions:     []int{2},
		CloseTimeout: 2 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("%s dialing %s: %w", d.ID, n.name, err)
	}
	if conn.Version() != 2 {
		conn.Close()
		return nil, fmt.Errorf("%s: negotiated version %d, want 2", d.ID, conn.Version())
	}
	s := &session{Conn: conn, Node: n, done: make(chan struct{})}
	d.mu.Lock()
	d.sessions = append(d.sessions, s)
	d.mu.Unlock()
	go d.pump(s)
	return s, nil
}

// mustConnect is connect that fails the test; it registers Close at
// cleanup.
func (d *device) mustConnect(n *node) *session {
	d.t.Helper()
	s, err := d.connect(context.Background(), n)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { s.Conn.CloseAbruptly() })
	return s
}

func (d *device) pump(s *session) {
	ctx := context.Background()
	defer close(s.done)
	for {
		f, err := s.Conn.Recv(ctx)
		if err != nil {
			d.mu.Lock()
			s.ended = s.Conn.Err()
			if s.ended == nil {
				s.ended = err
			}
			d.notify()
			d.mu.Unlock()
			return
		}
		switch f.Type {
		case ccp.Error:
			p, perr := ccp.ParseProblem(f.Payload)
			if perr != nil {
				p = ccp.Problem{Title: "(unparsable)", Detail: string(f.Payload)}
			}
			d.mu.Lock()
			s.errs = append(s.errs, p)
			d.notify()
			d.mu.Unlock()
		case ccp.Presence:
			ev := presenceEvent{Node: s.Node.name}
			var j struct {
				Entity string `json:"entity"`
				State  string `json:"state"`
			}
			if err := json.Unmarshal(f.Payload, &j); err == nil {
				ev.Entity, ev.State = j.Entity, j.State
			}
			d.mu.Lock()
			d.presence = append(d.presence, ev)
			d.notify()
			d.mu.Unlock()
		case ccp.Ack:
			// a late answer nobody waits for
		default:
			r := received{Type: f.Type, Channel: f.Channel, Payload: f.Payload, Node: s.Node.name, At: time.Now()}
			if f.Type == ccp.Typing {
				var j struct {
					Sender string `json:"sender"`
				}
				_ = json.Unmarshal(f.Payload, &j)
				r.Sender = j.Sender
			}
			d.mu.Lock()
			if !d.discard {
				d.msgs = append(d.msgs, r)
			}
			if f.Type == ccp.Msg {
				d.nMsg++
			}
			noAck, tap := d.noAck, d.tap
			d.notify()
			d.mu.Unlock()
			if tap != nil {
				tap <- r
			}
			if client.Durable(f.Type) && !noAck {
				// Errors here mean the connection is ending: the entry
				// is then redelivered (at-least-once).
				_ = s.Conn.AckDelivery(ctx, f.Channel, f.Sequence)
			}
		}
	}
}

// waitFor waits until cond (called with the device locked) holds.
func (d *device) waitFor(timeout time.Duration, what string, cond func() bool) {
	d.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		d.mu.Lock()
		ok := cond()
		ch := d.changed
		d.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			d.t.Fatalf("%s: timed out after %v waiting for %s", d.ID, timeout, what)
		}
	}
}

// messages returns a copy of the frames received so far.
func (d *device) messages() []received {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]received(nil), d.msgs...)
}

// countMsgs returns how many frames of type t arrived on channel ch.
func (d *device) countLocked(t ccp.FrameType, ch uint32) int {
	n := 0
	for _, m := range d.msgs {
		if m.Type == t && m.Channel == ch {
			n++
		}
	}
	return n
}

// waitMsgs waits until at least n frames of type t arrived on ch.
func (d *device) waitMsgs(timeout time.Duration, t ccp.FrameType, ch uint32, n int) []received {
	d.t.Helper()
	d.waitFor(timeout, fmt.Sprintf("%d %v frames on channel %d", n, t, ch), func() bool { return d.countLocked(t, ch) >= n })
	var out []received
	for _, m := range d.messages() {
		if m.Type == t && m.Channel == ch {
			out = append(out, m)
		}
	}
	return out
}

// waitPresence waits for a presence event of entity with state.
func (d *device) waitPresence(timeout time.Duration, entity, state string) {
	d.t.Helper()
	d.waitFor(timeout, fmt.Sprintf("presence %s=%s", entity, state), func() bool {
		for _, p := range d.presence {
			if p.Entity == entity && p.State == state {
				return true
			}
		}
		return false
	})
}

// presenceCount returns the number of presence events seen so far.
func (d *device) presenceEvents() []presenceEvent {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]presenceEvent(nil), d.presence...)
}

// waitEnded waits until session s ended and returns why.
func (d *device) waitEnded(s *session, timeout time.Duration) error {
	d.t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		d.t.Fatalf("%s: connection to %s did not end within %v", d.ID, s.Node.name, timeout)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return s.ended
}

// unsolicited returns the unsolicited ERRORs of s.
func (d *device) unsolicited(s *session) []ccp.Problem {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]ccp.Problem(nil), s.errs...)
}

// send sends a MSG and waits for its ACK (stored for every recipient).
func (s *session) send(ctx context.Context, ch uint32, payload []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return s.Conn.SendMessage(ctx, ch, payload)
}

// join sends JOIN listing members.
func (s *session) join(t testing.TB, ch uint32, members ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Conn.Join(ctx, ch, members, ""); err != nil {
		t.Fatalf("JOIN %d: %v", ch, err)
	}
}

func isReplaced(err error) bool {
	var ef *client.ErrorFrame
	return errors.As(err, &ef) && ef.Problem.Title == ccp.TitleReplaced
}

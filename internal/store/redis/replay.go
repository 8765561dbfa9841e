package redis

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/commucat/commucat/internal/canonjson"
)

// Replay protection of the node bus. A sealed bus message (Options.BusKey)
// carries, inside its mac, four extension members of §9.4 messages:
//
//	bus_src  the publishing process: random per Open (hex)
//	bus_seq  its messages' number, from 1
//	bus_to   the node the message was published for
//	bus_ts   the publisher's clock, unix milliseconds
//
// A node takes a message only when it is for itself, its bus_ts is within
// busMaxAge of the node's own clock (either way), and its (bus_src,
// bus_seq) was not taken before. Sequence numbers are checked against a
// window of busReplayWindow per source, since messages published on
// several Redis connections may overtake each other; one further behind
// the newest taken than the window is refused. So a Redis client that
// captured a message can neither replay it to its node nor send it to
// another, and a source's state can be dropped busForget after its last
// message: by then every message of that source fails the time check.
const (
	memberSrc = "bus_src"
	memberSeq = "bus_seq"
	memberTo  = "bus_to"
	memberTS  = "bus_ts"

	busMaxAge       = 2 * time.Minute
	busForget       = 2*busMaxAge + time.Minute
	busReplayWindow = 1 << 16 // 8 KiB per source; a publisher's goroutines racing to Redis reorder far less
	maxBusSources   = 1024
)

// Why a node refused a bus message: the reason label of
// commucat_bus_refused (Options.OnRefused).
const (
	RefusedUnauthenticated = "unauthenticated" // no valid mac (or not a JSON object, or too large)
	RefusedMalformed       = "malformed"       // replay members missing or malformed, or not a bus message
	RefusedMisaddressed    = "misaddressed"    // bus_to names another node
	RefusedClock           = "clock"           // bus_ts more than busMaxAge away from this node's clock
	RefusedReplayed        = "replayed"        // (bus_src, bus_seq) taken before, or too far behind
)

// RefusedReasons lists the reasons, for metrics.
func RefusedReasons() []string {
	return []string{RefusedUnauthenticated, RefusedMalformed, RefusedMisaddressed, RefusedClock, RefusedReplayed}
}

// refusal is an error with its reason.
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }

func refused(reason string, err error) error { return &refusal{reason, err} }

// busMeta is the replay protection of one message.
type busMeta struct {
	src string
	seq uint64
	to  string
	ts  int64 // unix milliseconds
}

func (m busMeta) members() []canonjson.Member {
	return []canonjson.Member{
		{Key: memberSrc, Value: canonjson.StringValue(m.src)},
		{Key: memberSeq, Value: canonjson.UintValue(m.seq)},
		{Key: memberTo, Value: canonjson.StringValue(m.to)},
		{Key: memberTS, Value: canonjson.IntValue(m.ts)},
	}
}

// readMeta reads the replay members of an opened message.
func readMeta(v canonjson.Value) (busMeta, error) {
	var m busMeta
	src, ok1 := v.Get(memberSrc)
	seq, ok2 := v.Get(memberSeq)
	to, ok3 := v.Get(memberTo)
	ts, ok4 := v.Get(memberTS)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return m, refused(RefusedMalformed, errors.New("bus message without replay protection (bus_src, bus_seq, bus_to, bus_ts)"))
	}
	if src.Kind != canonjson.String || src.Str == "" || len(src.Str) > 64 || to.Kind != canonjson.String ||
		seq.Kind != canonjson.Number || ts.Kind != canonjson.Number {
		return m, refused(RefusedMalformed, errors.New("bus message with malformed replay members"))
	}
	var err error
	if m.seq, err = strconv.ParseUint(seq.Num, 10, 64); err != nil || m.seq == 0 {
		return m, refused(RefusedMalformed, errors.New("bus message with malformed bus_seq"))
	}
	if m.ts, err = strconv.ParseInt(ts.Num, 10, 64); err != nil {
		return m, refused(RefusedMalformed, errors.New("bus message with malformed bus_ts"))
	}
	m.src, m.to = src.Str, to.Str
	return m, nil
}

// replayGuard remembers, per source, which sequence numbers a node took.
type replayGuard struct {
	mu        sync.Mutex
	srcs      map[string]*replayWindow
	lastPrune time.Time
}

type replayWindow struct {
	max  uint64                       // newest sequence number taken
	bits [busReplayWindow / 64]uint64 // bit seq%busReplayWindow: taken, for seq in (max-window, max]
	last time.Time                    // when the newest message of this source was taken
}

func newReplayGuard() *replayGuard { return &replayGuard{srcs: make(map[string]*replayWindow)} }

// accept decides on a message for node self at time now, and remembers it
// when it is taken.
func (g *replayGuard) accept(m busMeta, self string, now time.Time) error {
	if m.to != self {
		return refused(RefusedMisaddressed, fmt.Errorf("bus message for node %q", m.to))
	}
	if d := now.Sub(time.UnixMilli(m.ts)); d > busMaxAge || d < -busMaxAge {
		return refused(RefusedClock, fmt.Errorf("bus message time %s is %v away from this node's clock (more than %v)",
			time.UnixMilli(m.ts).UTC().Format(time.RFC3339), d.Round(time.Second), busMaxAge))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.lastPrune) > busMaxAge {
		for src, w := range g.srcs {
			if now.Sub(w.last) > busForget {
				delete(g.srcs, src)
			}
		}
		g.lastPrune = now
	}
	w := g.srcs[m.src]
	if w == nil {
		if len(g.srcs) >= maxBusSources {
			return refused(RefusedReplayed, errors.New("too many bus sources"))
		}
		w = &replayWindow{}
		g.srcs[m.src] = w
	}
	if !w.take(m.seq) {
		return refused(RefusedReplayed, fmt.Errorf("bus message %s/%d replayed or too old", m.src, m.seq))
	}
	w.last = now
	return nil
}

// take marks seq as taken and reports whether it was new.
func (w *replayWindow) take(seq uint64) bool {
	if seq > w.max {
		if seq-w.max >= busReplayWindow {
			w.bits = [busReplayWindow / 64]uint64{}
		} else {
			for s := w.max + 1; s < seq; s++ {
				w.bits[s%busReplayWindow/64] &^= 1 << (s % 64)
			}
		}
		w.max = seq
		w.bits[seq%busReplayWindow/64] |= 1 << (seq % 64)
		return true
	}
	if w.max-seq >= busReplayWindow {
		return false
	}
	word, bit := seq%busReplayWindow/64, uint64(1)<<(seq%64)
	if w.bits[word]&bit != 0 {
		return false
	}
	w.bits[word] |= bit
	return true
}

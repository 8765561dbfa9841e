package media

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"lukechampine.com/blake3"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/ledger"
	"github.com/commucat/commucat/internal/metrics"
)

// Problem titles the session turns into ERROR frames.
const (
	TitleInvalid     = ccp.TitleInvalidPayload
	TitleNotFound    = ccp.TitleNotFound
	TitleForbidden   = ccp.TitleForbidden
	TitleConflict    = ccp.TitleConflict
	TitleUnsupported = ccp.TitleUnsupportedMedia
)

// Error is a call or media problem (§7.2, §7.5).
type Error struct{ Title, Detail string }

func (e *Error) Error() string { return e.Title + ": " + e.Detail }

func fail(title, detail string) *Error { return &Error{title, detail} }

// Deliver sends a live frame to a device (wherever it is connected).
type Deliver func(device string, t ccp.FrameType, ch uint32, payload []byte)

// Config configures a Manager.
type Config struct {
	Codecs  Codecs
	Deliver Deliver
	Metrics *metrics.Metrics
	Ledger  ledger.Ledger
	Logger  *slog.Logger
	Now     func() time.Time
	// RingTimeout is the default ring deadline (§7.2: 60 s).
	RingTimeout time.Duration
	// OnEnd, if set, is called once when a call ends, whatever the cause
	// (the cluster drops the call's §9.4 pins).
	OnEnd func(callID string, ch uint32)
	// OnDisconnect, if set, is called by Disconnect after the calls on this
	// node were ended (the cluster tells the owners of remote calls, §9.4).
	OnDisconnect func(device string)
}

// Manager holds the calls owned by this node.
type Manager struct {
	cfg       Config
	mu        sync.Mutex
	calls     map[string]*Call
	byChannel map[uint32]*Call
}

// NewManager returns a Manager.
func NewManager(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Ledger == nil {
		cfg.Ledger = ledger.Null{}
	}
	if cfg.RingTimeout == 0 {
		cfg.RingTimeout = 60 * time.Second
	}
	return &Manager{cfg: cfg, calls: make(map[string]*Call), byChannel: make(map[uint32]*Call)}
}

const (
	kindAudio = 0
	kindVideo = 1
)

// adaptive is the §7.7 state of one media kind in a call.
type adaptive struct {
	target       int
	profile      int
	floor        int
	lastDecrease time.Time
	window       time.Time // start of the current 10 s window; zero before the first report
	lossPct      int       // latest reported loss in percent (Opus hint)
}

// Call is one active call.
type Call struct {
	ID           string
	Channel      uint32
	Initiator    string
	Participants []string
	started      time.Time
	ring         *time.Timer

	mu       sync.Mutex // everything below
	accepted map[string]bool
	profile  Profile
	ended    bool
	adapt    [2]adaptive
	encoders map[encKey]*encoder
	stats    map[string]json.RawMessage // latest report per sender+direction
}

type encKey struct {
	device string
	kind   int
}

// Active reports whether a channel carries an active call.
func (m *Manager) Active(ch uint32) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byChannel[ch] != nil
}

func (c *Call) setProfile(p Profile) {
	c.profile = p
	audioFloor, videoFloor := min(8000, p.AudioRate), min(100000, p.VideoRate)
	c.adapt[kindAudio] = adaptive{target: p.AudioRate, profile: p.AudioRate, floor: audioFloor, lossPct: 5}
	c.adapt[kindVideo] = adaptive{target: p.VideoRate, profile: p.VideoRate, floor: videoFloor}
	c.dropEncoders()
}

func (c *Call) dropEncoders() {
	for k, e := range c.encoders {
		e.close()
		delete(c.encoders, k)
	}
}

// record writes a call ledger record (§11.1).
func (m *Manager) record(callID, event string, data map[string]any) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	meta := map[string]any{"call_id": callID, "data": data, "event": event, "scope": "call"}
	if err := m.cfg.Ledger.Record(ctx, blake3.Sum256([]byte(callID)), meta); err != nil {
		m.cfg.Logger.Warn("ledger", "err", err)
	}
}

// fanOut delivers a frame to the call's other participants (§7.2).
func (m *Manager) fanOut(c *Call, except string, t ccp.FrameType, payload []byte) {
	for _, p := range c.Participants {
		if p != except {
			m.cfg.Deliver(p, t, c.Channel, payload)
		}
	}
}

func ackWith(seq uint32, members ...string) []byte {
	b := strconv.AppendUint([]byte(`{"ack":`), uint64(seq), 10)
	for i := 0; i+1 < len(members); i += 2 {
		b = append(b, ',')
		b = canonjson.AppendString(b, members[i])
		b = append(b, ':')
		b = append(b, members[i+1]...)
	}
	return append(b, '}')
}

func jsonString(s string) string { return string(canonjson.AppendString(nil, s)) }

// Offer handles CALL_OFFER (§7.2). members returns the channel's members
// (nil when the channel does not exist); payload is the sender-attributed
// payload to fan out.
func (m *Manager) Offer(sender string, ch uint32, seq uint32, raw, payload []byte, members []string) ([]byte, *Error) {
	o, prof, err := ParseOffer(raw)
	if err != nil {
		return nil, fail(TitleInvalid, err.Error())
	}
	if len(members) == 0 {
		return nil, fail(TitleNotFound, "unknown channel")
	}
	if !slices.Contains(members, sender) {
		return nil, fail(TitleForbidden, "not a member of the channel")
	}
	id := *o.CallID
	now := m.cfg.Now()
	m.mu.Lock()
	if m.calls[id] != nil {
		m.mu.Unlock()
		return nil, fail(TitleConflict, "call_id already in use")
	}
	if m.byChannel[ch] != nil {
		m.mu.Unlock()
		return nil, fail(TitleConflict, "the channel already has an active call")
	}
	c := &Call{ID: id, Channel: ch, Initiator: sender, started: now, accepted: map[string]bool{sender: true},
		encoders: map[encKey]*encoder{}, stats: map[string]json.RawMessage{}}
	for _, p := range members {
		if !containsRemote(p) {
			c.Participants = append(c.Participants, p)
		}
	}
	c.setProfile(prof)
	deadline := now.Add(m.cfg.RingTimeout)
	if o.ExpiresAt != nil {
		exp := time.Unix(int64(min(*o.ExpiresAt, math.MaxInt64/2)), 0)
		if exp.After(now) && !exp.After(now.Add(600*time.Second)) {
			deadline = exp
		}
	}
	m.calls[id], m.byChannel[ch] = c, c
	m.mu.Unlock()
	c.ring = time.AfterFunc(deadline.Sub(now), func() { m.ringTimeout(c) })

	m.fanOut(c, sender, ccp.CallOffer, payload)
	if mt := m.cfg.Metrics; mt != nil {
		mt.CallsTotal.Inc()
		mt.CallsActive.Inc()
	}
	m.record(id, "offer", map[string]any{"channel_id": ch, "initiator": sender, "mode": prof.Mode, "participants": c.Participants, "video": prof.HasVideo})
	return ackWith(seq, "call_id", jsonString(id)), nil
}

func containsRemote(member string) bool {
	for i := 0; i < len(member); i++ {
		if member[i] == '@' {
			return true
		}
	}
	return false
}

// lookup finds a call on its channel (§7.2: a known call_id on another
// channel is Not Found).
func (m *Manager) lookup(id string, ch uint32) *Call {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.calls[id]
	if c == nil || c.Channel != ch {
		return nil
	}
	return c
}

// remove takes the call out of the maps; false when it was already gone.
func (m *Manager) remove(c *Call) bool {
	m.mu.Lock()
	if m.calls[c.ID] != c {
		m.mu.Unlock()
		return false
	}
	delete(m.calls, c.ID)
	delete(m.byChannel, c.Channel)
	m.mu.Unlock()
	c.ring.Stop()
	c.mu.Lock()
	c.ended = true
	c.dropEncoders()
	c.mu.Unlock()
	if mt := m.cfg.Metrics; mt != nil {
		mt.CallsActive.Dec()
	}
	if m.cfg.OnEnd != nil {
		m.cfg.OnEnd(c.ID, c.Channel)
	}
	return true
}

func (m *Manager) endRecord(c *Call, device, reason string) {
	dur := int64(m.cfg.Now().Sub(c.started) / time.Second)
	m.record(c.ID, "end", map[string]any{"device": device, "duration_secs": dur, "initiator": c.Initiator, "reason": reason})
}

// Answer handles CALL_ANSWER.
func (m *Manager) Answer(sender string, ch uint32, seq uint32, raw, payload []byte) ([]byte, *Error) {
	a, prof, err := ParseAnswer(raw)
	if err != nil {
		return nil, fail(TitleInvalid, err.Error())
	}
	c := m.lookup(*a.CallID, ch)
	if c == nil {
		return nil, fail(TitleNotFound, "unknown call")
	}
	if !slices.Contains(c.Participants, sender) {
		return nil, fail(TitleForbidden, "not a participant of the call")
	}
	data := map[string]any{"accept": *a.Accept, "device": sender}
	c.mu.Lock()
	if *a.Accept {
		c.accepted[sender] = true
		if prof != nil {
			c.setProfile(*prof)
		}
	}
	mode, video := c.profile.Mode, c.profile.HasVideo
	c.mu.Unlock()
	if *a.Accept {
		data["mode"], data["video"] = mode, video
	} else if a.Reason != nil {
		data["reason"] = *a.Reason
	}
	m.fanOut(c, sender, ccp.CallAnswer, payload)
	m.record(c.ID, "answer", data)
	if !*a.Accept && m.remove(c) {
		reason := "decline"
		if a.Reason != nil {
			reason = *a.Reason
		}
		m.endRecord(c, sender, reason)
	}
	members := []string{"accept", strconv.FormatBool(*a.Accept), "call_id", jsonString(c.ID)}
	if !*a.Accept && a.Reason != nil {
		members = append(members, "reason", jsonString(*a.Reason))
	}
	return ackWith(seq, members...), nil
}

// End handles CALL_END.
func (m *Manager) End(sender string, ch uint32, seq uint32, raw, payload []byte) ([]byte, *Error) {
	e, err := ParseEnd(raw)
	if err != nil {
		return nil, fail(TitleInvalid, err.Error())
	}
	ack := ackWith(seq, "call_id", jsonString(*e.CallID), "reason", jsonString(*e.Reason))
	m.mu.Lock()
	c := m.calls[*e.CallID]
	m.mu.Unlock()
	if c == nil {
		return ack, nil // idempotent hang-up
	}
	if c.Channel != ch {
		return nil, fail(TitleNotFound, "the call is on another channel")
	}
	if !slices.Contains(c.Participants, sender) {
		return nil, fail(TitleForbidden, "not a participant of the call")
	}
	if m.remove(c) {
		m.fanOut(c, sender, ccp.CallEnd, payload)
		m.endRecord(c, sender, *e.Reason)
	}
	return ack, nil
}

// Stats handles CALL_STATS and applies §7.7.
func (m *Manager) Stats(sender string, ch uint32, seq uint32, raw, payload []byte) ([]byte, *Error) {
	s, err := ParseStats(raw)
	if err != nil {
		return nil, fail(TitleInvalid, err.Error())
	}
	c := m.lookup(*s.CallID, ch)
	if c == nil {
		return nil, fail(TitleNotFound, "unknown call")
	}
	if !slices.Contains(c.Participants, sender) {
		return nil, fail(TitleForbidden, "not a participant of the call")
	}
	now := m.cfg.Now()
	c.mu.Lock()
	c.stats[sender+"/"+*s.Direction] = append(json.RawMessage(nil), raw...)
	if *s.Direction == "receive" {
		if s.Audio != nil {
			c.report(kindAudio, loss(s.Audio), now)
		}
		if s.Video != nil {
			c.report(kindVideo, loss(s.Video), now)
		}
	}
	c.mu.Unlock()
	m.fanOut(c, sender, ccp.CallStats, payload)
	return ackWith(seq, "call_id", jsonString(c.ID), "direction", jsonString(*s.Direction)), nil
}

// report applies one receive report to the target bitrate of a kind
// (§7.7). c.mu is held.
func (c *Call) report(kind int, l float64, now time.Time) {
	a := &c.adapt[kind]
	if kind == kindAudio {
		a.lossPct = max(5, int(math.Round(l*100)))
	}
	changed := false
	switch {
	case l > 0.05:
		if a.lastDecrease.IsZero() || now.Sub(a.lastDecrease) >= time.Second {
			t := max(a.floor, int(math.Round(0.8*float64(a.target))))
			changed = t != a.target
			a.target, a.lastDecrease = t, now
		}
		a.window = now
	case l >= 0.01:
		a.window = now
	default:
		if a.window.IsZero() {
			a.window = now
		} else if now.Sub(a.window) >= 10*time.Second {
			t := min(a.profile, int(math.Round(1.1*float64(a.target))))
			changed = t != a.target
			a.target, a.window = t, now
		}
	}
	if changed || kind == kindAudio {
		for k, e := range c.encoders {
			if k.kind == kind {
				e.apply(a.target, a.lossPct)
			}
		}
	}
}

// Target returns the current target bitrate of a kind ("audio" or
// "video") for tests and diagnostics.
func (m *Manager) Target(callID, kind string) (int, bool) {
	m.mu.Lock()
	c := m.calls[callID]
	m.mu.Unlock()
	if c == nil {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if kind == "video" {
		return c.adapt[kindVideo].target, true
	}
	return c.adapt[kindAudio].target, true
}

// ringTimeout ends a call nobody answered (§7.2).
func (m *Manager) ringTimeout(c *Call) {
	c.mu.Lock()
	answered := len(c.accepted) > 1
	c.mu.Unlock()
	if answered || !m.remove(c) {
		return
	}
	payload, _ := canonjson.Marshal(map[string]any{"call_id": c.ID, "metadata": map[string]any{"cause": "ring_timeout", "system": true}, "reason": "timeout"})
	m.fanOut(c, "", ccp.CallEnd, payload)
	m.endRecord(c, c.Initiator, "timeout")
}

// Disconnect ends every call listing the device (§6.10).
func (m *Manager) Disconnect(device string) {
	m.DisconnectLocal(device)
	if m.cfg.OnDisconnect != nil {
		m.cfg.OnDisconnect(device)
	}
}

// DisconnectLocal ends every call of this node listing the device.
func (m *Manager) DisconnectLocal(device string) {
	m.mu.Lock()
	var ended []*Call
	for _, c := range m.calls {
		if slices.Contains(c.Participants, device) {
			ended = append(ended, c)
		}
	}
	m.mu.Unlock()
	for _, c := range ended {
		if !m.remove(c) {
			continue
		}
		payload, _ := canonjson.Marshal(map[string]any{"call_id": c.ID, "metadata": map[string]any{"cause": "disconnect", "device": device, "system": true}, "reason": "failure"})
		m.fanOut(c, device, ccp.CallEnd, payload)
		m.endRecord(c, device, "disconnect")
	}
}

// Close ends every call (shutdown) without notifications.
func (m *Manager) Close() {
	m.mu.Lock()
	calls := make([]*Call, 0, len(m.calls))
	for _, c := range m.calls {
		calls = append(calls, c)
	}
	m.mu.Unlock()
	for _, c := range calls {
		m.remove(c)
	}
}

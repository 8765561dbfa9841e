// Package redis holds the Redis-backed shared state of several nodes
// (spec §9.4): presence entries, the device-to-node routes, node
// heartbeats and the node bus (pub/sub).
package redis

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"lukechampine.com/blake3"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/router"
)

const (
	heartbeatTTL   = 30 * time.Second
	heartbeatEvery = 10 * time.Second
)

// Options configure a Cluster.
type Options struct {
	URL    string // redis://host:port/db
	NodeID string
	// RouteTTL is the lifetime of route keys: 3 × K (§9.4).
	RouteTTL time.Duration
	// Prefix is prepended to every key and channel (tests use a random
	// one; production uses "").
	Prefix string
	// BusKey, when set, authenticates the node bus: every message carries
	// a "mac" member (keyed BLAKE3 of the message's canonical JSON without
	// it) and messages without a valid one are dropped, so that a Redis
	// client that is not a node cannot inject frames. Every node must use
	// the same key (the server derives it from crypto.federation_seed,
	// identity.ClusterBusKey).
	BusKey *[32]byte
	// OnRefused, if set, is called (from Run) for each bus message this
	// node refuses, with the reason (RefusedReasons).
	OnRefused func(reason string)
	Logger    *slog.Logger
	Now       func() time.Time
}

// Cluster implements router.Cluster and router.Presence on Redis.
type Cluster struct {
	rdb  *goredis.Client
	opts Options

	// Replay protection of the bus (with BusKey; replay.go).
	src   string        // this process's bus_src
	seq   atomic.Uint64 // the last bus_seq published
	guard *replayGuard

	// Refused bus messages are logged at most once per refusedLogEvery
	// (Run's goroutine only).
	refusedLogged time.Time
	refusedQuiet  int // refused since the last log line
}

const refusedLogEvery = 10 * time.Second

var _ router.Cluster = (*Cluster)(nil)
var _ router.Presence = (*Cluster)(nil)

// Open connects to Redis (lazily: a down server is reported by Ping and by
// every operation, and the client reconnects by itself).
func Open(opts Options) (*Cluster, error) {
	o, err := goredis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("storage.redis_url: %w", err)
	}
	o.DialTimeout = 2 * time.Second
	o.ReadTimeout = 2 * time.Second
	o.WriteTimeout = 2 * time.Second
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var src [8]byte
	rand.Read(src[:])
	return &Cluster{rdb: goredis.NewClient(o), opts: opts, src: hex.EncodeToString(src[:]), guard: newReplayGuard()}, nil
}

// Close closes the client.
func (c *Cluster) Close() error { return c.rdb.Close() }

func (c *Cluster) NodeID() string { return c.opts.NodeID }

func (c *Cluster) Ping(ctx context.Context) error { return c.rdb.Ping(ctx).Err() }

func (c *Cluster) key(parts ...string) string {
	k := c.opts.Prefix
	for i, p := range parts {
		if i > 0 {
			k += ":"
		}
		k += p
	}
	return k
}

func (c *Cluster) nodeChannel(node string) string { return c.opts.Prefix + "commucat:node:" + node }

// alive reports whether the node's heartbeat exists.
func (c *Cluster) alive(ctx context.Context, node string) (bool, error) {
	n, err := c.rdb.Exists(ctx, c.key("node", node)).Result()
	return n == 1, err
}

func (c *Cluster) ClaimRoute(ctx context.Context, device string) (string, error) {
	prev, err := c.rdb.SetArgs(ctx, c.key("route", device), c.opts.NodeID, goredis.SetArgs{TTL: c.opts.RouteTTL, Get: true}).Result()
	if errors.Is(err, goredis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if prev == c.opts.NodeID {
		return "", nil
	}
	ok, err := c.alive(ctx, prev)
	if err != nil || !ok {
		return "", err
	}
	return prev, nil
}

// Lua: renew or delete a route only while it still names this node.
var (
	refreshScript = goredis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)
	releaseScript = goredis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
)

func (c *Cluster) RefreshRoutes(ctx context.Context, devices []string) error {
	if len(devices) == 0 {
		return nil
	}
	err := c.refreshRoutes(ctx, devices)
	if goredis.HasErrorPrefix(err, "NOSCRIPT") {
		// Script.Run falls back from EVALSHA to EVAL only outside a
		// pipeline: a pipelined EVALSHA of a script Redis has not cached
		// (a fresh or restarted Redis) fails with NOSCRIPT, and the routes
		// would never be renewed. Load the script and try again.
		if err := refreshScript.Load(ctx, c.rdb).Err(); err != nil {
			return err
		}
		err = c.refreshRoutes(ctx, devices)
	}
	return err
}

func (c *Cluster) refreshRoutes(ctx context.Context, devices []string) error {
	pipe := c.rdb.Pipeline()
	for _, d := range devices {
		refreshScript.Run(ctx, pipe, []string{c.key("route", d)}, c.opts.NodeID, c.opts.RouteTTL.Milliseconds())
	}
	_, err := pipe.Exec(ctx)
	return err
}

func (c *Cluster) ReleaseRoute(ctx context.Context, device string) error {
	return releaseScript.Run(ctx, c.rdb, []string{c.key("route", device)}, c.opts.NodeID).Err()
}

func (c *Cluster) RouteOf(ctx context.Context, device string) (string, error) {
	node, err := c.rdb.Get(ctx, c.key("route", device)).Result()
	if errors.Is(err, goredis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if node == c.opts.NodeID {
		return node, nil
	}
	ok, err := c.alive(ctx, node)
	if err != nil || !ok {
		return "", err
	}
	return node, nil
}

// wireMessage is the canonical JSON of a bus message (§9.4).
type wireMessage struct {
	CallID     *string `json:"call_id,omitempty"`
	Channel    *uint32 `json:"channel,omitempty"`
	Device     string  `json:"device"`
	EnvelopeID *string `json:"envelope_id,omitempty"`
	FrameType  *uint8  `json:"frame_type,omitempty"`
	Kind       string  `json:"kind"`
	Payload    *string `json:"payload,omitempty"`
	QueueID    *int64  `json:"queue_id,omitempty"`
	Reason     *string `json:"reason,omitempty"`
	ReplyTo    *string `json:"reply_to,omitempty"`
	RequestID  *string `json:"request_id,omitempty"`
	Sequence   *uint32 `json:"sequence,omitempty"`
	Session    *string `json:"session,omitempty"`
	// Nulls that the spec lists explicitly for deliver (envelope_id) are
	// written by encode.
}

// EncodeMessage writes a bus message as the canonical JSON of §9.4.
func EncodeMessage(m router.BusMessage) ([]byte, error) {
	obj := map[string]any{"kind": m.Kind, "device": m.Device}
	switch m.Kind {
	case router.KindDeliver:
		obj["frame_type"] = m.FrameType
		obj["channel"] = m.Channel
		obj["payload"] = base64.StdEncoding.EncodeToString(m.Payload)
		if m.EnvelopeID != nil {
			obj["envelope_id"] = *m.EnvelopeID
		} else {
			obj["envelope_id"] = nil
		}
		if m.QueueID > 0 {
			// Extension of §9.4 (see router.BusMessage.QueueID).
			obj["queue_id"] = m.QueueID
		}
	case router.KindKick:
		obj["reason"] = m.Reason
		obj["session"] = m.Session
	case router.KindCall:
		if m.CallID != nil {
			obj["call_id"] = *m.CallID
		} else {
			obj["call_id"] = nil
		}
		obj["frame_type"] = m.FrameType
		obj["channel"] = m.Channel
		obj["sequence"] = m.Sequence
		obj["payload"] = base64.StdEncoding.EncodeToString(m.Payload)
		obj["reply_to"] = m.ReplyTo
		obj["request_id"] = m.RequestID
		encodeCallExt(obj, m) // extension members, calls.go
	case router.KindCallReply:
		obj["request_id"] = m.RequestID
		obj["frame_type"] = m.FrameType
		obj["channel"] = m.Channel
		obj["payload"] = base64.StdEncoding.EncodeToString(m.Payload)
	default:
		return nil, fmt.Errorf("unknown bus message kind %q", m.Kind)
	}
	return canonjson.Marshal(obj)
}

// maxBusMessage bounds a bus message (a 16 MiB frame in base64 plus room).
const maxBusMessage = 24 << 20

// DecodeMessage parses a bus message.
func DecodeMessage(b []byte) (router.BusMessage, error) {
	var m router.BusMessage
	if len(b) > maxBusMessage {
		return m, errors.New("bus message too large")
	}
	var w wireMessage
	if err := json.Unmarshal(b, &w); err != nil {
		return m, err
	}
	m.Kind, m.Device = w.Kind, w.Device
	if w.Kind == "" || w.Device == "" {
		return m, errors.New("bus message without kind or device")
	}
	if w.FrameType != nil {
		m.FrameType = *w.FrameType
	}
	if w.Channel != nil {
		m.Channel = *w.Channel
	}
	if w.Sequence != nil {
		m.Sequence = *w.Sequence
	}
	if w.Payload != nil {
		p, err := base64.StdEncoding.DecodeString(*w.Payload)
		if err != nil {
			return m, fmt.Errorf("bus payload: %w", err)
		}
		m.Payload = p
	}
	m.EnvelopeID, m.CallID = w.EnvelopeID, w.CallID
	if w.QueueID != nil && *w.QueueID > 0 {
		m.QueueID = *w.QueueID
	}
	for dst, src := range map[*string]*string{&m.Reason: w.Reason, &m.Session: w.Session, &m.ReplyTo: w.ReplyTo, &m.RequestID: w.RequestID} {
		if src != nil {
			*dst = *src
		}
	}
	if m.Kind == router.KindCall {
		if err := decodeCallExt(b, &m); err != nil { // extension members, calls.go
			return m, err
		}
	}
	return m, nil
}

func (c *Cluster) Publish(ctx context.Context, node string, m router.BusMessage) error {
	b, err := EncodeMessage(m)
	if err != nil {
		return err
	}
	if c.opts.BusKey != nil {
		meta := busMeta{src: c.src, seq: c.seq.Add(1), to: node, ts: c.opts.Now().UnixMilli()}
		if b, err = SealMessage(c.opts.BusKey, b, meta.members()...); err != nil {
			return err
		}
	}
	return c.rdb.Publish(ctx, c.nodeChannel(node), b).Err()
}

// macMember is the extension member of §9.4 bus messages that carries
// their authentication tag (Options.BusKey).
const macMember = "mac"

// busMAC is the tag of a message's canonical JSON without its mac member.
func busMAC(key *[32]byte, canonical []byte) []byte {
	h := blake3.New(32, key[:])
	h.Write(canonical)
	return h.Sum(nil)
}

// SealMessage adds the extra members (Publish: the replay members,
// replay.go) and the mac member, which covers them, to the canonical JSON
// of a bus message.
func SealMessage(key *[32]byte, canonical []byte, extra ...canonjson.Member) ([]byte, error) {
	v, err := canonjson.Parse(canonical)
	if err != nil || v.Kind != canonjson.Object {
		return nil, errors.New("bus message is not a JSON object")
	}
	if len(extra) > 0 {
		for _, m := range extra {
			if _, dup := v.Get(m.Key); dup || m.Key == macMember {
				return nil, fmt.Errorf("bus message already has member %q", m.Key)
			}
		}
		v.Obj = append(v.Obj, extra...)
		canonical = v.AppendCanonical(nil)
	}
	v.Obj = append(v.Obj, canonjson.Member{Key: macMember, Value: canonjson.StringValue(hex.EncodeToString(busMAC(key, canonical)))})
	return v.AppendCanonical(nil), nil
}

// OpenMessage checks the mac member of a received bus message and returns
// the message without it.
func OpenMessage(key *[32]byte, b []byte) ([]byte, error) {
	_, opened, err := openMessage(key, b)
	return opened, err
}

// openMessage is OpenMessage, also returning the parsed message.
func openMessage(key *[32]byte, b []byte) (canonjson.Value, []byte, error) {
	var v canonjson.Value
	if len(b) > maxBusMessage {
		return v, nil, errors.New("bus message too large")
	}
	v, err := canonjson.Parse(b)
	if err != nil || v.Kind != canonjson.Object {
		return v, nil, errors.New("bus message is not a JSON object")
	}
	var tag []byte
	rest := v.Obj[:0:0]
	for _, m := range v.Obj {
		if m.Key == macMember {
			if m.Value.Kind != canonjson.String {
				return v, nil, errors.New("bus message mac is not a string")
			}
			tag, err = hex.DecodeString(m.Value.Str)
			if err != nil {
				return v, nil, errors.New("bus message mac is not hex")
			}
			continue
		}
		rest = append(rest, m)
	}
	if tag == nil {
		return v, nil, errors.New("bus message without mac")
	}
	v.Obj = rest
	canonical := v.AppendCanonical(nil)
	if subtle.ConstantTimeCompare(tag, busMAC(key, canonical)) != 1 {
		return v, nil, errors.New("bus message mac does not verify")
	}
	return v, canonical, nil
}

// open checks a received message's mac and replay members (replay.go)
// and returns it without the mac.
func (c *Cluster) open(b []byte) ([]byte, error) {
	v, opened, err := openMessage(c.opts.BusKey, b)
	if err != nil {
		return nil, refused(RefusedUnauthenticated, err)
	}
	meta, err := readMeta(v)
	if err != nil {
		return nil, err
	}
	if err := c.guard.accept(meta, c.opts.NodeID, c.opts.Now()); err != nil {
		return nil, err
	}
	return opened, nil
}

// refuse counts a refused bus message (Options.OnRefused) and logs it,
// at most once per refusedLogEvery with the number left unlogged since, so
// that a flood of replays or a node with a wrong clock cannot flood the log.
func (c *Cluster) refuse(err error) {
	reason := RefusedMalformed
	var r *refusal
	if errors.As(err, &r) {
		reason = r.reason
	}
	if c.opts.OnRefused != nil {
		c.opts.OnRefused(reason)
	}
	now := c.opts.Now()
	if !c.refusedLogged.IsZero() && now.Sub(c.refusedLogged) < refusedLogEvery && now.After(c.refusedLogged) {
		c.refusedQuiet++
		return
	}
	c.opts.Logger.Warn("bus message refused", "reason", reason, "err", err, "not_logged_since_last", c.refusedQuiet)
	c.refusedLogged, c.refusedQuiet = now, 0
}

// heartbeat writes node:<id> with the current time.
func (c *Cluster) heartbeat(ctx context.Context) error {
	return c.rdb.Set(ctx, c.key("node", c.opts.NodeID), canonjson.FormatTime(c.opts.Now()), heartbeatTTL).Err()
}

// Run keeps the heartbeat and dispatches this node's bus messages until ctx
// ends. Redis outages are logged and retried; the subscription is restored
// by the client and resubscribed is called each time it is (re)confirmed.
func (c *Cluster) Run(ctx context.Context, handle func(router.BusMessage), resubscribed func()) error {
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			if err := c.heartbeat(ctx); err != nil && ctx.Err() == nil {
				c.opts.Logger.Warn("redis heartbeat failed", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	defer func() { <-hbDone }()
	ps := c.rdb.Subscribe(ctx, c.nodeChannel(c.opts.NodeID))
	defer ps.Close()
	// Receive does not return when ctx ends while it waits for a message;
	// closing the subscription does.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	for {
		msg, err := ps.Receive(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.opts.Logger.Warn("redis bus receive failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		switch v := msg.(type) {
		case *goredis.Subscription:
			if v.Kind == "subscribe" && resubscribed != nil {
				resubscribed()
			}
		case *goredis.Message:
			b := []byte(v.Payload)
			if c.opts.BusKey != nil {
				if b, err = c.open(b); err != nil {
					c.refuse(err)
					continue
				}
			}
			m, err := DecodeMessage(b)
			if err != nil {
				c.refuse(refused(RefusedMalformed, err))
				continue
			}
			handle(m)
		}
	}
}

// Presence (§9.4: presence:<device> holds the entry JSON with SETEX).

func (c *Cluster) Set(ctx context.Context, e router.PresenceEntry) error {
	ttl := e.ExpiresAt.Sub(c.opts.Now())
	if ttl <= 0 {
		return c.rdb.Del(ctx, c.key("presence", e.Device)).Err()
	}
	return c.rdb.Set(ctx, c.key("presence", e.Device), e.Payload, ttl).Err()
}

func (c *Cluster) Get(ctx context.Context, device string, now time.Time) (router.PresenceEntry, bool, error) {
	b, err := c.rdb.Get(ctx, c.key("presence", device)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return router.PresenceEntry{}, false, nil
	}
	if err != nil {
		return router.PresenceEntry{}, false, err
	}
	var v struct {
		State     string `json:"state"`
		ExpiresAt string `json:"expires_at"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return router.PresenceEntry{}, false, err
	}
	exp, err := canonjson.ParseTime(v.ExpiresAt)
	if err != nil || !now.Before(exp) {
		return router.PresenceEntry{}, false, err
	}
	return router.PresenceEntry{Device: device, State: v.State, ExpiresAt: exp, Payload: b}, true, nil
}

package session

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/media"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/router"
	"github.com/commucat/commucat/internal/store"
)

const detailReserved = "channel 0 is reserved"

// maxGroupIDLen bounds a client-chosen group id (§6.6.2).
const maxGroupIDLen = 128

// dispatch runs the per-type rule of §6.6.2 and returns the ACK payload
// (nil when the type gets no ACK) or the problem.
func (c *conn) dispatch(f ccp.Frame, received time.Time) ([]byte, *protoErr) {
	switch f.Type {
	case ccp.Join:
		return c.handleJoin(f)
	case ccp.Leave:
		return c.handleLeave(f)
	case ccp.Msg, ccp.KeyUpdate:
		// f.Payload aliases the reader's buffer, which the next ReadFrame
		// overwrites; the stored entry and the live copies need their own.
		return c.handleDurable(f, bytes.Clone(f.Payload), received)
	case ccp.GroupEvent:
		obj, e := objectPayload(f)
		if e != nil {
			return nil, e
		}
		payload, e := c.attributed(obj)
		if e != nil {
			return nil, e
		}
		return c.handleDurable(f, payload, received)
	case ccp.Typing:
		return c.handleTyping(f, received)
	case ccp.Presence:
		return nil, c.handlePresence(f)
	case ccp.GroupCreate:
		return c.handleGroupCreate(f, received)
	case ccp.GroupInvite:
		return c.handleGroupInvite(f, received)
	case ccp.Ack:
		return nil, c.handleClientAck(f)
	case ccp.Error:
		c.log.Info("client ERROR", "channel", f.Channel, "payload_len", len(f.Payload))
		return nil, nil
	case ccp.Hello, ccp.Auth:
		return nil, perr(ccp.TitleUnexpectedFrame, "handshake already complete")
	case ccp.CallOffer, ccp.CallAnswer, ccp.CallEnd, ccp.CallStats, ccp.VoiceFrame, ccp.VideoFrame:
		return c.handleCall(f, received)
	}
	return nil, perr(ccp.TitleInvalidPayload, "unsupported frame type")
}

// ackPayload builds {"ack":seq} plus extra members (already canonical
// key/value JSON fragments, in key order after "ack").
func ackPayload(seq uint32, extra ...string) []byte {
	b := strconv.AppendUint([]byte(`{"ack":`), uint64(seq), 10)
	for _, e := range extra {
		b = append(b, ',')
		b = append(b, e...)
	}
	return append(b, '}')
}

func member(key, value string) string {
	return string(canonjson.AppendString(append(canonjson.AppendString(nil, key), ':'), value))
}

// objectPayload parses a Control payload that must be a JSON object
// without duplicate members (§1.2, §6.6.2).
func objectPayload(f ccp.Frame) (canonjson.Value, *protoErr) {
	v, err := canonjson.Parse(f.Payload)
	if err != nil {
		return v, perr(ccp.TitleInvalidPayload, "payload is not valid JSON: "+shortErr(err))
	}
	if v.Kind != canonjson.Object {
		return v, perr(ccp.TitleInvalidPayload, "payload must be a JSON object")
	}
	return v, nil
}

func shortErr(err error) string {
	if errors.Is(err, canonjson.ErrDuplicateKey) {
		return "duplicate member name"
	}
	if errors.Is(err, canonjson.ErrTooDeep) {
		return "nesting too deep"
	}
	return "syntax error"
}

// attributed sets `sender` to this device and re-serialises canonically
// (§6.6.1).
func (c *conn) attributed(obj canonjson.Value) ([]byte, *protoErr) {
	obj.Set("sender", canonjson.StringValue(c.device.ID))
	b := obj.Canonical()
	if len(b) > ccp.MaxControlPayload {
		return nil, perr(ccp.TitleControlTooLarge, "payload over 256 KiB after sender attribution")
	}
	return b, nil
}

// localMember resolves a member string: a local device id (x or
// x@<own domain>) or a remote address (federation only).
func (c *conn) localMember(s string) (string, bool, *protoErr) {
	if dev, dom, ok := strings.Cut(s, "@"); ok {
		if !noiseconn.ValidDeviceID(dev) || dom == "" {
			return "", false, perr(ccp.TitleInvalidPayload, "invalid member "+strconv.Quote(s))
		}
		if dom == c.m.cfg.Domain {
			return dev, true, nil
		}
		if !c.m.cfg.Federation {
			return "", false, perr(ccp.TitleInvalidPayload, "federation disabled")
		}
		return s, false, nil
	}
	if !noiseconn.ValidDeviceID(s) {
		return "", false, perr(ccp.TitleInvalidPayload, "invalid member "+strconv.Quote(s))
	}
	return s, true, nil
}

// stringList reads an optional array of strings.
func stringList(obj canonjson.Value, key string) ([]string, *protoErr) {
	v, ok := obj.Get(key)
	if !ok || v.Kind == canonjson.Null {
		return nil, nil
	}
	if v.Kind != canonjson.Array {
		return nil, perr(ccp.TitleInvalidPayload, key+" must be an array of strings")
	}
	out := make([]string, 0, len(v.Arr))
	for _, e := range v.Arr {
		if e.Kind != canonjson.String {
			return nil, perr(ccp.TitleInvalidPayload, key+" must be an array of strings")
		}
		out = append(out, e.Str)
	}
	return out, nil
}

func optString(obj canonjson.Value, key string) (string, bool, *protoErr) {
	v, ok := obj.Get(key)
	if !ok || v.Kind == canonjson.Null {
		return "", false, nil
	}
	if v.Kind != canonjson.String {
		return "", false, perr(ccp.TitleInvalidPayload, key+" must be a string")
	}
	return v.Str, true, nil
}

func optBool(obj canonjson.Value, key string) (bool, *protoErr) {
	v, ok := obj.Get(key)
	if !ok || v.Kind == canonjson.Null {
		return false, nil
	}
	if v.Kind != canonjson.Bool {
		return false, perr(ccp.TitleInvalidPayload, key+" must be a boolean")
	}
	return v.Bool, nil
}

// checkDevices verifies that every local device exists and is active.
func checkDevices(ctx context.Context, q store.Queries, devs []string) *protoErr {
	for _, d := range devs {
		dev, err := q.GetDevice(ctx, d)
		if errors.Is(err, store.ErrNotFound) || (err == nil && dev.Status != store.DeviceActive) {
			return perr(ccp.TitleNotFound, "unknown device "+d)
		}
		if err != nil {
			return errInternal
		}
	}
	return nil
}

// txErr carries a protocol error out of a store transaction.
type txErr struct{ e *protoErr }

func (t txErr) Error() string { return t.e.title + ": " + t.e.detail }

// runTx runs fn in a transaction and maps its outcome.
func (c *conn) runTx(fn func(ctx context.Context, q store.Queries) *protoErr) *protoErr {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.m.d.Store.Tx(ctx, func(q store.Queries) error {
		if e := fn(ctx, q); e != nil {
			return txErr{e}
		}
		return nil
	})
	var te txErr
	if errors.As(err, &te) {
		return te.e
	}
	if err != nil {
		c.log.Error("storage failure", "err", err)
		return errInternal
	}
	return nil
}

// handleJoin implements JOIN (§6.5).
func (c *conn) handleJoin(f ccp.Frame) ([]byte, *protoErr) {
	obj, e := objectPayload(f)
	if e != nil {
		return nil, e
	}
	listed, e := stringList(obj, "members")
	if e != nil {
		return nil, e
	}
	relay, e := optBool(obj, "relay")
	if e != nil {
		return nil, e
	}
	groupID, hasGroup, e := optString(obj, "group_id")
	if e != nil {
		return nil, e
	}
	if f.Channel == 0 {
		return nil, perr(ccp.TitleInvalidPayload, detailReserved)
	}
	var members, local []string
	for _, s := range listed {
		id, isLocal, e := c.localMember(s)
		if e != nil {
			return nil, e
		}
		members = append(members, id)
		if isLocal {
			local = append(local, id)
		}
	}
	now := c.m.d.Now()
	var bound *string
	e = c.runTx(func(ctx context.Context, q store.Queries) *protoErr {
		ch, err := q.GetChannel(ctx, f.Channel)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return errInternal
		}
		if errors.Is(err, store.ErrNotFound) {
			all := append([]string{c.device.ID}, members...)
			var gid *string
			if hasGroup {
				if _, err := q.GetGroup(ctx, groupID); errors.Is(err, store.ErrNotFound) {
					return perr(ccp.TitleNotFound, "unknown group")
				} else if err != nil {
					return errInternal
				}
				if e := checkDevices(ctx, q, local); e != nil {
					return e
				}
				if _, err := q.GetGroupMember(ctx, groupID, c.device.ID); errors.Is(err, store.ErrNotFound) {
					return perr(ccp.TitleForbidden, "not a member of the group")
				} else if err != nil {
					return errInternal
				}
				gm, err := q.GroupMembers(ctx, groupID)
				if err != nil {
					return errInternal
				}
				for _, m := range gm {
					all = append(all, m.DeviceID)
				}
				gid = &groupID
			} else if e := checkDevices(ctx, q, local); e != nil {
				return e
			}
			bound = gid
			if err := q.CreateChannel(ctx, store.Channel{ID: f.Channel, GroupID: gid, Relay: relay, CreatedBy: c.device.ID, CreatedAt: now}, dedupe(all), now); err != nil {
				return errInternal
			}
			return nil
		}
		if e := checkDevices(ctx, q, local); e != nil {
			return e
		}
		if hasGroup {
			if _, err := q.GetGroup(ctx, groupID); errors.Is(err, store.ErrNotFound) {
				return perr(ccp.TitleNotFound, "unknown group")
			} else if err != nil {
				return errInternal
			}
		}
		isMember, err := q.IsChannelMember(ctx, f.Channel, c.device.ID)
		if err != nil {
			return errInternal
		}
		if !isMember && ch.GroupID != nil {
			if _, err := q.GetGroupMember(ctx, *ch.GroupID, c.device.ID); err == nil {
				isMember = true
			} else if !errors.Is(err, store.ErrNotFound) {
				return errInternal
			}
		}
		if !isMember && !c.m.cfg.OpenChannels {
			return perr(ccp.TitleForbidden, "not a member of the channel")
		}
		if hasGroup && (ch.GroupID == nil || *ch.GroupID != groupID) {
			return perr(ccp.TitleConflict, "channel is not bound to that group")
		}
		bound = ch.GroupID
		if err := q.AddChannelMembers(ctx, f.Channel, dedupe(append([]string{c.device.ID}, members...)), now); err != nil {
			return errInternal
		}
		return nil
	})
	if e != nil {
		return nil, e
	}
	if bound != nil {
		return ackPayload(f.Sequence, member("group_id", *bound)), nil
	}
	return ackPayload(f.Sequence), nil
}

func dedupe(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// handleLeave implements LEAVE (§6.5).
func (c *conn) handleLeave(f ccp.Frame) ([]byte, *protoErr) {
	if f.Channel == 0 {
		return nil, perr(ccp.TitleInvalidPayload, detailReserved)
	}
	e := c.runTx(func(ctx context.Context, q store.Queries) *protoErr {
		err := q.RemoveChannelMember(ctx, f.Channel, c.device.ID)
		if errors.Is(err, store.ErrNotFound) {
			return perr(ccp.TitleNotFound, "not a member of the channel")
		}
		if err != nil {
			return errInternal
		}
		left, err := q.ChannelMembers(ctx, f.Channel)
		if err != nil {
			return errInternal
		}
		if len(left) == 0 {
			if err := q.DeleteChannel(ctx, f.Channel); err != nil && !errors.Is(err, store.ErrNotFound) {
				return errInternal
			}
		}
		return nil
	})
	if e != nil {
		return nil, e
	}
	return ackPayload(f.Sequence), nil
}

// recipients checks that the channel exists and the sender is a member
// and returns the other members (§6.5, §6.7).
func (c *conn) recipients(ctx context.Context, q store.Queries, ch uint32) ([]string, *protoErr) {
	if ch == 0 {
		return nil, perr(ccp.TitleInvalidPayload, detailReserved)
	}
	members, err := q.ChannelMembers(ctx, ch)
	if err != nil {
		return nil, errInternal
	}
	if len(members) == 0 {
		return nil, perr(ccp.TitleNotFound, "unknown channel")
	}
	i := slices.Index(members, c.device.ID)
	if i < 0 {
		return nil, perr(ccp.TitleForbidden, "not a member of the channel")
	}
	return slices.Delete(members, i, i+1), nil
}

// handleDurable stores a durable frame for every recipient and
// acknowledges it once stored (§6.7). The write is pipelined: the reader
// goes on with the next frames while the group commit runs, and the ACK
// waits in the reply queue, in order, until the commit is done
// (c.pendingCommit; a failed commit turns it into ERROR Internal Error).
func (c *conn) handleDurable(f ccp.Frame, payload []byte, received time.Time) ([]byte, *protoErr) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if f.Channel == 0 {
		return nil, perr(ccp.TitleInvalidPayload, detailReserved)
	}
	rcpts, e := c.recipients(ctx, c.m.d.Store, f.Channel)
	if e != nil {
		return nil, e
	}
	entries, e := c.durableEntries(f.Type, f.Channel, payload, rcpts, received)
	if e != nil {
		return nil, e
	}
	// The recipients' connections on this node, looked up once for the
	// quota check (who is away) and early delivery (who is here).
	peers := make([]router.Peer, len(entries))
	for i, en := range entries {
		peers[i] = c.m.d.Router.Registry.Lookup(en.Recipient)
	}
	var away []string
	for i, en := range entries {
		if peers[i] == nil {
			away = append(away, en.Recipient)
		}
	}
	if e := c.checkInboxQuota(ctx, c.m.d.Store, away, len(payload)); e != nil {
		return nil, e
	}
	if len(entries) > 0 {
		early, to := c.deliverEarly(entries, peers)
		cm := c.storeAsync(entries, early)
		for i, en := range entries {
			c.noteRoute(en.Recipient, cm, to[i])
		}
		c.pendingCommit = cm
	}
	return ackPayload(f.Sequence), nil
}

// checkInboxQuota refuses a durable frame when the inbox of a recipient
// that is not connected to this node (away) cannot take one more entry of
// size bytes (limits.max_inbox_entries, limits.max_inbox_bytes): nobody can
// fill the server's disk through the inbox of a device that is away.
// Recipients connected here are not checked: they take the frame at once
// (early delivery) and their inbox only holds what they have not yet
// acknowledged.
//
// The bound is soft. The usage a connection read is reused for
// quotaViewTTL, with what this connection added since counted in, so a
// sender streaming to an away device costs one read per second rather than
// one per frame (the usage changes only by others' frames and by the
// recipient's ACKs meanwhile); entries still waiting for their commit are
// not counted either.
//
// q reads the usage: the store, or the transaction the check runs in.
func (c *conn) checkInboxQuota(ctx context.Context, q store.Queries, away []string, size int) *protoErr {
	cfg := &c.m.cfg
	if cfg.MaxInboxEntries <= 0 && cfg.MaxInboxBytes <= 0 {
		return nil
	}
	now := c.m.d.Now()
	var stale []string
	if len(away) == 0 {
		return nil
	}
	if c.quota == nil || len(c.quota)+len(away) > maxQuotaViews {
		c.quota = make(map[string]quotaView) // forget the old views
	}
	for _, r := range away {
		if v, ok := c.quota[r]; !ok || now.Sub(v.at) >= quotaViewTTL || v.at.After(now) {
			stale = append(stale, r)
		}
	}
	if len(stale) > 0 {
		usage, err := q.InboxUsage(ctx, stale)
		if err != nil {
			c.log.Error("reading inbox usage", "err", err)
			return errInternal
		}
		for _, r := range stale {
			c.quota[r] = quotaView{u: usage[r], at: now}
		}
	}
	for _, r := range away {
		u := c.quota[r].u
		if (cfg.MaxInboxEntries > 0 && u.Entries >= cfg.MaxInboxEntries) ||
			(cfg.MaxInboxBytes > 0 && u.Bytes+int64(size) > cfg.MaxInboxBytes) {
			c.m.d.Metrics.RelayInboxFull.Inc()
			return perr(ccp.TitleTooManyRequests, "the inbox of device "+r+" is full; try again later")
		}
	}
	for _, r := range away {
		v := c.quota[r]
		v.u.Entries++
		v.u.Bytes += int64(size)
		c.quota[r] = v
	}
	return nil
}

// checkGroupQuota is checkInboxQuota for the GROUP_CREATE and GROUP_INVITE
// frame to rcpts (remote members aside). It runs inside the group's
// transaction q, so a refusal leaves the group as it was.
func (c *conn) checkGroupQuota(ctx context.Context, q store.Queries, rcpts []string, size int) *protoErr {
	var away []string
	for _, r := range rcpts {
		if !strings.Contains(r, "@") && c.m.d.Router.Registry.Lookup(r) == nil {
			away = append(away, r)
		}
	}
	return c.checkInboxQuota(ctx, q, away, size)
}

// quotaView is a connection's view of an away recipient's inbox usage:
// read at at, plus what this connection added since.
type quotaView struct {
	u  store.InboxUsage
	at time.Time
}

const (
	// quotaViewTTL is how long a quotaView is reused.
	quotaViewTTL = time.Second
	// maxQuotaViews bounds the views one connection keeps (when a frame
	// would exceed it, all are read afresh).
	maxQuotaViews = 1024
)

// Early delivery (§6.7). A durable frame is handed to a recipient that is
// connected to this node at once, while its inbox entry waits for the
// group commit, instead of after the commit. The recipient's ACK usually
// arrives before the commit takes the entry, which is then never written
// (router.Early): the frame costs no inbox insert and delete at all, and
// delivery latency no longer includes the commit. The sender's ACK still
// waits for the commit, and now means "stored or acknowledged by every
// recipient" (a crash before the commit can at worst make the sender send
// again a frame the recipient already has: at-least-once, which §6.7
// allows).
//
// Order (§6.7: frames of one sender arrive in the order accepted) holds
// because an entry is delivered early only when
//   - the recipient's connection has finished its redelivery, is not
//     catching up and has queue room (outbound.pushEarly), so everything
//     committed before is already in its queue, ahead of this entry; and
//   - every earlier frame of this connection to the same recipient whose
//     commit is not done was delivered early to that same connection
//     (c.routes). A frame on its way through the commit (the normal
//     path) is in the recipient's queue, or the recipient is catching up
//     and refuses, only once its commit is done; and a frame delivered
//     early to an older connection of the recipient reaches the new one
//     only through its commit.
// Only ack-mode recipients take early deliveries.

// deliverEarly hands the entries to their recipients' connections on this
// node (peers[i], nil when none) where it can. It returns the early state
// of each entry so delivered (nil when none was) and the id of the
// connection each went to (0: none).
func (c *conn) deliverEarly(entries []store.InboxEntry, peers []router.Peer) (early []*router.Early, to []uint64) {
	to = make([]uint64, len(entries))
	for i, e := range entries {
		p, ok := peers[i].(*conn)
		if !ok || !p.ackMode || !c.mayDeliverEarly(e.Recipient, p) {
			continue
		}
		h := &router.Early{To: p}
		if !p.out.pushEarly(e, h) {
			continue
		}
		if early == nil {
			early = make([]*router.Early, len(entries))
		}
		early[i], to[i] = h, p.id
	}
	return early, to
}

// route is how the last frame of this connection to one recipient goes:
// through the commit cm, delivered early to the connection numbered to,
// or (to 0) handed over after cm. A number, not the connection: a route
// must not keep a closed connection and its queues in memory.
type route struct {
	cm *commit
	to uint64
}

// mayDeliverEarly reports whether a frame to recipient may be delivered
// early to its connection p: every earlier frame of this connection to
// recipient whose commit is not done went early to p too (the reader
// goroutine only).
func (c *conn) mayDeliverEarly(recipient string, p *conn) bool {
	r, ok := c.routes[recipient]
	if !ok {
		return true
	}
	if r.cm.ready() {
		delete(c.routes, recipient)
		return true
	}
	return r.to == p.id
}

// noteRoute records how a frame of this connection goes to recipient (the
// reader goroutine only). Commits finish in order, so the last one per
// recipient is enough.
func (c *conn) noteRoute(recipient string, cm *commit, to uint64) {
	if c.routes == nil {
		c.routes = make(map[string]route)
		c.prunePast = minRoutePrune
	}
	if len(c.routes) >= c.prunePast {
		for k, r := range c.routes {
			if r.cm.ready() {
				delete(c.routes, k)
			}
		}
		// Prune again only after it has doubled: with many recipients
		// of unfinished commits, pruning at every frame would be
		// quadratic.
		c.prunePast = max(minRoutePrune, 2*len(c.routes))
	}
	c.routes[recipient] = route{cm: cm, to: to}
}

// minRoutePrune is the size of c.routes from which finished commits are
// dropped from it.
const minRoutePrune = 256

// pendingWrite is a durable frame's entries waiting for the commit loop.
type pendingWrite struct {
	entries []store.InboxEntry
	early   []*router.Early // nil, or one per entry (deliverEarly)
	cm      *commit
}

// storeAsync queues entries for this connection's commit loop and returns
// the commit a reply can wait for. The loop writes the queued frames in
// arrival order, all that queued up in one Writer.Store (so the frames of
// one sender keep their order in every recipient's inbox), and Serve
// waits for it before the connection's cleanup. The queue is bounded by
// the reply backlog: every queued frame holds a reply slot.
func (c *conn) storeAsync(entries []store.InboxEntry, early []*router.Early) *commit {
	cm := newCommit()
	c.durMu.Lock()
	c.durQ = append(c.durQ, pendingWrite{entries: entries, early: early, cm: cm})
	start := !c.durRunning
	c.durRunning = true
	c.durMu.Unlock()
	if start {
		c.commits.Add(1)
		go c.commitLoop()
	}
	return cm
}

// commitLoop writes the queued durable frames until the queue is empty.
func (c *conn) commitLoop() {
	defer c.commits.Done()
	m := c.m
	for {
		c.durMu.Lock()
		q := c.durQ
		c.durQ = nil
		if len(q) == 0 {
			c.durRunning = false
			c.durMu.Unlock()
			return
		}
		c.durMu.Unlock()
		// A fresh slice each time: the writer may keep it (dispatch).
		var all []store.InboxEntry
		var early []*router.Early
		for _, p := range q {
			if p.early != nil && early == nil {
				early = make([]*router.Early, len(all), cap(all))
			}
			all = append(all, p.entries...)
			if early != nil {
				if p.early != nil {
					early = append(early, p.early...)
				} else {
					early = append(early, make([]*router.Early, len(p.entries))...)
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := m.d.Now()
		err := m.d.Writer.StoreEarly(ctx, all, early)
		cancel()
		if err != nil {
			c.log.Error("storing durable frames", "err", err, "frames", len(q))
		} else {
			m.d.Metrics.RelayStoreDuration.Observe(m.d.Now().Sub(start).Seconds())
		}
		for _, p := range q {
			p.cm.finish(err)
		}
		c.out.signal()
	}
}

// storeDurable writes one inbox entry per local recipient and waits for
// the commit. It goes through the connection's commit loop, behind the
// pipelined frames before it, so recipients see this connection's durable
// frames in the order they were sent.
func (c *conn) storeDurable(ctx context.Context, t ccp.FrameType, ch uint32, payload []byte, rcpts []string, received time.Time) *protoErr {
	entries, e := c.durableEntries(t, ch, payload, rcpts, received)
	if e != nil || len(entries) == 0 {
		return e
	}
	cm := c.storeAsync(entries, nil)
	for _, e := range entries {
		c.noteRoute(e.Recipient, cm, 0)
	}
	select {
	case <-cm.done:
	case <-ctx.Done():
		return errInternal
	}
	if cm.err != nil {
		return errInternal
	}
	return nil
}

// durableEntries builds one inbox entry per local recipient.
func (c *conn) durableEntries(t ccp.FrameType, ch uint32, payload []byte, rcpts []string, received time.Time) ([]store.InboxEntry, *protoErr) {
	m := c.m
	entries := make([]store.InboxEntry, 0, len(rcpts))
	for _, r := range rcpts {
		if strings.Contains(r, "@") {
			// Remote member: the federation outbox is not implemented in
			// this edition (§11.3); such members exist only with federation
			// enabled.
			continue
		}
		env, err := randomID(m.d.Rand)
		if err != nil {
			return nil, errInternal
		}
		entries = append(entries, store.InboxEntry{
			EnvelopeID: env, Recipient: r, Sender: c.device.ID, Channel: ch, FrameType: uint8(t),
			Payload: payload, CreatedAt: received, ExpiresAt: received.Add(m.cfg.RelayTTL),
		})
	}
	return entries, nil
}

// handleTyping implements TYPING: live fan-out with sender attribution.
func (c *conn) handleTyping(f ccp.Frame, received time.Time) ([]byte, *protoErr) {
	obj, e := objectPayload(f)
	if e != nil {
		return nil, e
	}
	payload, e := c.attributed(obj)
	if e != nil {
		return nil, e
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rcpts, e := c.recipients(ctx, c.m.d.Store, f.Channel)
	if e != nil {
		return nil, e
	}
	c.fanOutLive(f.Type, f.Channel, payload, rcpts)
	return ackPayload(f.Sequence), nil
}

// fanOutLive delivers a live frame to the online recipients.
func (c *conn) fanOutLive(t ccp.FrameType, ch uint32, payload []byte, rcpts []string) {
	for _, r := range rcpts {
		c.m.d.Router.DeliverLive(r, t, ch, payload, false)
	}
}

// handlePresence implements PRESENCE (§6.8).
func (c *conn) handlePresence(f ccp.Frame) *protoErr {
	obj, e := objectPayload(f)
	if e != nil {
		return e
	}
	state, has, e := optString(obj, "state")
	if e != nil {
		return e
	}
	if !has {
		state = stateOnline
	}
	if len(state) < 1 || len(state) > 32 {
		return perr(ccp.TitleInvalidPayload, "state must be 1-32 bytes")
	}
	if c.setPresence(state) {
		c.pushPresence(state)
	}
	return nil
}

// handleClientAck implements client ACKs (§6.3).
func (c *conn) handleClientAck(f ccp.Frame) *protoErr {
	v, err := canonjson.Parse(f.Payload)
	if err != nil || v.Kind != canonjson.Object {
		return perr(ccp.TitleInvalidPayload, "ACK payload must be {\"ack\":n} or {\"keepalive\":t}")
	}
	if n, ok := v.Get("ack"); ok && n.Kind == canonjson.Number {
		seq, err := strconv.ParseUint(n.Num, 10, 32)
		if err != nil {
			return perr(ccp.TitleInvalidPayload, "ack must be a server sequence")
		}
		if c.ackMode {
			if qid, ok := c.out.acked(uint32(seq)); ok {
				c.m.d.Writer.Delete(c.device.ID, []int64{qid})
			}
		}
		return nil
	}
	if k, ok := v.Get("keepalive"); ok && k.Kind == canonjson.Number {
		return nil
	}
	return perr(ccp.TitleInvalidPayload, "ACK payload must be {\"ack\":n} or {\"keepalive\":t}")
}

// handleCall implements call signalling and media (§7.2, §7.5).
func (c *conn) handleCall(f ccp.Frame, _ time.Time) ([]byte, *protoErr) {
	calls := c.m.d.Calls
	if f.Type == ccp.VoiceFrame || f.Type == ccp.VideoFrame {
		if f.Channel == 0 {
			return nil, perr(ccp.TitleInvalidPayload, detailReserved)
		}
		if bus := c.m.d.CallBus; bus != nil && bus.forwardMedia(c, f) {
			return nil, nil // the owner node replies only to reject it (§9.4)
		}
		s := media.Sender{
			Device:   c.device.ID,
			RawAudio: noiseconn.HasCapability(c.accepted, noiseconn.CapRawAudio),
			RawVideo: noiseconn.HasCapability(c.accepted, noiseconn.CapRawVideo),
		}
		if e := calls.Media(s, f.Type, f.Channel, bytes.Clone(f.Payload)); e != nil {
			return nil, perr(e.Title, e.Detail)
		}
		return nil, nil
	}
	obj, e := objectPayload(f)
	if e != nil {
		return nil, e
	}
	if f.Channel == 0 {
		return nil, perr(ccp.TitleInvalidPayload, detailReserved)
	}
	payload, e := c.attributed(obj)
	if e != nil {
		return nil, e
	}
	bus := c.m.d.CallBus
	if bus != nil && f.Type != ccp.CallOffer {
		// §7.2 node pinning: a call held by another node is handled there.
		id, node, e := bus.remoteCall(obj)
		if e != nil {
			return nil, e
		}
		if node != "" {
			return bus.forwardCall(c, f, id, node)
		}
	}
	var ack []byte
	var me *media.Error
	switch f.Type {
	case ccp.CallOffer:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		members, err := c.m.d.Store.ChannelMembers(ctx, f.Channel)
		cancel()
		if err != nil {
			return nil, errInternal
		}
		claimed := ""
		if bus != nil {
			var e *protoErr
			if claimed, e = bus.claimOffer(c.device.ID, f.Channel, f.Payload, members); e != nil {
				return nil, e
			}
		}
		ack, me = calls.Offer(c.device.ID, f.Channel, f.Sequence, f.Payload, payload, members)
		if me != nil && claimed != "" {
			c.m.d.Router.ReleaseCall(claimed, f.Channel)
		}
	case ccp.CallAnswer:
		ack, me = calls.Answer(c.device.ID, f.Channel, f.Sequence, f.Payload, payload)
	case ccp.CallEnd:
		ack, me = calls.End(c.device.ID, f.Channel, f.Sequence, f.Payload, payload)
	case ccp.CallStats:
		ack, me = calls.Stats(c.device.ID, f.Channel, f.Sequence, f.Payload, payload)
	}
	if me != nil {
		return nil, perr(me.Title, me.Detail)
	}
	return ack, nil
}

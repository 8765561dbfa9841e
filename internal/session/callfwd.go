package session

// Call pinning across nodes (§7.2 node pinning, §9.4).
//
// A call lives on the node that accepted its CALL_OFFER (the owner). That
// node pins it in Redis (call:<call_id>, callchan:<channel_id>). A node
// that receives CALL_ANSWER, CALL_END or CALL_STATS for a call it does not
// hold looks the owner up through call:<call_id>, a media frame through
// callchan:<channel_id>, and publishes a `call` bus message to the owner
// (reply_to = this node, a fresh request_id). For CALL_* frames the reader
// waits up to 5 s for the `call_reply` and answers with its ACK or ERROR
// (Internal Error without a reply); media frames are fire and forget and
// the owner replies only to reject one, which is then written to the
// device as an ERROR (at most one per second per connection, §7.5).
//
// The owner runs forwarded frames through its media.Manager as if they had
// been received from `device`. Fan-out from the owner to participants on
// other nodes goes through router.DeliverLive (bus `deliver`).
//
// When a device disconnects, its node sends every other node that owns a
// call on one of the device's channels a synthetic `call` message with the
// extension member "disconnect": true (see internal/store/redis calls.go);
// the owner then ends the device's calls as for a local disconnect
// (CALL_END reason failure, cause disconnect, §6.10).

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/media"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/router"
	"github.com/commucat/commucat/internal/store"
)

// callReplyTimeout bounds the wait for the owner's call_reply (§9.4).
const callReplyTimeout = 5 * time.Second

// mediaRequestPrefix marks the request ids of forwarded media frames: a
// call_reply carrying one is a rejection to write to the device; any other
// reply nobody waits for (any more) is dropped.
const mediaRequestPrefix = "m"

// CallBusConfig configures a CallBus.
type CallBusConfig struct {
	Calls  *media.Manager
	Router *router.Router // with a Cluster
	Store  store.Store
	Logger *slog.Logger
}

// CallBus forwards call frames to the owner node of their call and
// processes frames forwarded to this node (§9.4). It exists only with a
// Cluster; a nil *CallBus means a single node.
type CallBus struct {
	cfg CallBusConfig

	mu      sync.Mutex
	pending map[string]chan router.BusMessage
	// lastMediaErr throttles the media ERRORs replied by owner nodes, per
	// connection (§7.5: at most one per second).
	lastMediaErr map[*conn]time.Time
}

// NewCallBus returns a CallBus; install its Handle as the Router's
// CallBus and its Disconnected as the media Manager's OnDisconnect.
func NewCallBus(cfg CallBusConfig) *CallBus {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &CallBus{cfg: cfg, pending: map[string]chan router.BusMessage{}, lastMediaErr: map[*conn]time.Time{}}
}

// OwnedCalls lists the calls of a media Manager for the refresh of their
// pins (router.RefreshCallsEvery).
func OwnedCalls(m *media.Manager) []router.CallRef {
	calls := m.Calls()
	out := make([]router.CallRef, len(calls))
	for i, c := range calls {
		out[i] = router.CallRef{ID: c.ID, Channel: c.Channel}
	}
	return out
}

func newRequestID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func (b *CallBus) nodeID() string { return b.cfg.Router.Cluster.NodeID() }

func (b *CallBus) publish(node string, m router.BusMessage) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return b.cfg.Router.Cluster.Publish(ctx, node, m)
}

// --- the sending side -----------------------------------------------------

// claimOffer pins a new call to this node before the Manager creates it
// (§7.2: a failed SET NX of callchan is Conflict). It claims only when the
// Manager's own checks will pass, so that their problems keep their order;
// claimed is the call id whose keys were set ("" when none; they are to be
// released if Offer fails after all).
func (b *CallBus) claimOffer(sender string, ch uint32, raw []byte, members []string) (claimed string, e *protoErr) {
	o, _, err := media.ParseOffer(raw)
	if err != nil || len(members) == 0 || !slices.Contains(members, sender) {
		return "", nil
	}
	id := *o.CallID
	if b.cfg.Calls.HasCall(id) || b.cfg.Calls.Active(ch) {
		return "", nil // the Manager answers Conflict
	}
	res, err := b.cfg.Router.ClaimCall(id, ch)
	if err != nil {
		b.cfg.Logger.Warn("claiming call", "call_id", id, "err", err)
		return "", perr(ccp.TitleInternalError, "cluster state unavailable")
	}
	switch res {
	case router.CallIDTaken:
		return "", perr(ccp.TitleConflict, "call_id already in use")
	case router.ChannelTaken:
		return "", perr(ccp.TitleConflict, "the channel already has an active call")
	}
	return id, nil
}

// remoteCall returns the other node owning the call named by a CALL_*
// payload, or "" when it is handled here.
func (b *CallBus) remoteCall(obj canonjson.Value) (string, string, *protoErr) {
	v, ok := obj.Get("call_id")
	if !ok || v.Kind != canonjson.String || v.Str == "" || b.cfg.Calls.HasCall(v.Str) {
		return "", "", nil
	}
	node, err := b.cfg.Router.RemoteCallOwner(v.Str)
	if err != nil {
		b.cfg.Logger.Warn("looking up call owner", "call_id", v.Str, "err", err)
		return "", "", perr(ccp.TitleInternalError, "cluster state unavailable")
	}
	return v.Str, node, nil
}

// forwardCall sends a CALL_* frame to the owner and waits for its reply.
func (b *CallBus) forwardCall(c *conn, f ccp.Frame, callID, node string) ([]byte, *protoErr) {
	reqID := newRequestID("c")
	wait := make(chan router.BusMessage, 1)
	b.mu.Lock()
	b.pending[reqID] = wait
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.pending, reqID)
		b.mu.Unlock()
	}()
	id := callID
	err := b.publish(node, router.BusMessage{
		Kind: router.KindCall, CallID: &id, Device: c.device.ID, FrameType: uint8(f.Type),
		Channel: f.Channel, Sequence: f.Sequence, Payload: bytes.Clone(f.Payload),
		ReplyTo: b.nodeID(), RequestID: reqID,
	})
	if err != nil {
		c.log.Warn("forwarding call frame", "node", node, "err", err)
		return nil, perr(ccp.TitleInternalError, "forwarding to the call's node failed")
	}
	t := time.NewTimer(callReplyTimeout)
	defer t.Stop()
	select {
	case r := <-wait:
		switch ccp.FrameType(r.FrameType) {
		case ccp.Ack:
			return r.Payload, nil
		case ccp.Error:
			if p, err := ccp.ParseProblem(r.Payload); err == nil {
				return nil, perr(p.Title, p.Detail)
			}
		}
		return nil, perr(ccp.TitleInternalError, "bad reply from the call's node")
	case <-t.C:
		return nil, perr(ccp.TitleInternalError, "no reply from the call's node")
	case <-c.ctx.Done():
		return nil, perr(ccp.TitleInternalError, "connection closing")
	}
}

// forwardMedia sends a media frame to the owner of the channel's call when
// that is another node; false when it is to be handled here.
func (b *CallBus) forwardMedia(c *conn, f ccp.Frame) bool {
	if b.cfg.Calls.Active(f.Channel) {
		return false
	}
	_, node, err := b.cfg.Router.RemoteChannelOwner(f.Channel)
	if err != nil {
		c.log.Warn("looking up channel call", "channel", f.Channel, "err", err)
		return false
	}
	if node == "" {
		return false
	}
	var caps []string
	for _, cp := range []string{noiseconn.CapRawAudio, noiseconn.CapRawVideo} {
		if noiseconn.HasCapability(c.accepted, cp) {
			caps = append(caps, cp)
		}
	}
	// §9.4: call_id is null for media frames.
	req := newRequestID(mediaRequestPrefix)
	c.noteForwardedMedia(f, req)
	err = b.publish(node, router.BusMessage{
		Kind: router.KindCall, Device: c.device.ID, FrameType: uint8(f.Type), Channel: f.Channel,
		Sequence: f.Sequence, Payload: bytes.Clone(f.Payload), ReplyTo: b.nodeID(),
		RequestID: req, Capabilities: caps,
	})
	if err != nil {
		c.log.Warn("forwarding media frame", "node", node, "err", err)
	}
	return true
}

// Disconnected tells the owners of the remote calls on the device's
// channels that it disconnected from this node (media Manager
// OnDisconnect). Safe on a nil CallBus.
func (b *CallBus) Disconnected(device string) {
	if b == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	chans, err := b.cfg.Store.ChannelsOf(ctx, device)
	if err != nil {
		b.cfg.Logger.Warn("listing channels at disconnect", "device", device, "err", err)
		return
	}
	for _, ch := range chans {
		if ctx.Err() != nil {
			return
		}
		id, node, err := b.cfg.Router.RemoteChannelOwner(ch)
		if err != nil {
			b.cfg.Logger.Warn("looking up channel call", "channel", ch, "err", err)
			continue
		}
		if node == "" {
			continue
		}
		callID := id
		if err := b.publish(node, router.BusMessage{
			Kind: router.KindCall, CallID: &callID, Device: device, FrameType: uint8(ccp.CallEnd),
			Channel: ch, ReplyTo: b.nodeID(), Disconnect: true,
		}); err != nil {
			b.cfg.Logger.Warn("forwarding disconnect", "node", node, "err", err)
		}
	}
}

// --- bus messages -----------------------------------------------------------

// Handle processes a call or call_reply bus message (router.Router.CallBus).
func (b *CallBus) Handle(m router.BusMessage) {
	switch m.Kind {
	case router.KindCall:
		b.handleForwarded(m)
	case router.KindCallReply:
		b.handleReply(m)
	}
}

func (b *CallBus) handleReply(m router.BusMessage) {
	b.mu.Lock()
	wait := b.pending[m.RequestID]
	b.mu.Unlock()
	if wait != nil {
		select {
		case wait <- m:
		default:
		}
		return
	}
	if len(m.RequestID) < 1 || m.RequestID[:1] != mediaRequestPrefix || ccp.FrameType(m.FrameType) != ccp.Error {
		return // late reply to a CALL_* frame
	}
	c, ok := b.cfg.Router.Registry.Lookup(m.Device).(*conn)
	if !ok {
		return
	}
	// §7.5: a rejected media frame does not advance L, whether or not its
	// ERROR is sent; queued before the ERROR, so that a retry the ERROR
	// prompts finds L rolled back.
	c.queueMediaRollback(m.RequestID)
	now := time.Now()
	b.mu.Lock()
	if now.Sub(b.lastMediaErr[c]) < time.Second {
		b.mu.Unlock()
		return
	}
	if len(b.lastMediaErr) > 64 {
		for k, t := range b.lastMediaErr {
			if now.Sub(t) >= time.Second {
				delete(b.lastMediaErr, k)
			}
		}
	}
	b.lastMediaErr[c] = now
	b.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
		defer cancel()
		c.out.pushControl(ctx, outFrame{t: ccp.Error, ch: m.Channel, payload: m.Payload})
	}()
}

// handleForwarded runs a frame forwarded by another node as if it had been
// received here from m.Device, and replies.
func (b *CallBus) handleForwarded(m router.BusMessage) {
	calls := b.cfg.Calls
	t := ccp.FrameType(m.FrameType)
	if m.Disconnect {
		calls.DisconnectLocal(m.Device)
		return
	}
	var ack []byte
	var me *media.Error
	switch t {
	case ccp.VoiceFrame, ccp.VideoFrame:
		s := media.Sender{
			Device:   m.Device,
			RawAudio: slices.Contains(m.Capabilities, noiseconn.CapRawAudio),
			RawVideo: slices.Contains(m.Capabilities, noiseconn.CapRawVideo),
		}
		if me = calls.Media(s, t, m.Channel, m.Payload); me == nil {
			return // accepted media gets no reply
		}
	case ccp.CallAnswer, ccp.CallEnd, ccp.CallStats:
		payload, e := attributedTo(m.Payload, m.Device)
		if e != nil {
			me = &media.Error{Title: e.title, Detail: e.detail}
			break
		}
		switch t {
		case ccp.CallAnswer:
			ack, me = calls.Answer(m.Device, m.Channel, m.Sequence, m.Payload, payload)
		case ccp.CallEnd:
			ack, me = calls.End(m.Device, m.Channel, m.Sequence, m.Payload, payload)
		default:
			ack, me = calls.Stats(m.Device, m.Channel, m.Sequence, m.Payload, payload)
		}
	default:
		me = &media.Error{Title: ccp.TitleInvalidPayload, Detail: "frame type is not forwarded"}
	}
	if m.ReplyTo == "" || m.RequestID == "" {
		return
	}
	reply := router.BusMessage{Kind: router.KindCallReply, RequestID: m.RequestID, Device: m.Device, Channel: m.Channel}
	if me != nil {
		p := ccp.NewProblem(me.Title, me.Detail)
		p.SetFrameType(t)
		p.SetSequence(m.Sequence)
		reply.FrameType, reply.Payload = uint8(ccp.Error), p.JSON()
	} else {
		reply.FrameType, reply.Payload = uint8(ccp.Ack), ack
	}
	if err := b.publish(m.ReplyTo, reply); err != nil {
		b.cfg.Logger.Warn("publishing call_reply", "node", m.ReplyTo, "err", err)
	}
}

// attributedTo is conn.attributed for a forwarded frame (§6.6.1).
func attributedTo(raw []byte, device string) ([]byte, *protoErr) {
	obj, e := objectPayload(ccp.Frame{Payload: raw})
	if e != nil {
		return nil, e
	}
	obj.Set("sender", canonjson.StringValue(device))
	out := obj.Canonical()
	if len(out) > ccp.MaxControlPayload {
		return nil, perr(ccp.TitleControlTooLarge, "payload over 256 KiB after sender attribution")
	}
	return out, nil
}

package router

import (
	"context"
	"log/slog"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/store"
)

// Bus message kinds (§9.4).
const (
	KindDeliver   = "deliver"
	KindKick      = "kick"
	KindCall      = "call"
	KindCallReply = "call_reply"
)

// BusMessage is a node-to-node message of §9.4.
type BusMessage struct {
	Kind       string
	Device     string
	FrameType  uint8
	Channel    uint32
	Sequence   uint32
	Payload    []byte
	EnvelopeID *string
	// QueueID (deliver with an envelope): the inbox entry's queue id, an
	// extension member "queue_id" of the §9.4 message (receivers ignore
	// unknown members); 0 when absent.
	QueueID   int64
	Reason    string // kick: replaced or revoked
	Session   string // kick: the new connection's session ("" for revoked)
	CallID    *string
	ReplyTo   string
	RequestID string
	// Capabilities (call, media frames): the sender's accepted media.*
	// capabilities, which the owner needs for raw media (§7.5 step 4); an
	// extension member "capabilities" (array of strings) of the §9.4
	// message, omitted when empty.
	Capabilities []string
	// Disconnect (call): the device disconnected from the sending node; the
	// owner ends the device's calls as for a local disconnect (§6.10). An
	// extension member "disconnect": true; such a message carries
	// frame_type CALL_END, an empty request_id and expects no reply.
	Disconnect bool
}

// Cluster is the shared state of several nodes (Redis, §9.4). A nil
// Cluster means a single node.
type Cluster interface {
	NodeID() string
	// ClaimRoute points route:<device> at this node and returns the live
	// node it named before ("" when none or this node).
	ClaimRoute(ctx context.Context, device string) (prev string, err error)
	// RefreshRoutes renews the lifetime of this node's routes.
	RefreshRoutes(ctx context.Context, devices []string) error
	// ReleaseRoute deletes route:<device> if it still names this node.
	ReleaseRoute(ctx context.Context, device string) error
	// RouteOf returns the live node holding the device ("" when offline).
	RouteOf(ctx context.Context, device string) (string, error)
	// Publish sends a message to a node.
	Publish(ctx context.Context, node string, m BusMessage) error
	// Run keeps the node heartbeat and delivers this node's messages to
	// handle until ctx ends. resubscribed is called whenever the
	// subscription was (re)established, so that deliveries missed during
	// an outage can be caught up.
	Run(ctx context.Context, handle func(BusMessage), resubscribed func()) error
	// Ping checks the connection (readiness).
	Ping(ctx context.Context) error
	// CallPins pins calls to their owner node (§9.4, calls.go).
	CallPins
}

// Router delivers frames to devices on this node or, through the Cluster,
// on other nodes.
type Router struct {
	Registry *Registry
	Cluster  Cluster // nil: single node
	Log      *slog.Logger
	// CallBus, if set, handles the call and call_reply bus messages
	// (§9.4 call pinning).
	CallBus func(BusMessage)
}

// busTimeout bounds one Redis operation on a delivery path.
const busTimeout = 2 * time.Second

// Local returns the device's connection on this node, or nil.
func (r *Router) Local(device string) Peer { return r.Registry.Lookup(device) }

// DeliverLive sends a live frame to the device wherever it is connected;
// it is dropped when the device is offline. wantPresence restricts it to
// connections that accepted presence.push.
func (r *Router) DeliverLive(device string, t ccp.FrameType, ch uint32, payload []byte, wantPresence bool) {
	if p := r.Registry.Lookup(device); p != nil {
		if !wantPresence || p.WantsPresence() {
			p.DeliverLive(t, ch, payload)
		}
		return
	}
	if r.Cluster == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	node, err := r.Cluster.RouteOf(ctx, device)
	if err != nil || node == "" || node == r.Cluster.NodeID() {
		return
	}
	if err := r.Cluster.Publish(ctx, node, BusMessage{Kind: KindDeliver, Device: device, FrameType: uint8(t), Channel: ch, Payload: payload}); err != nil {
		r.Log.Warn("bus publish", "err", err)
	}
}

// NotifyInbox tells the nodes of remote recipients that committed inbox
// entries wait for them (the Writer's Dispatch).
func (r *Router) NotifyInbox(entries []store.InboxEntry) {
	if r.Cluster == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	seen := map[string]string{}
	for _, e := range entries {
		node, ok := seen[e.Recipient]
		if !ok {
			n, err := r.Cluster.RouteOf(ctx, e.Recipient)
			if err != nil {
				r.Log.Warn("route lookup", "err", err)
			}
			node, seen[e.Recipient] = n, n
		}
		if node == "" || node == r.Cluster.NodeID() {
			continue
		}
		env := e.EnvelopeID
		if err := r.Cluster.Publish(ctx, node, BusMessage{Kind: KindDeliver, Device: e.Recipient, FrameType: e.FrameType, Channel: e.Channel, Payload: e.Payload, EnvelopeID: &env, QueueID: e.QueueID}); err != nil {
			r.Log.Warn("bus publish", "err", err)
		}
	}
}

// Claim records this node as the device's node and, when another node
// held it, asks that node to close its connection (§6.9, §9.4).
func (r *Router) Claim(device, session string) {
	if r.Cluster == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	prev, err := r.Cluster.ClaimRoute(ctx, device)
	if err != nil {
		r.Log.Warn("claiming route", "device", device, "err", err)
		return
	}
	if prev != "" && prev != r.Cluster.NodeID() {
		if err := r.Cluster.Publish(ctx, prev, BusMessage{Kind: KindKick, Device: device, Reason: "replaced", Session: session}); err != nil {
			r.Log.Warn("bus publish", "err", err)
		}
	}
}

// Release drops the device's route if it still names this node.
func (r *Router) Release(device string) {
	if r.Cluster == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	if err := r.Cluster.ReleaseRoute(ctx, device); err != nil {
		r.Log.Warn("releasing route", "device", device, "err", err)
	}
}

// Revoke closes the device's connection on whichever node holds it.
func (r *Router) Revoke(device string) {
	if p := r.Registry.Lookup(device); p != nil {
		p.Kick(KickRevoked)
	}
	if r.Cluster == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	node, err := r.Cluster.RouteOf(ctx, device)
	if err == nil && node != "" && node != r.Cluster.NodeID() {
		_ = r.Cluster.Publish(ctx, node, BusMessage{Kind: KindKick, Device: device, Reason: "revoked"})
	}
}

// Handle applies a bus message addressed to this node.
func (r *Router) Handle(m BusMessage) {
	if m.Kind == KindCall || m.Kind == KindCallReply {
		if r.CallBus != nil {
			r.CallBus(m)
		}
		return
	}
	p := r.Registry.Lookup(m.Device)
	if p == nil {
		return
	}
	switch m.Kind {
	case KindDeliver:
		if m.EnvelopeID != nil {
			// Re-read from just before the entry: it may have committed
			// after entries with higher queue ids were delivered here.
			p.RequestCatchup(max(m.QueueID-1, 0))
			return
		}
		// Presence pushes go only to connections that accepted them (§6.8).
		if ccp.FrameType(m.FrameType) == ccp.Presence && !p.WantsPresence() {
			return
		}
		p.DeliverLive(ccp.FrameType(m.FrameType), m.Channel, m.Payload)
	case KindKick:
		if m.Session != "" && p.SessionID() == m.Session {
			return
		}
		if m.Reason == "revoked" {
			p.Kick(KickRevoked)
		} else {
			p.Kick(KickReplaced)
		}
	}
}

// CatchUpAll makes every local connection re-read its inbox (after a bus
// outage, notifications may have been lost).
func (r *Router) CatchUpAll() {
	for _, p := range r.Registry.All() {
		p.RequestCatchup(0)
	}
}

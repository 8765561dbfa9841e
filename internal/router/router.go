// Package router is the node-local switchboard: which device is connected
// to which connection (the registry), presence entries, and the durable
// inbox writer that group-commits inbox rows and hands committed entries to
// the recipients' connections.
//
// Delivery flow of a durable frame (§6.7):
//
//	sender session ──Store(entries)──► Writer goroutine ── one Tx for many
//	                                      │                  senders' entries
//	                                      ├─► each online recipient's Peer.DeliverInbox (queue order)
//	sender session ◄──── done ────────────┘   then the sender gets its ACK
package router

import (
	"sync"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/store"
)

// Peer is one live connection as the router sees it.
type Peer interface {
	DeviceID() string
	SessionID() string
	// DeliverLive queues a live frame (§6.7 live class); false when the
	// peer's live queue is full and the frame was dropped.
	DeliverLive(t ccp.FrameType, channel uint32, payload []byte) bool
	// DeliverInbox hands over committed inbox entries for this device, in
	// queue order. The peer may drop them and re-read the inbox later.
	DeliverInbox(entries []store.InboxEntry)
	// RequestCatchup makes the connection re-read its inbox from the entry
	// after queue id after (entries were committed elsewhere). Queue ids
	// committed by different nodes need not commit in id order, so a
	// notified entry may lie below what the connection already delivered;
	// the connection re-reads from after and skips what it delivered.
	// after = 0 re-reads the whole inbox (notifications may have been lost).
	RequestCatchup(after int64)
	// Kick ends the connection with ERROR Replaced or Device Revoked.
	Kick(reason KickReason)
	// WantsPresence reports whether the connection accepted presence.push.
	WantsPresence() bool
}

// KickReason says why a connection is closed by the server.
type KickReason int

const (
	KickReplaced KickReason = iota + 1
	KickRevoked
)

// Registry maps device ids to their live connection on this node.
type Registry struct {
	mu    sync.RWMutex
	peers map[string]Peer
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{peers: make(map[string]Peer)} }

// Register makes p the connection of its device and returns the previous
// one (nil if none); the caller kicks it.
func (r *Registry) Register(p Peer) (old Peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old = r.peers[p.DeviceID()]
	r.peers[p.DeviceID()] = p
	return old
}

// Unregister removes p if it is still its device's connection and reports
// whether it was.
func (r *Registry) Unregister(p Peer) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.peers[p.DeviceID()] != p {
		return false
	}
	delete(r.peers, p.DeviceID())
	return true
}

// Lookup returns the device's connection on this node, or nil.
func (r *Registry) Lookup(device string) Peer {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.peers[device]
}

// Current reports whether p is its device's connection.
func (r *Registry) Current(p Peer) bool { return r.Lookup(p.DeviceID()) == p }

// Len returns the number of connected devices.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.peers)
}

// All returns a snapshot of the connected peers.
func (r *Registry) All() []Peer {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Peer, 0, len(r.peers))
	for _, p := range r.peers {
		out = append(out, p)
	}
	return out
}

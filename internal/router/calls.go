package router

import (
	"context"
	"time"
)

// Call pinning (§7.2 node pinning, §9.4 keys call:<call_id> and
// callchan:<channel_id>).

// CallRef names an active call owned by this node.
type CallRef struct {
	ID      string
	Channel uint32
}

// ClaimResult is the outcome of CallPins.ClaimCall.
type ClaimResult int

const (
	// Claimed: call:<id> and callchan:<channel> now name this node.
	Claimed ClaimResult = iota
	// CallIDTaken: call:<id> already exists (Conflict).
	CallIDTaken
	// ChannelTaken: the SET NX of callchan:<channel> failed (Conflict).
	ChannelTaken
)

// CallPins is the part of a Cluster that pins calls to their owner node.
type CallPins interface {
	// ClaimCall sets callchan:<ch> with SET NX and call:<id>, both naming
	// this node, with the route lifetime (3 × K).
	ClaimCall(ctx context.Context, id string, ch uint32) (ClaimResult, error)
	// RefreshCalls renews the keys of calls this node still owns.
	RefreshCalls(ctx context.Context, calls []CallRef) error
	// ReleaseCall deletes the call's keys if they still name this node.
	ReleaseCall(ctx context.Context, id string, ch uint32) error
	// CallOwner returns the live node owning the call ("" when none).
	CallOwner(ctx context.Context, id string) (string, error)
	// ChannelCall returns the channel's active call and its live owner
	// node ("" when none).
	ChannelCall(ctx context.Context, ch uint32) (id, node string, err error)
}

// ClaimCall pins a new call to this node; without a Cluster every call is
// Claimed.
func (r *Router) ClaimCall(id string, ch uint32) (ClaimResult, error) {
	if r.Cluster == nil {
		return Claimed, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	return r.Cluster.ClaimCall(ctx, id, ch)
}

// ReleaseCall unpins an ended call.
func (r *Router) ReleaseCall(id string, ch uint32) {
	if r.Cluster == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	if err := r.Cluster.ReleaseCall(ctx, id, ch); err != nil {
		r.Log.Warn("releasing call", "call_id", id, "err", err)
	}
}

// RemoteCallOwner returns the other live node that owns the call, or ""
// when the call is unknown, owned here or its owner is gone.
func (r *Router) RemoteCallOwner(id string) (string, error) {
	if r.Cluster == nil {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	node, err := r.Cluster.CallOwner(ctx, id)
	if err != nil || node == r.Cluster.NodeID() {
		return "", err
	}
	return node, nil
}

// RemoteChannelOwner returns the other live node that owns the channel's
// active call, or "".
func (r *Router) RemoteChannelOwner(ch uint32) (id, node string, err error) {
	if r.Cluster == nil {
		return "", "", nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	id, node, err = r.Cluster.ChannelCall(ctx, ch)
	if err != nil || node == r.Cluster.NodeID() {
		return "", "", err
	}
	return id, node, nil
}

// RefreshCallsEvery renews the keys of this node's calls (listed by calls)
// every interval until ctx ends (§9.4: 3 × K, refreshed every K).
func (r *Router) RefreshCallsEvery(ctx context.Context, every time.Duration, calls func() []CallRef) {
	if r.Cluster == nil {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		list := calls()
		if len(list) == 0 {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := r.Cluster.RefreshCalls(rctx, list); err != nil {
			r.Log.Warn("refreshing calls", "err", err)
		}
		cancel()
	}
}

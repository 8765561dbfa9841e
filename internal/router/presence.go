package router

import (
	"context"
	"sync"
	"time"
)

// PresenceEntry is a device's presence (§6.8). Payload is the canonical
// JSON entry pushed in PRESENCE frames:
// {"entity","expires_at","state","user"}.
type PresenceEntry struct {
	Device    string
	State     string
	ExpiresAt time.Time
	Payload   []byte
}

// Presence stores presence entries with a lifetime.
type Presence interface {
	Set(ctx context.Context, e PresenceEntry) error
	// Get returns the entry when it exists and has not expired.
	Get(ctx context.Context, device string, now time.Time) (PresenceEntry, bool, error)
}

// LocalPresence is the in-process Presence of a single node.
type LocalPresence struct {
	mu      sync.Mutex
	entries map[string]PresenceEntry
}

// NewLocalPresence returns an empty in-process presence store.
func NewLocalPresence() *LocalPresence {
	return &LocalPresence{entries: make(map[string]PresenceEntry)}
}

func (p *LocalPresence) Set(_ context.Context, e PresenceEntry) error {
	p.mu.Lock()
	p.entries[e.Device] = e
	p.mu.Unlock()
	return nil
}

func (p *LocalPresence) Get(_ context.Context, device string, now time.Time) (PresenceEntry, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[device]
	if !ok {
		return e, false, nil
	}
	if !now.Before(e.ExpiresAt) {
		delete(p.entries, device)
		return e, false, nil
	}
	return e, true, nil
}

// Sweep deletes expired entries (the owner calls it periodically).
func (p *LocalPresence) Sweep(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, e := range p.entries {
		if !now.Before(e.ExpiresAt) {
			delete(p.entries, k)
		}
	}
}

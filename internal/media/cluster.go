package media

// Helpers for the call pinning of §9.4 (the cluster layer asks which calls
// this node owns).

// CallRef names an active call.
type CallRef struct {
	ID      string
	Channel uint32
}

// HasCall reports whether the call is active on this node.
func (m *Manager) HasCall(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[id] != nil
}

// Calls returns the calls active on this node.
func (m *Manager) Calls() []CallRef {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]CallRef, 0, len(m.calls))
	for _, c := range m.calls {
		out = append(out, CallRef{ID: c.ID, Channel: c.Channel})
	}
	return out
}

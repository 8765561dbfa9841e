package client

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/canonjson"
)

// joinPayload builds a JOIN payload (§6.6.2).
func joinPayload(members []string, groupID string) ([]byte, error) {
	m := map[string]any{}
	if members != nil {
		m["members"] = members
	}
	if groupID != "" {
		m["group_id"] = groupID
	}
	return canonjson.Marshal(m)
}

func presencePayload(state string) ([]byte, error) {
	if len(state) == 0 || len(state) > 32 {
		return nil, fmt.Errorf("client: presence state must be 1-32 bytes")
	}
	return canonjson.Marshal(map[string]any{"state": state})
}

// Join sends JOIN on channel ch listing members (device ids; nil for
// none) and, when groupID is not empty, binding the channel to that group
// (§6.5). It returns the ACK payload, e.g. {"ack":5,"group_id":"..."}.
func (c *Conn) Join(ctx context.Context, ch uint32, members []string, groupID string) ([]byte, error) {
	p, err := joinPayload(members, groupID)
	if err != nil {
		return nil, err
	}
	return c.Request(ctx, ccp.Join, ch, p)
}

// Leave sends LEAVE on channel ch and waits for the ACK.
func (c *Conn) Leave(ctx context.Context, ch uint32) ([]byte, error) {
	return c.Request(ctx, ccp.Leave, ch, []byte("{}"))
}

// SendMessage sends an opaque MSG on channel ch and waits until the server
// acknowledges it ("stored for every recipient", §6.7).
func (c *Conn) SendMessage(ctx context.Context, ch uint32, payload []byte) error {
	_, err := c.Request(ctx, ccp.Msg, ch, payload)
	return err
}

// SetPresence sends PRESENCE {"state":state} on channel 0. The server does
// not answer PRESENCE (§6.3); it pushes the change to co-members.
func (c *Conn) SetPresence(ctx context.Context, state string) error {
	p, err := presencePayload(state)
	if err != nil {
		return err
	}
	_, err = c.Send(ctx, ccp.Presence, 0, p)
	return err
}

// Typing sends TYPING {} on channel ch and waits for the ACK.
func (c *Conn) Typing(ctx context.Context, ch uint32) error {
	_, err := c.Request(ctx, ccp.Typing, ch, []byte("{}"))
	return err
}

// AckNumber returns the "ack" member of a server ACK payload.
func AckNumber(payload []byte) (uint32, bool) {
	a, ok := parseAck(payload)
	if !ok || a.Ack == nil || *a.Ack > ccp.MaxSequence {
		return 0, false
	}
	return uint32(*a.Ack), true
}

// IsKeepalive reports whether an ACK payload is a keepalive
// ({"keepalive":t} without "ack", §3.6).
func IsKeepalive(payload []byte) bool {
	a, ok := parseAck(payload)
	return ok && a.Ack == nil && a.Keepalive != nil
}

// senderOf returns the "sender" member of a relayed Control payload
// (§6.6.1), "" when there is none.
func senderOf(t ccp.FrameType, payload []byte) string {
	if t.Class() != ccp.Control || len(payload) == 0 {
		return ""
	}
	var m struct {
		Sender *string `json:"sender"`
	}
	if json.Unmarshal(payload, &m) != nil || m.Sender == nil {
		return ""
	}
	return *m.Sender
}

package session

import (
	"context"
	"encoding/hex"
	"strings"
	"time"

	"lukechampine.com/blake3"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/router"
	"github.com/commucat/commucat/internal/store"
)

const (
	stateOnline  = "online"
	stateOffline = "offline"
)

// userSnapshot is the user snapshot of §8.1.
func userSnapshot(u store.User) noiseconn.UserSnapshot {
	return noiseconn.UserSnapshot{AvatarURL: u.AvatarURL, DisplayName: u.DisplayName, Handle: u.Handle, ID: u.ID, UserID: u.ID}
}

// frameLabel is the metric label of a frame type (lower-case name).
func frameLabel(t ccp.FrameType) string { return strings.ToLower(t.String()) }

// presenceEntry builds the entry of §6.8 for this device.
func (c *conn) presenceEntry(state string, now time.Time) router.PresenceEntry {
	exp := now.Add(c.m.cfg.PresenceTTL)
	payload, err := canonjson.Marshal(struct {
		Entity    string                 `json:"entity"`
		ExpiresAt string                 `json:"expires_at"`
		State     string                 `json:"state"`
		User      noiseconn.UserSnapshot `json:"user"`
	}{c.device.ID, canonjson.FormatTime(exp), state, c.snapshot})
	if err != nil {
		c.log.Error("presence entry", "err", err)
	}
	return router.PresenceEntry{Device: c.device.ID, State: state, ExpiresAt: exp, Payload: payload}
}

// setPresence stores the device's presence and reports whether the state
// changed.
func (c *conn) setPresence(state string) bool {
	c.stateMu.Lock()
	changed := c.presState != state
	c.presState = state
	c.stateMu.Unlock()
	e := c.presenceEntry(state, c.m.d.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.m.d.Presence.Set(ctx, e); err != nil {
		c.log.Warn("storing presence", "err", err)
	}
	return changed
}

// refreshPresence renews the entry's lifetime (not pushed, §6.8).
func (c *conn) refreshPresence() {
	c.stateMu.Lock()
	state := c.presState
	c.stateMu.Unlock()
	c.setPresence(state)
}

// coMembers returns the devices sharing a channel with this one.
func (c *conn) coMembers() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	devs, err := c.m.d.Store.CoMembers(ctx, c.device.ID)
	if err != nil {
		c.log.Warn("listing co-members", "err", err)
		return nil
	}
	return devs
}

// pushPresence sends this device's entry to every online co-member that
// accepted presence.push (§6.8).
func (c *conn) pushPresence(state string) {
	e := c.presenceEntry(state, c.m.d.Now())
	for _, d := range c.coMembers() {
		c.m.d.Router.DeliverLive(d, ccp.Presence, 0, e.Payload, true)
	}
}

// queueSnapshot queues one PRESENCE per online co-member (§6.8), before
// the sender starts, so it precedes the inbox redelivery.
func (c *conn) queueSnapshot() {
	if !c.presence {
		return
	}
	now := c.m.d.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, d := range c.coMembers() {
		e, ok, err := c.m.d.Presence.Get(ctx, d, now)
		if err != nil || !ok || e.State == stateOffline || len(e.Payload) == 0 {
			continue
		}
		c.out.pushUrgent(outFrame{t: ccp.Presence, ch: 0, payload: e.Payload})
	}
}

// handshakeAck builds the ACK payload of §4.13.
func (c *conn) handshakeAck(hs *handshakeResult) ([]byte, error) {
	cert := hs.commit.cert
	keys := c.m.d.Keys()
	infos := make([]noiseconn.NoiseKeyInfo, 0, len(keys))
	for _, k := range keys {
		infos = append(infos, k.Info())
	}
	k := hs.sh.Key.Info()
	ack := noiseconn.HandshakeAck{
		Certificate:       noiseconn.CertificateSummary{ExpiresAt: cert.ExpiresAt, IssuedAt: cert.IssuedAt, Serial: cert.Serial},
		DeviceCAPublic:    hex.EncodeToString(c.m.caPub[:]),
		DeviceCertificate: cert,
		Handshake:         "ok",
		KeepaliveInterval: int(c.m.cfg.Keepalive / time.Second),
		NoiseExpiresAt:    k.ExpiresAt,
		NoiseKeyVersion:   k.Version,
		NoiseKeys:         infos,
		NoisePublic:       k.Public,
		NoiseRotatesAt:    k.RotatesAt,
		PairingRequired:   hs.commit.pairingNext,
		Session:           c.sessionID,
		User:              c.snapshot,
		UserID:            c.user.ID,
	}
	return ack.Marshal()
}

// recordHandshakeLedger writes the key-event and session-start records
// (§4.9, §11.1). Ledger failures never fail the handshake.
func (c *conn) recordHandshakeLedger(hs *handshakeResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lg := c.m.d.Ledger
	if a := hs.commit.keyAction; a != "" {
		cert := hs.commit.cert
		meta := map[string]any{
			"action":                 a,
			"certificate_expires_at": cert.ExpiresAt,
			"certificate_issued_at":  cert.IssuedAt,
			"certificate_serial":     cert.Serial,
			"device":                 c.device.ID,
			"source":                 "certificate",
			"user":                   c.user.ID,
		}
		if err := lg.Record(ctx, c.device.PublicKey, meta); err != nil {
			c.log.Warn("ledger", "err", err)
		}
	}
	meta := map[string]any{"device": c.device.ID, "session": c.sessionID, "user": c.user.ID}
	if err := lg.Record(ctx, blake3.Sum256([]byte(c.sessionID)), meta); err != nil {
		c.log.Warn("ledger", "err", err)
	}
}

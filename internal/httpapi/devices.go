package httpapi

import (
	"encoding/hex"
	"errors"
	"strings"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/store"
)

// 400/409 details of §8.4.5.
const (
	detailDeviceIDRequired = "device_id is required"
	detailRevokeOwnDevice  = "cannot revoke active session device"
)

type deviceEntry struct {
	CreatedAt  string  `json:"created_at"`
	Current    bool    `json:"current"`
	DeviceID   string  `json:"device_id"`
	DeviceName *string `json:"device_name"`
	PublicKey  string  `json:"public_key"`
	Status     string  `json:"status"`
}

type devicesResponse struct {
	Devices []deviceEntry `json:"devices"`
}

// devices is GET /api/devices (§8.4.4).
func (a *API) devices(c *call) (any, error) {
	list, err := a.d.Store.ListDevices(c.ctx, c.auth.user.ID)
	if err != nil {
		return nil, err
	}
	out := devicesResponse{Devices: make([]deviceEntry, 0, len(list))}
	for _, d := range list {
		out.Devices = append(out.Devices, deviceEntry{
			CreatedAt:  canonjson.FormatTime(d.CreatedAt),
			Current:    d.ID == c.auth.device.ID,
			DeviceID:   d.ID,
			DeviceName: d.Name,
			PublicKey:  hex.EncodeToString(d.PublicKey[:]),
			Status:     d.Status,
		})
	}
	return out, nil
}

type revokeResponse struct {
	DeviceID string `json:"device_id"`
	Status   string `json:"status"`
}

// revoke is POST /api/devices/revoke (§8.4.5, §6.11).
func (a *API) revoke(c *call) (any, error) {
	idp, err := optString(c.body, "device_id")
	if err != nil {
		return nil, err
	}
	if idp == nil || strings.TrimSpace(*idp) == "" {
		return nil, badRequest(detailDeviceIDRequired)
	}
	id := *idp
	if id == c.auth.device.ID {
		return nil, conflict(detailRevokeOwnDevice)
	}
	eventID, err := a.randomHex(32)
	if err != nil {
		return nil, err
	}
	now := micro(c.now)
	var (
		dev     store.Device
		already bool
	)
	err = a.d.Store.Tx(c.ctx, func(q store.Queries) error {
		var err error
		if dev, err = q.GetDevice(c.ctx, id); err != nil {
			return err
		}
		if dev.UserID != c.auth.user.ID {
			return errForbidden
		}
		if dev.Status == store.DeviceRevoked {
			already = true
		} else {
			if err := q.SetDeviceStatus(c.ctx, id, store.DeviceRevoked, now); err != nil {
				return err
			}
			if err := q.AddKeyEvent(c.ctx, store.KeyEvent{
				ID: eventID, DeviceID: id, PublicKey: dev.PublicKey, Action: store.KeyRevoke, RecordedAt: now,
			}); err != nil {
				return err
			}
		}
		// §6.11: its inbox entries are deleted and it leaves every
		// channel and group. Repeated for an already revoked device, so
		// that a retry completes whatever an earlier attempt left.
		if err := q.DeleteInboxOf(c.ctx, id); err != nil {
			return err
		}
		return q.RemoveDeviceMemberships(c.ctx, id)
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, err
	}
	if !already {
		a.ledgerRecord(c.ctx, dev.PublicKey, map[string]any{
			"action": store.KeyRevoke,
			"device": id,
			"source": "rest",
			"user":   dev.UserID,
		})
		a.log.Info("device revoked", "user", dev.UserID, "device", id, "by", c.auth.device.ID)
	}
	// Close its live connection on any node (idempotent, so repeated for
	// an already revoked device too).
	a.d.Revoke(id)
	return revokeResponse{DeviceID: id, Status: store.DeviceRevoked}, nil
}

package session

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/store"
)

// certReuseMargin: a presented certificate that expires later than this is
// returned unchanged instead of issuing a new one (§4.8).
const certReuseMargin = 7 * 24 * time.Hour

// admissionPolicy is the configuration the decision of §4.9 depends on.
type admissionPolicy struct {
	autoApprove    bool
	maxAutoDevices int
	caPublic       [32]byte
}

// admission is the decision of §4.9 for one handshake: what the commit will
// write. It is computed once without writing (at the HELLO) and again inside
// the commit transaction (at the client's AUTH).
type admission struct {
	user      store.User
	newUser   bool
	device    store.Device
	newDevice bool
	// rotate: the stored key is replaced by the HELLO's device_public.
	rotate bool
	// reuse is the presented certificate when it is returned unchanged.
	reuse *identity.Certificate
	// signed: the presented certificate's signature is known to verify.
	signed bool
}

// decideAdmission implements §4.9 (and the certificate rules of §4.8) on
// the state visible through q. newUserID is the id a user created by this
// handshake gets. It writes nothing. signed reports that an earlier
// successful decision on the same HELLO already verified the presented
// certificate's signature (the re-check inside the commit transaction: the
// certificate and the CA key are the same, and the Ed25519 verification
// need not hold the store's writer again).
func decideAdmission(ctx context.Context, q store.Queries, pol admissionPolicy, h *noiseconn.Hello, newUserID string, now time.Time, signed bool) (*admission, *noiseconn.HandshakeError) {
	a := &admission{signed: signed}
	dev, err := q.GetDevice(ctx, h.DeviceID)
	switch {
	case err == nil:
		if herr := a.known(ctx, q, pol, h, dev, now); herr != nil {
			return nil, herr
		}
	case errors.Is(err, store.ErrNotFound):
		if herr := a.unknown(ctx, q, pol, h, newUserID, now); herr != nil {
			return nil, herr
		}
	default:
		return nil, noiseconn.StorageFailure(err)
	}
	return a, nil
}

func (a *admission) known(ctx context.Context, q store.Queries, pol admissionPolicy, h *noiseconn.Hello, dev store.Device, now time.Time) *noiseconn.HandshakeError {
	if dev.Status != store.DeviceActive {
		return noiseconn.ErrDeviceNotActive
	}
	owner, err := q.GetUser(ctx, dev.UserID)
	if err != nil {
		return noiseconn.StorageFailure(err)
	}
	if (h.User.ID != nil && *h.User.ID != owner.ID) || (h.User.Handle != nil && *h.User.Handle != owner.Handle) {
		return noiseconn.ErrHintMismatch
	}
	a.user, a.device = owner, dev
	if herr := a.checkCertificate(pol, h, owner.ID, now); herr != nil {
		return herr
	}
	if h.DevicePublic != dev.PublicKey {
		c := h.Certificate
		if c == nil || c.PublicKey != h.DevicePublic {
			return noiseconn.ErrKeyMismatch
		}
		last, err := q.LatestKeyEvent(ctx, dev.ID, []string{store.KeyRegister, store.KeyRotate, store.KeyPair})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return noiseconn.StorageFailure(err)
		}
		// A certificate issued before the last key change cannot roll it back.
		if err == nil && !time.Unix(c.IssuedAt, 0).After(last.RecordedAt) {
			return noiseconn.ErrKeyMismatch
		}
		a.rotate = true
	}
	return nil
}

func (a *admission) unknown(ctx context.Context, q store.Queries, pol admissionPolicy, h *noiseconn.Hello, newUserID string, now time.Time) *noiseconn.HandshakeError {
	invalid := func(format string, args ...any) *noiseconn.HandshakeError {
		return noiseconn.InvalidHandshake(fmt.Errorf(format, args...))
	}
	lookup := func(get func() (store.User, error)) (store.User, bool, *noiseconn.HandshakeError) {
		u, err := get()
		if errors.Is(err, store.ErrNotFound) {
			return u, false, nil
		}
		if err != nil {
			return u, false, noiseconn.StorageFailure(err)
		}
		return u, true, nil
	}
	var byID, byHandle store.User
	var hasID, hasHandle bool
	var herr *noiseconn.HandshakeError
	if h.User.ID != nil {
		if byID, hasID, herr = lookup(func() (store.User, error) { return q.GetUser(ctx, *h.User.ID) }); herr != nil {
			return herr
		}
	}
	if h.User.Handle != nil {
		if byHandle, hasHandle, herr = lookup(func() (store.User, error) { return q.GetUserByHandle(ctx, *h.User.Handle) }); herr != nil {
			return herr
		}
	}
	if h.User.ID != nil && h.User.Handle != nil && (!hasID || !hasHandle || byID.ID != byHandle.ID) {
		return invalid("hinted user id and handle do not name the same user")
	}
	switch {
	case h.Certificate != nil:
		u, ok, herr := lookup(func() (store.User, error) { return q.GetUser(ctx, h.Certificate.UserID) })
		if herr != nil {
			return herr
		}
		if !ok {
			return invalid("certificate names an unknown user")
		}
		if (h.User.ID != nil && *h.User.ID != u.ID) || (h.User.Handle != nil && *h.User.Handle != u.Handle) {
			return invalid("user hints disagree with the certificate")
		}
		a.user = u
	case h.User.ID != nil:
		if !hasID {
			return invalid("hinted user does not exist")
		}
		a.user = byID
	case h.User.Handle != nil:
		if hasHandle {
			a.user = byHandle
		} else {
			a.newUser = true
			a.user = store.User{ID: newUserID, Handle: *h.User.Handle, DisplayName: h.User.DisplayName, AvatarURL: h.User.AvatarURL, CreatedAt: now, UpdatedAt: now}
		}
	default:
		return invalid("unknown device without a user hint or certificate")
	}
	if herr := a.checkCertificate(pol, h, a.user.ID, now); herr != nil {
		return herr
	}
	if !pol.autoApprove {
		return noiseconn.ErrPairingRequired
	}
	if pol.maxAutoDevices > 0 && !a.newUser {
		n, err := q.CountActiveDevices(ctx, a.user.ID)
		if err != nil {
			return noiseconn.StorageFailure(err)
		}
		if n >= pol.maxAutoDevices {
			return noiseconn.ErrPairingRequired
		}
	}
	a.newDevice = true
	a.device = store.Device{ID: h.DeviceID, UserID: a.user.ID, PublicKey: h.DevicePublic, Status: store.DeviceActive, CreatedAt: now, UpdatedAt: now}
	return nil
}

// checkCertificate verifies a presented certificate (§4.8, §4.9) and
// decides whether it is reused.
func (a *admission) checkCertificate(pol admissionPolicy, h *noiseconn.Hello, ownerID string, now time.Time) *noiseconn.HandshakeError {
	c := h.Certificate
	if c == nil {
		return nil
	}
	if a.signed {
		if err := c.CheckClaims(h.DeviceID, ownerID, now.Unix()); err != nil {
			return noiseconn.AuthenticationFailed(err)
		}
	} else if herr := noiseconn.CheckCertificate(c, pol.caPublic, h.DeviceID, ownerID, now.Unix()); herr != nil {
		return herr
	}
	switch c.PublicKey {
	case h.DevicePublic:
		if time.Unix(c.ExpiresAt, 0).After(now.Add(certReuseMargin)) {
			a.reuse = c
		}
	case h.ClientStatic:
		// Accepted for identity; a new certificate for device_public follows.
	default:
		return noiseconn.AuthenticationFailed(errors.New("certificate is for another key"))
	}
	return nil
}

// committed is what the handshake commit wrote.
type committed struct {
	user        store.User
	device      store.Device
	cert        identity.Certificate
	keyAction   string // "", register, rotate, certificate
	pairingNext bool   // pairing_required of the ACK
}

// apply writes the decision, the profile hints, the certificate and the
// session row inside the commit transaction.
func (a *admission) apply(ctx context.Context, q store.Queries, pol admissionPolicy, h *noiseconn.Hello, ca ed25519.PrivateKey, rnd io.Reader, sess store.Session, now time.Time) (*committed, error) {
	c := &committed{user: a.user, device: a.device}
	if a.newUser {
		if err := q.CreateUser(ctx, a.user); err != nil {
			return nil, err
		}
	} else if h.User.DisplayName != nil || h.User.AvatarURL != nil {
		if err := q.UpdateUserProfile(ctx, a.user.ID, h.User.DisplayName, h.User.AvatarURL, now); err != nil {
			return nil, err
		}
		if h.User.DisplayName != nil {
			c.user.DisplayName = h.User.DisplayName
		}
		if h.User.AvatarURL != nil {
			c.user.AvatarURL = h.User.AvatarURL
		}
	}
	switch {
	case a.newDevice:
		if err := q.CreateDevice(ctx, a.device); err != nil {
			return nil, err
		}
		c.keyAction = store.KeyRegister
	case a.rotate:
		if err := q.SetDeviceKey(ctx, a.device.ID, h.DevicePublic, now); err != nil {
			return nil, err
		}
		c.device.PublicKey = h.DevicePublic
		c.keyAction = store.KeyRotate
	}
	if a.reuse != nil {
		c.cert = *a.reuse
	} else {
		var b [8]byte
		if _, err := io.ReadFull(rnd, b[:]); err != nil {
			return nil, err
		}
		c.cert = identity.IssueCertificate(ca, binary.LittleEndian.Uint64(b[:]), a.user.ID, a.device.ID, h.DevicePublic, now.Unix())
		if c.keyAction == "" {
			c.keyAction = store.KeyCertificate
		}
	}
	if c.keyAction != "" {
		id, err := randomID(rnd)
		if err != nil {
			return nil, err
		}
		if err := q.AddKeyEvent(ctx, store.KeyEvent{ID: id, DeviceID: a.device.ID, PublicKey: h.DevicePublic, Action: c.keyAction, RecordedAt: now}); err != nil {
			return nil, err
		}
	}
	if err := q.CreateSession(ctx, sess); err != nil {
		return nil, err
	}
	c.pairingNext = !pol.autoApprove
	if pol.maxAutoDevices > 0 && !c.pairingNext {
		n, err := q.CountActiveDevices(ctx, a.user.ID)
		if err != nil {
			return nil, err
		}
		c.pairingNext = n >= pol.maxAutoDevices
	}
	return c, nil
}

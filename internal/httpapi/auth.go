package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// bearerToken extracts the token of the Authorization header (§8.2): the
// value is trimmed and a leading "Bearer " (scheme matched
// case-insensitively) is removed; a value without a scheme is taken whole.
func bearerToken(r *http.Request) string {
	return ParseAuthorization(r.Header.Get("Authorization"))
}

// ParseAuthorization applies the header parsing of §8.2 to an
// Authorization value (shared by session and admin tokens; the server uses
// it for /metrics).
func ParseAuthorization(v string) string {
	v = strings.TrimSpace(v)
	const scheme = "bearer "
	if len(v) >= len(scheme) && strings.EqualFold(v[:len(scheme)], scheme) {
		v = strings.TrimSpace(v[len(scheme):])
	}
	return v
}

// authenticate validates the session token of r (§8.2, §13a.9): unknown or
// expired → 401, a device that is not active → 403. A valid request
// refreshes the session's last_active_at.
func (a *API) authenticate(ctx context.Context, r *http.Request, now time.Time) (*principal, error) {
	tok := bearerToken(r)
	if tok == "" {
		return nil, errUnauthorized
	}
	sess, err := a.d.Store.GetSession(ctx, tok)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, errUnauthorized
		}
		return nil, err
	}
	user, err := a.d.Store.GetUser(ctx, sess.UserID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, errUnauthorized
		}
		return nil, err
	}
	dev, err := a.d.Store.GetDevice(ctx, sess.DeviceID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, errUnauthorized
		}
		return nil, err
	}
	if dev.Status != store.DeviceActive {
		return nil, errForbidden
	}
	last := sess.LastActiveAt
	if sess.ClosedAt != nil && sess.ClosedAt.After(last) {
		last = *sess.ClosedAt
	}
	if seen, ok := a.touches.seen(sess.ID); ok && seen.After(last) {
		last = seen
	}
	if !now.Before(last.Add(a.d.SessionTTL)) && !a.d.Live(sess) {
		return nil, errUnauthorized
	}
	if a.touches.hit(sess.ID, now, a.coalesce(), a.d.SessionTTL) {
		if err := a.d.Store.TouchSession(ctx, sess.ID, now); err != nil && !errors.Is(err, store.ErrNotFound) {
			a.log.Warn("refreshing session activity", "err", err)
		}
	}
	return &principal{session: sess, user: user, device: dev}, nil
}

// coalesce is the largest allowed delay of a last_active_at update:
// min(60 s, session_ttl/10) (§8.2).
func (a *API) coalesce() time.Duration {
	return min(60*time.Second, a.d.SessionTTL/10)
}

// touchCache remembers, per session, when this node last wrote
// last_active_at and when it last saw an authenticated request, so that
// writes are coalesced while expiry stays exact on this node.
type touchCache struct {
	mu        sync.Mutex
	m         map[string]touchEntry
	lastSweep time.Time
}

type touchEntry struct {
	written time.Time // last TouchSession
	seen    time.Time // last authenticated request
}

// maxTouchEntries bounds the cache; beyond it, the oldest entries go first.
const maxTouchEntries = 100000

func (t *touchCache) seen(id string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[id]
	return e.seen, ok
}

// hit records an authenticated request at now and reports whether
// last_active_at must be written (nothing written for this session within
// the coalescing interval).
func (t *touchCache) hit(id string, now time.Time, coalesce, ttl time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]touchEntry)
	}
	t.sweep(now, coalesce, ttl)
	e, ok := t.m[id]
	if now.After(e.seen) {
		e.seen = now
	}
	write := !ok || now.Sub(e.written) >= coalesce || now.Before(e.written)
	if write {
		e.written = now
	}
	t.m[id] = e
	return write
}

// sweep forgets entries whose knowledge is in storage (nothing seen since
// the last write, which is older than the coalescing interval) or useless
// (nothing seen for a whole session_ttl).
func (t *touchCache) sweep(now time.Time, coalesce, ttl time.Duration) {
	if len(t.m) < maxTouchEntries && now.Sub(t.lastSweep) < time.Minute {
		return
	}
	t.lastSweep = now
	for id, e := range t.m {
		if (!e.seen.After(e.written) && now.Sub(e.written) >= coalesce) || now.Sub(e.seen) >= ttl {
			delete(t.m, id)
		}
	}
	for id := range t.m {
		if len(t.m) < maxTouchEntries {
			break
		}
		// Still full: expiry of the dropped sessions then follows the
		// stored last_active_at, which lags by at most the coalescing
		// interval (allowed by §8.2).
		delete(t.m, id)
	}
}

// Package secrets manages the admin tokens of CCP-1 §10.4 and §8.2: stored
// only as BLAKE3(salt || token) with a random 16-byte salt, optionally
// rotated, and checked in constant time.
package secrets

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/store"
)

// FarFuture is the lifetime of admin token versions when rotation is off
// (§10.4: 100 years).
const FarFuture = config.RotationFarFuture

// AdminTokens holds the admin token versions (§10.4). The non-expired
// versions are kept in memory and refreshed by Init, Tick and Reload; Check
// and Exists read only memory. Safe for concurrent use.
type AdminTokens struct {
	store      store.Store
	now        func() time.Time
	rand       io.Reader
	policy     config.RotationPolicy
	configured string
	tokenFile  string
	log        *slog.Logger
	rotations  prometheus.Counter

	tickMu sync.Mutex // serialises Init, Tick and Reload

	mu       sync.RWMutex
	versions []store.AdminToken // newest first, as loaded (expired ones filtered at use)
}

// NewAdminTokens returns the admin token manager. configured is
// admin.token ("" for none), tokenFile admin.token_file (required when
// policy.Enabled). nil now, rand, log and rotations mean time.Now,
// crypto/rand, a discarding logger and no counter.
func NewAdminTokens(st store.Store, now func() time.Time, rnd io.Reader, policy config.RotationPolicy,
	configured, tokenFile string, log *slog.Logger, rotations prometheus.Counter) *AdminTokens {
	if now == nil {
		now = time.Now
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if policy.MaxVersions < 1 {
		policy.MaxVersions = 1
	}
	return &AdminTokens{store: st, now: now, rand: rnd, policy: policy, configured: configured,
		tokenFile: tokenFile, log: log, rotations: rotations}
}

// newVersion builds a version of token with a fresh salt.
func (t *AdminTokens) newVersion(version int, token string, now time.Time) (store.AdminToken, error) {
	v := store.AdminToken{Version: version, CreatedAt: now}
	if _, err := io.ReadFull(t.rand, v.Salt[:]); err != nil {
		return v, err
	}
	v.TokenHash = identity.AdminTokenHash(v.Salt, token)
	v.ValidAfter, v.RotatesAt, v.ExpiresAt = t.policy.Validity(now)
	return v, nil
}

// newToken returns 32 random bytes in hex.
func (t *AdminTokens) newToken() (string, error) {
	var b [32]byte
	if _, err := io.ReadFull(t.rand, b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// Init applies the start-up rules of §10.4 and loads the versions:
//
//   - rotation off: exactly the configured token is valid, with a 100-year
//     validity. Every other version is deleted; a matching version stored
//     by an earlier run with rotation on (finite validity) is replaced by a
//     new one. No configured token: no admin token exists.
//   - rotation on: versions whose expires_at lies beyond what the policy
//     can produce (now + interval + grace, i.e. stored with rotation off)
//     are deleted; a configured token that matches no non-expired version
//     is inserted as the newest version; when no non-expired version
//     exists, a token is generated at once and written to the token file;
//     expired versions and versions beyond max_versions are deleted.
func (t *AdminTokens) Init(ctx context.Context) error {
	t.tickMu.Lock()
	defer t.tickMu.Unlock()
	if t.policy.Enabled && t.tokenFile == "" {
		return errors.New("admin token rotation requires admin.token_file")
	}
	now := t.now()
	generated := false
	err := t.store.Tx(ctx, func(q store.Queries) error {
		rows, err := q.ListAdminTokens(ctx)
		if err != nil {
			return err
		}
		next := 1
		if len(rows) > 0 {
			next = rows[0].Version + 1
		}
		insert := func(token string) error {
			v, err := t.newVersion(next, token, now)
			if err != nil {
				return err
			}
			if err := q.InsertAdminToken(ctx, v); err != nil {
				return err
			}
			next++
			rows = append([]store.AdminToken{v}, rows...)
			return nil
		}
		// matches returns the newest non-expired version of the configured
		// token accepted by ok.
		matches := func(ok func(store.AdminToken) bool) bool {
			for _, r := range rows {
				if now.Before(r.ExpiresAt) && ok(r) && identity.AdminTokenMatches(r.Salt, r.TokenHash, t.configured) {
					return true
				}
			}
			return false
		}

		if !t.policy.Enabled {
			if t.configured != "" && !matches(func(r store.AdminToken) bool { return !r.ExpiresAt.Before(now.Add(FarFuture / 2)) }) {
				if err := insert(t.configured); err != nil {
					return err
				}
			}
			// Keep only the newest far-future version of the configured token.
			kept := false
			for _, r := range rows {
				if !kept && t.configured != "" && now.Before(r.ExpiresAt) && !r.ExpiresAt.Before(now.Add(FarFuture/2)) &&
					identity.AdminTokenMatches(r.Salt, r.TokenHash, t.configured) {
					kept = true
					continue
				}
				if err := q.DeleteAdminToken(ctx, r.Version); err != nil {
					return err
				}
			}
			return nil
		}

		limit := now.Add(t.policy.Interval + t.policy.Grace)
		kept := rows[:0:0]
		for _, r := range rows {
			if r.ExpiresAt.After(limit) {
				if err := q.DeleteAdminToken(ctx, r.Version); err != nil {
					return err
				}
				continue
			}
			kept = append(kept, r)
		}
		rows = kept
		if t.configured != "" && !matches(func(store.AdminToken) bool { return true }) {
			if err := insert(t.configured); err != nil {
				return err
			}
		}
		live := false
		for _, r := range rows {
			if now.Before(r.ExpiresAt) {
				live = true
				break
			}
		}
		if !live {
			token, err := t.newToken()
			if err != nil {
				return err
			}
			if err := insert(token); err != nil {
				return err
			}
			// Written before the commit: if the file cannot be written
			// the version is rolled back and Init fails.
			if err := writeTokenFile(t.tokenFile, token); err != nil {
				return err
			}
			generated = true
		}
		return prune(ctx, q, rows, now, t.policy)
	})
	if err != nil {
		return err
	}
	if generated {
		// Not a rotation (nothing was replaced): the counter stays.
		t.log.Info("generated an admin token", "file", t.tokenFile)
	}
	return t.load(ctx)
}

// Tick runs the 60 s step of §10.4: it reloads the versions and, with
// rotation on, replaces a due token (now ≥ rotates_at of the newest
// non-expired version, or no such version) by a fresh one written to the
// token file, then deletes expired versions and keeps the newest
// max_versions.
func (t *AdminTokens) Tick(ctx context.Context) error {
	t.tickMu.Lock()
	defer t.tickMu.Unlock()
	if !t.policy.Enabled {
		return t.load(ctx)
	}
	now := t.now()
	token, err := t.newToken()
	if err != nil {
		return err
	}
	rotated := false
	err = t.store.Tx(ctx, func(q store.Queries) error {
		rows, err := q.ListAdminTokens(ctx)
		if err != nil {
			return err
		}
		due := true
		for _, r := range rows {
			if now.Before(r.ExpiresAt) {
				due = !now.Before(r.RotatesAt)
				break
			}
		}
		if due {
			next := 1
			if len(rows) > 0 {
				next = rows[0].Version + 1
			}
			v, err := t.newVersion(next, token, now)
			if err != nil {
				return err
			}
			if err := q.InsertAdminToken(ctx, v); err != nil {
				return err
			}
			rows = append([]store.AdminToken{v}, rows...)
			// Inside the transaction: when the file cannot be written the
			// new version is rolled back and the next tick retries.
			if err := writeTokenFile(t.tokenFile, token); err != nil {
				return err
			}
			rotated = true
		}
		return prune(ctx, q, rows, now, t.policy)
	})
	if errors.Is(err, store.ErrConflict) {
		// Another node inserted that version first.
		return t.load(ctx)
	}
	if err != nil {
		return err
	}
	if rotated {
		t.count()
		t.log.Info("rotated the admin token", "file", t.tokenFile)
	}
	return t.load(ctx)
}

// Reload re-reads the versions from storage (SIGHUP, §12.1).
func (t *AdminTokens) Reload(ctx context.Context) error {
	t.tickMu.Lock()
	defer t.tickMu.Unlock()
	return t.load(ctx)
}

func (t *AdminTokens) count() {
	if t.rotations != nil {
		t.rotations.Inc()
	}
}

// load replaces the in-memory versions with the stored non-expired ones.
func (t *AdminTokens) load(ctx context.Context) error {
	rows, err := t.store.ListAdminTokens(ctx)
	if err != nil {
		return err
	}
	now := t.now()
	live := make([]store.AdminToken, 0, len(rows))
	for _, r := range rows {
		if now.Before(r.ExpiresAt) {
			live = append(live, r)
		}
	}
	t.mu.Lock()
	t.versions = live
	t.mu.Unlock()
	return nil
}

// prune deletes expired versions and every version beyond the newest max
// (rows newest first).
func prune(ctx context.Context, q store.Queries, rows []store.AdminToken, now time.Time, policy config.RotationPolicy) error {
	for i, r := range rows {
		if !policy.Keeps(i, r.ExpiresAt, now) {
			if err := q.DeleteAdminToken(ctx, r.Version); err != nil {
				return err
			}
		}
	}
	return nil
}

// Check reports whether token is a valid admin token (§8.2): BLAKE3(salt ||
// token) equals the stored hash of a non-expired version. Every version is
// compared, in constant time, whatever matches.
func (t *AdminTokens) Check(token string) bool {
	if token == "" {
		return false
	}
	now := t.now()
	t.mu.RLock()
	defer t.mu.RUnlock()
	match := 0
	for i := range t.versions {
		v := &t.versions[i]
		h := identity.AdminTokenHash(v.Salt, token)
		eq := subtle.ConstantTimeCompare(h[:], v.TokenHash[:])
		live := 0
		if now.Before(v.ExpiresAt) {
			live = 1
		}
		match |= eq & live
	}
	return match == 1
}

// Exists reports whether at least one non-expired version exists (§8.2:
// then /metrics requires the admin token).
func (t *AdminTokens) Exists() bool {
	now := t.now()
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, v := range t.versions {
		if now.Before(v.ExpiresAt) {
			return true
		}
	}
	return false
}

// writeTokenFile writes token (and a newline) to path atomically with mode
// 0600: a temporary file in the same directory, fsync, rename, fsync of the
// directory. The token never reaches the log or an error message.
func writeTokenFile(path, token string) (err error) {
	if path == "" {
		return errors.New("admin.token_file is not set")
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("admin token file: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("admin token file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("admin token file: %w", err)
	}
	if _, err = f.WriteString(token + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("admin token file: write failed")
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("admin token file: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("admin token file: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("admin token file: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

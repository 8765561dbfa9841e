package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/store"
)

// noiseKeys holds the Noise static keys of §10.4.
type noiseKeys struct {
	store     store.Store
	now       func() time.Time
	rand      io.Reader
	policy    config.RotationPolicy
	log       *slog.Logger
	rotations prometheus.Counter

	mu   sync.RWMutex
	keys []noiseconn.ServerKey // non-expired, newest first
	rows []store.NoiseKey      // the same keys with their ML-KEM seeds
}

// stored returns the non-expired keys with their ML-KEM seeds, newest
// first (the REST API's p2p assist needs the seeds, §8.4.8).
func (k *noiseKeys) stored() []store.NoiseKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	now := k.now()
	out := make([]store.NoiseKey, 0, len(k.rows))
	for _, r := range k.rows {
		if now.Before(r.ExpiresAt) {
			out = append(out, r)
		}
	}
	return out
}

// current returns the non-expired keys, newest first.
func (k *noiseKeys) current() []noiseconn.ServerKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	now := k.now()
	out := make([]noiseconn.ServerKey, 0, len(k.keys))
	for _, key := range k.keys {
		if now.Before(key.ExpiresAt) {
			out = append(out, key)
		}
	}
	return out
}

// newKey builds the next version from a key pair, with a fresh ML-KEM seed.
func (k *noiseKeys) newKey(version int, priv, pub [32]byte, now time.Time) (store.NoiseKey, error) {
	nk := store.NoiseKey{Version: version, Private: priv, Public: pub, CreatedAt: now}
	if _, err := io.ReadFull(k.rand, nk.KEMSeed[:]); err != nil {
		return nk, err
	}
	nk.ValidAfter, nk.RotatesAt, nk.ExpiresAt = k.policy.Validity(now)
	return nk, nil
}

// init inserts the configured key pair as the newest version when it
// differs from the pair last inserted from configuration (§10.4), then
// loads the keys.
func (k *noiseKeys) init(ctx context.Context, priv, pub [32]byte) error {
	// Two nodes starting together on a fresh database race to insert the
	// configured key; the loser gets ErrConflict and tries again, then
	// finds the key configured (§10.4: the loser reloads).
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = k.initOnce(ctx, priv, pub); !errors.Is(err, store.ErrConflict) {
			break
		}
	}
	if err != nil {
		return err
	}
	return k.reload(ctx)
}

func (k *noiseKeys) initOnce(ctx context.Context, priv, pub [32]byte) error {
	now := k.now()
	return k.store.Tx(ctx, func(q store.Queries) error {
		last, err := q.NoiseConfig(ctx)
		if err == nil && last == pub {
			return nil
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		keys, err := q.ListNoiseKeys(ctx)
		if err != nil {
			return err
		}
		version := 1
		if len(keys) > 0 {
			version = keys[0].Version + 1
		}
		nk, err := k.newKey(version, priv, pub, now)
		if err != nil {
			return err
		}
		if err := q.InsertNoiseKey(ctx, nk); err != nil {
			return err
		}
		return q.SetNoiseConfig(ctx, pub, now)
	})
}

// reload reads the non-expired keys from storage.
func (k *noiseKeys) reload(ctx context.Context) error {
	rows, err := k.store.ListNoiseKeys(ctx)
	if err != nil {
		return err
	}
	now := k.now()
	keys := make([]noiseconn.ServerKey, 0, len(rows))
	kept := make([]store.NoiseKey, 0, len(rows))
	for _, r := range rows {
		if !now.Before(r.ExpiresAt) {
			continue
		}
		kept = append(kept, r)
		keys = append(keys, noiseconn.ServerKey{Version: r.Version, Private: r.Private, Public: r.Public, ValidAfter: r.ValidAfter, RotatesAt: r.RotatesAt, ExpiresAt: r.ExpiresAt}.Prepared())
	}
	if len(keys) == 0 {
		return errors.New("no non-expired Noise key")
	}
	k.mu.Lock()
	k.keys, k.rows = keys, kept
	k.mu.Unlock()
	return nil
}

// tick runs the 60 s rotation step of §10.4.
func (k *noiseKeys) tick(ctx context.Context) error {
	if err := k.reload(ctx); err != nil {
		return err
	}
	if !k.policy.Enabled {
		return nil
	}
	k.mu.RLock()
	newest := k.keys[0]
	k.mu.RUnlock()
	now := k.now()
	if now.Before(newest.RotatesAt) {
		return nil
	}
	var priv [32]byte
	if _, err := io.ReadFull(k.rand, priv[:]); err != nil {
		return err
	}
	pub, err := identity.X25519Public(priv)
	if err != nil {
		return err
	}
	err = k.store.Tx(ctx, func(q store.Queries) error {
		rows, err := q.ListNoiseKeys(ctx)
		if err != nil {
			return err
		}
		if len(rows) > 0 && rows[0].Version > newest.Version {
			return nil // another node rotated first
		}
		nk, err := k.newKey(newest.Version+1, priv, pub, now)
		if err != nil {
			return err
		}
		if err := q.InsertNoiseKey(ctx, nk); err != nil {
			return err
		}
		// Delete expired rows, keep the newest max_versions (rows are
		// the versions older than the new one).
		for i, r := range rows {
			if !k.policy.Keeps(i+1, r.ExpiresAt, now) {
				if err := q.DeleteNoiseKey(ctx, r.Version); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if errors.Is(err, store.ErrConflict) {
		return k.reload(ctx)
	}
	if err != nil {
		return err
	}
	k.rotations.Inc()
	k.log.Info("rotated the Noise static key", "version", newest.Version+1)
	return k.reload(ctx)
}

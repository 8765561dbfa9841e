package sqlite

import (
	"slices"
	"sync"
)

// The channel-membership cache.
//
// Every durable MSG reads its channel's members (§6.7 recipients). An
// SQLite database belongs to one node (§9.1), and every write to
// channel_members goes through a method of this package, so the Store keeps
// the member lists it has read in memory and drops them on every
// membership write: CreateChannel, AddChannelMembers, RemoveChannelMember,
// DeleteChannel (cascade), RemoveDeviceMemberships and Migrate. Writes
// inside Tx are recorded and applied when the transaction ends (committed
// or not), so the cache never holds uncommitted data.
//
// A list is filled only if no invalidation happened since the read began
// (generation check): a read that raced with a commit cannot put the old
// list back after the commit's invalidation. Writes made to the database
// file by another process (e.g. the sqlite3 shell) are not seen: restart
// the server after editing memberships by hand. CLI commands do not write
// memberships.

// Bounds of the cache: channels and member strings held in total.
const (
	memberCacheChannels = 65536
	memberCacheMembers  = 262144
)

type memberCache struct {
	mu      sync.Mutex
	gen     uint64
	m       map[uint32][]string
	members int // sum of len over m
}

func newMemberCache() *memberCache {
	return &memberCache{m: make(map[uint32][]string)}
}

// get returns a copy of the cached members of the channel.
func (c *memberCache) get(id uint32) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.m[id]
	if !ok {
		return nil, false
	}
	return slices.Clone(l), true
}

// contains reports whether member is in the cached list of the channel;
// known is false when the channel is not cached.
func (c *memberCache) contains(id uint32, member string) (is, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.m[id]
	if !ok {
		return false, false
	}
	return slices.Contains(l, member), true
}

// generation returns the value to pass to put for a read starting now.
func (c *memberCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// put caches a copy of members unless the cache was invalidated since gen
// was taken.
func (c *memberCache) put(id uint32, members []string, gen uint64) {
	n := len(members)
	if n == 0 || n > memberCacheMembers {
		return
	}
	l := slices.Clone(members)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if old, ok := c.m[id]; ok {
		c.members -= len(old)
		delete(c.m, id)
	}
	// Evict arbitrary entries (map order) until the new list fits.
	for k, v := range c.m {
		if len(c.m) < memberCacheChannels && c.members+n <= memberCacheMembers {
			break
		}
		c.members -= len(v)
		delete(c.m, k)
	}
	c.m[id] = l
	c.members += n
}

// invalidate drops the channels' lists (every list when all).
func (c *memberCache) invalidate(all bool, ids ...uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if all {
		clear(c.m)
		c.members = 0
		return
	}
	for _, id := range ids {
		if l, ok := c.m[id]; ok {
			c.members -= len(l)
			delete(c.m, id)
		}
	}
}

// txChanges records the membership writes of one Tx.
type txChanges struct {
	all bool
	ids []uint32
}

// apply invalidates what the transaction changed.
func (t *txChanges) apply(c *memberCache) {
	if t.all || len(t.ids) > 0 {
		c.invalidate(t.all, t.ids...)
	}
}

package redis

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	goredis "github.com/redis/go-redis/v9"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/router"
)

// Call pinning (§9.4): call:<call_id> holds the owner node id and
// callchan:<channel_id> the canonical JSON {"call_id":…,"node":…}; both
// live 3 × K (RouteTTL), are renewed every K while the call lives and are
// deleted when it ends.

var (
	// KEYS: call:<id>, callchan:<ch>; ARGV: node, callchan value, ttl ms.
	// 1: the call id is in use; 2: SET NX of callchan failed; 0: claimed.
	claimCallScript = goredis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 1 then return 1 end
if not redis.call("SET", KEYS[2], ARGV[2], "NX", "PX", ARGV[3]) then return 2 end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[3])
return 0`)
	// KEYS: call:<id>, callchan:<ch>; ARGV: node, callchan value, ttl ms.
	refreshCallScript = goredis.NewScript(`
local n = 0
if redis.call("GET", KEYS[1]) == ARGV[1] then n = n + redis.call("PEXPIRE", KEYS[1], ARGV[3]) end
if redis.call("GET", KEYS[2]) == ARGV[2] then n = n + redis.call("PEXPIRE", KEYS[2], ARGV[3]) end
return n`)
	// KEYS: call:<id>, callchan:<ch>; ARGV: node, callchan value.
	releaseCallScript = goredis.NewScript(`
local n = 0
if redis.call("GET", KEYS[1]) == ARGV[1] then n = n + redis.call("DEL", KEYS[1]) end
if redis.call("GET", KEYS[2]) == ARGV[2] then n = n + redis.call("DEL", KEYS[2]) end
return n`)
)

func (c *Cluster) callKeys(id string, ch uint32) []string {
	return []string{c.key("call", id), c.key("callchan", strconv.FormatUint(uint64(ch), 10))}
}

// callchanValue is the canonical JSON value of callchan:<channel>.
func (c *Cluster) callchanValue(id string) string {
	b, _ := canonjson.Marshal(map[string]any{"call_id": id, "node": c.opts.NodeID})
	return string(b)
}

func (c *Cluster) ClaimCall(ctx context.Context, id string, ch uint32) (router.ClaimResult, error) {
	n, err := claimCallScript.Run(ctx, c.rdb, c.callKeys(id, ch), c.opts.NodeID, c.callchanValue(id), c.opts.RouteTTL.Milliseconds()).Int()
	if err != nil {
		return 0, err
	}
	switch n {
	case 0:
		return router.Claimed, nil
	case 1:
		return router.CallIDTaken, nil
	}
	return router.ChannelTaken, nil
}

func (c *Cluster) RefreshCalls(ctx context.Context, calls []router.CallRef) error {
	if len(calls) == 0 {
		return nil
	}
	err := c.refreshCalls(ctx, calls)
	if goredis.HasErrorPrefix(err, "NOSCRIPT") {
		// A pipelined EVALSHA does not fall back to EVAL (see RefreshRoutes).
		if err := refreshCallScript.Load(ctx, c.rdb).Err(); err != nil {
			return err
		}
		err = c.refreshCalls(ctx, calls)
	}
	return err
}

func (c *Cluster) refreshCalls(ctx context.Context, calls []router.CallRef) error {
	pipe := c.rdb.Pipeline()
	for _, cr := range calls {
		refreshCallScript.Run(ctx, pipe, c.callKeys(cr.ID, cr.Channel), c.opts.NodeID, c.callchanValue(cr.ID), c.opts.RouteTTL.Milliseconds())
	}
	_, err := pipe.Exec(ctx)
	return err
}

func (c *Cluster) ReleaseCall(ctx context.Context, id string, ch uint32) error {
	return releaseCallScript.Run(ctx, c.rdb, c.callKeys(id, ch), c.opts.NodeID, c.callchanValue(id)).Err()
}

// liveNode returns node when it is this node or has a heartbeat, else "".
func (c *Cluster) liveNode(ctx context.Context, node string) (string, error) {
	if node == "" || node == c.opts.NodeID {
		return node, nil
	}
	ok, err := c.alive(ctx, node)
	if err != nil || !ok {
		return "", err
	}
	return node, nil
}

func (c *Cluster) CallOwner(ctx context.Context, id string) (string, error) {
	node, err := c.rdb.Get(ctx, c.key("call", id)).Result()
	if errors.Is(err, goredis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return c.liveNode(ctx, node)
}

func (c *Cluster) ChannelCall(ctx context.Context, ch uint32) (string, string, error) {
	b, err := c.rdb.Get(ctx, c.key("callchan", strconv.FormatUint(uint64(ch), 10))).Bytes()
	if errors.Is(err, goredis.Nil) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	var v struct {
		CallID string `json:"call_id"`
		Node   string `json:"node"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return "", "", err
	}
	node, err := c.liveNode(ctx, v.Node)
	if err != nil || node == "" {
		return "", "", err
	}
	return v.CallID, node, nil
}

// Extension members of the `call` bus message (unknown members are ignored
// by receivers, §9.4):
//
//   - "capabilities": the sender's accepted media.* capabilities (array of
//     strings), on forwarded media frames, so that the owner can apply the
//     raw-media rule of §7.5 step 4; omitted when empty.
//   - "disconnect": true on the synthetic message a node sends to a call's
//     owner when a participant connected to it disconnects (§6.10); it has
//     frame_type CALL_END, the call's call_id and channel, sequence 0, an
//     empty payload and request_id, and gets no call_reply.
func encodeCallExt(obj map[string]any, m router.BusMessage) {
	if len(m.Capabilities) > 0 {
		obj["capabilities"] = m.Capabilities
	}
	if m.Disconnect {
		obj["disconnect"] = true
	}
}

func decodeCallExt(b []byte, m *router.BusMessage) error {
	var ext struct {
		Capabilities []string `json:"capabilities"`
		Disconnect   bool     `json:"disconnect"`
	}
	if err := json.Unmarshal(b, &ext); err != nil {
		return err
	}
	m.Capabilities, m.Disconnect = ext.Capabilities, ext.Disconnect
	return nil
}

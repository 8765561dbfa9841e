package httpapi

import (
	"crypto/ed25519"
	"crypto/mlkem"
	"encoding/hex"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/store"
)

// 400 details of §8.4.8.
const (
	detailPathAddress      = "path address is required"
	detailInvalidPort      = "invalid port"
	detailInvalidPriority  = "invalid priority"
	detailDuplicatePathID  = "duplicate path id"
	detailInvalidMinPaths  = "invalid min_paths"
	detailInvalidRealityFP = "invalid reality fingerprint"
	detailRealityCertMiss  = "reality certificate missing"
	detailInvalidFEC       = "invalid fec parameters"
)

// Defaults of §8.4.8.
const (
	defaultPort          = 443
	defaultPriority      = 100
	defaultMinPaths      = 2
	defaultFECMTU        = 1200
	defaultFECOverhead   = 0.25
	sampleSegmentPayload = 65536
)

// Transport names and the kinds TransportRTT knows, in answer order.
var assistTransports = []struct{ name, kind, throughput string }{
	{"Http2", "http2", "High"},
	{"Http1", "http1", "High"},
	{"WebSocket", "websocket", "Medium"},
}

type assistPath struct {
	id          string
	priority    int64
	fingerprint *[32]byte
}

type assistRequest struct {
	paths         []assistPath // request order
	preferReality bool
	mtu           int64
	overhead      float64
}

// parseAssist validates the body of POST /api/p2p/assist. Type errors of
// members without a detail of their own come first (`invalid JSON
// payload`), then the checks in the order §8.4.8 lists their details.
func (a *API) parseAssist(body canonjson.Value) (*assistRequest, error) {
	bad := badRequest
	if _, err := optString(body, "peer_hint"); err != nil {
		return nil, err
	}
	req := &assistRequest{mtu: defaultFECMTU, overhead: defaultFECOverhead}
	if v, ok := member(body, "prefer_reality"); ok {
		if v.Kind != canonjson.Bool {
			return nil, bad(detailInvalidJSON)
		}
		req.preferReality = v.Bool
	}
	var rawPaths []canonjson.Value
	if v, ok := member(body, "paths"); ok {
		if v.Kind != canonjson.Array {
			return nil, bad(detailInvalidJSON)
		}
		rawPaths = v.Arr
	}
	for _, p := range rawPaths {
		if p.Kind != canonjson.Object {
			return nil, bad(detailInvalidJSON)
		}
		for _, k := range []string{"id", "server_name", "reality_pem"} {
			if _, err := optString(p, k); err != nil {
				return nil, err
			}
		}
	}

	// path address is required
	for _, p := range rawPaths {
		v, ok := member(p, "address")
		if !ok || v.Kind != canonjson.String || strings.TrimSpace(v.Str) == "" {
			return nil, bad(detailPathAddress)
		}
	}
	// invalid port
	for _, p := range rawPaths {
		if v, ok := member(p, "port"); ok {
			n, res := intValue(v)
			if res != isInteger || n < 1 || n > 65535 {
				return nil, bad(detailInvalidPort)
			}
		}
	}
	// invalid priority
	paths := make([]assistPath, len(rawPaths))
	for i, p := range rawPaths {
		paths[i].priority = defaultPriority
		if v, ok := member(p, "priority"); ok {
			n, res := intValue(v)
			if res != isInteger {
				return nil, bad(detailInvalidPriority)
			}
			paths[i].priority = n
		}
	}
	// duplicate path id
	seen := make(map[string]bool, len(rawPaths))
	for i, p := range rawPaths {
		id := "path-" + strconv.Itoa(i+1)
		if s, _ := optString(p, "id"); s != nil {
			id = *s
		}
		if seen[id] {
			return nil, bad(detailDuplicatePathID)
		}
		seen[id] = true
		paths[i].id = id
	}
	// invalid min_paths (validated, otherwise advisory)
	if v, ok := member(body, "min_paths"); ok {
		n, res := intValue(v)
		if res != isInteger || n < 1 || n > 8 {
			return nil, bad(detailInvalidMinPaths)
		}
	}
	// invalid reality fingerprint
	for i, p := range rawPaths {
		if v, ok := member(p, "reality_fingerprint"); ok {
			if v.Kind != canonjson.String {
				return nil, bad(detailInvalidRealityFP)
			}
			fp, err := identity.DecodeHex32(v.Str)
			if err != nil {
				return nil, bad(detailInvalidRealityFP)
			}
			paths[i].fingerprint = &fp
		}
	}
	// reality certificate missing
	for i, p := range rawPaths {
		if paths[i].fingerprint == nil || a.d.RealityCert != "" {
			continue
		}
		if pem, _ := optString(p, "reality_pem"); pem == nil || strings.TrimSpace(*pem) == "" {
			return nil, bad(detailRealityCertMiss)
		}
	}
	// invalid fec parameters
	if v, ok := member(body, "fec"); ok {
		if v.Kind != canonjson.Object {
			return nil, bad(detailInvalidFEC)
		}
		if m, ok := member(v, "mtu"); ok {
			n, res := intValue(m)
			if res != isInteger || n < 256 || n > 65535 {
				return nil, bad(detailInvalidFEC)
			}
			req.mtu = n
		}
		if o, ok := member(v, "repair_overhead"); ok {
			f, ok := floatValue(o)
			if !ok || !(f >= 0 && f <= 1) {
				return nil, bad(detailInvalidFEC)
			}
			req.overhead = f
		}
	}

	if len(paths) == 0 {
		// primary: domain, port 443, priority 0; backup: peer_hint or
		// relay.<domain>, port 443, priority 1. Addresses, ports and server
		// names are validated but not part of the answer.
		paths = []assistPath{{id: "primary", priority: 0}, {id: "backup", priority: 1}}
	}
	req.paths = paths
	return req, nil
}

type assistNoise struct {
	DeviceSeedHex   string `json:"device_seed_hex"`
	KeyVersion      int    `json:"key_version"`
	Pattern         string `json:"pattern"`
	PrologueHex     string `json:"prologue_hex"`
	StaticPublicHex string `json:"static_public_hex"`
}

type assistPQ struct {
	IdentityPublicHex     string `json:"identity_public_hex"`
	KEMPublicHex          string `json:"kem_public_hex"`
	SignatureHex          string `json:"signature_hex"`
	SignaturePublicHex    string `json:"signature_public_hex"`
	SignedPrekeyPublicHex string `json:"signed_prekey_public_hex"`
}

type assistTransport struct {
	Latency    string `json:"latency"`
	PathID     string `json:"path_id"`
	Resistance string `json:"resistance"`
	Throughput string `json:"throughput"`
	Transport  string `json:"transport"`
}

type segments struct {
	Repair int64 `json:"repair"`
	Total  int64 `json:"total"`
}

type assistMultipath struct {
	FECMTU         int64               `json:"fec_mtu"`
	FECOverhead    float64             `json:"fec_overhead"`
	PrimaryPath    string              `json:"primary_path"`
	SampleSegments map[string]segments `json:"sample_segments"`
}

type assistObfuscation struct {
	DomainFronting        bool    `json:"domain_fronting"`
	ProtocolMimicry       bool    `json:"protocol_mimicry"`
	RealityFingerprintHex *string `json:"reality_fingerprint_hex"`
	TorBridge             bool    `json:"tor_bridge"`
}

type assistSecurity struct {
	PQKEM                  string `json:"pq_kem"`
	ProtocolVersions       []int  `json:"protocol_versions"`
	RequireEncryptedFrames bool   `json:"require_encrypted_frames"`
	TLSMinVersion          string `json:"tls_min_version"`
}

type assistResponse struct {
	Multipath   assistMultipath   `json:"multipath"`
	Noise       assistNoise       `json:"noise"`
	Obfuscation assistObfuscation `json:"obfuscation"`
	PQ          assistPQ          `json:"pq"`
	Security    assistSecurity    `json:"security"`
	Transports  []assistTransport `json:"transports"`
}

// p2pAssist is POST /api/p2p/assist (§8.4.8).
func (a *API) p2pAssist(c *call) (any, error) {
	req, err := a.parseAssist(c.body)
	if err != nil {
		return nil, err
	}
	keys := a.d.NoiseKeys()
	if len(keys) == 0 {
		return nil, errors.New("no non-expired Noise key")
	}
	newest := keys[0]
	b, err := a.bundle.get(newest, a.d.CA)
	if err != nil {
		return nil, err
	}
	seed, err := a.randomHex(32)
	if err != nil {
		return nil, err
	}
	staticHex := hex.EncodeToString(newest.Public[:])

	sorted := slices.Clone(req.paths)
	slices.SortStableFunc(sorted, func(x, y assistPath) int {
		switch {
		case x.priority < y.priority:
			return -1
		case x.priority > y.priority:
			return 1
		}
		return 0
	})
	transports := make([]assistTransport, 0, len(sorted)*len(assistTransports))
	latency := make(map[string]string, len(assistTransports))
	for _, p := range sorted {
		for _, t := range assistTransports {
			if t.kind == "websocket" && !a.d.WebSocket {
				continue
			}
			l, ok := latency[t.kind]
			if !ok {
				l = latencyBucket(a.d.TransportRTT(t.kind))
				latency[t.kind] = l
			}
			transports = append(transports, assistTransport{
				Latency: l, PathID: p.id, Resistance: "Basic", Throughput: t.throughput, Transport: t.name,
			})
		}
	}

	source := int64(math.Ceil(float64(sampleSegmentPayload) / float64(req.mtu)))
	repair := int64(math.Ceil(float64(source) * req.overhead))
	samples := make(map[string]segments, len(sorted))
	for _, p := range sorted {
		samples[p.id] = segments{Repair: repair, Total: source + repair}
	}

	var fp *string
	for _, p := range req.paths {
		if p.fingerprint != nil {
			s := hex.EncodeToString(p.fingerprint[:])
			fp = &s
			break
		}
	}
	if fp == nil && a.d.RealityFingerprint != nil {
		s := hex.EncodeToString(a.d.RealityFingerprint[:])
		fp = &s
	}

	versions := a.d.Versions
	if versions == nil {
		versions = []int{}
	}
	resp := assistResponse{
		Multipath: assistMultipath{
			FECMTU: req.mtu, FECOverhead: req.overhead, PrimaryPath: sorted[0].id, SampleSegments: samples,
		},
		Noise: assistNoise{
			DeviceSeedHex: seed, KeyVersion: newest.Version, Pattern: "Xk",
			PrologueHex: hex.EncodeToString([]byte(a.d.Prologue)), StaticPublicHex: staticHex,
		},
		Obfuscation: assistObfuscation{RealityFingerprintHex: fp},
		PQ: assistPQ{
			IdentityPublicHex: a.caPubHex, KEMPublicHex: b.kemHex, SignatureHex: b.sigHex,
			SignaturePublicHex: a.caPubHex, SignedPrekeyPublicHex: staticHex,
		},
		Security: assistSecurity{
			PQKEM: "ML-KEM-768", ProtocolVersions: versions,
			RequireEncryptedFrames: a.d.RequireEncryptedFrames, TLSMinVersion: "1.3",
		},
		Transports: transports,
	}

	m := a.d.Metrics
	if len(req.paths) >= 2 {
		m.MultipathSessions.Inc()
	}
	m.MultipathPaths.Add(float64(len(req.paths)))
	if req.preferReality && fp != nil {
		m.CensorshipDeflections.Inc()
	}
	return resp, nil
}

// latencyBucket maps a median handshake round trip to Low/Medium/High
// (§8.4.8; Medium without samples).
func latencyBucket(median time.Duration, ok bool) string {
	switch {
	case !ok:
		return "Medium"
	case median < 100*time.Millisecond:
		return "Low"
	case median < 300*time.Millisecond:
		return "Medium"
	}
	return "High"
}

// bundleCache keeps the ML-KEM-768 encapsulation key and the pq-bundle
// signature of the newest Noise key (both deterministic).
type bundleCache struct {
	mu      sync.Mutex
	version int
	public  [32]byte
	kemSeed [64]byte
	kemHex  string
	sigHex  string
}

type bundle struct{ kemHex, sigHex string }

func (c *bundleCache) get(k store.NoiseKey, ca ed25519.PrivateKey) (bundle, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kemHex != "" && c.version == k.Version && c.public == k.Public && c.kemSeed == k.KEMSeed {
		return bundle{c.kemHex, c.sigHex}, nil
	}
	dk, err := mlkem.NewDecapsulationKey768(k.KEMSeed[:])
	if err != nil {
		return bundle{}, err
	}
	ek := dk.EncapsulationKey().Bytes()
	sig := ed25519.Sign(ca, identity.PQBundleMessage(k.Public, ek))
	c.version, c.public, c.kemSeed = k.Version, k.Public, k.KEMSeed
	c.kemHex, c.sigHex = hex.EncodeToString(ek), hex.EncodeToString(sig)
	return bundle{c.kemHex, c.sigHex}, nil
}

package server

import (
	"context"
	"encoding/hex"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/httpapi"
	"github.com/commucat/commucat/internal/metrics"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/ratelimit"
	"github.com/commucat/commucat/internal/session"
)

const landingPage = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>CommuCat</title></head>
<body>
<h1>CommuCat Server</h1>
<p>A self-hosted server for secure messaging and calls (CCP-1).</p>
<p><a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a></p>
</body>
</html>
`

// writeProblem writes an application/problem+json error (§8.1).
func writeProblem(w http.ResponseWriter, status int, title, detail string) {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	var b []byte
	if detail != "" {
		b = append(b, `{"detail":`...)
		b = canonjson.AppendString(b, detail)
		b = append(b, ',')
	} else {
		b = append(b, '{')
	}
	b = append(b, `"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"title":`...)
	b = canonjson.AppendString(b, title)
	b = append(b, `,"type":"about:blank"}`...)
	_, _ = w.Write(b)
}

// notFound is the unknown-route answer of §3.2 (no detail).
func notFound(w http.ResponseWriter) { writeProblem(w, http.StatusNotFound, "Not Found", "") }

// writeJSON writes a canonical JSON success response (§8.1).
func writeJSON(w http.ResponseWriter, v any) {
	b, err := canonjson.Marshal(v)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "InternalError", "internal server error")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// handler is the HTTP surface of one node.
type handler struct {
	s *Server
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	route := metrics.RouteLabel(r.URL.Path)
	if r.URL.Path != "/connect" {
		defer func() {
			h.s.metrics.HTTPRequestDuration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}()
	}
	s := h.s
	path := r.URL.Path
	switch path {
	case "/connect", "/healthz", "/readyz":
	default:
		// The http zone (§8.3) covers every other request, unknown
		// routes included.
		if ok, retry := s.httpZone.Allow(ratelimit.ClientKey(s.clientIP(r))); !ok {
			s.metrics.RateLimitHTTP.Inc()
			tooManyRequests(w, retry)
			return
		}
	}
	switch {
	case path == "/" || path == "/index.html":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(landingPage))
	case path == "/healthz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	case path == "/readyz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		st := h.s.ready(r.Context())
		if !st.ok() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		// §3.7 fixes the body to one word; ?verbose adds one line per
		// dependency after it (the spec is silent on details).
		switch {
		case r.URL.Query().Has("verbose"):
			_, _ = w.Write([]byte(st.report()))
		case st.ok():
			_, _ = w.Write([]byte("ready"))
		default:
			_, _ = w.Write([]byte("degraded"))
		}
	case path == "/connect":
		h.connect(w, r)
	case path == "/metrics":
		h.metrics(w, r)
	case httpapi.Handles(path):
		s.api.ServeHTTP(w, r)
	default:
		notFound(w)
	}
}

func (h *handler) connect(w http.ResponseWriter, r *http.Request) {
	s := h.s
	switch r.Method {
	case http.MethodPost:
	case http.MethodGet:
		if !s.cfg.WebSocket {
			notFound(w)
			return
		}
		if !isWebSocketUpgrade(r) {
			writeProblem(w, http.StatusBadRequest, "BadRequest", "websocket upgrade required")
			return
		}
	default:
		notFound(w)
		return
	}
	ip := s.clientIP(r)
	if ok, retry := s.connectZone.Allow(ratelimit.ClientKey(ip)); !ok {
		s.metrics.RateLimitConnect.Inc()
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		tooManyRequests(w, retry)
		return
	}
	if s.draining.Load() {
		refuseConnect(w, r, http.StatusServiceUnavailable, "ServiceUnavailable", "service unavailable")
		return
	}
	release, ok := s.streams.acquire(ratelimit.ClientKey(ip))
	if !ok {
		// Too many open or half-open streams from this client IP: the
		// flood is refused before any handshake work.
		s.metrics.RateLimitConnect.Inc()
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		tooManyRequests(w, time.Second)
		return
	}
	handedOff := false
	defer func() {
		if !handedOff {
			release()
		}
	}()
	if r.Method == http.MethodGet {
		handedOff = h.connectWebSocket(w, r, ip, release)
		return
	}
	kind := "http2"
	if r.ProtoMajor == 1 {
		kind = "http1"
	}
	rc := http.NewResponseController(w)
	if kind == "http1" {
		if err := rc.EnableFullDuplex(); err != nil {
			writeProblem(w, http.StatusInternalServerError, "InternalError", "internal server error")
			return
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-store")
	takeOver := kind == "http1" && chunkedRequest(r)
	if takeOver {
		// §3.4: the connection is closed after the stream.
		w.Header().Set("Connection", "close")
	}
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	if takeOver {
		// The stream continues on a goroutine of its own, without
		// net/http's buffers (h1stream.go).
		t, err := hijackH1(rc)
		if err != nil {
			s.log.Warn("taking over an HTTP/1.1 /connect stream", "err", err)
			return
		}
		handedOff = true
		s.serveH1(context.WithoutCancel(r.Context()), t, ip, release)
		return
	}
	t := &httpTransport{body: r.Body, w: w, rc: rc, kind: kind}
	defer t.finish()
	s.serveStream(r.Context(), t, ip, kind, nil)
}

// tooManyRequests is the 429 of §8.3.
func tooManyRequests(w http.ResponseWriter, retry time.Duration) {
	w.Header().Set("Retry-After", strconv.FormatInt(ratelimit.RetryAfterSeconds(retry), 10))
	writeProblem(w, http.StatusTooManyRequests, "Too Many Requests", "")
}

// metrics serves /metrics with the admin rule of §8.2: the admin token
// whenever one exists, else loopback clients only.
func (h *handler) metrics(w http.ResponseWriter, r *http.Request) {
	s := h.s
	if s.admins.Exists() {
		if !s.admins.Check(httpapi.ParseAuthorization(r.Header.Get("Authorization"))) {
			writeProblem(w, http.StatusUnauthorized, "Unauthorized", "")
			return
		}
	} else if !s.clientIP(r).IsLoopback() {
		writeProblem(w, http.StatusForbidden, "Forbidden", "")
		return
	}
	s.metricsH.ServeHTTP(w, r)
}

// refuseConnect answers a /connect request with an error. On HTTP/1.1 the
// connection is closed afterwards: the request body is an endless stream
// that net/http would otherwise try to drain before answering.
func refuseConnect(w http.ResponseWriter, r *http.Request, status int, title, detail string) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	writeProblem(w, status, title, detail)
}

func isWebSocketUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") &&
		headerHasToken(r.Header, "Upgrade", "websocket") &&
		r.Header.Get("Sec-WebSocket-Version") == "13" &&
		r.Header.Get("Sec-WebSocket-Key") != ""
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// connectWebSocket accepts the upgrade and runs the stream on a goroutine
// of its own, so that net/http's goroutine, and with it the request, can
// go (as for HTTP/1.1, h1stream.go); the socket gets smaller buffers than
// net/http's (lightHijacker). It reports whether it took over release.
func (h *handler) connectWebSocket(w http.ResponseWriter, r *http.Request, ip netip.Addr, release func()) bool {
	s := h.s
	c, err := websocket.Accept(lightHijacker{w}, r, &websocket.AcceptOptions{
		Subprotocols:       []string{"commucat.ccp1"},
		InsecureSkipVerify: true, // §3.5: Origin is not checked; authentication is in-band
	})
	if err != nil {
		return false
	}
	t := newWSTransport(c)
	s.hijacked.add(t)
	ctx := context.WithoutCancel(r.Context())
	go func() {
		defer s.hijacked.done(t)
		defer release()
		liveness := new(session.Liveness)
		stopPings := t.startPings(s.cfg.Keepalive, liveness)
		defer stopPings()
		reason := s.serveStream(ctx, t, ip, "websocket", liveness)
		code := closeCode(reason)
		if t.textClose {
			code = websocket.StatusUnsupportedData
		}
		t.closeWith(code, "")
		<-t.ctx.Done()
	}()
	return true
}

// serveStream runs one /connect stream through the session manager.
func (s *Server) serveStream(ctx context.Context, t session.Transport, ip netip.Addr, kind string, liveness *session.Liveness) session.EndReason {
	key := ratelimit.ClientKey(ip)
	var once sync.Once
	done := func() { once.Do(func() { s.streams.handshakeDone(key) }) }
	defer done()
	meta := session.Meta{
		RemoteIP: ip,
		Liveness: liveness,
		HandshakeRTT: func(d time.Duration) {
			s.health.observe(kind, d)
			done()
		},
	}
	return s.sessions.Serve(ctx, t, meta)
}

// serverInfo is GET /api/server-info (§8.4.1).
type serverInfo struct {
	Capabilities      []string                 `json:"capabilities"`
	DeviceCAPublic    string                   `json:"device_ca_public"`
	Domain            string                   `json:"domain"`
	NoiseKeys         []noiseconn.NoiseKeyInfo `json:"noise_keys"`
	NoisePublic       string                   `json:"noise_public"`
	Pairing           pairingInfo              `json:"pairing"`
	Presence          presenceInfo             `json:"presence"`
	Session           sessionInfo              `json:"session"`
	SupportedPatterns []string                 `json:"supported_patterns"`
	SupportedVersions []int                    `json:"supported_versions"`
}

type pairingInfo struct {
	AutoApprove    bool `json:"auto_approve"`
	MaxAutoDevices int  `json:"max_auto_devices"`
	PairingTTL     int  `json:"pairing_ttl"`
}

type presenceInfo struct {
	TTLSeconds int `json:"ttl_seconds"`
}

type sessionInfo struct {
	KeepaliveInterval int `json:"keepalive_interval"`
	TTLSeconds        int `json:"ttl_seconds"`
}

func (s *Server) serverInfo() serverInfo {
	keys := s.keys.current()
	infos := make([]noiseconn.NoiseKeyInfo, 0, len(keys))
	for _, k := range keys {
		infos = append(infos, k.Info())
	}
	newest := ""
	if len(keys) > 0 {
		newest = hex.EncodeToString(keys[0].Public[:])
	}
	return serverInfo{
		Capabilities:      s.features.SupportedCapabilities(),
		DeviceCAPublic:    hex.EncodeToString(s.caPub[:]),
		Domain:            s.cfg.Domain,
		NoiseKeys:         infos,
		NoisePublic:       newest,
		Pairing:           pairingInfo{AutoApprove: s.cfg.AutoApprove, MaxAutoDevices: s.cfg.MaxAutoDevices, PairingTTL: int(s.cfg.PairingTTL / time.Second)},
		Presence:          presenceInfo{TTLSeconds: int(s.cfg.PresenceTTL / time.Second)},
		Session:           sessionInfo{KeepaliveInterval: int(s.cfg.Keepalive / time.Second), TTLSeconds: int(s.cfg.SessionTTL / time.Second)},
		SupportedPatterns: []string{noiseconn.PatternXK, noiseconn.PatternIK},
		SupportedVersions: s.cfg.Versions,
	}
}

// transportHealth keeps handshake round trips per transport for the last
// five minutes (§8.4.8).
type transportHealth struct {
	mu      sync.Mutex
	samples map[string][]rttSample
}

type rttSample struct {
	at  time.Time
	rtt time.Duration
}

const healthWindow = 5 * time.Minute
const maxHealthSamples = 1024

func (h *transportHealth) observe(kind string, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.samples == nil {
		h.samples = make(map[string][]rttSample)
	}
	now := time.Now()
	s := append(h.samples[kind], rttSample{now, d})
	for len(s) > 0 && (now.Sub(s[0].at) > healthWindow || len(s) > maxHealthSamples) {
		s = s[1:]
	}
	h.samples[kind] = s
}

// median returns the median handshake round trip on a transport in the
// last five minutes (§8.4.8), false without samples.
func (h *transportHealth) median(kind string) (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	var d []time.Duration
	for _, x := range h.samples[kind] {
		if now.Sub(x.at) <= healthWindow {
			d = append(d, x.rtt)
		}
	}
	if len(d) == 0 {
		return 0, false
	}
	slices.Sort(d)
	if len(d)%2 == 1 {
		return d[len(d)/2], true
	}
	return (d[len(d)/2-1] + d[len(d)/2]) / 2, true
}

// streamCaps counts the open and the handshaking /connect streams per
// client IP key (ratelimit.ClientKey: IPv6 by /64) against the caps
// security.max_connections_per_ip and security.max_handshakes_per_ip (issue 5
// hardening; the spec has no such keys). A client IP is at times a NAT of
// many people, so the total is generous (default 1024); streams that have
// not finished their handshake are capped lower (default 64), since a
// flood of HELLOs is the cheap attack and a real client finishes its
// handshake within one round trip.
type streamCaps struct {
	maxOpen, maxHandshaking int

	mu          sync.Mutex
	open        map[string]int
	handshaking map[string]int
}

// acquire counts a new stream as open and handshaking; false when a cap
// is reached. release must be called when the stream ends.
func (c *streamCaps) acquire(key string) (release func(), ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open == nil {
		c.open, c.handshaking = make(map[string]int), make(map[string]int)
	}
	if c.open[key] >= c.maxOpen || c.handshaking[key] >= c.maxHandshaking {
		return nil, false
	}
	c.open[key]++
	c.handshaking[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.dec(c.open, key)
		})
	}, true
}

// handshakeDone moves a stream from handshaking to established, or ends
// its handshaking state when it ends without a handshake; call it once
// per acquired stream.
func (c *streamCaps) handshakeDone(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dec(c.handshaking, key)
}

func (c *streamCaps) dec(m map[string]int, key string) {
	if m[key] <= 1 {
		delete(m, key)
		return
	}
	m[key]--
}

// counts returns the open and handshaking streams of key (tests).
func (c *streamCaps) counts(key string) (open, handshaking int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open[key], c.handshaking[key]
}

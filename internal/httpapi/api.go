// Package httpapi implements the REST API of CCP-1 §8 (every route of the
// §3.2 table under /api/, plus GET /openapi.json): conventions and problem
// bodies (§8.1), session and admin authentication (§8.2), the pairing zone
// (§8.3) and the endpoints of §8.4.
//
// The package is transport-agnostic: the server mounts an *API for the paths
// it reports with Handles and applies the http rate-limit zone (§8.3) and the
// request-duration metric itself.
package httpapi

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/ledger"
	"github.com/commucat/commucat/internal/metrics"
	"github.com/commucat/commucat/internal/ratelimit"
	"github.com/commucat/commucat/internal/store"
)

// DefaultMaxRequestBody is server.max_request_body's default (§3.8).
const DefaultMaxRequestBody = 262144

// Deps is everything the API needs from the server.
type Deps struct {
	Store  store.Store
	Logger *slog.Logger     // nil: discard
	Now    func() time.Time // nil: time.Now
	Rand   io.Reader        // nil: crypto/rand

	Domain          string        // server.domain
	SessionTTL      time.Duration // server.session_ttl
	PairingTTL      time.Duration // pairing.ttl_seconds
	AllowServerKeys bool          // pairing.allow_server_keys
	MaxRequestBody  int64         // server.max_request_body (0: DefaultMaxRequestBody)

	WebSocket              bool   // server.websocket
	Versions               []int  // S of §4.4
	RequireEncryptedFrames bool   // security.require_encrypted_frames
	Prologue               string // crypto.prologue

	// RealityCert is transport.reality_cert ("" when unset) and
	// RealityFingerprint transport.reality_fingerprint (nil when unset).
	RealityCert        string
	RealityFingerprint *[32]byte

	// CA is the device CA key (from_seed(crypto.federation_seed)).
	CA ed25519.PrivateKey

	// NoiseKeys returns the non-expired Noise keys, newest first, with
	// their ML-KEM seeds (§10.4).
	NoiseKeys func() []store.NoiseKey
	// Live reports whether the session's connection is live (§8.2).
	Live func(s store.Session) bool
	// Revoke closes the device's live connection on any node (§6.11).
	Revoke func(deviceID string)

	Ledger  ledger.Ledger    // nil: ledger.Null
	Metrics *metrics.Metrics // nil: a private set (tests)

	// TransportRTT returns the median handshake round trip of the
	// handshakes completed on a transport ("http2", "http1", "websocket")
	// in the last 5 minutes, and false without samples (§8.4.8).
	TransportRTT func(kind string) (median time.Duration, ok bool)
	// Admin reports whether token is a valid admin token (§8.2).
	Admin func(token string) bool
	// Pairing is the pairing zone (§8.3), applied to POST /api/pair/claim.
	// nil disables it.
	Pairing *ratelimit.Limiter
	// ClientIP is the client IP of §3.2 (nil: the TCP peer address).
	ClientIP func(r *http.Request) netip.Addr

	// ServerInfo returns the body of GET /api/server-info (§8.4.1), any
	// value canonjson.Marshal accepts. The server computes it; the API
	// serves it with the conventions of §8.1.
	ServerInfo func() any
}

// API is the REST API handler.
type API struct {
	d        Deps
	log      *slog.Logger
	caPub    [32]byte
	caPubHex string
	routes   map[string]map[string]*route // path → method → route
	touches  touchCache
	bundle   bundleCache
}

// New returns the API. d.Store and d.CA are required.
func New(d Deps) *API {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Rand == nil {
		d.Rand = rand.Reader
	}
	if d.MaxRequestBody <= 0 {
		d.MaxRequestBody = DefaultMaxRequestBody
	}
	if d.Ledger == nil {
		d.Ledger = ledger.Null{}
	}
	if d.Metrics == nil {
		d.Metrics = metrics.New(prometheus.NewRegistry())
	}
	if d.NoiseKeys == nil {
		d.NoiseKeys = func() []store.NoiseKey { return nil }
	}
	if d.Live == nil {
		d.Live = func(store.Session) bool { return false }
	}
	if d.Revoke == nil {
		d.Revoke = func(string) {}
	}
	if d.TransportRTT == nil {
		d.TransportRTT = func(string) (time.Duration, bool) { return 0, false }
	}
	if d.Admin == nil {
		d.Admin = func(string) bool { return false }
	}
	if d.ClientIP == nil {
		d.ClientIP = func(r *http.Request) netip.Addr { return ratelimit.ClientIP(r.RemoteAddr, nil, nil) }
	}
	if d.ServerInfo == nil {
		d.ServerInfo = func() any { return struct{}{} }
	}
	a := &API{d: d, log: d.Logger}
	a.caPub = identity.PublicKey32(d.CA)
	a.caPubHex = hex.EncodeToString(a.caPub[:])
	a.routes = make(map[string]map[string]*route)
	for i := range routeTable {
		rt := &routeTable[i]
		if a.routes[rt.path] == nil {
			a.routes[rt.path] = make(map[string]*route)
		}
		a.routes[rt.path][rt.method] = rt
	}
	return a
}

// Handles reports whether path is one of the API's paths (whatever the
// method): the server sends these requests to the API.
func Handles(path string) bool {
	for i := range routeTable {
		if routeTable[i].path == path {
			return true
		}
	}
	return false
}

// Routes returns the (method, path) pairs the API serves, in table order.
func Routes() [][2]string {
	out := make([][2]string, len(routeTable))
	for i, rt := range routeTable {
		out[i] = [2]string{rt.method, rt.path}
	}
	return out
}

type authKind uint8

const (
	authNone authKind = iota
	authSession
	authSessionOrAdmin
)

type bodyKind uint8

const (
	bodyNone     bodyKind = iota // not read
	bodyOptional                 // empty equals {}
	bodyRequired                 // a JSON object
)

// route is one row of the §3.2 table served here.
type route struct {
	method, path string
	auth         authKind
	body         bodyKind
	pairingZone  bool
	handle       func(a *API, c *call) (any, error)
}

// routeTable is the single source of the served routes (dispatch, Handles,
// Routes and the OpenAPI test).
var routeTable = []route{
	{method: http.MethodGet, path: "/openapi.json", handle: nil}, // raw document, see ServeHTTP
	{method: http.MethodGet, path: "/api/server-info", handle: (*API).serverInfo},
	{method: http.MethodPost, path: "/api/pair", auth: authSession, body: bodyOptional, handle: (*API).pair},
	{method: http.MethodPost, path: "/api/pair/claim", body: bodyRequired, pairingZone: true, handle: (*API).pairClaim},
	{method: http.MethodGet, path: "/api/devices", auth: authSession, handle: (*API).devices},
	{method: http.MethodPost, path: "/api/devices/revoke", auth: authSession, body: bodyRequired, handle: (*API).revoke},
	{method: http.MethodGet, path: "/api/friends", auth: authSession, handle: (*API).getFriends},
	{method: http.MethodPut, path: "/api/friends", auth: authSession, body: bodyRequired, handle: (*API).putFriends},
	{method: http.MethodGet, path: "/api/security-stats", auth: authSessionOrAdmin, handle: (*API).securityStats},
	{method: http.MethodPost, path: "/api/p2p/assist", auth: authSession, body: bodyOptional, handle: (*API).p2pAssist},
}

//go:embed openapi.json
var openAPIDocument []byte

// OpenAPI returns the embedded OpenAPI 3.1 document served at
// /openapi.json.
func OpenAPI() []byte { return openAPIDocument }

// call is one request being handled.
type call struct {
	ctx  context.Context
	r    *http.Request
	now  time.Time
	body canonjson.Value // Object when the route reads a body
	// Set for authenticated sessions (nil with an admin token).
	auth *principal
}

// principal is the owner of a valid session token.
type principal struct {
	session store.Session
	user    store.User
	device  store.Device
}

// ServeHTTP serves the routes of routeTable; every other method/path
// combination gets the unknown-route 404 of §3.2.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := a.routes[r.URL.Path][r.Method]
	if rt == nil {
		writeNotFoundRoute(w)
		return
	}
	if rt.handle == nil { // /openapi.json
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Length", strconv.Itoa(len(openAPIDocument)))
		_, _ = w.Write(openAPIDocument)
		return
	}
	v, err := a.serve(rt, w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	b, err := canonjson.Marshal(v)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

func (a *API) serve(rt *route, w http.ResponseWriter, r *http.Request) (any, error) {
	c := &call{ctx: r.Context(), r: r}
	if rt.pairingZone && a.d.Pairing != nil {
		if ok, retry := a.d.Pairing.Allow(ratelimit.ClientKey(a.d.ClientIP(r))); !ok {
			a.d.Metrics.RateLimitHTTP.Inc()
			return nil, &tooMany{retry: retry}
		}
	}
	var raw []byte
	if rt.body == bodyNone {
		if r.ContentLength > a.d.MaxRequestBody {
			return nil, errPayloadTooLarge
		}
	} else {
		var err error
		if raw, err = readBody(w, r, a.d.MaxRequestBody); err != nil {
			return nil, err
		}
	}
	c.now = a.d.Now()
	switch rt.auth {
	case authSession:
		p, err := a.authenticate(c.ctx, r, c.now)
		if err != nil {
			return nil, err
		}
		c.auth = p
	case authSessionOrAdmin:
		tok := bearerToken(r)
		if tok == "" {
			return nil, errUnauthorized
		}
		if !a.d.Admin(tok) {
			p, err := a.authenticate(c.ctx, r, c.now)
			if err != nil {
				return nil, err
			}
			c.auth = p
		}
	}
	if rt.body != bodyNone {
		v, err := parseObject(raw, rt.body == bodyOptional)
		if err != nil {
			return nil, err
		}
		c.body = v
	}
	return rt.handle(a, c)
}

// readBody reads the whole request body, at most limit bytes (§3.8).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, errPayloadTooLarge
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errPayloadTooLarge
		}
		// The client went away or sent a broken body.
		return nil, badRequest(detailInvalidJSON)
	}
	return b, nil
}

// randomHex returns hex of n random bytes.
func (a *API) randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(a.d.Rand, b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// ledgerRecord writes a ledger record; failures are logged only (§11.1).
func (a *API) ledgerRecord(ctx context.Context, digest [32]byte, meta any) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := a.d.Ledger.Record(ctx, digest, meta); err != nil {
		a.log.Warn("ledger", "err", err)
	}
}

// serverInfo is GET /api/server-info (§8.4.1), computed by the server.
func (a *API) serverInfo(*call) (any, error) { return a.d.ServerInfo(), nil }

// micro truncates t to the storage precision (§9.1).
func micro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

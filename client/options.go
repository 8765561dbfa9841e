package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/commucat/commucat/internal/noiseconn"
)

// Capability strings of §1.5.
const (
	CapNoise    = noiseconn.CapNoise
	CapV2       = noiseconn.CapV2
	CapPQ       = noiseconn.CapPQ
	CapOpus     = noiseconn.CapOpus
	CapVP8      = noiseconn.CapVP8
	CapRawAudio = noiseconn.CapRawAudio
	CapRawVideo = noiseconn.CapRawVideo
	CapPresence = noiseconn.CapPresence
	CapAck      = noiseconn.CapAck
)

// Noise patterns (§4.2).
const (
	PatternXK = noiseconn.PatternXK
	PatternIK = noiseconn.PatternIK
)

// Defaults of Options.
const (
	DefaultPrologue         = "commucat"
	DefaultHandshakeTimeout = 15 * time.Second
	DefaultCloseTimeout     = 5 * time.Second
	DefaultReconnectMin     = 500 * time.Millisecond
	DefaultReconnectMax     = 30 * time.Second
	// DefaultKeepalive is K when neither the handshake ACK nor
	// server-info announce keepalive_interval.
	DefaultKeepalive = 30 * time.Second
)

// Options configure Dial and New.
type Options struct {
	// URL is the server's base URL, https://host:port (a path prefix is
	// kept; /connect and /api/server-info are appended).
	URL string
	// FallbackURLs (Client only) are other nodes of the same server
	// (§9.4: several nodes share storage and keys). After a failed
	// connection attempt the Client tries the next URL, round robin,
	// starting with URL. Dial uses URL only.
	FallbackURLs []string
	// TLSConfig sets RootCAs, ServerName, client certificates...; nil
	// means the system roots. Its NextProtos is replaced to force the
	// transport's HTTP version; MinVersion defaults to TLS 1.3. A Client
	// adds a ClientSessionCache when it has none, so that its reconnects
	// resume TLS; Dial uses only what is set here.
	TLSConfig *tls.Config
	// Transport selects HTTP2 (default), HTTP1 or WebSocket.
	Transport Transport

	// Identity holds the device keys. Required. Its Certificate is
	// updated after each handshake (see Identity).
	Identity *Identity
	// OnIdentityUpdate, if set, is called (synchronously, from Dial) after
	// Identity.Certificate changed, so the application can persist it.
	OnIdentityUpdate func(*Identity)

	Pattern  string // "XK" (default) or "IK"
	Versions []int  // versions offered, default [1, 2]; [1] for a v1-only client
	PQ       bool   // request the ML-KEM-768 hybrid (version 2 only)
	// Capabilities are extra capability strings to offer. noise,
	// presence.push and delivery.ack are always offered, ccp.v2 when
	// version 2 is offered, pq.mlkem768 exactly when PQ is set.
	Capabilities []string

	// User hints for admission (§4.3, §4.9); empty strings are not sent.
	UserID, Handle, DisplayName, AvatarURL string

	Prologue string      // Noise prologue, default "commucat"
	Server   *ServerInfo // nil: fetched from /api/server-info
	Padding  string      // record padding of what the client sends (v2): "none" (default) or "buckets"

	Logger           *slog.Logger  // nil: discard. Secrets and payloads are never logged.
	HandshakeTimeout time.Duration // whole Dial (server-info, TLS, handshake), default 15 s
	CloseTimeout     time.Duration // how long Close waits for the server to end the stream, default 5 s

	// Client only: reconnect backoff bounds (defaults 500 ms and 30 s).
	ReconnectMin, ReconnectMax time.Duration
}

// normalizeURL checks an https:// (or wss://) base URL and returns it
// without query, fragment or trailing slash.
func normalizeURL(name, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("client: %s: %w", name, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "wss":
		u.Scheme = "https"
	default:
		return "", fmt.Errorf("client: %s must be https://host[:port] (got scheme %q)", name, u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("client: %s has no host", name)
	}
	u.RawQuery, u.Fragment = "", ""
	return strings.TrimSuffix(u.String(), "/"), nil
}

// normalize validates o and fills in the defaults.
func (o Options) normalize() (Options, error) {
	if o.URL == "" {
		return o, errors.New("client: Options.URL is required")
	}
	var err error
	if o.URL, err = normalizeURL("Options.URL", o.URL); err != nil {
		return o, err
	}
	fallbacks := make([]string, len(o.FallbackURLs))
	for i, raw := range o.FallbackURLs {
		if fallbacks[i], err = normalizeURL(fmt.Sprintf("Options.FallbackURLs[%d]", i), raw); err != nil {
			return o, err
		}
	}
	o.FallbackURLs = fallbacks
	if o.Identity == nil {
		return o, errors.New("client: Options.Identity is required")
	}
	if !noiseconn.ValidDeviceID(o.Identity.DeviceID) {
		return o, errors.New("client: invalid Identity.DeviceID")
	}
	switch o.Transport {
	case HTTP2, HTTP1, WebSocket:
	default:
		return o, fmt.Errorf("client: unknown %v", o.Transport)
	}
	switch o.Pattern {
	case "":
		o.Pattern = PatternXK
	case PatternXK, PatternIK:
	default:
		return o, fmt.Errorf("client: pattern must be XK or IK (got %q)", o.Pattern)
	}
	if len(o.Versions) == 0 {
		o.Versions = []int{1, 2}
	} else {
		o.Versions = slices.Clone(o.Versions)
		for _, v := range o.Versions {
			if v != 1 && v != 2 {
				return o, fmt.Errorf("client: unsupported protocol version %d", v)
			}
		}
	}
	if !slices.Contains(o.Versions, 2) {
		o.PQ = false // PQ exists only in version 2
	}
	if o.Prologue == "" {
		o.Prologue = DefaultPrologue
	}
	if o.Padding == "" {
		o.Padding = "none"
	}
	if _, err := noiseconn.ParsePadding(o.Padding); err != nil {
		return o, fmt.Errorf("client: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = DefaultCloseTimeout
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = DefaultReconnectMin
	}
	if o.ReconnectMax <= 0 {
		o.ReconnectMax = DefaultReconnectMax
	}
	if o.ReconnectMax < o.ReconnectMin {
		o.ReconnectMax = o.ReconnectMin
	}
	if o.Handle != "" && !noiseconn.ValidHandle(o.Handle) {
		return o, errors.New("client: invalid handle (1-64 characters, no control characters)")
	}
	return o, nil
}

// capabilities returns the capability list the HELLO offers (pq.mlkem768
// is added by the handshake when PQ is set).
func (o *Options) capabilities() []string {
	caps := []string{CapNoise}
	if slices.Contains(o.Versions, 2) {
		caps = append(caps, CapV2)
	}
	caps = append(caps, CapPresence, CapAck)
	for _, c := range o.Capabilities {
		if c == CapPQ || c == "" || slices.Contains(caps, c) {
			continue
		}
		caps = append(caps, c)
	}
	return caps
}

// userHint returns the HELLO user member, nil when no hint is set.
func (o *Options) userHint() *noiseconn.UserHint {
	if o.UserID == "" && o.Handle == "" && o.DisplayName == "" && o.AvatarURL == "" {
		return nil
	}
	h := &noiseconn.UserHint{}
	set := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	h.ID, h.Handle, h.DisplayName, h.AvatarURL = set(o.UserID), set(o.Handle), set(o.DisplayName), set(o.AvatarURL)
	return h
}

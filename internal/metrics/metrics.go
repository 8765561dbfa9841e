// Package metrics defines the Prometheus metrics of CCP-1 §13 and the
// /metrics handler.
//
// All metrics are registered on a Registerer supplied by the caller (no
// global registry). The histograms with labels have every documented label
// value pre-initialised (§13a.5), so each series is exposed from the start
// with zero counts.
package metrics

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"
)

// ContentType is the exact content type of the /metrics response (§13).
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Metric names (§13).
const (
	NameConnectionsActive      = "commucat_connections_active"
	NameFramesIngress          = "commucat_frames_ingress"
	NameFramesEgress           = "commucat_frames_egress"
	NameRelayEnqueued          = "commucat_relay_enqueued"
	NameSecurityNoise          = "commucat_security_noise"
	NameSecurityPQ             = "commucat_security_pq"
	NameSecurityFECPackets     = "commucat_security_fec_packets"
	NameMultipathSessions      = "commucat_multipath_sessions"
	NameMultipathPaths         = "commucat_multipath_paths"
	NameCensorshipDeflections  = "commucat_censorship_deflections"
	NameCallsActive            = "commucat_calls_active"
	NameCallsTotal             = "commucat_calls_total"
	NameCallVoiceFrames        = "commucat_call_voice_frames"
	NameCallVideoFrames        = "commucat_call_video_frames"
	NameRateLimitHTTP          = "commucat_rate_limit_http"
	NameRateLimitConnect       = "commucat_rate_limit_connect"
	NameSecretRotationsNoise   = "commucat_secret_rotations_noise"
	NameSecretRotationsAdmin   = "commucat_secret_rotations_admin"
	NameRateLimitFrames        = "commucat_rate_limit_frames"
	NameRelayExpired           = "commucat_relay_expired"
	NameRelayEarlyAcked        = "commucat_relay_early_acked"
	NameRelayInboxFull         = "commucat_relay_inbox_full"
	NameTLSHandshakes          = "commucat_tls_handshakes"
	NameBusRefused             = "commucat_bus_refused"
	NameHandshakeDuration      = "commucat_handshake_duration_seconds"
	NameFrameHandlingDuration  = "commucat_frame_handling_duration_seconds"
	NameRelayStoreDuration     = "commucat_relay_store_duration_seconds"
	NameDeliveryLatency        = "commucat_delivery_latency_seconds"
	NameHTTPRequestDuration    = "commucat_http_request_duration_seconds"
	NameMediaTranscodeDuration = "commucat_media_transcode_duration_seconds"
)

// Label names (§13).
const (
	LabelPattern = "pattern"
	LabelType    = "type"
	LabelRoute   = "route"
	LabelKind    = "kind"
	LabelResult  = "result"
	LabelReason  = "reason"
)

// RouteOther is the route label of requests that match no served route.
const RouteOther = "other"

// Routes lists every route path served by §3.2, in the order of the table
// (the unserved /federation/v1/events is not a label value). Together with
// RouteOther these are the values of the route label. Do not modify.
var Routes = []string{
	"/",
	"/index.html",
	"/healthz",
	"/readyz",
	"/metrics",
	"/connect",
	"/openapi.json",
	"/api/server-info",
	"/api/pair",
	"/api/pair/claim",
	"/api/devices",
	"/api/devices/revoke",
	"/api/friends",
	"/api/security-stats",
	"/api/p2p/assist",
}

// RouteLabel maps a request path to its route label: the path itself when
// it is one of Routes, otherwise RouteOther. Matching is exact (§3.2); a
// query string, if present, is not part of the path and is ignored.
func RouteLabel(path string) string {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	switch path {
	case "/", "/index.html", "/healthz", "/readyz", "/metrics", "/connect",
		"/openapi.json", "/api/server-info", "/api/pair", "/api/pair/claim",
		"/api/devices", "/api/devices/revoke", "/api/friends",
		"/api/security-stats", "/api/p2p/assist":
		return path
	}
	return RouteOther
}

// HandshakePatterns returns the values of the pattern label.
func HandshakePatterns() []string { return []string{"XK", "IK"} }

// FrameTypes returns the values of the type label: every frame type name of
// §2.3 in lower case, in code order.
func FrameTypes() []string {
	return []string{
		"hello", "auth", "join", "leave", "msg", "ack", "typing", "presence",
		"key_update", "group_create", "group_invite", "group_event", "error",
		"call_offer", "call_answer", "call_end", "voice_frame", "video_frame",
		"call_stats",
	}
}

// TLSResults returns the values of the result label of
// commucat_tls_handshakes: a full handshake, a resumed session (RFC 8446
// §2.2), or a handshake that failed or timed out.
func TLSResults() []string { return []string{"full", "resumed", "failed"} }

// BusRefusedReasons returns the values of the reason label of
// commucat_bus_refused (the node bus on Redis; the same list as
// internal/store/redis.RefusedReasons).
func BusRefusedReasons() []string {
	return []string{"unauthenticated", "malformed", "misaddressed", "clock", "replayed"}
}

// MediaKinds returns the values of the kind label.
func MediaKinds() []string { return []string{"audio", "video"} }

// Buckets returns the histogram bucket upper bounds of §13, in seconds.
func Buckets() []float64 {
	return []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
}

// Metrics holds every metric of §13.
type Metrics struct {
	ConnectionsActive     prometheus.Gauge
	FramesIngress         prometheus.Counter
	FramesEgress          prometheus.Counter
	RelayEnqueued         prometheus.Counter
	SecurityNoise         prometheus.Counter
	SecurityPQ            prometheus.Counter
	SecurityFECPackets    prometheus.Counter
	MultipathSessions     prometheus.Counter
	MultipathPaths        prometheus.Counter
	CensorshipDeflections prometheus.Counter
	CallsActive           prometheus.Gauge
	CallsTotal            prometheus.Counter
	CallVoiceFrames       prometheus.Counter
	CallVideoFrames       prometheus.Counter
	RateLimitHTTP         prometheus.Counter
	RateLimitConnect      prometheus.Counter
	SecretRotationsNoise  prometheus.Counter
	SecretRotationsAdmin  prometheus.Counter
	RateLimitFrames       prometheus.Counter
	RelayExpired          prometheus.Counter
	RelayEarlyAcked       prometheus.Counter
	RelayInboxFull        prometheus.Counter
	// TLSHandshakes has the label result (TLSResults).
	TLSHandshakes *prometheus.CounterVec
	// BusRefused has the label reason (BusRefusedReasons).
	BusRefused *prometheus.CounterVec

	// HandshakeDuration has the label pattern (XK, IK).
	HandshakeDuration *prometheus.HistogramVec
	// FrameHandlingDuration has the label type (FrameTypes).
	FrameHandlingDuration *prometheus.HistogramVec
	RelayStoreDuration    prometheus.Histogram
	DeliveryLatency       prometheus.Histogram
	// HTTPRequestDuration has the label route (Routes and RouteOther; use
	// RouteLabel).
	HTTPRequestDuration *prometheus.HistogramVec
	// MediaTranscodeDuration has the label kind (audio, video).
	MediaTranscodeDuration *prometheus.HistogramVec
}

// New creates the metrics, pre-initialises every documented label value and
// registers everything on reg. It panics if a metric cannot be registered
// (e.g. when New is called twice with the same Registerer), like
// prometheus.MustRegister.
func New(reg prometheus.Registerer) *Metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	histogram := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: Buckets()})
	}
	histogramVec := func(name, help, label string, values []string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: Buckets()}, []string{label})
		for _, v := range values {
			h.WithLabelValues(v)
		}
		return h
	}
	counterVec := func(name, help, label string, values []string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
		for _, v := range values {
			c.WithLabelValues(v)
		}
		return c
	}
	routes := append(append(make([]string, 0, len(Routes)+1), Routes...), RouteOther)

	m := &Metrics{
		ConnectionsActive:     gauge(NameConnectionsActive, "Established /connect sessions on this node."),
		FramesIngress:         counter(NameFramesIngress, "CCP-1 frames received after the handshake."),
		FramesEgress:          counter(NameFramesEgress, "CCP-1 frames written to connections."),
		RelayEnqueued:         counter(NameRelayEnqueued, "Inbox entries written for recipient devices."),
		SecurityNoise:         counter(NameSecurityNoise, "Completed Noise handshakes."),
		SecurityPQ:            counter(NameSecurityPQ, "Completed handshakes with ML-KEM-768 hybrid keys."),
		SecurityFECPackets:    counter(NameSecurityFECPackets, "Opus packets encoded with in-band FEC enabled."),
		MultipathSessions:     counter(NameMultipathSessions, "P2P assist answers advising two or more paths."),
		MultipathPaths:        counter(NameMultipathPaths, "Paths advised in P2P assist answers."),
		CensorshipDeflections: counter(NameCensorshipDeflections, "P2P assist answers that advised a Reality path on request."),
		CallsActive:           gauge(NameCallsActive, "Calls currently active on this node."),
		CallsTotal:            counter(NameCallsTotal, "Calls started on this node."),
		CallVoiceFrames:       counter(NameCallVoiceFrames, "Voice frames accepted from call participants."),
		CallVideoFrames:       counter(NameCallVideoFrames, "Video frames accepted from call participants."),
		RateLimitHTTP:         counter(NameRateLimitHTTP, "HTTP requests denied by the http or pairing zone."),
		RateLimitConnect:      counter(NameRateLimitConnect, "/connect requests denied by the connect zone."),
		SecretRotationsNoise:  counter(NameSecretRotationsNoise, "Noise static key rotations."),
		SecretRotationsAdmin:  counter(NameSecretRotationsAdmin, "Admin token rotations."),
		RateLimitFrames:       counter(NameRateLimitFrames, "Frames denied by the per-connection limiter."),
		RelayExpired:          counter(NameRelayExpired, "Inbox entries deleted after limits.relay_ttl."),
		RelayEarlyAcked: counter(NameRelayEarlyAcked,
			"Inbox entries not written: the online recipient acknowledged the frame, delivered before the commit, first."),
		RelayInboxFull: counter(NameRelayInboxFull,
			"Durable frames refused because a recipient's inbox was full (limits.max_inbox_entries, limits.max_inbox_bytes)."),
		TLSHandshakes: counterVec(NameTLSHandshakes,
			"TLS handshakes on the listener: full, resumed (a session ticket) or failed.", LabelResult, TLSResults()),
		BusRefused: counterVec(NameBusRefused,
			"Node bus messages this node refused, by reason (bad mac, malformed, for another node, clock off, replayed).", LabelReason, BusRefusedReasons()),

		HandshakeDuration: histogramVec(NameHandshakeDuration,
			"Time from stream start to the handshake ACK.", LabelPattern, HandshakePatterns()),
		FrameHandlingDuration: histogramVec(NameFrameHandlingDuration,
			"Time from receiving a frame to sending its reply or finishing it.", LabelType, FrameTypes()),
		RelayStoreDuration: histogram(NameRelayStoreDuration,
			"Time to store a durable frame for all its recipients."),
		DeliveryLatency: histogram(NameDeliveryLatency,
			"Time from accepting a frame to writing it to an online recipient."),
		HTTPRequestDuration: histogramVec(NameHTTPRequestDuration,
			"REST and probe request handling time.", LabelRoute, routes),
		MediaTranscodeDuration: histogramVec(NameMediaTranscodeDuration,
			"Time to transcode one raw media frame.", LabelKind, MediaKinds()),
	}
	reg.MustRegister(
		m.ConnectionsActive, m.FramesIngress, m.FramesEgress, m.RelayEnqueued,
		m.SecurityNoise, m.SecurityPQ, m.SecurityFECPackets, m.MultipathSessions,
		m.MultipathPaths, m.CensorshipDeflections, m.CallsActive, m.CallsTotal,
		m.CallVoiceFrames, m.CallVideoFrames, m.RateLimitHTTP, m.RateLimitConnect,
		m.SecretRotationsNoise, m.SecretRotationsAdmin, m.RateLimitFrames, m.RelayExpired,
		m.RelayEarlyAcked, m.RelayInboxFull, m.TLSHandshakes, m.BusRefused,
		m.HandshakeDuration, m.FrameHandlingDuration, m.RelayStoreDuration,
		m.DeliveryLatency, m.HTTPRequestDuration, m.MediaTranscodeDuration,
	)
	return m
}

// RegisterRuntime registers the Go runtime and process collectors on reg
// (§13 allows them). It panics if they are already registered.
func RegisterRuntime(reg prometheus.Registerer) {
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}

// Handler serves the metrics gathered from g in the Prometheus text format
// 0.0.4 with exactly the content type ContentType, whatever the request's
// Accept header says (§13): there is no OpenMetrics or protobuf
// negotiation and no compression. Authentication (§8.2, §3.7) is the
// caller's job.
//
// The exposition is rendered into memory first, so a gathering or encoding
// error yields a clean 500 instead of a truncated 200. Gathering errors are
// not partial successes here: the metrics of this package never fail to
// collect, so an error means a broken collector that must be noticed.
func Handler(g prometheus.Gatherer) http.Handler {
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		mfs, err := g.Gather()
		if err != nil {
			http.Error(w, "error gathering metrics", http.StatusInternalServerError)
			return
		}
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, format)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				http.Error(w, "error encoding metrics", http.StatusInternalServerError)
				return
			}
		}
		if c, ok := enc.(expfmt.Closer); ok {
			if err := c.Close(); err != nil {
				http.Error(w, "error encoding metrics", http.StatusInternalServerError)
				return
			}
		}
		h.Set("Content-Type", ContentType)
		h.Set("Content-Length", strconv.Itoa(buf.Len()))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(buf.Bytes())
		}
	})
}

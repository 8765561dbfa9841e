package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// spec13 is a copy of the §13 table: name, type, HELP text, label name.
var spec13 = []struct{ name, typ, help, label string }{
	{"commucat_connections_active", "gauge", "Established /connect sessions on this node.", ""},
	{"commucat_frames_ingress", "counter", "CCP-1 frames received after the handshake.", ""},
	{"commucat_frames_egress", "counter", "CCP-1 frames written to connections.", ""},
	{"commucat_relay_enqueued", "counter", "Inbox entries written for recipient devices.", ""},
	{"commucat_security_noise", "counter", "Completed Noise handshakes.", ""},
	{"commucat_security_pq", "counter", "Completed handshakes with ML-KEM-768 hybrid keys.", ""},
	{"commucat_security_fec_packets", "counter", "Opus packets encoded with in-band FEC enabled.", ""},
	{"commucat_multipath_sessions", "counter", "P2P assist answers advising two or more paths.", ""},
	{"commucat_multipath_paths", "counter", "Paths advised in P2P assist answers.", ""},
	{"commucat_censorship_deflections", "counter", "P2P assist answers that advised a Reality path on request.", ""},
	{"commucat_calls_active", "gauge", "Calls currently active on this node.", ""},
	{"commucat_calls_total", "counter", "Calls started on this node.", ""},
	{"commucat_call_voice_frames", "counter", "Voice frames accepted from call participants.", ""},
	{"commucat_call_video_frames", "counter", "Video frames accepted from call participants.", ""},
	{"commucat_rate_limit_http", "counter", "HTTP requests denied by the http or pairing zone.", ""},
	{"commucat_rate_limit_connect", "counter", "/connect requests denied by the connect zone.", ""},
	{"commucat_secret_rotations_noise", "counter", "Noise static key rotations.", ""},
	{"commucat_secret_rotations_admin", "counter", "Admin token rotations.", ""},
	{"commucat_rate_limit_frames", "counter", "Frames denied by the per-connection limiter.", ""},
	{"commucat_relay_expired", "counter", "Inbox entries deleted after limits.relay_ttl.", ""},
	{"commucat_relay_early_acked", "counter", "Inbox entries not written: the online recipient acknowledged the frame, delivered before the commit, first.", ""},
	{"commucat_relay_inbox_full", "counter", "Durable frames refused because a recipient's inbox was full (limits.max_inbox_entries, limits.max_inbox_bytes).", ""},
	{"commucat_tls_handshakes", "counter", "TLS handshakes on the listener: full, resumed (a session ticket) or failed.", "result"},
	{"commucat_bus_refused", "counter", "Node bus messages this node refused, by reason (bad mac, malformed, for another node, clock off, replayed).", "reason"},
	{"commucat_handshake_duration_seconds", "histogram", "Time from stream start to the handshake ACK.", "pattern"},
	{"commucat_frame_handling_duration_seconds", "histogram", "Time from receiving a frame to sending its reply or finishing it.", "type"},
	{"commucat_relay_store_duration_seconds", "histogram", "Time to store a durable frame for all its recipients.", ""},
	{"commucat_delivery_latency_seconds", "histogram", "Time from accepting a frame to writing it to an online recipient.", ""},
	{"commucat_http_request_duration_seconds", "histogram", "REST and probe request handling time.", "route"},
	{"commucat_media_transcode_duration_seconds", "histogram", "Time to transcode one raw media frame.", "kind"},
}

// Label values documented by §13, §13a.5, §2.3 and §3.2, copied here.
var specLabelValues = map[string][]string{
	"pattern": {"XK", "IK"},
	"type": {"hello", "auth", "join", "leave", "msg", "ack", "typing", "presence", "key_update",
		"group_create", "group_invite", "group_event", "error", "call_offer", "call_answer",
		"call_end", "voice_frame", "video_frame", "call_stats"},
	"route": {"/", "/index.html", "/healthz", "/readyz", "/metrics", "/connect", "/openapi.json",
		"/api/server-info", "/api/pair", "/api/pair/claim", "/api/devices", "/api/devices/revoke",
		"/api/friends", "/api/security-stats", "/api/p2p/assist", "other"},
	"kind":   {"audio", "video"},
	"result": {"full", "resumed", "failed"},
	"reason": {"unauthenticated", "malformed", "misaddressed", "clock", "replayed"},
}

var specBuckets = []string{"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
	"0.25", "0.5", "1", "2.5", "5", "10", "+Inf"}

func scrape(t *testing.T, g prometheus.Gatherer, accept string) (contentType, body string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	Handler(g).ServeHTTP(rec, req)
	res := rec.Result()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	return res.Header.Get("Content-Type"), string(b)
}

func TestExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg)
	for _, accept := range []string{
		"",
		"application/openmetrics-text; version=1.0.0; charset=utf-8",
		"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,text/plain;version=0.0.4;q=0.3",
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
		"*/*",
	} {
		ct, body := scrape(t, reg, accept)
		if ct != "text/plain; version=0.0.4; charset=utf-8" {
			t.Errorf("Accept %q: content type %q", accept, ct)
		}
		if strings.Contains(body, "# EOF") || strings.Contains(body, "_created") {
			t.Errorf("Accept %q: OpenMetrics output", accept)
		}
	}
	_, body := scrape(t, reg, "application/openmetrics-text")
	lines := strings.Split(body, "\n")

	for _, m := range spec13 {
		help := "# HELP " + m.name + " " + m.help
		typ := "# TYPE " + m.name + " " + m.typ
		if !slices.Contains(lines, help) {
			t.Errorf("missing line %q", help)
		}
		if !slices.Contains(lines, typ) {
			t.Errorf("missing line %q", typ)
		}
		switch {
		case m.typ != "histogram" && m.label == "":
			if !slices.Contains(lines, m.name+" 0") {
				t.Errorf("missing unlabelled sample %q", m.name+" 0")
			}
		case m.typ != "histogram":
			for _, v := range specLabelValues[m.label] {
				if l := fmt.Sprintf("%s{%s=%q} 0", m.name, m.label, v); !slices.Contains(lines, l) {
					t.Errorf("missing sample %q", l)
				}
			}
		case m.label == "":
			checkHistogram(t, lines, m.name, "")
		default:
			for _, v := range specLabelValues[m.label] {
				checkHistogram(t, lines, m.name, fmt.Sprintf("%s=%q", m.label, v))
			}
		}
	}
	// The FEC counter has one name in both lines (cf. the original's bug).
	for _, prefix := range []string{"# HELP commucat_security_fec_packets ", "# TYPE commucat_security_fec_packets "} {
		if !strings.Contains(body, "\n"+prefix) {
			t.Errorf("missing %q", prefix)
		}
	}
	// No other commucat metric and every family has both lines.
	families := map[string]int{}
	for _, l := range lines {
		if f, ok := strings.CutPrefix(l, "# HELP "); ok {
			families[strings.Fields(f)[0]]++
		}
		if f, ok := strings.CutPrefix(l, "# TYPE "); ok {
			families[strings.Fields(f)[0]] += 2
		}
	}
	if len(families) != len(spec13) {
		t.Errorf("%d metric families exposed, want %d", len(families), len(spec13))
	}
	for f, n := range families {
		if n != 3 {
			t.Errorf("family %s: HELP/TYPE lines incomplete", f)
		}
	}
}

// checkHistogram checks that the series with the given label pair (or none)
// has exactly the §13 buckets, all with zero counts, plus _sum and _count.
func checkHistogram(t *testing.T, lines []string, name, label string) {
	t.Helper()
	var got []string
	prefix := name + "_bucket{"
	if label != "" {
		prefix += label + ","
	}
	prefix += `le="`
	for _, l := range lines {
		rest, ok := strings.CutPrefix(l, prefix)
		if !ok {
			continue
		}
		le, val, ok := strings.Cut(rest, `"} `)
		if !ok {
			t.Errorf("bad bucket line %q", l)
			continue
		}
		if val != "0" {
			t.Errorf("%s: non-zero count %q", l, val)
		}
		got = append(got, le)
	}
	if !slices.Equal(got, specBuckets) {
		t.Errorf("%s{%s}: buckets %v, want %v", name, label, got, specBuckets)
	}
	suffix := ""
	if label != "" {
		suffix = "{" + label + "}"
	}
	for _, s := range []string{name + "_sum" + suffix + " 0", name + "_count" + suffix + " 0"} {
		if !slices.Contains(lines, s) {
			t.Errorf("missing %q", s)
		}
	}
}

func TestBucketsMatchSpec(t *testing.T) {
	var got []string
	for _, b := range Buckets() {
		got = append(got, strconv.FormatFloat(b, 'g', -1, 64))
	}
	if !slices.Equal(append(got, "+Inf"), specBuckets) {
		t.Errorf("Buckets() = %v", got)
	}
}

func TestLabelValueLists(t *testing.T) {
	if !slices.Equal(HandshakePatterns(), specLabelValues["pattern"]) {
		t.Error("HandshakePatterns differs from §13")
	}
	if !slices.Equal(FrameTypes(), specLabelValues["type"]) {
		t.Error("FrameTypes differs from §2.3")
	}
	if !slices.Equal(append(slices.Clone(Routes), RouteOther), specLabelValues["route"]) {
		t.Error("Routes differs from §3.2")
	}
	if !slices.Equal(MediaKinds(), specLabelValues["kind"]) {
		t.Error("MediaKinds differs from §13")
	}
}

func TestRouteLabel(t *testing.T) {
	for _, r := range Routes {
		if got := RouteLabel(r); got != r {
			t.Errorf("RouteLabel(%q) = %q", r, got)
		}
		if got := RouteLabel(r + "?x=1&y=2"); got != r {
			t.Errorf("RouteLabel(%q with query) = %q", r, got)
		}
	}
	for _, p := range []string{"", "/nope", "/api/devices/", "/API/devices", "/index.htm",
		"/federation/v1/events", "/api", "/metrics/", "//", "other"} {
		if got := RouteLabel(p); got != RouteOther {
			t.Errorf("RouteLabel(%q) = %q, want other", p, got)
		}
	}
}

func TestCountersMove(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.SecurityFECPackets.Add(3)
	m.ConnectionsActive.Inc()
	m.HTTPRequestDuration.WithLabelValues(RouteLabel("/api/devices?x")).Observe(0.003)
	m.FrameHandlingDuration.WithLabelValues("msg").Observe(20)
	_, body := scrape(t, reg, "")
	for _, want := range []string{
		"commucat_security_fec_packets 3",
		"commucat_connections_active 1",
		`commucat_http_request_duration_seconds_bucket{route="/api/devices",le="0.0025"} 0`,
		`commucat_http_request_duration_seconds_bucket{route="/api/devices",le="0.005"} 1`,
		`commucat_http_request_duration_seconds_count{route="/api/devices"} 1`,
		`commucat_frame_handling_duration_seconds_bucket{type="msg",le="10"} 0`,
		`commucat_frame_handling_duration_seconds_bucket{type="msg",le="+Inf"} 1`,
	} {
		if !strings.Contains(body, "\n"+want+"\n") {
			t.Errorf("missing %q", want)
		}
	}
}

func TestRuntimeCollectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg)
	RegisterRuntime(reg)
	ct, body := scrape(t, reg, "application/openmetrics-text")
	if ct != ContentType {
		t.Errorf("content type %q", ct)
	}
	if !strings.Contains(body, "# TYPE go_goroutines gauge") {
		t.Error("Go collector missing")
	}
	if !strings.Contains(body, "# TYPE commucat_frames_ingress counter") {
		t.Error("commucat metrics missing")
	}
}

func TestDoubleRegistrationPanics(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg)
	defer func() {
		if recover() == nil {
			t.Error("second New on the same registry did not panic")
		}
	}()
	New(reg)
}

// brokenCollector always fails to collect.
type brokenCollector struct{ desc *prometheus.Desc }

func (c brokenCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c brokenCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(c.desc, fmt.Errorf("boom"))
}

func TestGatherError(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg)
	reg.MustRegister(brokenCollector{prometheus.NewDesc("broken", "Broken.", nil, nil)})
	rec := httptest.NewRecorder()
	Handler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", rec.Code)
	}
}

func TestHead(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg)
	rec := httptest.NewRecorder()
	Handler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/metrics", nil))
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != ContentType {
		t.Errorf("HEAD: %d, %d bytes, %q", rec.Code, rec.Body.Len(), rec.Header().Get("Content-Type"))
	}
}

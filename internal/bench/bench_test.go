package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// binaries builds commucat-server and commucat-bench (without codecs)
// into one temporary directory, once per test binary run.
var binaries = struct {
	once sync.Once
	dir  string
	err  error
	out  string
}{}

func buildBinaries(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and starts a server")
	}
	binaries.once.Do(func() {
		dir, err := os.MkdirTemp("", "commucat-bench-test-")
		if err != nil {
			binaries.err = err
			return
		}
		binaries.dir = dir
		gotool := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(gotool); err != nil {
			gotool = "go"
		}
		cmd := exec.Command(gotool, "build", "-tags", "nocodecs", "-o", dir+string(filepath.Separator),
			"github.com/commucat/commucat/cmd/commucat-server", "github.com/commucat/commucat/cmd/commucat-bench")
		out, err := cmd.CombinedOutput()
		binaries.err, binaries.out = err, string(out)
	})
	if binaries.err != nil {
		t.Fatalf("go build: %v\n%s", binaries.err, binaries.out)
	}
	return binaries.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binaries.dir != "" {
		os.RemoveAll(binaries.dir)
	}
	os.Exit(code)
}

// runScenario runs args in-process against a server started from the
// built binary, writes the JSON file and returns it decoded.
func runScenario(t *testing.T, args ...string) map[string]any {
	t.Helper()
	dir := buildBinaries(t)
	out := filepath.Join(t.TempDir(), "result.json")
	var stderr bytes.Buffer
	p, err := ParseArgs(append(args, "--json", out, "--server-bin", filepath.Join(dir, "commucat-server")), &stderr)
	if err != nil {
		t.Fatalf("ParseArgs: %v\n%s", err, stderr.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, p, &stderr)
	if err != nil {
		t.Fatalf("Run: %v\nstderr:\n%s", err, stderr.String())
	}
	if err := res.WriteJSON(p.JSON, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("progress:\n%s", stderr.String())
	return readJSON(t, out)
}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("result is not JSON: %v\n%s", err, b)
	}
	t.Logf("result: %s", b)
	return m
}

// num returns m[key] as a number, failing when it is absent or not one.
func num(t *testing.T, m map[string]any, key string) float64 {
	t.Helper()
	v, ok := m[key]
	if !ok {
		t.Fatalf("member %q missing", key)
	}
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("member %q = %v (%T), want a number", key, v, v)
	}
	return f
}

// checkCommon checks the members every result has.
func checkCommon(t *testing.T, m map[string]any, scenario string) {
	t.Helper()
	if m["scenario"] != scenario {
		t.Errorf("scenario = %v, want %s", m["scenario"], scenario)
	}
	if d := num(t, m, "duration_s"); d <= 0 {
		t.Errorf("duration_s = %v, want > 0", d)
	}
	// The tool started the server, so its CPU time is known.
	if c := num(t, m, "server_cpu_s"); c < 0 {
		t.Errorf("server_cpu_s = %v, want >= 0", c)
	}
	if num(t, m, "server_pid") <= 0 {
		t.Error("server_pid not set")
	}
	if _, ok := m["parameters"].(map[string]any); !ok {
		t.Error("parameters missing")
	}
	if v := num(t, m, "version"); v != 1 && v != 2 {
		t.Errorf("version = %v", v)
	}
	if _, ok := m["pq"].(bool); !ok {
		t.Error("pq missing")
	}
	if e := num(t, m, "errors"); e != 0 {
		t.Errorf("errors = %v (%v)", e, m["first_error"])
	}
}

func TestHandshake(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"v2", []string{"handshake", "--version", "2"}},
		{"v2pq", []string{"handshake", "--version", "2", "--pq"}},
		{"v1", []string{"handshake", "--version", "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := runScenario(t, append(tc.args, "--duration", "1s", "--concurrency", "2")...)
			checkCommon(t, m, "handshake")
			if n := num(t, m, "sessions"); n <= 0 {
				t.Errorf("sessions = %v", n)
			}
			if r := num(t, m, "sessions_per_s"); r <= 0 {
				t.Errorf("sessions_per_s = %v", r)
			}
			if p50, p99 := num(t, m, "handshake_p50_ms"), num(t, m, "handshake_p99_ms"); p50 <= 0 || p50 > p99 {
				t.Errorf("handshake p50 %v, p99 %v", p50, p99)
			}
			if m["pq"] != (tc.name == "v2pq") {
				t.Errorf("pq = %v", m["pq"])
			}
		})
	}
}

func TestRelay(t *testing.T) {
	for _, k := range []string{"2", "3"} {
		t.Run("channel-size-"+k, func(t *testing.T) {
			m := runScenario(t, "relay", "--senders", "2", "--channel-size", k, "--size", "64", "--duration", "1s", "--warmup", "200ms", "--window", "8")
			checkCommon(t, m, "relay")
			if d := num(t, m, "delivered"); d <= 0 {
				t.Errorf("delivered = %v", d)
			}
			if s := num(t, m, "sent"); s <= 0 {
				t.Errorf("sent = %v", s)
			}
			if r := num(t, m, "msgs_per_s"); r <= 0 {
				t.Errorf("msgs_per_s = %v", r)
			}
			p50, p95, p99 := num(t, m, "p50_ms"), num(t, m, "p95_ms"), num(t, m, "p99_ms")
			if p50 <= 0 || p50 > p95 || p95 > p99 || p99 > num(t, m, "max_ms") {
				t.Errorf("latencies p50 %v p95 %v p99 %v", p50, p95, p99)
			}
			if c := num(t, m, "server_cpu_us_per_msg"); c < 0 {
				t.Errorf("server_cpu_us_per_msg = %v", c)
			}
			for _, k := range []string{"offered_rate", "rate_not_sustained", "backlog_at_end"} {
				if _, ok := m[k]; ok {
					t.Errorf("closed loop result has %q", k)
				}
			}
		})
	}
}

// TestRelayRate runs the relay open loop at a low rate: it must deliver
// about that rate (not the closed-loop maximum) and report the latencies.
func TestRelayRate(t *testing.T) {
	const rate = 200
	m := runScenario(t, "relay", "--senders", "2", "--channel-size", "2", "--size", "64", "--duration", "1500ms", "--warmup", "300ms", "--window", "8", "--rate", "200")
	checkCommon(t, m, "relay")
	if r := num(t, m, "offered_rate"); r != rate {
		t.Errorf("offered_rate = %v, want %v", r, rate)
	}
	if params, _ := m["parameters"].(map[string]any); params["rate"] != float64(rate) {
		t.Errorf("parameters.rate = %v", params["rate"])
	}
	if d := num(t, m, "delivered"); d <= 0 {
		t.Errorf("delivered = %v", d)
	}
	// Paced: near the offered rate, far below what the closed loop does
	// with the same window (thousands per second).
	if r := num(t, m, "msgs_per_s"); r <= 0 || r > 1.2*rate {
		t.Errorf("msgs_per_s = %v, want about %v", r, rate)
	}
	p50, p95, p99 := num(t, m, "p50_ms"), num(t, m, "p95_ms"), num(t, m, "p99_ms")
	if p50 <= 0 || p50 > p95 || p95 > p99 || p99 > num(t, m, "max_ms") {
		t.Errorf("latencies p50 %v p95 %v p99 %v", p50, p95, p99)
	}
	num(t, m, "server_cpu_us_per_msg")
	num(t, m, "backlog_at_end")
	if v, ok := m["rate_not_sustained"].(bool); !ok {
		t.Errorf("rate_not_sustained = %v (%T), want a bool", m["rate_not_sustained"], m["rate_not_sustained"])
	} else if v {
		// Possible on a badly overloaded machine; the run is still valid.
		t.Logf("rate_not_sustained at %d MSGs/s", rate)
	}
}

func TestIdle(t *testing.T) {
	m := runScenario(t, "idle", "--connections", "20", "--settle", "200ms")
	checkCommon(t, m, "idle")
	if n := num(t, m, "connections"); n != 20 {
		t.Errorf("connections = %v, want 20", n)
	}
	before, after := num(t, m, "server_rss_before_bytes"), num(t, m, "server_rss_after_bytes")
	if before <= 0 || after <= 0 {
		t.Errorf("server RSS before %v after %v", before, after)
	}
	num(t, m, "server_rss_bytes_per_conn") // may be negative in principle (GC), but present
}

func TestInbox(t *testing.T) {
	m := runScenario(t, "inbox", "--messages", "50", "--window", "8")
	checkCommon(t, m, "inbox")
	if n := num(t, m, "received"); n != 50 {
		t.Errorf("received = %v, want 50", n)
	}
	if r := num(t, m, "inbox_msgs_per_s"); r <= 0 {
		t.Errorf("inbox_msgs_per_s = %v", r)
	}
	num(t, m, "server_cpu_us_per_inbox_msg")
	if r := num(t, m, "fill_msgs_per_s"); r <= 0 {
		t.Errorf("fill_msgs_per_s = %v", r)
	}
}

// TestCommand runs the built commucat-bench, which must find
// commucat-server next to itself.
func TestCommand(t *testing.T) {
	dir := buildBinaries(t)
	out := filepath.Join(t.TempDir(), "hs.json")
	cmd := exec.Command(filepath.Join(dir, "commucat-bench"), "handshake", "--duration", "1s", "--concurrency", "1", "--json", out)
	cmd.Env = append(os.Environ(), "PATH=/nonexistent")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("commucat-bench: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "handshake v2") {
		t.Errorf("no progress line on stderr:\n%s", stderr.String())
	}
	m := readJSON(t, out)
	checkCommon(t, m, "handshake")
	if num(t, m, "sessions_per_s") <= 0 {
		t.Error("sessions_per_s <= 0")
	}
}

// TestAttach measures a running server through --target and --config,
// without --server-pid: server CPU is then null.
func TestAttach(t *testing.T) {
	dir := buildBinaries(t)
	ctx := context.Background()
	srv, err := StartServer(ctx, ServerOptions{Binary: filepath.Join(dir, "commucat-server")})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	cfg := filepath.Join(srv.Dir, "commucat.toml")
	var stderr bytes.Buffer
	p, err := ParseArgs([]string{"inbox", "--messages", "10", "--target", srv.URL, "--config", cfg, "--quiet"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(ctx, p, &stderr)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, stderr.String())
	}
	if res.OwnServer || res.ServerCPUS != nil || res.ServerPID != nil {
		t.Errorf("own_server %v, server_cpu_s %v, server_pid %v; want false, null, null", res.OwnServer, res.ServerCPUS, res.ServerPID)
	}
	b, _ := json.Marshal(res)
	if !bytes.Contains(b, []byte(`"server_cpu_s":null`)) {
		t.Errorf("server_cpu_s not null: %s", b)
	}
	if res.InboxResult == nil || res.Received != 10 {
		t.Errorf("inbox result %+v", res.InboxResult)
	}
}

func TestParseArgs(t *testing.T) {
	var stderr bytes.Buffer
	p, err := ParseArgs([]string{"--duration", "2s", "relay", "--senders", "3", "--channel-size", "4", "--json", "x.json"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if p.Scenario != "relay" || p.Duration != 2*time.Second || p.Senders != 3 || p.ChannelSize != 4 || p.JSON != "x.json" {
		t.Errorf("parsed %+v", p)
	}
	for _, bad := range [][]string{
		{},
		{"nope"},
		{"handshake", "--version", "3"},
		{"handshake", "--version", "1", "--pq"},
		{"relay", "--version", "1"},
		{"relay", "--size", "8"},
		{"relay", "--channel-size", "1"},
		{"relay", "--rate", "-1"},
		{"relay", "--rate", "NaN"},
		{"handshake", "--rate", "10"},
		{"relay", "--resume"},
		{"idle", "--target", "https://127.0.0.1:1"},
		{"idle", "--server-pid", "1"},
		{"idle", "extra", "args"},
	} {
		if _, err := ParseArgs(bad, &stderr); err == nil {
			t.Errorf("ParseArgs(%q) accepted", bad)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	sortDurations(d)
	for _, c := range []struct {
		q    float64
		want float64
	}{{0.5, 50}, {0.95, 95}, {0.99, 99}, {1, 100}, {0.001, 1}} {
		if got := percentileMS(d, c.q); got != c.want {
			t.Errorf("q=%v: %v, want %v", c.q, got, c.want)
		}
	}
	if percentileMS(nil, 0.5) != 0 {
		t.Error("empty")
	}
}

func TestPayload(t *testing.T) {
	b := makePayload(100, 42)
	if len(b) != 100 {
		t.Fatal(len(b))
	}
	st, n, ok := parsePayload(b)
	if !ok || n != 42 || time.Since(st) > time.Minute || time.Since(st) < 0 {
		t.Errorf("parsePayload: %v %v %v", st, n, ok)
	}
	if _, _, ok := parsePayload(b[:15]); ok {
		t.Error("short payload accepted")
	}
	at := time.Unix(1700000000, 123456789)
	st, n, ok = parsePayload(makePayloadAt(16, 7, at))
	if !ok || n != 7 || !st.Equal(at) {
		t.Errorf("makePayloadAt: %v %v %v, want %v", st, n, ok, at)
	}
}

func TestProcStats(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux only")
	}
	// Burn a little CPU so that the counter is not zero.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	if _, err := readProcCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if rss, err := readProcRSS(os.Getpid()); err != nil || rss <= 0 {
		t.Fatalf("rss %v, %v", rss, err)
	}
}

// TestResultMembers guards against JSON name clashes between the embedded
// scenario results (a clash silently drops both members).
func TestResultMembers(t *testing.T) {
	var rate float64
	var flag bool
	var backlog int64
	r := &Result{HandshakeResult: &HandshakeResult{}, IdleResult: &IdleResult{}, InboxResult: &InboxResult{},
		RelayResult: &RelayResult{OfferedRate: &rate, RateNotSustained: &flag, BacklogAtEnd: &backlog}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "duration_s", "server_cpu_s", "version", "pq", "parameters",
		"sessions_per_s", "server_cpu_us_per_session",
		"delivered", "msgs_per_s", "p50_ms", "p95_ms", "p99_ms", "server_cpu_us_per_msg",
		"offered_rate", "rate_not_sustained", "backlog_at_end",
		"connections", "server_rss_bytes_per_conn",
		"inbox_msgs_per_s", "server_cpu_us_per_inbox_msg"} {
		if _, ok := m[k]; !ok {
			t.Errorf("member %q missing from %s", k, b)
		}
	}
}

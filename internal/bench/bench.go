// Package bench implements commucat-bench: load scenarios (handshake,
// relay, idle, inbox) run with the Go SDK against a CommuCat server that
// the tool starts itself (commucat-server as a child process) or against a
// running one (--target), with a progress line on stderr and a JSON result.
package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/commucat/commucat/client"
)

// Scenarios lists the scenario names.
var Scenarios = []string{"handshake", "relay", "idle", "inbox"}

// Params are the command-line parameters of one run.
type Params struct {
	Scenario string

	// Common.
	Version   int           // protocol version offered: 1 or 2
	PQ        bool          // ML-KEM-768 hybrid (version 2 only)
	Transport string        // http2 (default), http1 or websocket
	Duration  time.Duration // measured interval (handshake, relay)
	Warmup    time.Duration // relay: traffic before the measured interval
	JSON      string        // result file ("" or "-": stdout)
	Quiet     bool          // no progress line

	// handshake
	Concurrency int
	Resume      bool // handshake: each device keeps a TLS session cache

	// relay
	Senders     int
	ChannelSize int
	Size        int
	Window      int     // unacknowledged MSGs per sender
	Rate        float64 // open loop: MSGs per second over all senders (0 = closed loop)

	// idle
	Connections int
	Settle      time.Duration // idle: wait before the second RSS reading

	// inbox
	Messages int

	// Server.
	Target    string // https://host:port of a running server ("" = start one)
	Config    string // with Target: its configuration file (for the TLS certificate)
	CA        string // with Target: PEM file of the CA to trust (instead of Config's tls_cert)
	ServerPID int    // with Target: server process for CPU and RSS (0 = unknown)
	ServerBin string // commucat-server binary to start ("" = next to this one, PATH, go build)
	KeepDir   bool   // keep the temporary server directory

	CPUProfile string // write the load tool's own CPU profile here (commucat-bench)
}

// DefaultParams returns the defaults of the flags.
func DefaultParams() Params {
	return Params{
		Version:     2,
		Transport:   "http2",
		Duration:    10 * time.Second,
		Warmup:      time.Second,
		Concurrency: 4 * runtime.GOMAXPROCS(0),
		Senders:     8,
		ChannelSize: 2,
		Size:        100,
		Window:      64,
		Connections: 1000,
		Settle:      3 * time.Second,
		Messages:    10000,
	}
}

const usage = `usage: commucat-bench <scenario> [flags] [--json FILE]

Scenarios:
  handshake  --version 1|2 [--pq] --duration D --concurrency C
             new sessions per second (TLS + Noise XK handshake, then close)
  relay      --senders N --channel-size K --size S --duration D [--window W] [--rate R]
             durable MSG throughput and send-to-receive latency (v2, ack mode);
             closed loop (W in flight per sender) or, with --rate, open loop
             at R MSGs/s with latency from each MSG's intended send time
  idle       --connections N [--settle D]
             server RSS per idle connection
  inbox      --messages M
             offline delivery rate: fill an offline device's inbox, then connect it

By default a commucat-server is started in a temporary directory (found next
to commucat-bench, else in PATH, else built with go build). --target URL and
--config PATH (or --ca PEM) use a running server instead; --server-pid PID
lets the tool read that server's CPU time and RSS.

Flags:
`

// ParseArgs parses the command line (without the program name). The
// scenario may come before or after the flags.
func ParseArgs(args []string, stderr io.Writer) (Params, error) {
	p := DefaultParams()
	fs := flag.NewFlagSet("commucat-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.IntVar(&p.Version, "version", p.Version, "protocol version to offer: 1 or 2")
	fs.BoolVar(&p.PQ, "pq", p.PQ, "request the ML-KEM-768 hybrid (version 2)")
	fs.StringVar(&p.Transport, "transport", p.Transport, "http2, http1 or websocket")
	fs.DurationVar(&p.Duration, "duration", p.Duration, "measured interval (handshake, relay)")
	fs.DurationVar(&p.Warmup, "warmup", p.Warmup, "relay: traffic before the measured interval")
	fs.StringVar(&p.JSON, "json", p.JSON, "write the JSON result to this file (default stdout)")
	fs.BoolVar(&p.Quiet, "quiet", p.Quiet, "no progress line on stderr")
	fs.IntVar(&p.Concurrency, "concurrency", p.Concurrency, "handshake: parallel handshakes")
	fs.BoolVar(&p.Resume, "resume", p.Resume, "handshake: each device keeps a TLS session cache, so that its reconnects resume TLS\n"+
		"(as a client.Client's do); default: a full TLS handshake for every session")
	fs.IntVar(&p.Senders, "senders", p.Senders, "relay: sender devices (one channel each)")
	fs.IntVar(&p.ChannelSize, "channel-size", p.ChannelSize, "relay: members per channel (sender + K-1 receivers)")
	fs.IntVar(&p.Size, "size", p.Size, "relay, inbox: MSG payload bytes (at least 16)")
	fs.IntVar(&p.Window, "window", p.Window, "relay, inbox: unacknowledged MSGs per sender")
	fs.Float64Var(&p.Rate, "rate", p.Rate, "relay: open loop: offered MSGs per second over all senders, each sending rate/senders per second on a fixed\n"+
		"schedule (at most --window unacknowledged; MSGs falling due while the window is full go out late, in a burst).\n"+
		"Latency counts from each MSG's intended send time, so waiting shows as latency, not as a lower rate.\n"+
		"0: closed loop, every sender keeps --window MSGs in flight (latency from the actual send)")
	fs.IntVar(&p.Connections, "connections", p.Connections, "idle: connections to open")
	fs.DurationVar(&p.Settle, "settle", p.Settle, "idle: wait after connecting before reading RSS")
	fs.IntVar(&p.Messages, "messages", p.Messages, "inbox: messages to queue")
	fs.StringVar(&p.Target, "target", p.Target, "https://host:port of a running server (default: start one)")
	fs.StringVar(&p.Config, "config", p.Config, "with --target: the server's configuration file (its tls_cert is trusted)")
	fs.StringVar(&p.CA, "ca", p.CA, "with --target: PEM certificate(s) to trust")
	fs.IntVar(&p.ServerPID, "server-pid", p.ServerPID, "with --target: server process id, for CPU and RSS")
	fs.StringVar(&p.ServerBin, "server-bin", p.ServerBin, "commucat-server binary to start")
	fs.BoolVar(&p.KeepDir, "keep", p.KeepDir, "keep the temporary server directory")
	fs.StringVar(&p.CPUProfile, "cpuprofile", p.CPUProfile, "write the load tool's own CPU profile (not the server's) to this file")
	if err := fs.Parse(args); err != nil {
		return p, err
	}
	rest := fs.Args()
	if len(rest) > 0 {
		p.Scenario = rest[0]
		if err := fs.Parse(rest[1:]); err != nil {
			return p, err
		}
		if fs.NArg() > 0 {
			return p, fmt.Errorf("unexpected argument %q", fs.Arg(0))
		}
	}
	if p.Scenario == "" {
		fs.Usage()
		return p, errors.New("no scenario given")
	}
	return p, p.Validate()
}

// Validate checks the parameters.
func (p *Params) Validate() error {
	known := false
	for _, s := range Scenarios {
		known = known || s == p.Scenario
	}
	switch {
	case !known:
		return fmt.Errorf("unknown scenario %q (one of %s)", p.Scenario, strings.Join(Scenarios, ", "))
	case p.Version != 1 && p.Version != 2:
		return fmt.Errorf("--version must be 1 or 2")
	case p.PQ && p.Version != 2:
		return fmt.Errorf("--pq needs --version 2")
	case p.Duration <= 0:
		return fmt.Errorf("--duration must be positive")
	case p.Concurrency < 1:
		return fmt.Errorf("--concurrency must be at least 1")
	case p.Senders < 1:
		return fmt.Errorf("--senders must be at least 1")
	case p.ChannelSize < 2:
		return fmt.Errorf("--channel-size must be at least 2")
	case p.Size < minPayload || p.Size > 1<<20:
		return fmt.Errorf("--size must be %d to %d bytes", minPayload, 1<<20)
	case p.Window < 1:
		return fmt.Errorf("--window must be at least 1")
	case p.Rate < 0 || p.Rate > 1e8 || math.IsNaN(p.Rate):
		return fmt.Errorf("--rate must be 0 (closed loop) or a positive rate up to 1e8 MSGs/s")
	case p.Rate > 0 && p.Scenario != "relay":
		return fmt.Errorf("--rate goes with the relay scenario")
	case p.Resume && p.Scenario != "handshake":
		return fmt.Errorf("--resume goes with the handshake scenario")
	case p.Connections < 1:
		return fmt.Errorf("--connections must be at least 1")
	case p.Messages < 1:
		return fmt.Errorf("--messages must be at least 1")
	case p.Target == "" && (p.Config != "" || p.CA != "" || p.ServerPID != 0):
		return fmt.Errorf("--config, --ca and --server-pid go with --target")
	case p.Target != "" && p.Config == "" && p.CA == "":
		return fmt.Errorf("--target needs --config (or --ca) for the server's certificate")
	}
	if (p.Scenario == "relay" || p.Scenario == "inbox") && p.Version != 2 {
		return fmt.Errorf("%s runs on protocol version 2 (ack mode)", p.Scenario)
	}
	if _, err := client.ParseTransport(p.Transport); err != nil {
		return err
	}
	return nil
}

// Result is the JSON result of a run. Members of the other scenarios are
// left out; server_cpu_s (and the RSS members) are null when the server
// process is unknown.
type Result struct {
	Scenario   string         `json:"scenario"`
	Version    int            `json:"version"`
	PQ         bool           `json:"pq"`
	Transport  string         `json:"transport"`
	Parameters map[string]any `json:"parameters"`
	StartedAt  string         `json:"started_at"`
	Target     string         `json:"target"`
	OwnServer  bool           `json:"own_server"` // the tool started the server
	ServerPID  *int           `json:"server_pid"`
	DurationS  float64        `json:"duration_s"`
	ServerCPUS *float64       `json:"server_cpu_s"`
	ClientCPUS float64        `json:"client_cpu_s"` // this process, same interval
	Errors     int64          `json:"errors"`
	FirstError string         `json:"first_error,omitempty"`
	Machine    Machine        `json:"machine"`

	*HandshakeResult
	*RelayResult
	*IdleResult
	*InboxResult
}

// Machine describes where the run happened.
type Machine struct {
	GOOS       string  `json:"goos"`
	GOARCH     string  `json:"goarch"`
	NumCPU     int     `json:"num_cpu"`
	GoVersion  string  `json:"go_version"`
	CPUModel   string  `json:"cpu_model,omitempty"`
	MemTotalKB int64   `json:"mem_total_kb,omitempty"`
	LoadAvg1   float64 `json:"load_avg_1m"` // at the start of the run
}

// HandshakeResult holds the handshake members.
type HandshakeResult struct {
	Sessions              int64    `json:"sessions"`
	SessionsPerS          float64  `json:"sessions_per_s"`
	HandshakeP50MS        float64  `json:"handshake_p50_ms"`
	HandshakeP99MS        float64  `json:"handshake_p99_ms"`
	ServerCPUUSPerSession *float64 `json:"server_cpu_us_per_session"`
}

// RelayResult holds the relay members.
type RelayResult struct {
	Sent              int64    `json:"sent"` // MSGs acknowledged by the server in the interval
	Delivered         int64    `json:"delivered"`
	MsgsPerS          float64  `json:"msgs_per_s"`
	P50MS             float64  `json:"p50_ms"`
	P95MS             float64  `json:"p95_ms"`
	P99MS             float64  `json:"p99_ms"`
	MaxMS             float64  `json:"max_ms"`
	ServerCPUUSPerMsg *float64 `json:"server_cpu_us_per_msg"`

	// Open loop (--rate) only.
	OfferedRate      *float64 `json:"offered_rate,omitempty"`       // --rate: MSGs per second over all senders
	RateNotSustained *bool    `json:"rate_not_sustained,omitempty"` // msgs_per_s more than 5 % below offered_rate × (channel_size − 1)
	BacklogAtEnd     *int64   `json:"backlog_at_end,omitempty"`     // MSGs due but not yet sent (window full) when the interval ended
}

// IdleResult holds the idle members.
type IdleResult struct {
	Connections           int64    `json:"connections"`
	ConnectS              float64  `json:"connect_s"`
	ServerRSSBefore       *int64   `json:"server_rss_before_bytes"`
	ServerRSSAfter        *int64   `json:"server_rss_after_bytes"`
	ServerRSSBytesPerConn *float64 `json:"server_rss_bytes_per_conn"`
	ClientRSSBytesPerConn float64  `json:"client_rss_bytes_per_conn"`
}

// InboxResult holds the inbox members.
type InboxResult struct {
	Messages               int64    `json:"messages"`
	Received               int64    `json:"received"` // distinct messages received
	Duplicates             int64    `json:"duplicates"`
	FillS                  float64  `json:"fill_s"`
	FillMsgsPerS           float64  `json:"fill_msgs_per_s"`
	InboxMsgsPerS          float64  `json:"inbox_msgs_per_s"`
	ServerCPUUSPerInboxMsg *float64 `json:"server_cpu_us_per_inbox_msg"`
}

// WriteJSON writes r as indented JSON to path ("" or "-": w).
func (r *Result) WriteJSON(path string, w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "" || path == "-" {
		_, err = w.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Run runs the scenario of p and returns its result. Progress goes to
// stderr; ctx cancellation stops the run early (the result then covers
// what was measured).
func Run(ctx context.Context, p Params, stderr io.Writer) (*Result, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	tr, _ := client.ParseTransport(p.Transport)
	raiseFileLimit(p, stderr)

	var srv *Server
	var err error
	if p.Target == "" {
		srv, err = StartServer(ctx, ServerOptions{Binary: p.ServerBin, KeepDir: p.KeepDir, Log: stderr})
	} else {
		srv, err = AttachServer(p.Target, p.Config, p.CA, p.ServerPID)
	}
	if err != nil {
		return nil, err
	}
	defer srv.Stop()

	e, err := newEnv(ctx, p, tr, srv, stderr)
	if err != nil {
		return nil, err
	}
	if srv.cmd != nil {
		keep := "removed at the end; --keep keeps it"
		if p.KeepDir {
			keep = "kept"
		}
		e.note("server %s pid %d, directory %s (%s)", srv.URL, srv.PID, srv.Dir, keep)
	}
	defer e.hc.CloseIdleConnections()

	res := &Result{
		Scenario:   p.Scenario,
		Version:    p.Version,
		PQ:         p.PQ,
		Transport:  tr.String(),
		Parameters: p.parameters(),
		StartedAt:  time.Now().UTC().Format(time.RFC3339),
		Target:     srv.URL,
		OwnServer:  srv.cmd != nil,
		Machine:    machineInfo(),
	}
	if srv.PID > 0 {
		pid := srv.PID
		res.ServerPID = &pid
	}
	switch p.Scenario {
	case "handshake":
		err = runHandshake(ctx, e, res)
	case "relay":
		err = runRelay(ctx, e, res)
	case "idle":
		err = runIdle(ctx, e, res)
	case "inbox":
		err = runInbox(ctx, e, res)
	}
	res.Errors, res.FirstError = e.errs.get()
	if err != nil {
		return res, err
	}
	if srv.exited() {
		return res, fmt.Errorf("the server exited during the run (log: %s)", srv.LogFile)
	}
	return res, nil
}

// parameters returns the scenario's parameters for the JSON result.
func (p *Params) parameters() map[string]any {
	m := map[string]any{}
	switch p.Scenario {
	case "handshake":
		m["duration_s"] = p.Duration.Seconds()
		m["concurrency"] = p.Concurrency
		m["resume"] = p.Resume
	case "relay":
		m["duration_s"] = p.Duration.Seconds()
		m["warmup_s"] = p.Warmup.Seconds()
		m["senders"] = p.Senders
		m["channel_size"] = p.ChannelSize
		m["size"] = p.Size
		m["window"] = p.Window
		if p.Rate > 0 {
			m["rate"] = p.Rate
		}
	case "idle":
		m["connections"] = p.Connections
		m["settle_s"] = p.Settle.Seconds()
	case "inbox":
		m["messages"] = p.Messages
		m["size"] = p.Size
		m["window"] = p.Window
	}
	return m
}

// tlsFor returns the client TLS configuration for srv.
func tlsFor(srv *Server) *tls.Config {
	return &tls.Config{RootCAs: srv.CertPool, MinVersion: tls.VersionTLS13}
}

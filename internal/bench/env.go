package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/client"
)

// minPayload is the smallest MSG payload: an 8-byte send time and an
// 8-byte message number.
const minPayload = 16

// env is what the scenarios share.
type env struct {
	p      Params
	tr     client.Transport
	srv    *Server
	tls    *tls.Config
	hc     *http.Client // for server-info only (Dial makes its own per connection)
	info   *client.ServerInfo
	runID  string // makes device ids and handles unique per run
	stderr io.Writer
	errs   errorLog
}

func newEnv(ctx context.Context, p Params, tr client.Transport, srv *Server, stderr io.Writer) (*env, error) {
	e := &env{p: p, tr: tr, srv: srv, tls: tlsFor(srv), stderr: stderr}
	e.hc = &http.Client{Transport: &http.Transport{TLSClientConfig: e.tls.Clone(), ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	info, err := client.FetchServerInfo(ctx, e.hc, srv.URL)
	if err != nil {
		return nil, fmt.Errorf("server-info: %w", err)
	}
	e.info = info
	var b [4]byte
	_, _ = rand.Read(b[:])
	e.runID = hex.EncodeToString(b[:])
	return e, nil
}

// device is one benchmark device.
type device struct {
	id     *client.Identity
	handle string
	tls    *tls.Config // replaces env.tls when set (handshake --resume)
}

func (e *env) newDevice(name string) (*device, error) {
	did := "bench-" + e.runID + "-" + name
	id, err := client.NewIdentity(did, nil)
	if err != nil {
		return nil, err
	}
	return &device{id: id, handle: did}, nil
}

// options returns the client options for d. The server info is passed in,
// so a dial makes no server-info request (one TLS connection per dial).
func (e *env) options(d *device) client.Options {
	versions := []int{e.p.Version}
	tc := e.tls
	if d.tls != nil {
		tc = d.tls
	}
	return client.Options{
		URL:              e.srv.URL,
		TLSConfig:        tc,
		Transport:        e.tr,
		Identity:         d.id,
		Handle:           d.handle,
		Versions:         versions,
		PQ:               e.p.PQ,
		Server:           e.info,
		HandshakeTimeout: 60 * time.Second,
		CloseTimeout:     10 * time.Second,
	}
}

func (e *env) dial(ctx context.Context, d *device) (*client.Conn, error) {
	return client.Dial(ctx, e.options(d))
}

// dialAll connects every device, par at a time, calling onConn (which may
// be nil) for each connection as it is established. On error the
// connections made so far are closed.
func (e *env) dialAll(ctx context.Context, devs []*device, par int, onConn func(i int, c *client.Conn)) ([]*client.Conn, error) {
	conns := make([]*client.Conn, len(devs))
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < min(par, len(devs)); w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(devs) || cctx.Err() != nil {
					return
				}
				c, err := e.dial(cctx, devs[i])
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connecting %s: %w", devs[i].id.DeviceID, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				conns[i] = c
				if onConn != nil {
					onConn(i, c)
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		closeAll(conns)
		return nil, firstErr
	}
	return conns, nil
}

// closeAll closes the connections, in parallel.
func closeAll(conns []*client.Conn) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range conns {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.Close()
		})
	}
	wg.Wait()
}

// errorLog counts errors and keeps the first one.
type errorLog struct {
	n     atomic.Int64
	mu    sync.Mutex
	first string
}

func (l *errorLog) add(err error) {
	if l.n.Add(1) == 1 {
		l.mu.Lock()
		l.first = err.Error()
		l.mu.Unlock()
	}
}

func (l *errorLog) get() (int64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n.Load(), l.first
}

// meter measures an interval: wall time, server CPU and this process's CPU.
type meter struct {
	pid         int
	start       time.Time
	srvCPU0     time.Duration
	srvCPUOK    bool
	selfCPU0    time.Duration
	elapsed     time.Duration
	srvCPU      time.Duration
	selfCPUUsed time.Duration
}

func startMeter(pid int) *meter {
	m := &meter{pid: pid}
	if pid > 0 {
		if c, err := readProcCPU(pid); err == nil {
			m.srvCPU0, m.srvCPUOK = c, true
		}
	}
	m.selfCPU0 = selfCPU()
	m.start = time.Now()
	return m
}

func (m *meter) stop() {
	m.elapsed = time.Since(m.start)
	if m.srvCPUOK {
		if c, err := readProcCPU(m.pid); err == nil {
			m.srvCPU = c - m.srvCPU0
		} else {
			m.srvCPUOK = false
		}
	}
	m.selfCPUUsed = selfCPU() - m.selfCPU0
}

// fill sets the common members of res.
func (m *meter) fill(res *Result) {
	res.DurationS = m.elapsed.Seconds()
	res.ClientCPUS = m.selfCPUUsed.Seconds()
	if m.srvCPUOK {
		s := m.srvCPU.Seconds()
		res.ServerCPUS = &s
	}
}

// perUnitUS returns server CPU microseconds per unit, nil when unknown.
func (m *meter) perUnitUS(n int64) *float64 {
	if !m.srvCPUOK || n <= 0 {
		return nil
	}
	v := float64(m.srvCPU.Microseconds()) / float64(n)
	return &v
}

// serverCPUNow returns the server's CPU time so far (for progress).
func (e *env) serverCPUNow() (time.Duration, bool) {
	if e.srv.PID <= 0 {
		return 0, false
	}
	c, err := readProcCPU(e.srv.PID)
	return c, err == nil
}

// progress prints a status line on stderr every second until stop is
// called: rewritten in place on a terminal, one line per second otherwise.
type progress struct {
	w    io.Writer
	tty  bool
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func (e *env) startProgress(status func() string) *progress {
	pr := &progress{w: e.stderr, stop: make(chan struct{}), done: make(chan struct{})}
	if e.p.Quiet {
		close(pr.done)
		return pr
	}
	if f, ok := e.stderr.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			pr.tty = true
		}
	}
	go func() {
		defer close(pr.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-pr.stop:
				// The final state, also for runs shorter than a tick.
				if pr.tty {
					fmt.Fprintf(pr.w, "\r\x1b[K%s\n", status())
				} else {
					fmt.Fprintf(pr.w, "%s\n", status())
				}
				return
			case <-t.C:
				if pr.tty {
					fmt.Fprintf(pr.w, "\r\x1b[K%s", status())
				} else {
					fmt.Fprintf(pr.w, "%s\n", status())
				}
			}
		}
	}()
	return pr
}

func (pr *progress) end() {
	pr.once.Do(func() {
		select {
		case <-pr.done:
		default:
			close(pr.stop)
		}
	})
	<-pr.done
}

// note prints a one-off line (not during a progress line).
func (e *env) note(format string, args ...any) {
	if !e.p.Quiet {
		fmt.Fprintf(e.stderr, "commucat-bench: "+format+"\n", args...)
	}
}

// rateCounter turns a running total into a per-second rate for progress
// lines.
type rateCounter struct {
	last  int64
	lastT time.Time
}

func newRate(initial int64) *rateCounter { return &rateCounter{last: initial, lastT: time.Now()} }

func (r *rateCounter) rate(total int64) float64 {
	now := time.Now()
	if r.lastT.IsZero() {
		r.last, r.lastT = total, now
		return 0
	}
	d := now.Sub(r.lastT).Seconds()
	v := 0.0
	if d > 0 {
		v = float64(total-r.last) / d
	}
	r.last, r.lastT = total, now
	return v
}

// percentile returns the q-quantile (0 < q <= 1, nearest rank) of sorted
// values, in milliseconds.
func percentileMS(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	k := int(q*float64(len(sorted))+0.999999) - 1
	k = max(0, min(k, len(sorted)-1))
	return float64(sorted[k]) / float64(time.Millisecond)
}

func sortDurations(d []time.Duration) { slices.Sort(d) }

func machineInfo() Machine {
	return Machine{
		GOOS:       runtime.GOOS,
		GOARCH:     runtime.GOARCH,
		NumCPU:     runtime.NumCPU(),
		GoVersion:  runtime.Version(),
		CPUModel:   cpuModel(),
		MemTotalKB: memTotalKB(),
		LoadAvg1:   loadAvg1(),
	}
}

//lint:ignore SA1019 only a fallback for locating the go tool
func runtimeGOROOT() string { return runtime.GOROOT() }

// pause sleeps d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

package multinode

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/servertest"
	"github.com/commucat/commucat/internal/testenv"
)

// serverBin is the commucat-server binary built by TestMain.
var serverBin string

// benchFixtures are shared by the benchmarks and torn down by TestMain.
var (
	fixtureMu       sync.Mutex
	fixtureCleanups []func()
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "commucat-mn-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "multinode:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	serverBin = filepath.Join(dir, "commucat-server")
	// Codecs are irrelevant here: a codec-less build is smaller and faster
	// to build (§7.9).
	args := []string{"build", "-tags", "nocodecs", "-o", serverBin}
	if os.Getenv("COMMUCAT_MN_RACE") != "" {
		args = append(args, "-race")
	}
	args = append(args, "github.com/commucat/commucat/cmd/commucat-server")
	goBin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "multinode: the go command is not in PATH:", err)
		return 1
	}
	cmd := exec.Command(goBin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "multinode: building commucat-server:", err)
		return 1
	}
	code := m.Run()
	fixtureMu.Lock()
	for i := len(fixtureCleanups) - 1; i >= 0; i-- {
		fixtureCleanups[i]()
	}
	fixtureMu.Unlock()
	return code
}

// syncBuffer collects a process's stderr.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// createDatabase creates a fresh database next to the one of adminDSN and
// returns its DSN; it is dropped by cleanup.
func createDatabase(t testing.TB, adminDSN string, cleanup func(func())) string {
	t.Helper()
	name := "commucat_mn_" + randHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		t.Fatalf("connecting to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("CREATE DATABASE %s: %v", name, err)
	}
	cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, adminDSN)
		if err != nil {
			t.Logf("dropping %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("dropping %s: %v", name, err)
		}
	})
	if strings.HasPrefix(adminDSN, "postgres://") || strings.HasPrefix(adminDSN, "postgresql://") {
		u, err := url.Parse(adminDSN)
		if err != nil {
			t.Fatalf("parsing %s: %v", testenv.PostgresEnv, err)
		}
		u.Path = "/" + name
		return u.String()
	}
	return adminDSN + " dbname=" + name
}

// dropRedisPrefix deletes every key under prefix.
func dropRedisPrefix(t testing.TB, redisURL, prefix string) {
	opts, err := goredis.ParseURL(redisURL)
	if err != nil {
		t.Logf("redis cleanup: %v", err)
		return
	}
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if len(keys) > 0 {
		_ = rdb.Del(ctx, keys...).Err()
	}
}

// node is one commucat-server process.
type node struct {
	t       testing.TB
	name    string // node id
	dir     string
	cfgPath string
	// cfgTemplate is the configuration with {{PORT}} for the port.
	cfgTemplate string
	port        int
	URL         string
	env         []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	exitErr error
	stderr  *syncBuffer
	runs    int
}

// cluster is N nodes sharing one database and one Redis.
type cluster struct {
	t        testing.TB
	dir      string
	Nodes    []*node
	pool     *x509.CertPool
	redisURL string // what the servers use (the proxy's address with a proxy)
	Proxy    *tcpProxy
	prefix   string
}

type clusterOptions struct {
	nodes int
	// redisProxy puts a TCP proxy between the servers and Redis.
	redisProxy bool
	// keepalive is server.connection_keepalive (route TTL is 3×K, §9.4).
	keepalive int
	// concurrentStart starts every node at once on the fresh database.
	concurrentStart bool
}

// newCluster starts the nodes and waits until each answers /readyz. Every
// resource is released by t.Cleanup.
func newCluster(t testing.TB, o clusterOptions) *cluster {
	t.Helper()
	return newClusterWith(t, o, t.Cleanup)
}

func newClusterWith(t testing.TB, o clusterOptions, cleanup func(func())) *cluster {
	t.Helper()
	if o.nodes <= 0 {
		o.nodes = 2
	}
	if o.keepalive <= 0 {
		o.keepalive = 30
	}
	adminDSN := testenv.PostgresDSN(t)
	redisURL := testenv.RedisURL(t)
	dir, err := os.MkdirTemp("", "commucat-mn-")
	if err != nil {
		t.Fatal(err)
	}
	cleanup(func() { os.RemoveAll(dir) })
	c := &cluster{t: t, dir: dir, redisURL: redisURL, prefix: "mn-" + randHex(6) + ":"}
	cleanup(func() { dropRedisPrefix(t, redisURL, c.prefix) })
	dsn := createDatabase(t, adminDSN, cleanup)
	if o.redisProxy {
		ru, err := url.Parse(redisURL)
		if err != nil {
			t.Fatalf("parsing %s: %v", testenv.RedisEnv, err)
		}
		target := ru.Host
		if ru.Port() == "" {
			target = net.JoinHostPort(ru.Hostname(), "6379")
		}
		c.Proxy = newTCPProxy(t, target)
		cleanup(c.Proxy.Close)
		ru.Host = c.Proxy.Addr()
		c.redisURL = ru.String()
	}

	// One certificate and one set of keys for every node: a device
	// certificate issued by one node verifies on the others (§4.8).
	certFile, keyFile, pool := servertest.WriteCert(t, dir)
	c.pool = pool
	var noisePriv [32]byte
	if _, err := rand.Read(noisePriv[:]); err != nil {
		t.Fatal(err)
	}
	noisePub, err := identity.X25519Public(noisePriv)
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	level := os.Getenv("COMMUCAT_MN_LOG_LEVEL")
	if level == "" {
		level = "info"
	}
	// The servers must see only the configuration written here.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COMMUCAT_") {
			env = append(env, kv)
		}
	}
	env = append(env, "COMMUCAT_REDIS_PREFIX="+c.prefix)

	for i := 1; i <= o.nodes; i++ {
		n := &node{t: t, name: fmt.Sprintf("mn-node-%d", i), dir: filepath.Join(dir, fmt.Sprintf("node%d", i)), env: env, stderr: &syncBuffer{}}
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		n.cfgPath = filepath.Join(n.dir, "commucat.toml")
		cfg := fmt.Sprintf(`[server]
bind = "127.0.0.1:{{PORT}}"
domain = "commucat.local"
tls_cert = %q
tls_key = %q
auto_approve_devices = true
max_auto_devices_per_user = 0
connection_keepalive = %d
node_id = %q
shutdown_grace = 2

[storage]
postgres_dsn = %q
redis_url = %q

[crypto]
noise_private = %q
noise_public = %q
federation_seed = %q

[security.rate_limit]
http_burst = 100000
connect_burst = 100000
pairing_burst = 100000
frame_burst = 1000000

[log]
level = %q
`, certFile, keyFile, o.keepalive, n.name, dsn, c.redisURL,
			hex.EncodeToString(noisePriv[:]), hex.EncodeToString(noisePub[:]), hex.EncodeToString(seed), level)
		n.cfgTemplate = cfg
		c.Nodes = append(c.Nodes, n)
	}
	// Log dumps run after the processes were stopped (cleanups are LIFO).
	cleanup(func() {
		failed := false
		if tt, ok := t.(interface{ Failed() bool }); ok {
			failed = tt.Failed()
		}
		if failed || os.Getenv("COMMUCAT_MN_VERBOSE") != "" {
			for _, n := range c.Nodes {
				t.Logf("==== stderr of %s ====\n%s", n.name, n.stderr.String())
			}
		}
	})
	cleanup(func() {
		for _, n := range c.Nodes {
			n.stop()
		}
	})
	// The first node starts alone unless o.concurrentStart: two nodes
	// that insert the configured Noise key into a fresh database at the
	// same time make the loser exit (see TestConcurrentStartup).
	start := c.Nodes
	errs := make([]error, len(c.Nodes))
	if !o.concurrentStart {
		if err := c.Nodes[0].startReady(c.pool, 90*time.Second); err != nil {
			t.Fatal(err)
		}
		start = c.Nodes[1:]
	}
	var wg sync.WaitGroup
	for i, n := range start {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.startReady(c.pool, 90*time.Second)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// TLS returns a client TLS configuration trusting the cluster's cert.
func (c *cluster) TLS() *tls.Config {
	return &tls.Config{RootCAs: c.pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
}

// startReady starts the process (on a new free port when the previous
// one was taken meanwhile) and waits for /readyz.
func (n *node) startReady(pool *x509.CertPool, timeout time.Duration) error {
	var last error
	for attempt := 0; attempt < 4; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		if err := n.start(port); err != nil {
			return err
		}
		last = n.waitReady(pool, timeout)
		if last == nil {
			return nil
		}
		n.mu.Lock()
		done := n.done
		n.mu.Unlock()
		select {
		case <-done:
			if strings.Contains(n.stderr.String(), "address already in use") {
				continue // lost the port to someone else: try another
			}
		default:
		}
		return last
	}
	return last
}

func (n *node) start(port int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.port = port
	n.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
	if err := os.WriteFile(n.cfgPath, []byte(strings.ReplaceAll(n.cfgTemplate, "{{PORT}}", strconv.Itoa(port))), 0o600); err != nil {
		return err
	}
	n.runs++
	fmt.Fprintf(n.stderr, "---- start #%d of %s on port %d ----\n", n.runs, n.name, port)
	cmd := exec.Command(serverBin, "--config", n.cfgPath)
	cmd.Dir = n.dir
	cmd.Env = n.env
	cmd.Stdout = n.stderr
	cmd.Stderr = n.stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", n.name, err)
	}
	done := make(chan struct{})
	n.cmd, n.done, n.exitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		n.exitErr = err
		n.mu.Unlock()
		fmt.Fprintf(n.stderr, "---- %s exited: %v ----\n", n.name, err)
		close(done)
	}()
	return nil
}

// waitReady polls /readyz until it answers 200.
func (n *node) waitReady(pool *x509.CertPool, timeout time.Duration) error {
	hc := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}},
	}
	defer hc.CloseIdleConnections()
	n.mu.Lock()
	done, u := n.done, n.URL
	n.mu.Unlock()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("%s exited before it was ready: %v", n.name, n.exitError())
		default:
		}
		resp, err := hc.Get(u + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v: %v", n.name, timeout, last)
}

func (n *node) exitError() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exitErr
}

// Restart starts the node again (same port if free) and waits for it.
func (n *node) Restart(pool *x509.CertPool) error {
	n.mu.Lock()
	port := n.port
	n.mu.Unlock()
	if err := n.start(port); err != nil {
		return err
	}
	return n.waitReady(pool, 90*time.Second)
}

// Kill sends SIGKILL and waits for the process to end.
func (n *node) Kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// stop ends the process: SIGTERM, then SIGKILL after 15 s.
func (n *node) stop() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		fmt.Fprintf(n.stderr, "---- %s did not stop within 15 s after SIGTERM: SIGKILL ----\n", n.name)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

// tcpProxy forwards TCP connections to a target; Cut drops every
// connection and refuses new ones (accepts and closes them) until Restore.
type tcpProxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p
}

func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down || p.closed {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.down || p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		p.wg.Add(2)
		go pipe(up, c)
		go pipe(c, up)
	}
}

// Cut drops every proxied connection and refuses new ones.
func (p *tcpProxy) Cut() {
	p.mu.Lock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// Restore accepts connections again.
func (p *tcpProxy) Restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *tcpProxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// waitUntil polls cond every 20 ms until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/commucat/commucat/internal/cli"
	"github.com/commucat/commucat/internal/config"
)

// ServerEnv is the environment commucat-bench gives the server it starts:
// devices are admitted without pairing and without a per-user limit, and
// the rate limits (all clients share 127.0.0.1, §8.3) are raised so that
// they do not cap the measurement. The frame limit is per connection; the
// open and handshaking /connect streams are capped per client IP
// (security.max_connections_per_ip, security.max_handshakes_per_ip).
var ServerEnv = []string{
	"COMMUCAT_AUTO_APPROVE_DEVICES=true",
	"COMMUCAT_MAX_AUTO_DEVICES=0",
	"COMMUCAT_RATE_CONNECT_BURST=1000000",
	"COMMUCAT_RATE_HTTP_BURST=1000000",
	"COMMUCAT_RATE_FRAME_BURST=1000000",
	"COMMUCAT_MAX_CONNECTIONS_PER_IP=1000000",
	"COMMUCAT_MAX_HANDSHAKES_PER_IP=1000000",
	"COMMUCAT_SHUTDOWN_GRACE=2",
	"COMMUCAT_LOG_LEVEL=warn",
}

// Server is the server under test.
type Server struct {
	URL      string
	CertPool *x509.CertPool
	PID      int    // 0 when unknown
	Dir      string // temporary directory (own server)
	LogFile  string // server log (own server)

	cmd     *exec.Cmd
	waitErr chan error
	logf    *os.File
	keepDir bool
	log     io.Writer
}

// ServerOptions configure StartServer.
type ServerOptions struct {
	Binary  string    // commucat-server; "" = next to this executable, PATH, go build
	KeepDir bool      // keep the temporary directory
	Log     io.Writer // notes about the setup (nil: discard)
	Env     []string  // extra environment for the server
}

// StartServer writes a fresh configuration (as `commucat-cli init --dir
// <tmp> --bind 127.0.0.1:<free port>`), starts commucat-server on it with
// ServerEnv and waits for /readyz.
func StartServer(ctx context.Context, o ServerOptions) (*Server, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	dir, err := os.MkdirTemp("", "commucat-bench-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, keepDir: o.KeepDir, log: o.Log}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	bind := fmt.Sprintf("127.0.0.1:%d", port)
	var out, errb bytes.Buffer
	if rc := cli.Run([]string{"init", "--dir", dir, "--bind", bind}, nil, &out, &errb); rc != cli.ExitOK {
		return nil, fmt.Errorf("commucat-cli init: exit %d: %s", rc, strings.TrimSpace(errb.String()))
	}
	cfgPath := filepath.Join(dir, "commucat.toml")
	pem, err := os.ReadFile(filepath.Join(dir, "certs", "server.crt"))
	if err != nil {
		return nil, err
	}
	s.CertPool = x509.NewCertPool()
	s.CertPool.AppendCertsFromPEM(pem)
	s.URL = "https://" + bind

	bin, err := findServerBinary(ctx, o.Binary, dir, o.Log)
	if err != nil {
		return nil, err
	}
	s.LogFile = filepath.Join(dir, "server.log")
	if s.logf, err = os.Create(s.LogFile); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Dir = dir
	cmd.Env = append(append(serverBaseEnv(), ServerEnv...), o.Env...)
	cmd.Stdout, cmd.Stderr = s.logf, s.logf
	setChildAttrs(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	s.cmd, s.PID = cmd, cmd.Process.Pid
	s.waitErr = make(chan error, 1)
	go func() { s.waitErr <- cmd.Wait() }()
	if err := s.waitReady(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// serverBaseEnv is this process's environment without COMMUCAT_* variables
// (they would change the generated configuration).
func serverBaseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COMMUCAT_") {
			env = append(env, kv)
		}
	}
	return env
}

// AttachServer describes a running server: its URL, the certificate to
// trust (from the configuration's tls_cert, or a CA file) and optionally
// its process id.
func AttachServer(target, cfgPath, caPath string, pid int) (*Server, error) {
	if !strings.HasPrefix(target, "https://") {
		return nil, fmt.Errorf("--target must be https://host:port")
	}
	if caPath == "" {
		cfg, err := config.Load(cfgPath, true, os.LookupEnv)
		if err != nil {
			return nil, fmt.Errorf("--config: %w", err)
		}
		caPath = cfg.Server.TLSCert
	}
	pem, err := os.ReadFile(caPath)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", caPath)
	}
	if pid > 0 {
		if _, err := readProcCPU(pid); err != nil {
			return nil, fmt.Errorf("--server-pid %d: %w", pid, err)
		}
	}
	s := &Server{URL: strings.TrimSuffix(target, "/"), CertPool: pool, PID: pid}
	return s, s.waitReady(context.Background(), 10*time.Second)
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// findServerBinary returns explicit, else commucat-server next to this
// executable, else in PATH, else one built with go build into dir.
func findServerBinary(ctx context.Context, explicit, dir string, log io.Writer) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "commucat-server")
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath("commucat-server"); err == nil {
		return p, nil
	}
	return BuildServer(ctx, dir, log)
}

// BuildServer builds commucat-server (without codecs) into dir with the go
// tool; the working directory must be inside the module.
func BuildServer(ctx context.Context, dir string, log io.Writer) (string, error) {
	gotool, err := exec.LookPath("go")
	if err != nil {
		gotool = filepath.Join(runtimeGOROOT(), "bin", "go")
	}
	out := filepath.Join(dir, "commucat-server")
	if log != nil {
		fmt.Fprintf(log, "commucat-bench: building commucat-server into %s\n", dir)
	}
	cmd := exec.CommandContext(ctx, gotool, "build", "-tags", "nocodecs", "-o", out, "github.com/commucat/commucat/cmd/commucat-server")
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("no commucat-server binary (not next to commucat-bench, not in PATH) and go build failed: %v\n%s", err, b.String())
	}
	return out, nil
}

// waitReady polls /readyz until it answers 200.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CertPool, MinVersion: tls.VersionTLS13}}, Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if s.exited() {
			return fmt.Errorf("the server exited at start:\n%s", s.logTail())
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/readyz", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz: %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("the server is not ready after %v: %v\n%s", timeout, last, s.logTail())
}

// exited reports whether the child server has exited.
func (s *Server) exited() bool {
	if s.cmd == nil || s.waitErr == nil {
		return false
	}
	select {
	case err := <-s.waitErr:
		s.waitErr <- err
		return true
	default:
		return false
	}
}

func (s *Server) logTail() string {
	if s.LogFile == "" {
		return ""
	}
	b, _ := os.ReadFile(s.LogFile)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// Stop stops the child server (SIGTERM, then SIGKILL) and removes the
// temporary directory unless it is kept. It is a no-op for an attached
// server.
func (s *Server) Stop() {
	if s.cmd != nil && s.waitErr != nil && !s.exited() {
		_ = s.cmd.Process.Signal(terminateSignal)
		select {
		case err := <-s.waitErr:
			s.waitErr <- err
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			s.waitErr <- <-s.waitErr
		}
	}
	if s.logf != nil {
		s.logf.Close()
		s.logf = nil
	}
	if s.Dir != "" {
		if s.keepDir {
			fmt.Fprintf(s.log, "commucat-bench: server directory kept: %s\n", s.Dir)
		} else {
			os.RemoveAll(s.Dir)
		}
		s.Dir = ""
	}
}

var errNoProc = errors.New("process statistics are not available on this system")

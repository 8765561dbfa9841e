// Package crash holds the crash test of the embedded default: the real
// commucat-server binary on SQLite is killed with SIGKILL while a client
// sends, restarted on the same data, and every message the sender got an
// ACK for must reach the recipient (issue 3; duplicates allowed, losses
// not).
package crash

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/cli"
	"github.com/commucat/commucat/internal/testenv"
)

var serverBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "commucat-crash-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	serverBin = filepath.Join(dir, "commucat-server")
	cmd := exec.Command("go", "build", "-tags", "nocodecs", "-o", serverBin, "github.com/commucat/commucat/cmd/commucat-server")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building commucat-server:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is one run of the server binary on dir.
type node struct {
	cmd    *exec.Cmd
	stderr *testenv.Buffer
	url    string
}

func start(t *testing.T, dir string, port int, pool *x509.CertPool) *node {
	t.Helper()
	stderr := &testenv.Buffer{}
	cmd := exec.Command(serverBin, "--config", filepath.Join(dir, "commucat.toml"))
	// The frame zone (200 frames/s by default) would answer a fast sender
	// with Too Many Requests; this test is about durability, not limits.
	cmd.Env = append(os.Environ(), "COMMUCAT_AUTO_APPROVE_DEVICES=true", "COMMUCAT_MAX_AUTO_DEVICES=0",
		"COMMUCAT_RATE_FRAME_BURST=1000000")
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &node{cmd: cmd, stderr: stderr, url: "https://127.0.0.1:" + strconv.Itoa(port)}
	t.Cleanup(func() {
		if n.cmd.ProcessState == nil {
			_ = n.cmd.Process.Kill()
			_ = n.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("server stderr:\n%s", n.stderr.String())
		}
	})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}, Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(n.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return n
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v\n%s", err, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *node) kill(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = n.cmd.Wait()
}

func dial(t *testing.T, url string, pool *x509.CertPool, id *client.Identity, handle string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{
		URL: url, Identity: id, Handle: handle,
		TLSConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"},
	})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSIGKILLLosesNoAcknowledgedMessage(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	var out, errOut strings.Builder
	if code := cli.Run([]string{"init", "--dir", dir, "--bind", "127.0.0.1:" + strconv.Itoa(port), "--domain", "localhost"}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("init: %d %s", code, errOut.String())
	}
	pem, err := os.ReadFile(filepath.Join(dir, "certs", "server.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)

	n := start(t, dir, port, pool)
	ida, err := client.NewIdentity("crash-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	idb, err := client.NewIdentity("crash-b", nil)
	if err != nil {
		t.Fatal(err)
	}
	b := dial(t, n.url, pool, idb, "crash-b")
	bDevice := b.Ack().DeviceCertificate.DeviceID
	b.Close()
	a := dial(t, n.url, pool, ida, "crash-a")
	const ch = 77
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := a.Request(ctx, ccp.Join, ch, []byte(`{"members":["`+bDevice+`"]}`)); err != nil {
		t.Fatal(err)
	}
	// a sends until the server dies; the acknowledged payloads are kept.
	var (
		mu      sync.Mutex
		acked   = map[string]bool{}
		sendErr error
	)
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		for i := 0; ; i++ {
			p := fmt.Sprintf("k%06d", i)
			rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := a.Request(rctx, ccp.Msg, ch, []byte(p))
			rcancel()
			if err != nil {
				mu.Lock()
				sendErr = err
				mu.Unlock()
				return
			}
			mu.Lock()
			acked[p] = true
			mu.Unlock()
		}
	}()
	// Kill mid-traffic, once some messages went through (not a timing
	// assertion: it only decides when to pull the plug).
	for {
		mu.Lock()
		k, serr := len(acked), sendErr
		mu.Unlock()
		if serr != nil {
			t.Fatalf("the sender failed before the kill, after %d messages: %v", k, serr)
		}
		if k >= 200 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	n.kill(t)
	<-sendDone
	mu.Lock()
	want := len(acked)
	mu.Unlock()

	n2 := start(t, dir, port, pool)
	b = dial(t, n2.url, pool, idb, "crash-b")
	got := map[string]int{}
	rctx, rcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer rcancel()
	for missing := want; missing > 0; {
		f, err := b.Recv(rctx)
		if err != nil {
			var lost []string
			for p := range acked {
				if got[p] == 0 {
					lost = append(lost, p)
				}
			}
			t.Fatalf("%v: %d of %d acknowledged messages not delivered, e.g. %v", err, len(lost), want, lost[:min(5, len(lost))])
		}
		if f.Type != ccp.Msg {
			continue
		}
		p := string(f.Payload)
		got[p]++
		if got[p] == 1 && acked[p] {
			missing--
		}
		if err := b.AckDelivery(rctx, f.Channel, f.Sequence); err != nil {
			t.Fatal(err)
		}
	}
	dups := 0
	for _, c := range got {
		dups += c - 1
	}
	t.Logf("%d acknowledged before SIGKILL, all delivered after the restart (%d received, %d duplicates)", want, len(got), dups)
}

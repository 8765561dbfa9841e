package bench

import (
	"context"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/servertest"
)

// TestIdleHeapProfile writes an in-use heap profile of an in-process
// server holding idle connections (for BENCHMARKS.md): the commucat-server
// binary has no pprof endpoint. It runs only when
// COMMUCAT_BENCH_HEAPPROFILE names the output file; COMMUCAT_BENCH_IDLE_N
// sets the connection count (default 1000). Client and server share the
// heap: read the profile with -focus on server functions, e.g.
//
//	go tool pprof -sample_index=inuse_space -top -focus 'http2serverConn|internal/(session|server|router)' PROFILE
func TestIdleHeapProfile(t *testing.T) {
	out := os.Getenv("COMMUCAT_BENCH_HEAPPROFILE")
	if out == "" {
		t.Skip("set COMMUCAT_BENCH_HEAPPROFILE=FILE")
	}
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("COMMUCAT_BENCH_IDLE_N")); err == nil && v > 0 {
		n = v
	}
	s := servertest.Start(t, func(c *config.Config) {
		c.Security.RateLimit.Connect.Burst = 1000000
		c.Security.RateLimit.HTTP.Burst = 1000000
		c.Security.MaxConnectionsPerIP = 1000000
		c.Security.MaxHandshakesPerIP = 1000000
	})
	ctx := context.Background()
	p := DefaultParams()
	p.Scenario, p.Connections, p.Quiet = "idle", n, true
	raiseFileLimit(p, io.Discard)
	srv := &Server{URL: s.URL, CertPool: s.CertPool}
	e, err := newEnv(ctx, p, 0, srv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	devs := make([]*device, n)
	for i := range devs {
		if devs[i], err = e.newDevice("p" + strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	runtime.MemProfileRate = 4096
	conns, err := e.dialAll(ctx, devs, 32, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(conns)
	time.Sleep(2 * time.Second)
	runtime.GC()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("%d connections (client and server in one process): heap in use %d B, stacks %d B, goroutines %d",
		n, ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine())
}

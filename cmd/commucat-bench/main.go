// Command commucat-bench runs load scenarios against a CommuCat server:
//
//	commucat-bench handshake --version 2 --pq --duration 10s --concurrency 16 --json hs.json
//	commucat-bench relay --senders 8 --channel-size 2 --size 100 --duration 10s --json relay.json
//	commucat-bench idle --connections 10000 --json idle.json
//	commucat-bench inbox --messages 10000 --json inbox.json
//
// By default it starts its own commucat-server in a temporary directory;
// --target and --config measure a running one. See internal/bench.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/commucat/commucat/internal/bench"
)

func main() { os.Exit(run()) }

func run() int {
	p, err := bench.ParseArgs(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 2
	}
	if p.CPUProfile != "" {
		f, err := os.Create(p.CPUProfile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, p, os.Stderr)
	if res != nil {
		if werr := res.WriteJSON(p.JSON, os.Stdout); werr != nil {
			fmt.Fprintf(os.Stderr, "error: %v\n", werr)
			return 1
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 1
	}
	return 0
}

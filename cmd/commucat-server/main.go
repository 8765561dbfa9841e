// Command commucat-server runs a CommuCat node (spec §12.1).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/server"
	"github.com/commucat/commucat/internal/store"
)

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("commucat-server", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file (overrides COMMUCAT_CONFIG)")
	check := fs.Bool("check-config", false, "validate the configuration and exit")
	noMigrate := fs.Bool("no-migrate", false, "do not apply pending migrations")
	version := fs.Bool("version", false, "print the version and exit")
	startupWait := fs.Duration("startup-wait", time.Minute,
		"how long to retry, with backoff, while PostgreSQL or Redis is down at start (0: fail at once)")
	pprofAddr := fs.String("pprof", "",
		"serve net/http/pprof on this loopback address (e.g. 127.0.0.1:6060); for profiling only, it has no authentication")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *pprofAddr != "" {
		if err := checkLoopback(*pprofAddr); err != nil {
			fmt.Fprintf(os.Stderr, "error: --pprof: %v\n", err)
			return 2
		}
	}
	if *version {
		fmt.Printf("commucat-server %s\n", server.Version)
		return 0
	}
	path, explicit := config.Resolve(*cfgPath, os.LookupEnv)
	cfg, err := config.Load(path, explicit, os.LookupEnv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 2
	}
	if *check {
		fmt.Println("config=ok")
		return 0
	}
	var h slog.Handler
	level := new(slog.LevelVar)
	level.Set(cfg.Log.Level)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == config.LogJSON {
		h = slog.NewJSONHandler(os.Stderr, opts)
	} else {
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	log := slog.New(h).With("node", cfg.Server.NodeID)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP is caught from here on: before the server runs (storage may be
	// retried for --startup-wait) it is ignored instead of killing us.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// COMMUCAT_REDIS_PREFIX is not a configuration key (§10.2) but a knob
	// for tests and shared Redis servers: it is prepended to every Redis
	// key and bus channel, so that independent clusters (e.g. parallel
	// multi-node tests) can share one Redis. Production leaves it unset.
	redisPrefix := os.Getenv("COMMUCAT_REDIS_PREFIX")
	srv, err := server.New(ctx, server.Options{Config: cfg, Logger: log, NoMigrate: *noMigrate, StartupWait: *startupWait, RedisPrefix: redisPrefix})
	if err != nil {
		if errors.Is(err, store.ErrPendingMigrations) {
			fmt.Fprintln(os.Stderr, "error: pending migrations")
			return 1
		}
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 1
	}
	if err := srv.Listen(""); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 1
	}
	// A SIGHUP during start-up found the keys not loaded yet; drop it.
	select {
	case <-hup:
	default:
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			// §12.1: the key tables at once; the issue adds rate limits and
			// the log level, read from the configuration file again. A file
			// that no longer loads keeps the running settings.
			next, err := config.Load(path, explicit, os.LookupEnv)
			if err != nil {
				log.Error("SIGHUP: configuration not reloaded", "err", err)
				next = nil
			}
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := srv.Reload(rctx, next, level); err != nil {
				log.Error("SIGHUP reload", "err", err)
			}
			cancel()
		}
	}()
	if *pprofAddr != "" {
		stopPprof, err := servePprof(*pprofAddr, log)
		if err != nil {
			fmt.Fprintf(os.Stderr, "error: --pprof: %v\n", err)
			return 1
		}
		defer stopPprof()
	}
	if err := srv.Serve(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 1
	}
	return 0
}

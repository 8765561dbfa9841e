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
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
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
	opts := &slog.HandlerOptions{Level: cfg.Log.Level}
	if cfg.Log.Format == config.LogJSON {
		h = slog.NewJSONHandler(os.Stderr, opts)
	} else {
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	log := slog.New(h).With("node", cfg.Server.NodeID)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(ctx, server.Options{Config: cfg, Logger: log, NoMigrate: *noMigrate})
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
	if err := srv.Serve(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 1
	}
	return 0
}

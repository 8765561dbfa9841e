// Command commucat-client is the CommuCat terminal client: create a
// device, join channels, chat, see presence and receive what arrived while
// offline. Run it with -h for the flags and type /help once connected.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/commucat/commucat/internal/termclient"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := termclient.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

package termclient

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/commucat/commucat/client"
)

const usageText = `usage: commucat-client [flags]

A terminal chat client for CommuCat servers. The first run creates a device
(keys in the state file) for the user named by --handle; later runs reuse it.

First run against the development server of 'make run' (from the repository):
  commucat-client --server https://localhost:9443 --ca dev/certs/server.crt --handle alice --device alice-pc
A second user, in another terminal, needs another profile (state file):
  commucat-client --profile bob --server https://localhost:9443 --ca dev/certs/server.crt --handle bob --device bob-pc
Then alice types "/join 7 bob-pc" and chats; type /help for the commands.
Later runs need only the profile: commucat-client --profile bob

flags:
`

// Main parses the command line and runs the client; it returns the exit
// status (0 ok, 1 failure, 2 usage error). Interactive output goes to
// stdout, flag errors and the final error to stderr.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("commucat-client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	var (
		o         Options
		profile   = fs.String("profile", "default", "profile name: the state file is $XDG_CONFIG_HOME/commucat-client/<profile>.json")
		transport = fs.String("transport", "h2", "how to carry the connection: h2, http1 or ws")
		version   = fs.Int("version", 0, "protocol version to offer: 1 or 2 (default both, 2 preferred)")
		debug     = fs.Bool("debug", false, "write SDK debug logs (frame types and sizes, never payloads or keys) to stderr")
	)
	fs.StringVar(&o.StatePath, "state", "", "state file (device keys, server, channels); overrides --profile")
	fs.StringVar(&o.Server, "server", "", "server URL https://host:port (saved in the state file)")
	fs.Func("fallback", "another node https://host:port of the same deployment, tried when the server is unreachable (repeatable; the list given replaces the saved one)", func(s string) error {
		o.Fallbacks = append(o.Fallbacks, s)
		return nil
	})
	fs.BoolVar(&o.NoFallbacks, "no-fallback", false, "forget the saved --fallback nodes")
	fs.StringVar(&o.Handle, "handle", "", "user handle the new device belongs to (needed on the first run)")
	fs.StringVar(&o.Device, "device", "", "device id of a new device (default term-<8 hex digits>)")
	fs.StringVar(&o.IdentityPath, "identity", "", "import a device identity file (commucat-cli rotate-keys --identity-out) into a new state file")
	fs.BoolVar(&o.PQ, "pq", false, "use the post-quantum hybrid keys (ML-KEM-768, version 2)")
	fs.StringVar(&o.CAFile, "ca", "", "PEM certificate to trust for the server, e.g. dev/certs/server.crt (saved)")
	fs.BoolVar(&o.Insecure, "insecure", false, "do NOT verify the server's TLS certificate (dangerous; not saved)")
	fs.StringVar(&o.Pattern, "pattern", "XK", "Noise handshake pattern: XK or IK")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "commucat-client: unexpected argument %q (see -h)\n", fs.Arg(0))
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "commucat-client: "+format+"\n", a...)
		return 2
	}
	tr, err := client.ParseTransport(*transport)
	if err != nil {
		return fail("--transport: use h2, http1 or ws")
	}
	o.Transport = tr
	switch *version {
	case 0:
	case 1, 2:
		o.Versions = []int{*version}
	default:
		return fail("--version: use 1 or 2")
	}
	o.Pattern = strings.ToUpper(o.Pattern)
	if o.Pattern != client.PatternXK && o.Pattern != client.PatternIK {
		return fail("--pattern: use XK or IK")
	}
	if o.Insecure && o.CAFile != "" {
		return fail("--ca and --insecure exclude each other")
	}
	if o.NoFallbacks && len(o.Fallbacks) > 0 {
		return fail("--fallback and --no-fallback exclude each other")
	}
	if o.StatePath == "" {
		p, err := DefaultStatePath(*profile)
		if err != nil {
			return fail("%v", err)
		}
		o.StatePath = p
	}
	if *debug {
		o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if err := Run(ctx, o, stdin, stdout); err != nil {
		fmt.Fprintf(stderr, "commucat-client: %s\n", describe(err))
		if errors.Is(err, ErrNoServer) || errors.Is(err, ErrNoHandle) {
			return 2
		}
		return 1
	}
	return 0
}

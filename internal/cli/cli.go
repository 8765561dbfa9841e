// Package cli implements commucat-cli (spec §12.2). Results are key=value
// lines or canonical JSON on stdout, errors are "error: <message>" lines on
// stderr; exit codes are 0 success, 1 failure, 2 usage error, 3 ledger
// verification failed.
package cli

import (
	"fmt"
	"io"
	"strings"
)

// Exit codes of §12.2.
const (
	ExitOK     = 0
	ExitFail   = 1
	ExitUsage  = 2
	ExitLedger = 3
)

// Env is what a command may touch: its standard streams and arguments.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// ConfigPath is the value of --config ("" when not given).
	ConfigPath string
}

func (e *Env) errorf(format string, args ...any) {
	fmt.Fprintf(e.Stderr, "error: "+format+"\n", args...)
}

type command struct {
	name  string
	usage string
	run   func(env *Env, args []string) int
}

func commands() []command {
	return []command{
		{"init", "init [--dir DIR] [--domain D] [--bind ADDR] [--force]", runInit},
		{"migrate", "migrate", runMigrate},
		{"register-user", "register-user <handle> [display_name] [avatar_url]", runRegisterUser},
		{"rotate-keys", "rotate-keys (--user ID | --handle H) [--device ID | ID]", runRotateKeys},
		{"rotate-noise", "rotate-noise", runRotateNoise},
		{"diagnose", "diagnose [--server URL] [--ca FILE]", runDiagnose},
		{"call-simulate", "call-simulate [frames] [--video]", runCallSimulate},
		{"frame", "frame decode [--strict] | frame encode", runFrame},
		{"ledger", "ledger verify [PATH]", runLedger},
	}
}

// Run executes commucat-cli with args (without the program name) and
// returns the exit code.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	env := &Env{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	for len(args) > 0 && strings.HasPrefix(args[0], "--config") {
		if v, ok := strings.CutPrefix(args[0], "--config="); ok {
			env.ConfigPath = v
			args = args[1:]
			continue
		}
		if args[0] != "--config" || len(args) < 2 {
			fmt.Fprintln(stderr, "usage: commucat-cli [--config PATH] <command>")
			return ExitUsage
		}
		env.ConfigPath = args[1]
		args = args[2:]
	}
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: commucat-cli <command>")
		for _, c := range commands() {
			fmt.Fprintf(stderr, "  %s\n", c.usage)
		}
		return ExitUsage
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(env, args[1:])
		}
	}
	fmt.Fprintf(stderr, "unknown command: %s\n", args[0])
	return ExitUsage
}

package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/commucat/commucat/internal/ledger"
)

const ledgerUsage = "usage: commucat-cli ledger verify [PATH]"

// runLedger dispatches `commucat-cli ledger <subcommand>`.
func runLedger(env *Env, args []string) int {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(env.Stderr, ledgerUsage)
		return ExitUsage
	}
	return runLedgerVerify(env, args[1:])
}

// runLedgerVerify implements `commucat-cli ledger verify [PATH]` (§12.2):
// the file ledger at PATH (default ledger.target) is checked with
// ledger.Verify. A broken ledger prints the records verified before the
// first bad line and its head, then ledger_status=broken with the line
// and the reason, and exits 3.
func runLedgerVerify(env *Env, args []string) int {
	if len(args) > 1 || (len(args) == 1 && (args[0] == "" || strings.HasPrefix(args[0], "--"))) {
		fmt.Fprintln(env.Stderr, ledgerUsage)
		return ExitUsage
	}
	var path string
	if len(args) == 1 {
		// An explicit PATH needs no configuration.
		path = args[0]
	} else {
		cfg, err := env.loadConfig()
		if err != nil {
			env.errorf("%v", err)
			return ExitFail
		}
		if cfg.Ledger.Target == "" {
			env.errorf("ledger.target is not set; give the ledger file as PATH")
			return ExitFail
		}
		path = cfg.Ledger.Target
	}
	f, err := os.Open(path)
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		env.errorf("%s is a directory", path)
		return ExitFail
	}
	res, err := ledger.Verify(f)
	if err != nil && res.OK() {
		// A read error, not a broken ledger.
		env.errorf("%v", err)
		return ExitFail
	}
	fmt.Fprintf(env.Stdout, "ledger_records=%d\nledger_head=%s\n", res.Records, res.Head)
	if !res.OK() {
		fmt.Fprintf(env.Stdout, "ledger_status=broken\nledger_error_line=%d\nledger_error=%s\n", res.Line, oneLine(res.Reason))
		return ExitLedger
	}
	fmt.Fprintln(env.Stdout, "ledger_status=ok")
	return ExitOK
}

// oneLine keeps a value on its key=value line.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}

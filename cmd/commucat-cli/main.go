// Command commucat-cli is the CommuCat administration and developer tool
// (spec §12.2). Run it without arguments for the list of commands.
package main

import (
	"os"

	"github.com/commucat/commucat/internal/cli"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

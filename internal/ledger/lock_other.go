//go:build !unix

package ledger

import "os"

// Without flock the file is not shared between processes safely: one
// process (the server) must own it.
func lockFile(*os.File) error   { return nil }
func unlockFile(*os.File) error { return nil }

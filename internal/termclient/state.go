package termclient

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/commucat/commucat/client"
)

// stateVersion is the format version written into state files.
const stateVersion = 1

// maxSavedSeen bounds the message ids kept in the state file.
const maxSavedSeen = 512

// State is the content of a state file. It holds the device's private
// keys (inside Identity) and must only be written by (*stateFile).save,
// which uses mode 0600. It never holds the session id (the REST bearer
// token) or anything else the server keeps secret.
type State struct {
	Version int    `json:"version"`
	Server  string `json:"server"`
	// Fallbacks are other nodes of the same deployment, tried in turn
	// when Server is unreachable (client.Options.FallbackURLs).
	Fallbacks []string         `json:"fallbacks,omitempty"`
	CA        string           `json:"ca,omitempty"`      // PEM file trusted for Server (absolute path)
	Handle    string           `json:"handle,omitempty"`  // admission hint (§4.9)
	UserID    string           `json:"user_id,omitempty"` // the owner, learned from the handshake ACK
	Identity  *client.Identity `json:"identity"`
	Channels  []uint32         `json:"channels"`
	Current   uint32           `json:"current,omitempty"`
	// Seen holds the most recent message keys shown, so that a message
	// redelivered after a restart (at-least-once, §6.7) is not shown twice.
	Seen []string `json:"seen,omitempty"`
}

// stateFile is a State bound to its path; save writes it atomically.
type stateFile struct {
	path string

	mu sync.Mutex // guards st and serializes saves
	st State
}

// DefaultStatePath returns $XDG_CONFIG_HOME/commucat-client/<profile>.json,
// or ~/.config/commucat-client/<profile>.json when XDG_CONFIG_HOME is not
// set.
func DefaultStatePath(profile string) (string, error) {
	if profile == "" {
		profile = "default"
	}
	if !validProfile(profile) {
		return "", fmt.Errorf("invalid profile name %q (letters, digits, '.', '_' and '-')", profile)
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cannot find the configuration directory (%v); use --state PATH", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "commucat-client", profile+".json"), nil
}

func validProfile(p string) bool {
	if p == "" || len(p) > 64 || p[0] == '.' {
		return false
	}
	for _, c := range []byte(p) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// loadState reads the state file at path. A missing file gives an empty
// state with exists = false; the caller creates the identity. fixedMode
// reports that the file was readable by others and has been
// restricted to 0600.
func loadState(path string) (sf *stateFile, exists, fixedMode bool, err error) {
	sf = &stateFile{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return sf, false, false, nil
	}
	if err != nil {
		return nil, false, false, fmt.Errorf("reading the state file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, false, false, fmt.Errorf("state file %s is readable by others and cannot be restricted: %w", path, err)
		}
		fixedMode = true
	}
	if err := json.Unmarshal(b, &sf.st); err != nil {
		return nil, false, false, fmt.Errorf("state file %s: %w", path, err)
	}
	if sf.st.Version > stateVersion {
		return nil, false, false, fmt.Errorf("state file %s has format version %d; this client knows %d", path, sf.st.Version, stateVersion)
	}
	if sf.st.Identity == nil {
		return nil, false, false, fmt.Errorf("state file %s holds no device identity", path)
	}
	return sf, true, fixedMode, nil
}

// save writes the state atomically (a temporary file in the same
// directory, fsync, rename) with mode 0600.
func (sf *stateFile) save() error {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	sf.st.Version = stateVersion
	b, err := json.MarshalIndent(&sf.st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the state: %w", err)
	}
	b = append(b, '\n')
	return writeFileAtomic(sf.path, b)
}

func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing the state file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("writing the state file: %w", err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("writing the state file: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("writing the state file: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("writing the state file: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing the state file: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil { // make the rename durable
		d.Sync()
		d.Close()
	}
	return nil
}

// update runs fn with the state locked.
func (sf *stateFile) update(fn func(st *State)) {
	sf.mu.Lock()
	fn(&sf.st)
	sf.mu.Unlock()
}

// snapshot returns a shallow copy of the state (the Identity pointer is
// shared).
func (sf *stateFile) snapshot() State {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	st := sf.st
	st.Channels = slices.Clone(st.Channels)
	st.Seen = slices.Clone(st.Seen)
	return st
}

// randomDeviceID returns "term-" and 8 random hex digits.
func randomDeviceID() string {
	var b [4]byte
	rand.Read(b[:])
	return "term-" + hex.EncodeToString(b[:])
}

// randomID returns a message id: 16 random bytes in hex.
func randomID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

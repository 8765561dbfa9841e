package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// DefaultFile is the configuration file used when neither --config nor
// COMMUCAT_CONFIG names one (§10.1).
const DefaultFile = "commucat.toml"

// EnvConfig is the environment variable naming the configuration file.
const EnvConfig = "COMMUCAT_CONFIG"

// MaxFileSize bounds the configuration file; a larger file is an error.
const MaxFileSize = 1 << 20

// Limits of the pre-scan that keeps pathological TOML away from the parser,
// whose running time grows quadratically with these (a real configuration
// stays far below them).
const (
	maxNesting     = 16 // nested arrays and inline tables
	maxDotsPerLine = 16 // dots outside strings on one line (dotted keys)
)

// Resolve implements the lookup order of §10.1: the --config value flagPath
// if not empty, else COMMUCAT_CONFIG if set and not empty, else
// DefaultFile. explicit reports whether the file was named (then it must
// exist). env is typically os.LookupEnv; nil means os.LookupEnv.
func Resolve(flagPath string, env func(string) (string, bool)) (path string, explicit bool) {
	if flagPath != "" {
		return flagPath, true
	}
	if env == nil {
		env = os.LookupEnv
	}
	if v, ok := env(EnvConfig); ok && v != "" {
		return v, true
	}
	return DefaultFile, false
}

// Load reads the configuration: the defaults of §10.2, then the TOML file at
// path (which may be absent only when explicit is false), then the
// environment variables of §10.2 read through env (nil means
// os.LookupEnv), then resolves relative paths (§10.1) and validates
// everything (§10.3). An empty path means DefaultFile. Every error is a
// *Error; the first problem found is returned.
func Load(path string, explicit bool, env func(string) (string, bool)) (*Config, error) {
	l := loader{hostname: os.Hostname, random: rand.Reader, getwd: os.Getwd}
	cfg, err := l.load(path, explicit, env)
	if err != nil {
		return nil, err // never a typed nil inside the interface
	}
	return cfg, nil
}

// loader holds what Load takes from the process, so tests can replace it.
type loader struct {
	hostname func() (string, error)
	random   io.Reader
	getwd    func() (string, error)
}

func (l *loader) load(path string, explicit bool, env func(string) (string, bool)) (*Config, *Error) {
	if env == nil {
		env = os.LookupEnv
	}
	if path == "" {
		path = DefaultFile
	}
	vals := defaultValues()

	data, found, err := readFile(path)
	if err != nil {
		return nil, err
	}
	if !found && explicit {
		return nil, &Error{Reason: fmt.Sprintf("configuration file %s does not exist", path)}
	}
	var file, base string
	if found {
		abs, err := l.abs(path)
		if err != nil {
			return nil, err
		}
		file, base = abs, filepath.Dir(abs)
		if err := decodeFile(path, data, vals); err != nil {
			return nil, err
		}
	} else {
		wd, werr := l.getwd()
		if werr != nil {
			return nil, &Error{Reason: "cannot determine the working directory: " + werr.Error()}
		}
		base = wd
	}
	if err := applyEnv(vals, env); err != nil {
		return nil, err
	}
	if nid := vals["server.node_id"]; !nid.set {
		id, err := l.defaultNodeID()
		if err != nil {
			return nil, err
		}
		nid.s = id
	}
	for _, d := range keyDefs {
		if v := vals[d.name]; d.kind == kPath && v.s != "" {
			v.s = resolvePath(base, v.s)
		}
	}
	b := &builder{vals: vals, check: true}
	cfg := b.build()
	if b.err != nil {
		return nil, b.err
	}
	cfg.File = file
	return &cfg, nil
}

func (l *loader) abs(path string) (string, *Error) {
	if filepath.IsAbs(path) {
		return filepath.Clean(path), nil
	}
	wd, err := l.getwd()
	if err != nil {
		return "", &Error{Reason: "cannot determine the working directory: " + err.Error()}
	}
	return filepath.Join(wd, path), nil
}

func resolvePath(base, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(base, p)
}

// defaultNodeID derives server.node_id (§10.2): the hostname with every
// character outside [A-Za-z0-9._-] replaced by '-', cut to 55 characters,
// then '-' and 8 random hex digits. An unknown or empty hostname counts as
// "node".
func (l *loader) defaultNodeID() (string, *Error) {
	h, err := l.hostname()
	if err != nil || h == "" {
		h = "node"
	}
	var sb strings.Builder
	n := 0
	for _, r := range h {
		if n == 55 {
			break
		}
		if nodeIDChar(r) {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('-')
		}
		n++
	}
	var rnd [4]byte
	if _, err := io.ReadFull(l.random, rnd[:]); err != nil {
		return "", &Error{Key: "server.node_id", Reason: "cannot generate the default: " + err.Error()}
	}
	sb.WriteByte('-')
	sb.WriteString(hex.EncodeToString(rnd[:]))
	return sb.String(), nil
}

func nodeIDChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '.' || r == '_' || r == '-'
}

// readFile reads at most MaxFileSize bytes of path. found is false when the
// file does not exist.
func readFile(path string) (data []byte, found bool, e *Error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, &Error{Reason: "cannot read the configuration file: " + err.Error()}
	}
	defer f.Close()
	data, err = io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, false, &Error{Reason: "cannot read the configuration file: " + err.Error()}
	}
	if len(data) > MaxFileSize {
		return nil, false, &Error{Reason: fmt.Sprintf("configuration file %s is larger than %d bytes", path, MaxFileSize)}
	}
	return data, true, nil
}

// decodeFile parses data as TOML and stores the values of known keys in
// vals. Unknown keys and values of the wrong type are errors.
func decodeFile(path string, data []byte, vals map[string]*value) *Error {
	if err := prescan(data); err != nil {
		return &Error{Reason: fmt.Sprintf("%s: %s", path, err)}
	}
	var m map[string]any
	md, err := decodeTOML(data, &m)
	if err != nil {
		return tomlError(path, data, err)
	}
	// Unknown keys, in document order.
	for _, k := range md.Keys() {
		if s := k.String(); !knownKey(s) {
			return unknownKey(s)
		}
	}
	// Belt and braces: anything the key list may not show (it is the map
	// that is read below).
	if err := checkUnknown(m, ""); err != nil {
		return err
	}
	for _, t := range tables {
		if v, ok := lookup(m, t); ok {
			if _, isMap := v.(map[string]any); !isMap {
				return &Error{Key: t, Reason: "must be a table, not " + tomlTypeName(v)}
			}
		}
	}
	for _, d := range keyDefs {
		raw, ok := lookup(m, d.name)
		if !ok {
			continue
		}
		v := vals[d.name]
		if err := fromTOML(&d, raw, v); err != nil {
			return err
		}
		v.set = true
	}
	return nil
}

// decodeTOML is toml.Decode with any panic turned into an error, so that no
// input can crash the caller.
func decodeTOML(data []byte, m *map[string]any) (md toml.MetaData, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid TOML (%v)", r)
		}
	}()
	return toml.Decode(string(data), m)
}

func unknownKey(k string) *Error {
	return &Error{Key: k, Reason: "unknown key: " + truncate(k)}
}

func checkUnknown(m map[string]any, prefix string) *Error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		full := toml.Key{k}.String()
		if prefix != "" {
			full = prefix + "." + full
		}
		if !knownKey(full) {
			return unknownKey(full)
		}
		switch x := m[k].(type) {
		case map[string]any:
			if err := checkUnknown(x, full); err != nil {
				return err
			}
		case []map[string]any:
			for _, e := range x {
				if err := checkUnknown(e, full); err != nil {
					return err
				}
			}
		case []any:
			for _, e := range x {
				if em, ok := e.(map[string]any); ok {
					if err := checkUnknown(em, full); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// tomlError converts an error of the TOML parser. Parser messages may quote
// a piece of the input, so they are dropped when the offending line or key
// could hold a secret.
func tomlError(path string, data []byte, err error) *Error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return &Error{Reason: fmt.Sprintf("%s: invalid TOML: %s", path, err)}
	}
	msg := pe.Message
	if mentionsSecret(pe.LastKey) || mentionsSecret(lineOf(data, pe.Position.Line)) {
		msg = "invalid value"
	}
	where := fmt.Sprintf("line %d", pe.Position.Line)
	if pe.LastKey != "" {
		where += fmt.Sprintf(" (key %s)", truncate(pe.LastKey))
	}
	e := &Error{Reason: fmt.Sprintf("%s: %s: invalid TOML: %s", path, where, truncate(msg))}
	if m := redefined.FindStringSubmatch(pe.Message); m != nil && len(m[1]) <= 200 {
		e.Key = m[1] // e.g. a repeated [server] table
	}
	return e
}

// redefined matches the parser's message for a key or table defined twice.
var redefined = regexp.MustCompile(`^Key '(.*)' (?:has already been defined|was already created)`)

// mentionsSecret reports whether s contains the last part of the name of a
// secret key (or the word "token", for token = """ … across lines).
func mentionsSecret(s string) bool {
	if strings.Contains(s, "token") {
		return true
	}
	for _, d := range keyDefs {
		if d.secret && strings.Contains(s, d.name[strings.LastIndexByte(d.name, '.')+1:]) {
			return true
		}
	}
	return false
}

func lineOf(data []byte, n int) string {
	lines := strings.SplitN(string(data), "\n", n+1)
	if n < 1 || n > len(lines) {
		return ""
	}
	return lines[n-1]
}

// lookup returns the value at the dotted key in m (keys of the schema are
// bare, so splitting at dots is exact).
func lookup(m map[string]any, key string) (any, bool) {
	var cur any = m
	for part := range strings.SplitSeq(key, ".") {
		t, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = t[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func tomlTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case map[string]any:
		return "a table"
	case []map[string]any, []any:
		return "an array"
	}
	return "a date/time"
}

func typeError(key string, want string, got any) *Error {
	return &Error{Key: key, Reason: fmt.Sprintf("must be %s, not %s", want, tomlTypeName(got))}
}

// fromTOML stores the TOML value raw of key d in v.
func fromTOML(d *keyDef, raw any, v *value) *Error {
	switch d.kind {
	case kBool:
		b, ok := raw.(bool)
		if !ok {
			return typeError(d.name, d.kind.tomlType(), raw)
		}
		v.b = b
	case kInt:
		i, ok := raw.(int64)
		if !ok {
			return typeError(d.name, d.kind.tomlType(), raw)
		}
		v.i = i
	case kList:
		arr, ok := raw.([]any)
		if !ok {
			return typeError(d.name, d.kind.tomlType(), raw)
		}
		v.list = make([]string, 0, len(arr))
		for i, e := range arr {
			s, ok := e.(string)
			if !ok {
				return typeError(fmt.Sprintf("%s[%d]", d.name, i), "a string", e)
			}
			v.list = append(v.list, s)
		}
	case kPeers:
		var elems []any
		switch x := raw.(type) {
		case []map[string]any:
			for _, e := range x {
				elems = append(elems, e)
			}
		case []any:
			elems = x
		default:
			return typeError(d.name, d.kind.tomlType(), raw)
		}
		v.peers = make([]rawPeer, 0, len(elems))
		for i, e := range elems {
			name := fmt.Sprintf("%s[%d]", d.name, i)
			t, ok := e.(map[string]any)
			if !ok {
				return typeError(name, "a table", e)
			}
			var p rawPeer
			for _, f := range []struct {
				key string
				dst *string
			}{{"domain", &p.domain}, {"endpoint", &p.endpoint}, {"public_key", &p.publicKey}} {
				fv, present := t[f.key]
				if !present {
					continue
				}
				s, ok := fv.(string)
				if !ok {
					return typeError(name+"."+f.key, "a string", fv)
				}
				*f.dst = s
			}
			v.peers = append(v.peers, p)
		}
	default: // string-valued kinds
		s, ok := raw.(string)
		if !ok {
			return typeError(d.name, d.kind.tomlType(), raw)
		}
		v.s = s
	}
	return nil
}

// applyEnv applies the environment variables of §10.2 (§10.1 rules).
func applyEnv(vals map[string]*value, env func(string) (string, bool)) *Error {
	for i := range keyDefs {
		d := &keyDefs[i]
		s, ok := env(d.env)
		if !ok {
			continue
		}
		v := vals[d.name]
		if s == "" && !d.kind.emptyEnvAllowed() {
			return &Error{Key: d.name, Reason: d.env + " is set but empty"}
		}
		shown := quoted(s)
		if d.secret {
			shown = "(value hidden)"
		}
		switch d.kind {
		case kBool:
			switch s {
			case "true":
				v.b = true
			case "false":
				v.b = false
			default:
				return &Error{Key: d.name, Reason: fmt.Sprintf("%s must be true or false, not %s", d.env, shown)}
			}
		case kInt:
			i, err := parseDecimal(s)
			if err != nil {
				return &Error{Key: d.name, Reason: fmt.Sprintf("%s %s: %s", d.env, shown, err)}
			}
			v.i = i
		case kList:
			v.list = splitList(s, ",")
		case kPeers:
			peers, err := parsePeers(s)
			if err != "" {
				return &Error{Key: d.name, Reason: d.env + ": " + err}
			}
			v.peers = peers
		default:
			v.s = s
		}
		v.set, v.from = true, d.env
	}
	return nil
}

// parseDecimal parses an optionally negative decimal integer: digits only,
// no sign '+', no underscores, no base prefix.
func parseDecimal(s string) (int64, error) {
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, errors.New("is not a decimal integer")
	}
	i, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errors.New("is out of range")
	}
	return i, nil
}

// splitList splits an environment list; "" is the empty list and each item
// is trimmed of surrounding spaces.
func splitList(s, sep string) []string {
	if s == "" {
		return []string{}
	}
	parts := strings.Split(s, sep)
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// parsePeers parses COMMUCAT_FEDERATION_PEERS:
// domain,endpoint,hex32;domain,endpoint,hex32. "" is the empty list. The
// returned reason is "" on success.
func parsePeers(s string) ([]rawPeer, string) {
	peers := []rawPeer{}
	if s == "" {
		return peers, ""
	}
	for i, entry := range strings.Split(s, ";") {
		f := splitList(entry, ",")
		if len(f) != 3 {
			return nil, fmt.Sprintf("entry %d is not domain,endpoint,public_key", i)
		}
		peers = append(peers, rawPeer{domain: f[0], endpoint: f[1], publicKey: f[2]})
	}
	return peers, ""
}

// quoted quotes s for a message, cut to a readable length.
func quoted(s string) string {
	const max = 80
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}

func truncate(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// prescan rejects input nested deeper than maxNesting or with more than
// maxDotsPerLine dots outside strings and comments on one line. It follows
// TOML's string and comment syntax closely enough for that purpose.
func prescan(data []byte) error {
	depth, dots, line := 0, 0, 1
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch c {
		case '\n':
			line++
			dots = 0
		case '#':
			for i+1 < len(data) && data[i+1] != '\n' {
				i++
			}
		case '[', '{':
			depth++
			if depth > maxNesting {
				return fmt.Errorf("line %d: nested more than %d levels deep", line, maxNesting)
			}
		case ']', '}':
			if depth > 0 {
				depth--
			}
		case '.':
			dots++
			if dots > maxDotsPerLine {
				return fmt.Errorf("line %d: more than %d dotted key parts", line, maxDotsPerLine)
			}
		case '"', '\'':
			multi := i+2 < len(data) && data[i+1] == c && data[i+2] == c
			if multi {
				i += 3
			} else {
				i++
			}
			for ; i < len(data); i++ {
				d := data[i]
				if d == '\n' {
					line++
					if !multi {
						break // unterminated; the parser reports it
					}
				}
				if d == '\\' && c == '"' {
					i++
					if i < len(data) && data[i] == '\n' {
						line++
					}
					continue
				}
				if d != c {
					continue
				}
				if !multi {
					break
				}
				if i+2 < len(data) && data[i+1] == c && data[i+2] == c {
					i += 2
					for i+1 < len(data) && data[i+1] == c { // """" ends with a quote inside
						i++
					}
					break
				}
			}
			if i < len(data) && data[i] == '\n' && !multi {
				dots = 0
			}
		}
	}
	return nil
}

package config

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// examplePath is the annotated example configuration at the repository root.
const examplePath = "../../commucat.toml.example"

// examplePlaceholder marks the secrets an operator must generate.
const examplePlaceholder = "GENERATE-WITH-commucat-cli-init"

func readExample(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// exampleEntry is one key as written in the example: set, or commented out
// ("# key = value"), with the comment lines right above it.
type exampleEntry struct {
	line      int
	commented bool
	doc       []string
}

var (
	exampleTable = regexp.MustCompile(`^(#\s*)?\[\[?([a-z0-9_.]+)\]\]?\s*$`)
	exampleKey   = regexp.MustCompile(`^(#\s*)?([a-z0-9_]+)\s*=`)
	exampleDoc   = regexp.MustCompile(`^#\s*Default: (.+?) \| Env: (\S+)\s*$`)
)

// parseExample finds every key line of the example, active or commented
// out, under the (possibly commented-out) table header above it.
func parseExample(t *testing.T, content string) map[string][]exampleEntry {
	t.Helper()
	out := map[string][]exampleEntry{}
	table := ""
	var doc []string
	sc := bufio.NewScanner(strings.NewReader(content))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if m := exampleTable.FindStringSubmatch(l); m != nil {
			table, doc = m[2], nil
			continue
		}
		if m := exampleKey.FindStringSubmatch(l); m != nil {
			full := m[2]
			if table != "" {
				full = table + "." + m[2]
			}
			out[full] = append(out[full], exampleEntry{line: n, commented: m[1] != "", doc: doc})
			doc = nil
			continue
		}
		if strings.HasPrefix(l, "#") {
			doc = append(doc, l)
		} else {
			doc = nil
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// documentedDefault is how the example writes the default of d.
func documentedDefault(d *keyDef) string {
	if d.required {
		return "none (required)"
	}
	switch x := d.def.(type) {
	case string:
		return strconv.Quote(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case bool:
		return strconv.FormatBool(x)
	}
	return "[]" // lists and peers
}

// The example names every key the loader knows (keyDefs and the members of
// a federation.peers element), each exactly once, documented with its real
// default and environment variable; it names no key the loader does not
// know, not even in a comment.
func TestExampleDocumentsEveryKey(t *testing.T) {
	entries := parseExample(t, readExample(t))
	for i := range keyDefs {
		d := &keyDefs[i]
		es := entries[d.name]
		if len(es) != 1 {
			t.Errorf("%s: %d entries in the example, want 1", d.name, len(es))
			continue
		}
		e := es[0]
		var def, env string
		for _, l := range e.doc {
			if m := exampleDoc.FindStringSubmatch(l); m != nil {
				def, env = m[1], m[2]
			}
		}
		if env == "" {
			t.Errorf("%s (line %d): no \"# Default: … | Env: …\" comment", d.name, e.line)
			continue
		}
		if env != d.env {
			t.Errorf("%s: documented Env %s, the loader reads %s", d.name, env, d.env)
		}
		// The default may be followed by a remark in parentheses.
		if want := documentedDefault(d); def != want && !strings.HasPrefix(def, want+" (") {
			t.Errorf("%s: documented Default %s, the loader's is %s", d.name, def, want)
		}
		if len(e.doc) < 2 {
			t.Errorf("%s: no description above the Default line", d.name)
		}
		if d.secret && !strings.Contains(strings.Join(e.doc, "\n"), "SECRET") {
			t.Errorf("%s is secret but its comment does not say SECRET", d.name)
		}
	}
	for _, p := range peerKeys {
		if len(entries["federation.peers."+p]) == 0 {
			t.Errorf("the federation.peers example lacks %s", p)
		}
	}
	for k, es := range entries {
		if !knownKey(k) {
			t.Errorf("line %d names %s, which the loader does not know", es[0].line, k)
		}
	}
}

// Every key is really set in the file (as TOML, not just in a comment),
// except those that have no writable default, and every value is the
// loader's default unless the comment says otherwise.
func TestExampleValuesAreDefaults(t *testing.T) {
	content := readExample(t)
	var m map[string]any
	md, err := toml.Decode(content, &m)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range md.Keys() {
		if !knownKey(k.String()) {
			t.Errorf("unknown key %s", k)
		}
	}
	entries := parseExample(t, content)
	for i := range keyDefs {
		d := &keyDefs[i]
		raw, set := lookup(m, d.name)
		es := entries[d.name]
		if len(es) != 1 {
			continue // reported by TestExampleDocumentsEveryKey
		}
		if !set {
			// A key may stay commented out only when writing its default
			// explicitly would not load (server.node_id: "" means
			// "derive at start" only when the key is absent).
			if !es[0].commented {
				t.Errorf("%s: entry found but not decoded", d.name)
			}
			s, isStr := d.def.(string)
			if !isStr {
				t.Errorf("%s is not set in the example", d.name)
				continue
			}
			f := newFixture(t)
			if _, err := Load(f.write(t, withKey(f.minimal(), d.name, strconv.Quote(s))), true, noEnv); err == nil {
				t.Errorf("%s is only in a comment, but its default %q could be set", d.name, s)
			}
			continue
		}
		if d.required {
			continue
		}
		doc := strings.Join(es[0].doc, "\n")
		var same bool
		switch x := d.def.(type) {
		case nil:
			a, ok := raw.([]any)
			same = ok && len(a) == 0
		default:
			same = raw == x
		}
		if !same && !strings.Contains(doc, "(not the default") {
			t.Errorf("%s = %v differs from the default %v without saying so", d.name, raw, d.def)
		}
		if same && strings.Contains(doc, "(not the default") {
			t.Errorf("%s says it is not the default but is", d.name)
		}
	}
}

// The secrets of the example are placeholders that cannot be deployed by
// mistake: the example as shipped does not load.
func TestExamplePlaceholdersRefused(t *testing.T) {
	f := newFixture(t) // certs/server.crt and certs/server.key, as the example names them
	content := readExample(t)
	for _, k := range []string{"crypto.noise_private", "crypto.noise_public", "crypto.federation_seed"} {
		if !strings.Contains(content, k[strings.IndexByte(k, '.')+1:]+` = "`+examplePlaceholder+`"`) {
			t.Errorf("%s is not the placeholder %s", k, examplePlaceholder)
		}
	}
	_, err := Load(f.write(t, content), true, noEnv)
	if ce := asError(t, err); ce.Key != "crypto.noise_private" {
		t.Fatalf("the unedited example fails with %v, want an error on crypto.noise_private", err)
	}
	if strings.Contains(err.Error(), examplePlaceholder) {
		t.Errorf("error repeats the value: %v", err)
	}
}

// With generated secrets in place of the placeholders, the example loads
// with the real loader and yields exactly the defaults, apart from the
// required keys and the values it marks as not the default.
func TestExampleLoads(t *testing.T) {
	f := newFixture(t)
	content := readExample(t)
	content = withKey(content, "crypto.noise_private", strconv.Quote(f.noisePrivHex))
	content = withKey(content, "crypto.noise_public", strconv.Quote(f.noisePubHex))
	content = withKey(content, "crypto.federation_seed", strconv.Quote(f.seedHex))
	if strings.Contains(content, examplePlaceholder+`"`) {
		t.Fatal("a placeholder value is left")
	}
	path := f.write(t, content)
	cfg, err := Load(path, true, noEnv)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}

	want := Default()
	want.File = filepath.Join(f.dir, "commucat.toml")
	want.Server.Bind = "0.0.0.0:9443"
	want.Server.Domain = "chat.example.com"
	want.Server.TLSCert, want.Server.TLSKey = f.certPath, f.keyPath
	want.Server.NodeID = cfg.Server.NodeID // derived from the hostname
	want.Storage.SQLitePath = "/var/lib/commucat/commucat.db"
	want.Crypto.NoisePrivate, want.Crypto.NoisePublic, want.Crypto.FederationSeed = f.noisePriv, f.noisePub, f.seed
	if !nodeIDPattern.MatchString(cfg.Server.NodeID) {
		t.Errorf("node_id %q", cfg.Server.NodeID)
	}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("got  %#v\nwant %#v", dump(*cfg), dump(want))
	}
}

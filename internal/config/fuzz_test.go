package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The "valid" seed of the corpus is a configuration Load accepts.
func TestFuzzSeedValid(t *testing.T) {
	raw, err := os.ReadFile("testdata/fuzz/FuzzLoad/valid")
	if err != nil {
		t.Fatal(err)
	}
	lit, ok := strings.CutPrefix(strings.TrimSpace(string(raw)), "go test fuzz v1\n[]byte(")
	if !ok {
		t.Fatal("not a corpus file")
	}
	content, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	c := f.mustLoad(t, content, nil)
	if c.Server.NodeID != "fuzz-node" || len(c.Federation.Peers) != 1 {
		t.Errorf("%+v", c)
	}
}

// FuzzLoad writes arbitrary bytes as the configuration file: Load must
// return a Config or a *Error, never panic, and never hang on input up to
// MaxFileSize. The TLS files of a fixture sit next to the file so that valid
// inputs get through validation.
func FuzzLoad(f *testing.F) {
	fx := newFixture(f)
	f.Add([]byte(fx.minimal()))
	f.Add([]byte(fx.fullFile()))
	f.Add([]byte("[server]\nbind = \"x\"\n[server]\ndomain = \"y\"\n"))
	f.Add([]byte("a = [[[[[[{b = {c = 1}}]]]]]]\n"))
	f.Add([]byte("[[federation.peers]]\ndomain = 1\n"))
	f.Add([]byte("token = \"\"\"\n"))
	// One directory per fuzzing process: the fuzz function runs
	// sequentially within a process.
	dir := fx.dir
	p := filepath.Join(dir, "commucat.toml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		st := time.Now()
		cfg, err := testLoader(dir).load(p, true, noEnv)
		if d := time.Since(st); d > 10*time.Second {
			t.Fatalf("slow: %v len %d", d, len(data))
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if cfg == nil || cfg.Server.Bind == "" || cfg.Server.TLSCert == "" {
			t.Fatalf("accepted without required keys: %+v", cfg)
		}
	})
}

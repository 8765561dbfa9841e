package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// dashboardPath is the Grafana dashboard shipped in deploy/.
const dashboardPath = "../../deploy/grafana-dashboard.json"

// collectExprs returns the "expr" strings anywhere in the decoded JSON
// value v (panels nested in rows included) and calls seenDS for every
// "datasource" object found.
func collectExprs(v any, exprs *[]string, seenDS func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			switch {
			case k == "expr":
				if s, ok := e.(string); ok {
					*exprs = append(*exprs, s)
				}
			case k == "datasource":
				if m, ok := e.(map[string]any); ok {
					seenDS(m)
				}
			}
			collectExprs(e, exprs, seenDS)
		}
	case []any:
		for _, e := range x {
			collectExprs(e, exprs, seenDS)
		}
	}
}

// family is what the test needs of a gathered metric family.
type family struct {
	typ    string // "COUNTER", "GAUGE", "HISTOGRAM", "SUMMARY", ...
	labels []string
}

// gathered maps every metric family name of reg to its type and labels
// (without importing client_model, which go.mod lists as indirect).
func gathered(t *testing.T, reg *prometheus.Registry) map[string]family {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]family, len(mfs))
	for _, mf := range mfs {
		f := family{typ: mf.GetType().String()}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				f.labels = append(f.labels, lp.GetName())
			}
		}
		out[mf.GetName()] = f
	}
	return out
}

var (
	promIdent  = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promByList = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// Every metric the dashboard queries exists: commucat_* names are
// registered by New (a _bucket, _sum or _count suffix must belong to a
// histogram), go_* and process_* names by RegisterRuntime. Every §13 metric
// has a panel, every grouping label exists, and every datasource is the
// ${DS_PROMETHEUS} input.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardPath, err)
	}

	var exprs []string
	collectExprs(dash, &exprs, func(ds map[string]any) {
		if uid, _ := ds["uid"].(string); ds["type"] == "prometheus" && uid != "${DS_PROMETHEUS}" {
			t.Errorf("datasource uid %q, want ${DS_PROMETHEUS}", uid)
		}
	})
	if len(exprs) == 0 {
		t.Fatal("no expr in the dashboard")
	}
	inputs, _ := dash["__inputs"].([]any)
	hasInput := false
	for _, in := range inputs {
		if m, ok := in.(map[string]any); ok && m["name"] == "DS_PROMETHEUS" && m["pluginId"] == "prometheus" {
			hasInput = true
		}
	}
	if !hasInput {
		t.Error("__inputs lacks the DS_PROMETHEUS datasource input")
	}

	appReg := prometheus.NewRegistry()
	New(appReg)
	app := gathered(t, appReg)
	rtReg := prometheus.NewRegistry()
	RegisterRuntime(rtReg)
	runtime := gathered(t, rtReg)

	labels := map[string]bool{"le": true, "quantile": true, "instance": true, "job": true}
	for _, fams := range []map[string]family{app, runtime} {
		for _, f := range fams {
			for _, l := range f.labels {
				labels[l] = true
			}
		}
	}

	used := map[string]bool{}
	for _, e := range exprs {
		for _, id := range promIdent.FindAllString(e, -1) {
			var fams map[string]family
			switch {
			case strings.HasPrefix(id, "commucat_"):
				fams = app
			case strings.HasPrefix(id, "go_"), strings.HasPrefix(id, "process_"):
				fams = runtime
			default:
				continue
			}
			base := id
			if _, ok := fams[id]; !ok {
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, cut := strings.CutSuffix(id, suf); cut {
						base = b
						break
					}
				}
			}
			f, ok := fams[base]
			switch {
			case !ok:
				t.Errorf("%s (in %q) is not a registered metric", id, e)
				continue
			case base != id && f.typ != "HISTOGRAM" && f.typ != "SUMMARY":
				t.Errorf("%s: %s is a %s, not a histogram", id, base, f.typ)
			case strings.HasSuffix(id, "_bucket") && f.typ != "HISTOGRAM":
				t.Errorf("%s: %s has no buckets", id, base)
			}
			used[base] = true
		}
		for _, m := range promByList.FindAllStringSubmatch(e, -1) {
			for l := range strings.SplitSeq(m[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !labels[l] {
					t.Errorf("grouping label %q (in %q) is not a label of any metric", l, e)
				}
			}
		}
	}

	var missing []string
	for name := range app {
		if !used[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics without a panel: %v", missing)
	}
}

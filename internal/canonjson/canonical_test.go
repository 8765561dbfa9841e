package canonjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"reflect"
	"testing"
)

func mustParse(t testing.TB, s string) Value {
	t.Helper()
	v, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return v
}

func TestCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{`null`, `null`},
		{` true `, `true`},
		{`false`, `false`},
		{`1.50`, `1.50`},
		{`1E3`, `1E3`},
		{`-0`, `-0`},
		{`-0.0e-00`, `-0.0e-00`},
		{`12345678901234567890123`, `12345678901234567890123`},
		{`"\u0041\/\u2028<>&\u007f\u001F"`, "\"A/\u2028<>&\x7f\\u001f\""},
		{`"\ud800"`, "\"\ufffd\""},
		{`[ 1 , 2 ,[ ] ,{ } ]`, `[1,2,[],{}]`},
		{`{"b":1,"a":2}`, `{"a":2,"b":1}`},
		{`{"é":1,"a":2,"B":3,"":4,"aa":5,"a ":6,"~":7,"\u00ff":8,"😀":9,"\uffff":10}`,
			"{\"\":4,\"B\":3,\"a\":2,\"a \":6,\"aa\":5,\"~\":7,\"\u00e9\":1,\"\u00ff\":8,\"\uffff\":10,\"😀\":9}"},
		{`{"z":{"y":[{"b":1,"a":[{"d":0,"c":1.0}]}],"x":null},"a":{"c":true,"b":false}}`,
			`{"a":{"b":false,"c":true},"z":{"x":null,"y":[{"a":[{"c":1.0,"d":0}],"b":1}]}}`},
		{"{\n  \"key\" : \"value\",\n  \"n\" : [ 1.0 , 2e10 ]\n}\n", `{"key":"value","n":[1.0,2e10]}`},
	}
	for _, tt := range tests {
		v := mustParse(t, tt.in)
		got := v.Canonical()
		if string(got) != tt.want {
			t.Errorf("Canonical(%q) = %s, want %s", tt.in, got, tt.want)
		}
		if got := v.AppendCanonical([]byte("x")); string(got) != "x"+tt.want {
			t.Errorf("AppendCanonical(%q) = %s", tt.in, got)
		}
		// Idempotent.
		if again := mustParse(t, string(got)).Canonical(); !bytes.Equal(again, got) {
			t.Errorf("not idempotent: %s -> %s", got, again)
		}
	}
}

// Canonicalizing must not reorder the members of the Value itself.
func TestCanonicalDoesNotMutate(t *testing.T) {
	v := mustParse(t, `{"c":1,"b":{"z":1,"y":2},"a":3}`)
	_ = v.Canonical()
	want := mustParse(t, `{"c":1,"b":{"z":1,"y":2},"a":3}`)
	if !reflect.DeepEqual(v, want) {
		t.Fatalf("Value changed: %#v", v)
	}
	if v.Obj[0].Key != "c" || v.Obj[1].Value.Obj[0].Key != "z" {
		t.Fatalf("members reordered: %#v", v)
	}
}

func TestCanonicalHandBuilt(t *testing.T) {
	v := Value{Kind: Object, Obj: []Member{
		{"s", StringValue("x\ny")},
		{"i", IntValue(math.MinInt64)},
		{"u", UintValue(math.MaxUint64)},
		{"b", BoolValue(true)},
		{"n", NullValue()},
		{"arr", Value{Kind: Array}},  // nil Arr
		{"obj", Value{Kind: Object}}, // nil Obj
		{"bad", Value{Kind: Kind(200)}},
	}}
	want := `{"arr":[],"b":true,"bad":null,"i":-9223372036854775808,"n":null,"obj":{},"s":"x\ny","u":18446744073709551615}`
	if got := string(v.Canonical()); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if got := string(AppendInt([]byte("a"), -42)) + string(AppendUint(nil, 42)); got != "a-4242" {
		t.Fatalf("AppendInt/AppendUint: %s", got)
	}
}

// The call_offer vector of spec §2.8.2 is canonical: parsing and
// re-serializing it gives the identical 947 bytes.
func TestCallOfferVector(t *testing.T) {
	in, err := os.ReadFile("testdata/call_offer.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != 947 {
		t.Fatalf("testdata/call_offer.json is %d bytes, want 947", len(in))
	}
	v, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Canonical(); !bytes.Equal(got, in) {
		t.Fatalf("canonical form differs:\n got %s\nwant %s", got, in)
	}
	// Reformatted and shuffled input canonicalizes back to the vector.
	var anyv any
	if err := json.Unmarshal(in, &anyv); err != nil {
		t.Fatal(err)
	}
	indented, err := json.MarshalIndent(anyv, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	v2, err := Parse(indented)
	if err != nil {
		t.Fatal(err)
	}
	reverse(&v2)
	if got := v2.Canonical(); !bytes.Equal(got, in) {
		t.Fatalf("canonical form of reordered input differs:\n got %s\nwant %s", got, in)
	}
	// The 7-byte frame header of §2.8.2 plus the payload is 954 bytes.
	if 7+len(in) != 954 {
		t.Fatal("frame length mismatch")
	}
}

// reverse reverses the member order of every object in v.
func reverse(v *Value) {
	for i, j := 0, len(v.Obj)-1; i < j; i, j = i+1, j-1 {
		v.Obj[i], v.Obj[j] = v.Obj[j], v.Obj[i]
	}
	for i := range v.Obj {
		reverse(&v.Obj[i].Value)
	}
	for i := range v.Arr {
		reverse(&v.Arr[i])
	}
}

func TestGetSetDelete(t *testing.T) {
	v := mustParse(t, `{"b":1,"sender":"forged","a":[1]}`)
	if g, ok := v.Get("b"); !ok || g.Num != "1" {
		t.Fatalf("Get(b) = %#v, %v", g, ok)
	}
	if _, ok := v.Get("missing"); ok {
		t.Fatal("Get(missing) reported true")
	}
	v.Set("sender", StringValue("dev-1"))
	if got, want := string(v.Canonical()), `{"a":[1],"b":1,"sender":"dev-1"}`; got != want {
		t.Fatalf("after Set: %s, want %s", got, want)
	}
	if v.Obj[1].Key != "sender" {
		t.Fatal("Set did not replace in place")
	}
	v.Set("new", IntValue(-5))
	if len(v.Obj) != 4 || v.Obj[3].Key != "new" {
		t.Fatalf("Set did not append: %#v", v.Obj)
	}
	cp := v
	v.Delete("b")
	v.Delete("missing")
	if got, want := string(v.Canonical()), `{"a":[1],"new":-5,"sender":"dev-1"}`; got != want {
		t.Fatalf("after Delete: %s, want %s", got, want)
	}
	if got, want := string(cp.Canonical()), `{"a":[1],"b":1,"new":-5,"sender":"dev-1"}`; got != want {
		t.Fatalf("Delete changed a copy: %s, want %s", got, want)
	}

	// Duplicates (ParseLenient): Set keeps one member, Delete removes all.
	d, err := ParseLenient([]byte(`{"x":1,"y":2,"x":3,"x":4}`))
	if err != nil {
		t.Fatal(err)
	}
	d2 := d
	d.Set("x", BoolValue(false))
	if got, want := string(d.Canonical()), `{"x":false,"y":2}`; got != want || d.Obj[0].Key != "x" {
		t.Fatalf("Set with duplicates: %s, want %s", got, want)
	}
	d2.Delete("x")
	if got, want := string(d2.Canonical()), `{"y":2}`; got != want {
		t.Fatalf("Delete with duplicates: %s, want %s", got, want)
	}

	// Set on an empty hand-built object.
	var o Value
	o.Kind = Object
	o.Set("k", NullValue())
	if got := string(o.Canonical()); got != `{"k":null}` {
		t.Fatalf("Set on empty object: %s", got)
	}

	// Non-objects are left alone.
	for _, s := range []string{`[1]`, `"s"`, `1`, `null`, `true`} {
		nv := mustParse(t, s)
		orig := mustParse(t, s)
		if _, ok := nv.Get("a"); ok {
			t.Errorf("Get on %s reported true", s)
		}
		nv.Set("a", IntValue(1))
		nv.Delete("a")
		if !reflect.DeepEqual(nv, orig) {
			t.Errorf("Set/Delete changed %s: %#v", s, nv)
		}
	}
}

func TestMarshal(t *testing.T) {
	type inner struct {
		Z int    `json:"z"`
		A string `json:"a"`
	}
	type msg struct {
		Zeta    string          `json:"zeta"`
		Alpha   float64         `json:"alpha"`
		Ratio   float64         `json:"ratio"`
		Big     float64         `json:"big"`
		Whole   float64         `json:"whole"`
		Small   float64         `json:"small"`
		Serial  uint64          `json:"serial"`
		Neg     int64           `json:"neg"`
		HTML    string          `json:"html"`
		Inner   inner           `json:"inner"`
		Raw     json.RawMessage `json:"raw"`
		Omitted string          `json:"omitted,omitempty"`
		Ptr     *int            `json:"ptr"`
		List    []any           `json:"list"`
		Map     map[string]int  `json:"map"`
	}
	m := msg{
		Zeta:   "z",
		Alpha:  0.1,
		Ratio:  0.25,
		Big:    1e21,
		Whole:  1.0,
		Small:  1e-7,
		Serial: math.MaxUint64,
		Neg:    -3,
		HTML:   "<a>&\u2028\u2029/",
		Inner:  inner{Z: 1, A: "x"},
		Raw:    json.RawMessage(` { "y" : 1.50 , "x" : [ 1E3 ] } `),
		List:   []any{2.5, "s", nil, true},
		Map:    map[string]int{"é": 1, "b": 2, "B": 3},
	}
	got, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"alpha":0.1,"big":1e+21,"html":"<a>&` + "\u2028\u2029" + `/","inner":{"a":"x","z":1},"list":[2.5,"s",null,true],"map":{"B":3,"b":2,"é":1},"neg":-3,"ptr":null,"ratio":0.25,"raw":{"x":[1E3],"y":1.50},"serial":18446744073709551615,"small":1e-7,"whole":1,"zeta":"z"}`
	if string(got) != want {
		t.Fatalf("Marshal:\n got %s\nwant %s", got, want)
	}

	for _, tt := range []struct {
		in   any
		want string
	}{
		{0.25, "0.25"},
		{1e21, "1e+21"},
		{1e20, "100000000000000000000"},
		{1.0, "1"},
		{123456789.0, "123456789"},
		{0.000001, "0.000001"},
		{float32(0.1), "0.1"},
		{-1.5, "-1.5"},
		{"<>&", `"<>&"`},
		{"bad\xffutf8", "\"bad\ufffdutf8\""},
		{nil, "null"},
		{[]int{}, "[]"},
		{map[string]any{}, "{}"},
	} {
		got, err := Marshal(tt.in)
		if err != nil || string(got) != tt.want {
			t.Errorf("Marshal(%#v) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}

	if _, err := Marshal(json.RawMessage(`{"a":1,"a":2}`)); !errors.Is(err, ErrDuplicateKey) {
		t.Errorf("Marshal of duplicate RawMessage: %v", err)
	}
	if _, err := Marshal(json.RawMessage("\"\xff\"")); !errors.Is(err, ErrSyntax) {
		t.Errorf("Marshal of invalid UTF-8 RawMessage: %v", err)
	}
	if _, err := Marshal(math.NaN()); err == nil {
		t.Error("Marshal(NaN) succeeded")
	}
	if _, err := Marshal(make(chan int)); err == nil {
		t.Error("Marshal(chan) succeeded")
	}
}

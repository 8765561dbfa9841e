package canonjson

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseKinds(t *testing.T) {
	tests := []struct {
		in   string
		want Value
	}{
		{`null`, Value{}},
		{`true`, Value{Kind: Bool, Bool: true}},
		{`false`, Value{Kind: Bool}},
		{`0`, Value{Kind: Number, Num: "0"}},
		{`-0`, Value{Kind: Number, Num: "-0"}},
		{`1.50`, Value{Kind: Number, Num: "1.50"}},
		{`1E3`, Value{Kind: Number, Num: "1E3"}},
		{`-12.5e-07`, Value{Kind: Number, Num: "-12.5e-07"}},
		{`1e+2`, Value{Kind: Number, Num: "1e+2"}},
		{`18446744073709551615`, Value{Kind: Number, Num: "18446744073709551615"}},
		{`123456789012345678901234567890`, Value{Kind: Number, Num: "123456789012345678901234567890"}},
		{`""`, Value{Kind: String}},
		{`"abc"`, Value{Kind: String, Str: "abc"}},
		{`"é😀"`, Value{Kind: String, Str: "é😀"}},
		{`"\"\\\/\b\f\n\r\t"`, Value{Kind: String, Str: "\"\\/\b\f\n\r\t"}},
		{`"\u0041\u00e9\u00E9\u2028"`, Value{Kind: String, Str: "Aéé\u2028"}},
		{`"\u0000"`, Value{Kind: String, Str: "\x00"}},
		{`"\ud83d\ude00"`, Value{Kind: String, Str: "😀"}},
		{`"\uD83D\uDE00x"`, Value{Kind: String, Str: "😀x"}},
		{`"\ud800"`, Value{Kind: String, Str: "\ufffd"}},
		{`"\udc00"`, Value{Kind: String, Str: "\ufffd"}},
		{`"\ud800x"`, Value{Kind: String, Str: "\ufffdx"}},
		{`"\ud800\u0041"`, Value{Kind: String, Str: "\ufffdA"}},
		{`"\ud800\ud800\udc00"`, Value{Kind: String, Str: "\ufffd\U00010000"}},
		{`"\udc00\ud800"`, Value{Kind: String, Str: "\ufffd\ufffd"}},
		{`"\ud800\n"`, Value{Kind: String, Str: "\ufffd\n"}},
		{"\"\x7f\u2028\"", Value{Kind: String, Str: "\x7f\u2028"}},
		{`[]`, Value{Kind: Array, Arr: []Value{}}},
		{`{}`, Value{Kind: Object, Obj: []Member{}}},
		{`[1,"a",null,[true]]`, Value{Kind: Array, Arr: []Value{
			{Kind: Number, Num: "1"}, {Kind: String, Str: "a"}, {}, {Kind: Array, Arr: []Value{{Kind: Bool, Bool: true}}},
		}}},
		{`{"b":1,"a":{"c":[]}}`, Value{Kind: Object, Obj: []Member{
			{"b", Value{Kind: Number, Num: "1"}},
			{"a", Value{Kind: Object, Obj: []Member{{"c", Value{Kind: Array, Arr: []Value{}}}}}},
		}}},
		{`{"a\u0062":"x","":0}`, Value{Kind: Object, Obj: []Member{
			{"ab", Value{Kind: String, Str: "x"}},
			{"", Value{Kind: Number, Num: "0"}},
		}}},
		{" \t\r\n[ 1 , { \"a\" : 2 } ]\n\r\t ", Value{Kind: Array, Arr: []Value{
			{Kind: Number, Num: "1"},
			{Kind: Object, Obj: []Member{{"a", Value{Kind: Number, Num: "2"}}}},
		}}},
	}
	for _, tt := range tests {
		got, err := Parse([]byte(tt.in))
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q) = %#v, want %#v", tt.in, got, tt.want)
		}
		if !Valid([]byte(tt.in)) {
			t.Errorf("Valid(%q) = false", tt.in)
		}
		lv, err := ParseLenient([]byte(tt.in))
		if err != nil || !reflect.DeepEqual(lv, tt.want) {
			t.Errorf("ParseLenient(%q) = %#v, %v", tt.in, lv, err)
		}
	}
}

func TestParseSyntaxErrors(t *testing.T) {
	tests := []string{
		"", " ", "\n\t", "\xef\xbb\xbf1", // empty, whitespace only, BOM
		"1 2", "[] []", "{}{}", `"a""b"`, "null null",
		"1x", "[1]x", "{}x", "truex", "nul", "nulll", "True", "NULL", "tru", "f",
		"01", "-01", "00", "+1", ".5", "1.", "-", "-.5", "1.e3", "1e", "1e+", "1E-", "0x10", "1.5.3", "--1",
		"NaN", "Infinity", "-Infinity", "1_000",
		`"\x"`, `"\u12"`, `"\u12g4"`, `"\U0041"`, `"\'"`, `"\`, `"\u`, `"\u00`, `"\0"`, `"\a"`,
		"\"a\x00\"", "\"a\x01b\"", "\"\x1f\"", "\"\t\"", "\"\n\"",
		"\"\xff\"", "\"\xc3\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"ab\x80\"",
		"{\"\xff\":1}", "[1,\"\xfe\"]",
		"\xff", "[\xff]", "1\xff",
		"\f1", "\v1", "\u00a01", "1\u2028",
		"[", "{", "[1", "[1,", `{"a"`, `{"a":`, `{"a":1`, `{"a":1,`, `"abc`, `["a`,
		"]", "}", "[}", "{]", "[1}", `{"a":1]`,
		"[1,]", `{"a":1,}`, "[,1]", "[,]", "{,}", "[1,,2]", "[1 2]", `{"a" 1}`, `{"a":1 "b":2}`,
		`{a:1}`, `{'a':1}`, `{1:1}`, `{null:1}`, `{"a"}`, `{"a"::1}`, `{:1}`,
		"'a'", "// c\n1", "/* c */1", "1 // c",
	}
	for _, in := range tests {
		v, err := Parse([]byte(in))
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %#v, %v; want ErrSyntax", in, v, err)
		}
		if _, err := ParseLenient([]byte(in)); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseLenient(%q): %v; want ErrSyntax", in, err)
		}
		if Valid([]byte(in)) {
			t.Errorf("Valid(%q) = true", in)
		}
	}
}

func TestParseErrorMessage(t *testing.T) {
	_, err := Parse([]byte(`{"a":1,}`))
	if err == nil || !strings.Contains(err.Error(), "offset 7") {
		t.Fatalf("error %v does not give offset 7", err)
	}
	_, err = Parse([]byte(`{"a":1,"a":2}`))
	if err == nil || !strings.Contains(err.Error(), `"a"`) || !strings.Contains(err.Error(), "offset 7") {
		t.Fatalf("error %v does not name the key and offset 7", err)
	}
}

func TestParseDuplicateKeys(t *testing.T) {
	tests := []string{
		`{"a":1,"a":1}`,
		`{"a":1,"b":2,"a":3}`,
		`{"a":{"b":1,"b":2}}`,
		`[0,{"x":[{"b":1,"b":2}]}]`,
		`{"a":1,"\u0061":2}`,
		`{"\u00e9":1,"é":2}`,
		`{"\u00E9":1,"\u00e9":2}`,
		`{"\ud83d\ude00":1,"😀":2}`,
		`{"\/":1,"/":2}`,
		`{"":1,"":2}`,
		`{"\ud800":1,"\udc00":2}`, // both decode to U+FFFD
		`{"\ud800":1,"\ufffd":2}`,
		`{"a":{"a":1},"a":2}`,
	}
	// Large objects use a map instead of a linear scan.
	var sb strings.Builder
	sb.WriteString("{")
	for i := range 100 {
		sb.WriteString(`"k` + string(rune('A'+i%26)) + string(rune('A'+i/26)) + `":0,`)
	}
	sb.WriteString(`"kZA":1}`)
	tests = append(tests, sb.String())

	for _, in := range tests {
		v, err := Parse([]byte(in))
		if !errors.Is(err, ErrDuplicateKey) {
			t.Errorf("Parse(%q) = %#v, %v; want ErrDuplicateKey", in, v, err)
		}
		if errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q): %v is also ErrSyntax", in, err)
		}
		if Valid([]byte(in)) {
			t.Errorf("Valid(%q) = true", in)
		}
		lv, err := ParseLenient([]byte(in))
		if err != nil {
			t.Errorf("ParseLenient(%q): %v", in, err)
		}
		if lv.Kind != Object && lv.Kind != Array {
			t.Errorf("ParseLenient(%q) kind %d", in, lv.Kind)
		}
	}

	// Not duplicates: same name in different objects, case, normalization.
	for _, in := range []string{
		`{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}`,
		`{"a":1,"A":2}`,
		`{"é":1,"e\u0301":2}`,
		`{"a":1,"a ":2," a":3}`,
		`[{"a":1},{"a":1}]`,
	} {
		if _, err := Parse([]byte(in)); err != nil {
			t.Errorf("Parse(%q): %v", in, err)
		}
	}
	// A large object without duplicates.
	sb.Reset()
	sb.WriteString("{")
	for i := range 100 {
		if i > 0 {
			sb.WriteString(",")
		}
		sb.WriteString(`"k` + string(rune('A'+i%26)) + string(rune('A'+i/26)) + `":0`)
	}
	sb.WriteString("}")
	if v, err := Parse([]byte(sb.String())); err != nil || len(v.Obj) != 100 {
		t.Errorf("large object: %d members, %v", len(v.Obj), err)
	}
}

func TestParseLenientKeepsDuplicates(t *testing.T) {
	v, err := ParseLenient([]byte(`{"b":1,"a":2,"b":3,"\u0061":4}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Member{
		{"b", Value{Kind: Number, Num: "1"}},
		{"a", Value{Kind: Number, Num: "2"}},
		{"b", Value{Kind: Number, Num: "3"}},
		{"a", Value{Kind: Number, Num: "4"}},
	}
	if !reflect.DeepEqual(v.Obj, want) {
		t.Fatalf("got %#v", v.Obj)
	}
	// Stable sort: equal names keep input order.
	if got, want := string(v.Canonical()), `{"a":2,"a":4,"b":1,"b":3}`; got != want {
		t.Fatalf("Canonical = %s, want %s", got, want)
	}
	if g, ok := v.Get("b"); !ok || g.Num != "1" {
		t.Fatalf("Get(b) = %#v, %v; want the first member", g, ok)
	}
}

// A syntax error anywhere wins over a duplicate name or too deep nesting:
// such input is not valid JSON (§1.2 distinguishes the two).
func TestParseSyntaxErrorTakesPrecedence(t *testing.T) {
	deep := strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1)
	for _, in := range []string{
		`{"a":1,"a":2`,
		`{"a":1,"a":2}x`,
		`[{"a":1,"a":2},]`,
		`{"a":1,"a":2,"b":01}`,
		deep + " x",
		"[" + deep + ",]",
		strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth),
		strings.Repeat("[", MaxDepth+5) + "1,}" + strings.Repeat("]", MaxDepth+4),
		strings.Repeat("[", MaxDepth) + `{"a":1}` + strings.Repeat("]", MaxDepth-1) + ",",
	} {
		if _, err := Parse([]byte(in)); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%.40q...): %v; want ErrSyntax", in, err)
		}
		if _, err := ParseLenient([]byte(in)); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseLenient(%.40q...): %v; want ErrSyntax", in, err)
		}
	}
}

func TestParseDepth(t *testing.T) {
	nest := func(n int, open, inner, close string) []byte {
		return []byte(strings.Repeat(open, n) + inner + strings.Repeat(close, n))
	}
	ok := [][]byte{
		nest(MaxDepth, "[", "", "]"),
		nest(MaxDepth, "[", "1", "]"),
		nest(MaxDepth-1, "[", "{}", "]"),
		nest(MaxDepth-1, `{"a":`, "[]", "}"),
		nest(MaxDepth, `{"a":`, "null", "}"),
	}
	for i, in := range ok {
		if _, err := Parse(in); err != nil {
			t.Errorf("ok[%d]: %v", i, err)
		}
		if !Valid(in) {
			t.Errorf("ok[%d]: Valid = false", i)
		}
	}
	deep := [][]byte{
		nest(MaxDepth+1, "[", "", "]"),
		nest(MaxDepth, "[", "{}", "]"),
		nest(MaxDepth+1, `{"a":`, "1", "}"),
		nest(MaxDepth, `{"a":`, `{"b":[1,2,{"c":"\u0041"}],"b":1}`, "}"),
		nest(MaxDepth, "[", `[1,{"a":[]},true,"x",-1.5e3]`, "]"),
		nest(200000, "[", "", "]"),
		nest(100000, `[{"a":`, "1", "}]"),
	}
	for i, in := range deep {
		if _, err := Parse(in); !errors.Is(err, ErrTooDeep) {
			t.Errorf("deep[%d]: %v; want ErrTooDeep", i, err)
		}
		if _, err := ParseLenient(in); !errors.Is(err, ErrTooDeep) {
			t.Errorf("deep[%d] lenient: %v; want ErrTooDeep", i, err)
		}
		if Valid(in) {
			t.Errorf("deep[%d]: Valid = true", i)
		}
	}
	// Unterminated very deep input is a syntax error, without recursion.
	if _, err := Parse([]byte(strings.Repeat("[", 1<<20))); !errors.Is(err, ErrSyntax) {
		t.Errorf("unterminated deep: %v", err)
	}
}

func TestParseDoesNotAliasInput(t *testing.T) {
	in := []byte(`{"k":"v","n":12,"e":"\u0041b"}`)
	v, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 'x'
	}
	if got, want := string(v.Canonical()), `{"e":"Ab","k":"v","n":12}`; got != want {
		t.Fatalf("after overwriting the input: %s, want %s", got, want)
	}
}

func TestParseErrorReturnsZeroValue(t *testing.T) {
	for _, in := range []string{`[1,2`, `{"a":1,"a":2}`, `tru`} {
		v, err := Parse([]byte(in))
		if err == nil || !reflect.DeepEqual(v, Value{}) {
			t.Errorf("Parse(%q) = %#v, %v", in, v, err)
		}
	}
}

// Large inputs of shapes that would expose super-linear behaviour (long
// shared key prefixes, many members, many escapes, deep unterminated
// nesting) must still parse quickly.
func TestParseLargeInputs(t *testing.T) {
	prefix := strings.Repeat("p", 1000)
	var many strings.Builder
	many.WriteString("{")
	for i := range 2000 {
		if i > 0 {
			many.WriteString(",")
		}
		many.WriteString(`"` + prefix + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676)) + `":[]`)
	}
	many.WriteString("}")

	escapes := `"` + strings.Repeat(`\u00e9\n\ud800\ud83d\ude00`, 100000) + `"`
	arr := "[" + strings.Repeat(`{"a":1,"b":[true,false,null],"c":"s"},`, 50000) + "0]"
	deepUnterminated := strings.Repeat(`{"a":[`, 500000)
	longDupKeys := `{"` + prefix + `":1,"` + prefix + `":2}`

	for name, tc := range map[string]struct {
		in   string
		want error
	}{
		"many long keys":    {many.String(), nil},
		"many escapes":      {escapes, nil},
		"long array":        {arr, nil},
		"deep unterminated": {deepUnterminated, ErrSyntax},
		"long dup keys":     {longDupKeys, ErrDuplicateKey},
	} {
		v, err := Parse([]byte(tc.in))
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
			continue
		}
		if err == nil {
			c := v.Canonical()
			if !Valid(c) {
				t.Errorf("%s: canonical form not valid", name)
			}
		}
	}
}

package canonjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"
	"unicode/utf8"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		``, `null`, `true`, `-0.5e+3`, `"a\u0041\ud83d\ude00\ud800"`, `[1,[2,{}]]`,
		`{"b":1,"a":{"d":[],"c":"x"}}`, `{"a":1,"\u0061":2}`, " [ 1 ] ", `01`, "\"\xff\"",
		// No seed deeper than MaxDepth: such inputs are over 10 KB and make
		// the fuzzer's minimization very slow. The non-recursive validator
		// used beyond MaxDepth is checked on every input below instead.
	} {
		f.Add([]byte(s))
	}
	if b, err := os.ReadFile("testdata/call_offer.json"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		v, err := Parse(data)
		if !bytes.Equal(in, data) {
			t.Fatal("Parse modified its input")
		}
		if valid := Valid(data); valid != (err == nil) {
			t.Fatalf("Valid = %v but Parse error = %v", valid, err)
		}
		lv, lerr := ParseLenient(data)
		stdValid := json.Valid(data)

		// skipValue (used beyond MaxDepth) accepts exactly what ParseLenient
		// accepts, apart from the depth limit.
		p := &parser{data: data}
		p.skipWS()
		serr := p.skipValue()
		if serr == nil {
			p.skipWS()
			if p.pos < len(data) {
				serr = p.errUnexpected("after top-level value")
			}
		}
		if serr != nil && !errors.Is(serr, ErrSyntax) {
			t.Fatalf("skipValue: %v", serr)
		}
		if (serr == nil) != (lerr == nil || errors.Is(lerr, ErrTooDeep)) {
			t.Fatalf("skipValue: %v, ParseLenient: %v", serr, lerr)
		}

		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrDuplicateKey) && !errors.Is(err, ErrTooDeep) {
				t.Fatalf("unexpected error type: %v", err)
			}
			// Everything encoding/json accepts that is valid UTF-8 must be
			// accepted, unless it has duplicate names or nests too deeply.
			if stdValid && utf8.Valid(data) && errors.Is(err, ErrSyntax) {
				t.Fatalf("json.Valid accepts %q but Parse: %v", data, err)
			}
			if errors.Is(err, ErrSyntax) != errors.Is(lerr, ErrSyntax) {
				t.Fatalf("Parse: %v, ParseLenient: %v", err, lerr)
			}
			if errors.Is(err, ErrDuplicateKey) {
				if !stdValid || !utf8.Valid(data) {
					t.Fatalf("ErrDuplicateKey for input that is not valid JSON: %q", data)
				}
				if lerr != nil {
					t.Fatalf("ParseLenient failed on duplicate-key input: %v", lerr)
				}
				checkCanonical(t, lv)
			}
			if errors.Is(err, ErrTooDeep) && !errors.Is(lerr, ErrTooDeep) {
				t.Fatalf("Parse: %v, ParseLenient: %v", err, lerr)
			}
			return
		}

		if !stdValid {
			t.Fatalf("Parse accepted %q but json.Valid rejects it", data)
		}
		if !utf8.Valid(data) {
			t.Fatalf("Parse accepted invalid UTF-8 %q", data)
		}
		c := checkCanonical(t, v)
		if lerr != nil {
			t.Fatalf("Parse accepted but ParseLenient: %v", lerr)
		}
		if lc := lv.Canonical(); !bytes.Equal(lc, c) {
			t.Fatalf("ParseLenient canonical %q != Parse canonical %q", lc, c)
		}

		// The decoded values agree with encoding/json.
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var std any
		if err := dec.Decode(&std); err != nil {
			t.Fatalf("encoding/json cannot decode %q: %v", data, err)
		}
		if mine := toAny(v); !reflect.DeepEqual(mine, std) {
			t.Fatalf("decoded value differs from encoding/json:\n mine %#v\n std  %#v", mine, std)
		}
	})
}

// checkCanonical checks properties of the canonical form of v and returns it.
func checkCanonical(t *testing.T, v Value) []byte {
	t.Helper()
	c := v.Canonical()
	if !utf8.Valid(c) || !json.Valid(c) {
		t.Fatalf("canonical form %q is not valid JSON", c)
	}
	if bytes.ContainsAny(c, " \t\n\r") {
		// Whitespace may only occur inside strings; strings never contain
		// raw \t \n \r, so only spaces are possible.
		if bytes.ContainsAny(c, "\t\n\r") {
			t.Fatalf("canonical form %q contains whitespace", c)
		}
	}
	v2, err := ParseLenient(c)
	if err != nil {
		t.Fatalf("canonical form %q does not parse: %v", c, err)
	}
	if c2 := v2.Canonical(); !bytes.Equal(c2, c) {
		t.Fatalf("not idempotent: %q -> %q", c, c2)
	}
	return c
}

func toAny(v Value) any {
	switch v.Kind {
	case Bool:
		return v.Bool
	case Number:
		return json.Number(v.Num)
	case String:
		return v.Str
	case Array:
		a := make([]any, len(v.Arr))
		for i := range v.Arr {
			a[i] = toAny(v.Arr[i])
		}
		return a
	case Object:
		m := make(map[string]any, len(v.Obj))
		for _, mem := range v.Obj {
			m[mem.Key] = toAny(mem.Value)
		}
		return m
	}
	return nil
}

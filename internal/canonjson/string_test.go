package canonjson

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestAppendString(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", `""`},
		{"plain", "hello", `"hello"`},
		{"quote", `a"b`, `"a\"b"`},
		{"backslash", `a\b`, `"a\\b"`},
		{"backspace", "\b", `"\b"`},
		{"tab", "\t", `"\t"`},
		{"newline", "\n", `"\n"`},
		{"formfeed", "\f", `"\f"`},
		{"carriage return", "\r", `"\r"`},
		{"NUL", "\x00", `"\u0000"`},
		{"U+0001", "\x01", `"\u0001"`},
		{"U+0007", "\x07", `"\u0007"`},
		{"U+000B", "\x0b", `"\u000b"`},
		{"U+000E", "\x0e", `"\u000e"`},
		{"U+001B lowercase hex", "\x1b", `"\u001b"`},
		{"U+001F", "\x1f", `"\u001f"`},
		{"space", " ", `" "`},
		{"slash literal", "a/b", `"a/b"`},
		{"html literal", "<a href='x'>&amp;</a>", `"<a href='x'>&amp;</a>"`},
		{"DEL literal", "\x7f", "\"\x7f\""},
		{"U+2028 literal", "\u2028", "\"\u2028\""},
		{"U+2029 literal", "\u2029", "\"\u2029\""},
		{"non-ASCII literal", "é日本😀", `"é日本😀"`},
		{"U+FFFD literal", "\ufffd", "\"\ufffd\""},
		{"mixed", "x\"\\\b\t\n\f\r\x00\x1fy", `"x\"\\\b\t\n\f\r\u0000\u001fy"`},
		{"invalid byte", "a\xffb", "\"a\ufffdb\""},
		{"lone continuation", "\x80", "\"\ufffd\""},
		{"truncated sequence", "\xe6\x97", "\"\ufffd\ufffd\""},
		{"truncated at end after text", "ab\xc3", "\"ab\ufffd\""},
		{"overlong encoding", "\xc0\xaf", "\"\ufffd\ufffd\""},
		{"UTF-8 encoded surrogate", "\xed\xa0\x80", "\"\ufffd\ufffd\ufffd\""},
		{"above U+10FFFF", "\xf4\x90\x80\x80", "\"\ufffd\ufffd\ufffd\ufffd\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendString([]byte("pre"), tt.in)
			if string(got) != "pre"+tt.want {
				t.Fatalf("AppendString(%q) = %q, want %q", tt.in, got[3:], tt.want)
			}
			out := got[3:]
			if !utf8.Valid(out) {
				t.Fatalf("output %q is not valid UTF-8", out)
			}
			// The output must be a JSON string that round-trips (modulo
			// invalid UTF-8, which both sides replace by U+FFFD).
			var s string
			if err := json.Unmarshal(out, &s); err != nil {
				t.Fatalf("output %q is not a JSON string: %v", out, err)
			}
			if want := string([]rune(tt.in)); s != want {
				t.Fatalf("round trip: got %q, want %q", s, want)
			}
			v, err := Parse(out)
			if err != nil || v.Kind != String || v.Str != s {
				t.Fatalf("Parse(%q) = %+v, %v", out, v, err)
			}
		})
	}
}

func TestAppendStringAllASCII(t *testing.T) {
	for c := 0; c < 0x80; c++ {
		got := string(AppendString(nil, string(rune(c))))
		var want string
		switch c {
		case '"':
			want = `"\""`
		case '\\':
			want = `"\\"`
		case '\b':
			want = `"\b"`
		case '\t':
			want = `"\t"`
		case '\n':
			want = `"\n"`
		case '\f':
			want = `"\f"`
		case '\r':
			want = `"\r"`
		default:
			if c < 0x20 {
				want = `"\u00` + string(hexDigits[c>>4]) + string(hexDigits[c&0xf]) + `"`
			} else {
				want = `"` + string(rune(c)) + `"`
			}
		}
		if got != want {
			t.Errorf("AppendString(U+%04X) = %s, want %s", c, got, want)
		}
	}
}

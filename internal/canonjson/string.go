// Package canonjson implements the canonical JSON form of CCP-1 (spec §1.2):
// compact, object members sorted by key in ascending byte order, numbers kept
// as written, strings escaped minimally. It is used wherever bytes are hashed
// or signed, for every server-generated JSON object and for the CLI output.
package canonjson

import (
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// AppendString appends s to dst as a canonical JSON string literal (§1.2):
// `"` and `\` are escaped with a backslash, U+0008, U+0009, U+000A, U+000C and
// U+000D use their short escapes, every other code point below U+0020 is
// written as \u00xx with lowercase hex, and nothing else is escaped. Invalid
// UTF-8 sequences are replaced by U+FFFD so that the output is always valid
// UTF-8.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\r':
				dst = append(dst, '\\', 'r')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\ufffd"...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

package canonjson

import (
	"strconv"
	"time"
)

// FormatTime formats t as the RFC 3339 timestamp the server emits (§1.2):
// UTC, the offset written "+00:00", no fraction when the sub-second part is
// zero, otherwise exactly 3, 6 or 9 digits, the shortest of these that is
// exact.
func FormatTime(t time.Time) string {
	return string(AppendTime(nil, t))
}

// AppendTime appends FormatTime(t) to dst.
func AppendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	dst = t.AppendFormat(dst, "2006-01-02T15:04:05")
	if ns := t.Nanosecond(); ns != 0 {
		var digits int
		switch {
		case ns%1_000_000 == 0:
			ns /= 1_000_000
			digits = 3
		case ns%1_000 == 0:
			ns /= 1_000
			digits = 6
		default:
			digits = 9
		}
		dst = append(dst, '.')
		s := strconv.Itoa(ns)
		for i := len(s); i < digits; i++ {
			dst = append(dst, '0')
		}
		dst = append(dst, s...)
	}
	return append(dst, "+00:00"...)
}

// ParseTime parses any RFC 3339 timestamp (§1.2: receivers accept every
// form).
func ParseTime(s string) (time.Time, error) {
	return time.Parse(time.RFC3339Nano, s)
}

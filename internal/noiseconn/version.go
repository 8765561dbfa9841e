package noiseconn

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/canonjson"
)

// Protocol versions (§1.4).
const (
	Version1 = 1
	Version2 = 2
)

// FormatVersions writes a version list as §4.4 prints it: "[1, 2]".
func FormatVersions(vs []int) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = strconv.Itoa(v)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

var integerLiteral = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

// versionEntry interprets one JSON value as a protocol version: ok false
// for anything but a non-negative integer literal; tooBig for an integer
// above 65535.
func versionEntry(v canonjson.Value) (n int, ok bool, tooBig bool) {
	if v.Kind != canonjson.Number || !integerLiteral.MatchString(v.Num) || strings.HasPrefix(v.Num, "-") {
		return 0, false, false
	}
	u, err := strconv.ParseUint(v.Num, 10, 64)
	if err != nil || u > 65535 {
		return 0, true, true
	}
	return int(u), true, false
}

// NegotiateVersion implements §4.4 on the HELLO object: the highest common
// version, or Protocol Version Mismatch with the exact reason.
func NegotiateVersion(hello canonjson.Value, supported []int) (int, *HandshakeError) {
	fail := func(format string, args ...any) (int, *HandshakeError) {
		return 0, &HandshakeError{Title: ccp.TitleProtocolVersionMismatch, Detail: "protocol negotiation failed: " + fmt.Sprintf(format, args...)}
	}
	inS := func(n int) bool {
		for _, s := range supported {
			if s == n {
				return true
			}
		}
		return false
	}
	if sv, ok := hello.Get("supported_versions"); ok && sv.Kind != canonjson.Null {
		if sv.Kind != canonjson.Array {
			return fail("supported_versions must be an array")
		}
		best := -1
		peer := make([]string, 0, len(sv.Arr))
		for _, e := range sv.Arr {
			n, ok, tooBig := versionEntry(e)
			if !ok {
				return fail("supported_versions entries must be unsigned integers")
			}
			if tooBig {
				return fail("protocol version %s out of range", e.Num)
			}
			peer = append(peer, strconv.Itoa(n))
			if inS(n) && n > best {
				best = n
			}
		}
		if len(sv.Arr) == 0 {
			return fail("supported_versions cannot be empty")
		}
		if best < 0 {
			return fail("no common protocol version; peer=[%s]; supported=%s", strings.Join(peer, ", "), FormatVersions(supported))
		}
		return best, nil
	}
	if pv, ok := hello.Get("protocol_version"); ok && pv.Kind != canonjson.Null {
		n, ok, tooBig := versionEntry(pv)
		if !ok {
			return fail("protocol_version must be an unsigned integer")
		}
		if tooBig {
			return fail("protocol version %s out of range", pv.Num)
		}
		if !inS(n) {
			return fail("unsupported protocol version %d; supported=%s", n, FormatVersions(supported))
		}
		return n, nil
	}
	if !inS(Version1) {
		return fail("unsupported protocol version 1; supported=%s", FormatVersions(supported))
	}
	return Version1, nil
}

package canonjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// AppendCanonical appends the canonical form of v (§1.2) to dst: no
// whitespace, object members sorted by name in ascending byte order of the
// UTF-8 name (a stable sort: members with equal names, which only
// ParseLenient produces, keep their order), numbers written exactly as their
// literal Num, strings escaped by AppendString. v is not modified.
//
// Num is written verbatim and not validated: a Number Value built by hand
// must hold a valid RFC 8259 number literal. A Kind outside Null..Object is
// written as null.
func (v Value) AppendCanonical(dst []byte) []byte {
	switch v.Kind {
	case Bool:
		if v.Bool {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case Number:
		return append(dst, v.Num...)
	case String:
		return AppendString(dst, v.Str)
	case Array:
		dst = append(dst, '[')
		for i := range v.Arr {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = v.Arr[i].AppendCanonical(dst)
		}
		return append(dst, ']')
	case Object:
		return appendObject(dst, v.Obj)
	default:
		return append(dst, "null"...)
	}
}

func appendObject(dst []byte, obj []Member) []byte {
	dst = append(dst, '{')
	if membersSorted(obj) {
		for i := range obj {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendMember(dst, &obj[i])
		}
		return append(dst, '}')
	}
	idx := make([]int, len(obj))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		return strings.Compare(obj[a].Key, obj[b].Key)
	})
	for n, i := range idx {
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = appendMember(dst, &obj[i])
	}
	return append(dst, '}')
}

// membersSorted reports whether obj is already in canonical order, which is
// the common case for payloads produced by canonical encoders.
func membersSorted(obj []Member) bool {
	for i := 1; i < len(obj); i++ {
		if obj[i-1].Key > obj[i].Key {
			return false
		}
	}
	return true
}

func appendMember(dst []byte, m *Member) []byte {
	dst = AppendString(dst, m.Key)
	dst = append(dst, ':')
	return m.Value.AppendCanonical(dst)
}

// Canonical returns the canonical form of v (see AppendCanonical).
func (v Value) Canonical() []byte {
	return v.AppendCanonical(make([]byte, 0, 64))
}

// Marshal returns the canonical JSON encoding of v. v is first encoded by
// encoding/json (without HTML escaping), so numbers are written as
// encoding/json writes them: integers in plain decimal and floats in the
// shortest form that round-trips, without an exponent when
// 1e-6 <= |x| < 1e21 (§1.2). The result is then parsed strictly (a
// json.RawMessage holding duplicate member names or invalid UTF-8 is an
// error) and written in canonical form.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
	val, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("canonjson: re-parsing encoding/json output: %w", err)
	}
	return val.AppendCanonical(make([]byte, 0, len(b))), nil
}

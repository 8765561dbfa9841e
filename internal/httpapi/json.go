package httpapi

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	"github.com/commucat/commucat/internal/canonjson"
)

// parseObject parses a request body (§8.1): a JSON object, or nothing when
// optional (an empty body equals {}). Invalid JSON, a duplicate member name
// at any depth, and valid JSON that is not an object are 400 `invalid JSON
// payload`.
func parseObject(raw []byte, optional bool) (canonjson.Value, error) {
	if optional && len(bytes.Trim(raw, " \t\r\n")) == 0 {
		return canonjson.Value{Kind: canonjson.Object}, nil
	}
	v, err := canonjson.Parse(raw)
	if err != nil || v.Kind != canonjson.Object {
		return canonjson.Value{}, badRequest(detailInvalidJSON)
	}
	return v, nil
}

// member returns the member key of obj and whether it is present and not
// null (§1.2: null means absent).
func member(obj canonjson.Value, key string) (canonjson.Value, bool) {
	v, ok := obj.Get(key)
	if !ok || v.Kind == canonjson.Null {
		return canonjson.Value{}, false
	}
	return v, true
}

// optString returns the string member key (nil when absent); a member of
// another type is 400 `invalid JSON payload`.
func optString(obj canonjson.Value, key string) (*string, error) {
	v, ok := member(obj, key)
	if !ok {
		return nil, nil
	}
	if v.Kind != canonjson.String {
		return nil, badRequest(detailInvalidJSON)
	}
	s := v.Str
	return &s, nil
}

// intResult classifies a JSON value read as an integer.
type intResult uint8

const (
	notInteger intResult = iota // not a number, or a fraction/exponent literal
	isInteger                   // an integer literal within int64
	overflows                   // an integer literal outside int64 (saturated)
)

// intValue reads v as an integer literal (no fraction, no exponent, as
// typical typed decoders require).
func intValue(v canonjson.Value) (int64, intResult) {
	if v.Kind != canonjson.Number || strings.ContainsAny(v.Num, ".eE") {
		return 0, notInteger
	}
	n, err := strconv.ParseInt(v.Num, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return n, overflows
		}
		return 0, notInteger
	}
	return n, isInteger
}

// floatValue reads v as a number.
func floatValue(v canonjson.Value) (float64, bool) {
	if v.Kind != canonjson.Number {
		return 0, false
	}
	f, err := strconv.ParseFloat(v.Num, 64)
	if err != nil {
		return 0, false
	}
	if f == 0 {
		f = 0 // -0 becomes 0
	}
	return f, true
}

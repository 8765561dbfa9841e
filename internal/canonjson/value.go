package canonjson

import (
	"strconv"
)

// Kind is the kind of a JSON value.
type Kind uint8

// The JSON value kinds. The zero Kind is Null, so the zero Value is JSON null.
const (
	Null Kind = iota
	Bool
	Number
	String
	Array
	Object
)

// Value is a parsed JSON value. Only the field that belongs to Kind is
// meaningful. Numbers keep their literal text verbatim, so that relayed
// number literals survive re-serialization unchanged (§1.2, §6.6.1).
type Value struct {
	Kind Kind
	Bool bool     // Kind == Bool
	Num  string   // Kind == Number: the literal exactly as in the input (e.g. "1.50", "-0", "1e3")
	Str  string   // Kind == String: the decoded string
	Arr  []Value  // Kind == Array
	Obj  []Member // Kind == Object, in input order
}

// Member is one member (name/value pair) of a JSON object.
type Member struct {
	Key   string
	Value Value
}

// StringValue returns a JSON string value.
func StringValue(s string) Value { return Value{Kind: String, Str: s} }

// IntValue returns a JSON number value holding the plain decimal form of i.
func IntValue(i int64) Value { return Value{Kind: Number, Num: strconv.FormatInt(i, 10)} }

// UintValue returns a JSON number value holding the plain decimal form of u.
func UintValue(u uint64) Value { return Value{Kind: Number, Num: strconv.FormatUint(u, 10)} }

// BoolValue returns a JSON boolean value.
func BoolValue(b bool) Value { return Value{Kind: Bool, Bool: b} }

// NullValue returns JSON null (the zero Value).
func NullValue() Value { return Value{} }

// AppendInt appends the plain decimal form of i to dst.
func AppendInt(dst []byte, i int64) []byte { return strconv.AppendInt(dst, i, 10) }

// AppendUint appends the plain decimal form of u to dst.
func AppendUint(dst []byte, u uint64) []byte { return strconv.AppendUint(dst, u, 10) }

// Get returns the value of the member named key. If the object has several
// members with that name (only possible after ParseLenient), the first one is
// returned. On a value that is not an object Get reports false.
func (v Value) Get(key string) (Value, bool) {
	if v.Kind != Object {
		return Value{}, false
	}
	for i := range v.Obj {
		if v.Obj[i].Key == key {
			return v.Obj[i].Value, true
		}
	}
	return Value{}, false
}

// Set sets the member named key to val: an existing member is replaced in
// place (keeping its position), otherwise the member is appended. If the
// object has several members with that name (only possible after
// ParseLenient), the first is replaced and the others are removed. On a value
// that is not an object Set does nothing.
//
// Replacing assigns to an element of v.Obj, like an ordinary slice element
// assignment, so copies of v that share v.Obj observe the new value.
func (v *Value) Set(key string, val Value) {
	if v.Kind != Object {
		return
	}
	first := -1
	dups := false
	for i := range v.Obj {
		if v.Obj[i].Key == key {
			if first < 0 {
				first = i
			} else {
				dups = true
				break
			}
		}
	}
	switch {
	case first < 0:
		v.Obj = append(v.Obj, Member{Key: key, Value: val})
	case !dups:
		v.Obj[first].Value = val
	default:
		out := make([]Member, 0, len(v.Obj)-1)
		for i, m := range v.Obj {
			if m.Key == key {
				if i != first {
					continue
				}
				m.Value = val
			}
			out = append(out, m)
		}
		v.Obj = out
	}
}

// Delete removes every member named key. It never modifies the backing array
// of v.Obj (a new slice is built when a member is removed), so copies of v are
// not affected. On a value that is not an object Delete does nothing.
func (v *Value) Delete(key string) {
	if v.Kind != Object {
		return
	}
	n := 0
	for i := range v.Obj {
		if v.Obj[i].Key == key {
			n++
		}
	}
	if n == 0 {
		return
	}
	out := make([]Member, 0, len(v.Obj)-n)
	for _, m := range v.Obj {
		if m.Key != key {
			out = append(out, m)
		}
	}
	v.Obj = out
}

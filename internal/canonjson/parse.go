package canonjson

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// Errors returned by Parse. Returned errors wrap one of them (use errors.Is)
// and add the byte offset at which the problem was found.
//
// ErrSyntax is reported whenever the input is not exactly one RFC 8259 JSON
// value in valid UTF-8, even if the input also contains a duplicate member
// name or too deep nesting: ErrDuplicateKey and ErrTooDeep are only returned
// for input that is otherwise valid JSON. (§1.2 treats a duplicate member
// name as valid JSON that is rejected as a payload, not as a decode error.)
var (
	ErrSyntax       = errors.New("canonjson: invalid JSON")
	ErrDuplicateKey = errors.New("canonjson: duplicate object member name")
	ErrTooDeep      = errors.New("canonjson: JSON nested too deeply")
)

// MaxDepth is the maximum nesting depth of arrays and objects accepted by
// Parse (the same limit as encoding/json: 10000 nested containers are
// accepted, 10001 are not).
const MaxDepth = 10000

// smallObject is the number of members up to which duplicate names are
// detected by a linear scan; larger objects use a map.
const smallObject = 16

// Parse parses exactly one JSON value (RFC 8259), optionally surrounded by
// JSON whitespace (space, tab, line feed, carriage return). The input must be
// valid UTF-8. Objects with the same member name twice, at any depth, are
// rejected with ErrDuplicateKey; names are compared after unescaping. A \u
// escape of a lone surrogate decodes to U+FFFD, as in encoding/json.
//
// Parse never panics and runs in time linear in the size of the input. It
// does not retain data, but the strings in the result may share one copy of
// the whole input text (this saves an allocation per string).
//
// When the input is not valid JSON the error wraps ErrSyntax, even if it
// also has a duplicate name or too deep nesting.
func Parse(data []byte) (Value, error) {
	return parse(data, false)
}

// ParseLenient is Parse except that duplicate member names are kept (in input
// order) instead of being rejected. It is meant for diagnostic tools.
func ParseLenient(data []byte) (Value, error) {
	return parse(data, true)
}

// Valid reports whether data is exactly one JSON value without duplicate
// member names, by the same rules as Parse, without building a tree.
func Valid(data []byte) bool {
	p := getParser(data, false, false)
	_, err := p.run()
	putParser(p)
	return err == nil
}

func parse(data []byte, lenient bool) (Value, error) {
	p := getParser(data, true, lenient)
	v, err := p.run()
	putParser(p)
	if err != nil {
		return Value{}, err
	}
	return v, nil
}

type parser struct {
	data []byte
	pos  int
	// src is string(data), converted once when building a tree: decoded
	// strings without escapes, member names and number literals are
	// substrings of it, which saves an allocation per string. (The Value
	// returned by Parse therefore keeps the whole input text alive.)
	src string

	build    bool  // build the Value tree
	checkDup bool  // detect duplicate member names
	semErr   error // first ErrDuplicateKey/ErrTooDeep; parsing continues to find syntax errors

	// Scratch stacks shared by all nesting levels. A container pushes its
	// elements, and at its end copies them out into an exactly sized slice
	// and truncates the stack back to where it started.
	vals  []Value
	mems  []Member
	keys  [][]byte // decoded member names, for duplicate detection
	arena []byte   // backing store for decoded (escaped) strings
}

var parserPool = sync.Pool{New: func() any { return new(parser) }}

func getParser(data []byte, build, lenient bool) *parser {
	p := parserPool.Get().(*parser)
	p.data = data
	p.src = ""
	if build {
		p.src = string(data)
	}
	p.pos = 0
	p.build = build
	p.checkDup = !lenient
	p.semErr = nil
	return p
}

// maxPooled bounds the scratch capacity kept in the pool.
const maxPooled = 1 << 12

func putParser(p *parser) {
	p.data = nil
	p.src = ""
	p.semErr = nil
	// Drop references to the caller's data and results. Entries beyond len
	// are already zero: every truncation of a stack clears what it drops.
	clear(p.vals)
	clear(p.mems)
	clear(p.keys)
	if cap(p.vals) > maxPooled || cap(p.mems) > maxPooled || cap(p.keys) > maxPooled || cap(p.arena) > 64*maxPooled {
		return
	}
	p.vals, p.mems, p.keys, p.arena = p.vals[:0], p.mems[:0], p.keys[:0], p.arena[:0]
	parserPool.Put(p)
}

func (p *parser) run() (Value, error) {
	p.skipWS()
	if p.pos >= len(p.data) {
		return Value{}, fmt.Errorf("%w: empty input", ErrSyntax)
	}
	v, err := p.value(0)
	if err != nil {
		return Value{}, err
	}
	p.skipWS()
	if p.pos < len(p.data) {
		return Value{}, p.errUnexpected("after top-level value")
	}
	if p.semErr != nil {
		return Value{}, p.semErr
	}
	return v, nil
}

func (p *parser) syntaxErr(msg string) error {
	return fmt.Errorf("%w at offset %d: %s", ErrSyntax, p.pos, msg)
}

func (p *parser) errEOF() error {
	return fmt.Errorf("%w at offset %d: unexpected end of input", ErrSyntax, p.pos)
}

// errUnexpected reports the byte at p.pos (or the end of input).
func (p *parser) errUnexpected(context string) error {
	if p.pos >= len(p.data) {
		return p.errEOF()
	}
	return fmt.Errorf("%w at offset %d: unexpected %s %s", ErrSyntax, p.pos, quoteByte(p.data[p.pos]), context)
}

func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		if c == '\'' {
			return `'\''`
		}
		return "'" + string(rune(c)) + "'"
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// semantic records the first non-syntax error and stops building the tree
// (the result will be discarded); parsing goes on so that a syntax error
// later in the input still takes precedence.
func (p *parser) semantic(err error) {
	if p.semErr == nil {
		p.semErr = err
		p.build = false
		p.checkDup = false
	}
}

func (p *parser) skipWS() {
	d := p.data
	i := p.pos
	for i < len(d) {
		switch d[i] {
		case ' ', '\t', '\n', '\r':
			i++
			continue
		}
		break
	}
	p.pos = i
}

// value parses one value at p.pos (whitespace already skipped). depth is the
// number of containers enclosing it.
func (p *parser) value(depth int) (Value, error) {
	if p.pos >= len(p.data) {
		return Value{}, p.errEOF()
	}
	switch c := p.data[p.pos]; c {
	case '{':
		if depth >= MaxDepth {
			return p.tooDeep()
		}
		return p.object(depth + 1)
	case '[':
		if depth >= MaxDepth {
			return p.tooDeep()
		}
		return p.array(depth + 1)
	case '"':
		start, end, escaped, err := p.scanString()
		if err != nil || !p.build {
			return Value{}, err
		}
		return Value{Kind: String, Str: p.decodeString(start, end, escaped)}, nil
	case 't':
		return Value{Kind: Bool, Bool: true}, p.literal("true")
	case 'f':
		return Value{Kind: Bool}, p.literal("false")
	case 'n':
		return Value{}, p.literal("null")
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			start := p.pos
			if err := p.scanNumber(); err != nil || !p.build {
				return Value{}, err
			}
			return Value{Kind: Number, Num: p.src[start:p.pos]}, nil
		}
		return Value{}, p.errUnexpected("at start of value")
	}
}

func (p *parser) tooDeep() (Value, error) {
	pos := p.pos
	if err := p.skipValue(); err != nil {
		return Value{}, err
	}
	if p.semErr == nil {
		p.semantic(fmt.Errorf("%w at offset %d: more than %d nested arrays/objects", ErrTooDeep, pos, MaxDepth))
	}
	return Value{}, nil
}

func (p *parser) literal(lit string) error {
	rest := p.data[p.pos:]
	if len(rest) >= len(lit) && string(rest[:len(lit)]) == lit {
		p.pos += len(lit)
		return nil
	}
	// Point at the first mismatching byte.
	for i := 0; i < len(lit); i++ {
		if i >= len(rest) {
			p.pos += i
			return p.errEOF()
		}
		if rest[i] != lit[i] {
			p.pos += i
			return p.errUnexpected("in literal " + lit)
		}
	}
	return p.syntaxErr("invalid literal") // unreachable
}

func (p *parser) array(depth int) (Value, error) {
	p.pos++ // '['
	p.skipWS()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return Value{Kind: Array, Arr: []Value{}}, nil
	}
	base := len(p.vals)
	for {
		v, err := p.value(depth)
		if err != nil {
			return Value{}, err
		}
		if p.build {
			p.vals = append(p.vals, v)
		}
		p.skipWS()
		if p.pos >= len(p.data) {
			return Value{}, p.errEOF()
		}
		c := p.data[p.pos]
		p.pos++
		if c == ']' {
			break
		}
		if c != ',' {
			p.pos--
			return Value{}, p.errUnexpected("after array element")
		}
		p.skipWS()
	}
	if !p.build {
		// Building may have stopped half way (p.semantic).
		clear(p.vals[base:])
		p.vals = p.vals[:base]
		return Value{}, nil
	}
	arr := make([]Value, len(p.vals)-base)
	copy(arr, p.vals[base:])
	clear(p.vals[base:])
	p.vals = p.vals[:base]
	return Value{Kind: Array, Arr: arr}, nil
}

func (p *parser) object(depth int) (Value, error) {
	p.pos++ // '{'
	p.skipWS()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return Value{Kind: Object, Obj: []Member{}}, nil
	}
	mbase, kbase, abase := len(p.mems), len(p.keys), len(p.arena)
	var set map[string]struct{}
	for {
		if p.pos >= len(p.data) {
			return Value{}, p.errEOF()
		}
		if p.data[p.pos] != '"' {
			return Value{}, p.errUnexpected("where an object member name was expected")
		}
		keyPos := p.pos
		start, end, escaped, err := p.scanString()
		if err != nil {
			return Value{}, err
		}
		var key []byte
		if p.checkDup || p.build {
			if escaped {
				a := len(p.arena)
				p.arena = unescape(p.arena, p.data[start:end])
				key = p.arena[a:len(p.arena):len(p.arena)]
			} else {
				key = p.data[start:end]
			}
		}
		if p.checkDup {
			dup := false
			if set == nil {
				for _, k := range p.keys[kbase:] {
					if bytes.Equal(k, key) {
						dup = true
						break
					}
				}
				if !dup {
					p.keys = append(p.keys, key)
					if len(p.keys)-kbase > smallObject {
						set = make(map[string]struct{}, 2*smallObject)
						for _, k := range p.keys[kbase:] {
							set[string(k)] = struct{}{}
						}
					}
				}
			} else {
				if _, dup = set[string(key)]; !dup {
					set[string(key)] = struct{}{}
				}
			}
			if dup {
				p.semantic(fmt.Errorf("%w %s at offset %d", ErrDuplicateKey, shortQuote(key), keyPos))
			}
		}
		p.skipWS()
		if p.pos >= len(p.data) {
			return Value{}, p.errEOF()
		}
		if p.data[p.pos] != ':' {
			return Value{}, p.errUnexpected("after object member name")
		}
		p.pos++
		p.skipWS()
		v, err := p.value(depth)
		if err != nil {
			return Value{}, err
		}
		if p.build {
			var k string
			if escaped {
				k = string(key)
			} else {
				k = p.src[start:end]
			}
			p.mems = append(p.mems, Member{Key: k, Value: v})
		}
		p.skipWS()
		if p.pos >= len(p.data) {
			return Value{}, p.errEOF()
		}
		c := p.data[p.pos]
		p.pos++
		if c == '}' {
			break
		}
		if c != ',' {
			p.pos--
			return Value{}, p.errUnexpected("after object member")
		}
		p.skipWS()
	}
	clear(p.keys[kbase:])
	p.keys = p.keys[:kbase]
	p.arena = p.arena[:abase]
	if !p.build {
		clear(p.mems[mbase:])
		p.mems = p.mems[:mbase]
		return Value{}, nil
	}
	obj := make([]Member, len(p.mems)-mbase)
	copy(obj, p.mems[mbase:])
	clear(p.mems[mbase:])
	p.mems = p.mems[:mbase]
	return Value{Kind: Object, Obj: obj}, nil
}

// shortQuote quotes a member name for an error message, truncating long
// names.
func shortQuote(k []byte) string {
	const max = 64
	if len(k) > max {
		return fmt.Sprintf("%q...", k[:max])
	}
	return fmt.Sprintf("%q", k)
}

// strSafe[c] is true for bytes that may appear literally in a JSON string
// and need no further checks: ASCII except controls, '"' and '\\'.
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString validates the string starting at p.pos (a '"') and moves past
// it. It returns the bounds of the raw content between the quotes and
// whether it contains escapes.
func (p *parser) scanString() (start, end int, escaped bool, err error) {
	d := p.data
	start = p.pos + 1
	i := start
	for {
		for i < len(d) && strSafe[d[i]] {
			i++
		}
		if i >= len(d) {
			p.pos = i
			return 0, 0, false, p.errEOF()
		}
		switch c := d[i]; {
		case c == '"':
			p.pos = i + 1
			return start, i, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(d) {
				p.pos = i + 1
				return 0, 0, false, p.errEOF()
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := i + 2; k < i+6; k++ {
					if k >= len(d) {
						p.pos = k
						return 0, 0, false, p.errEOF()
					}
					if hexVal(d[k]) < 0 {
						p.pos = k
						return 0, 0, false, p.errUnexpected("in \\u escape")
					}
				}
				i += 6
			default:
				p.pos = i + 1
				return 0, 0, false, p.errUnexpected("after backslash in string")
			}
		case c < 0x20:
			p.pos = i
			return 0, 0, false, p.syntaxErr(fmt.Sprintf("control character 0x%02x in string", c))
		default: // c >= 0x80
			r, size := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && size == 1 {
				p.pos = i
				return 0, 0, false, p.syntaxErr("invalid UTF-8")
			}
			i += size
		}
	}
}

// decodeString returns the decoded content of a string scanned by scanString.
func (p *parser) decodeString(start, end int, escaped bool) string {
	if !escaped {
		return p.src[start:end]
	}
	a := len(p.arena)
	p.arena = unescape(p.arena, p.data[start:end])
	s := string(p.arena[a:])
	p.arena = p.arena[:a]
	return s
}

func hexVal(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

// hex4 decodes 4 hex digits already validated by scanString.
func hex4(b []byte) rune {
	return hexVal(b[0])<<12 | hexVal(b[1])<<8 | hexVal(b[2])<<4 | hexVal(b[3])
}

// unescape appends the decoded form of s, the raw content of a string that
// scanString accepted, to dst. A \u escape of a surrogate that does not form
// a valid pair with an immediately following \u escape decodes to U+FFFD
// (and the following escape is decoded on its own), as in encoding/json.
func unescape(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		if s[i] != '\\' {
			j := bytes.IndexByte(s[i:], '\\')
			if j < 0 {
				return append(dst, s[i:]...)
			}
			dst = append(dst, s[i:i+j]...)
			i += j
			continue
		}
		c := s[i+1]
		i += 2
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i : i+4])
			i += 4
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					r2 = utf16.DecodeRune(r, hex4(s[i+2:i+6]))
				}
				if r2 != utf8.RuneError {
					i += 6
				}
				r = r2
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
	}
	return dst
}

// scanNumber moves past the number starting at p.pos, which must match the
// RFC 8259 grammar  -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? .
// The byte after the number is checked by the caller.
func (p *parser) scanNumber() error {
	d := p.data
	i := p.pos
	if d[i] == '-' {
		i++
	}
	digits := func(what string) error {
		if i >= len(d) {
			p.pos = i
			return p.errEOF()
		}
		if d[i] < '0' || d[i] > '9' {
			p.pos = i
			return p.errUnexpected(what)
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		return nil
	}
	if i < len(d) && d[i] == '0' {
		i++
	} else if err := digits("in number"); err != nil {
		return err
	}
	if i < len(d) && d[i] == '.' {
		i++
		if err := digits("after decimal point"); err != nil {
			return err
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if err := digits("in exponent"); err != nil {
			return err
		}
	}
	p.pos = i
	return nil
}

// skipValue validates the value at p.pos without recursion (so without a
// depth limit), duplicate detection or building, and moves past it. It is
// used for the part of the input nested deeper than MaxDepth, so that a
// syntax error there is still reported as ErrSyntax.
func (p *parser) skipValue() error {
	var stack []byte // '[' or '{' per open container
	for {
		// Expect a value.
		p.skipWS()
		if p.pos >= len(p.data) {
			return p.errEOF()
		}
		switch c := p.data[p.pos]; c {
		case '[', '{':
			p.pos++
			p.skipWS()
			if p.pos < len(p.data) && p.data[p.pos] == c+2 { // ']' or '}'
				p.pos++
				break
			}
			stack = append(stack, c)
			if c == '{' {
				if err := p.skipMemberName(); err != nil {
					return err
				}
			}
			continue
		case '"':
			if _, _, _, err := p.scanString(); err != nil {
				return err
			}
		case 't':
			if err := p.literal("true"); err != nil {
				return err
			}
		case 'f':
			if err := p.literal("false"); err != nil {
				return err
			}
		case 'n':
			if err := p.literal("null"); err != nil {
				return err
			}
		default:
			if c != '-' && (c < '0' || c > '9') {
				return p.errUnexpected("at start of value")
			}
			if err := p.scanNumber(); err != nil {
				return err
			}
		}
		// After a complete value: close containers until a ',' continues one.
		for {
			if len(stack) == 0 {
				return nil
			}
			p.skipWS()
			if p.pos >= len(p.data) {
				return p.errEOF()
			}
			top := stack[len(stack)-1]
			c := p.data[p.pos]
			if c == top+2 {
				p.pos++
				stack = stack[:len(stack)-1]
				continue
			}
			if c != ',' {
				return p.errUnexpected("after element")
			}
			p.pos++
			if top == '{' {
				p.skipWS()
				if err := p.skipMemberName(); err != nil {
					return err
				}
			}
			break
		}
	}
}

// skipMemberName validates `"name" :` at p.pos and moves past it.
func (p *parser) skipMemberName() error {
	if p.pos >= len(p.data) {
		return p.errEOF()
	}
	if p.data[p.pos] != '"' {
		return p.errUnexpected("where an object member name was expected")
	}
	if _, _, _, err := p.scanString(); err != nil {
		return err
	}
	p.skipWS()
	if p.pos >= len(p.data) {
		return p.errEOF()
	}
	if p.data[p.pos] != ':' {
		return p.errUnexpected("after object member name")
	}
	p.pos++
	return nil
}

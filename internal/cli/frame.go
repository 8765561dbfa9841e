package cli

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/canonjson"
)

// maxFrameLine bounds one input line of `frame decode` / `frame encode`:
// enough for the hex (or JSON) of a largest frame and then some.
const maxFrameLine = 4*ccp.MaxEncodedFrameLen + 1024

func runFrame(env *Env, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, "usage: commucat-cli frame decode [--strict] | frame encode")
		return ExitUsage
	}
	switch args[0] {
	case "decode":
		mode := ccp.V1
		for _, a := range args[1:] {
			if a != "--strict" {
				fmt.Fprintf(env.Stderr, "usage: commucat-cli frame decode [--strict] (unknown argument %s)\n", a)
				return ExitUsage
			}
			mode = ccp.V2
		}
		return frameDecode(env, mode)
	case "encode":
		if len(args) > 1 {
			fmt.Fprintln(env.Stderr, "usage: commucat-cli frame encode")
			return ExitUsage
		}
		return frameEncode(env)
	}
	fmt.Fprintf(env.Stderr, "usage: commucat-cli frame decode [--strict] | frame encode (unknown subcommand %s)\n", args[0])
	return ExitUsage
}

// forEachLine calls fn with every line of r (without the line ending),
// reporting lines longer than maxFrameLine as nil. It returns the first
// read error other than io.EOF.
func forEachLine(r io.Reader, fn func(line []byte, tooLong bool)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	tooLong := false
	for {
		chunk, isPrefix, err := br.ReadLine()
		if len(chunk) > 0 && !tooLong {
			if len(line)+len(chunk) > maxFrameLine {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if err != nil {
			if err == io.EOF {
				if len(line) > 0 || tooLong {
					fn(line, tooLong)
				}
				return nil
			}
			return err
		}
		if !isPrefix {
			fn(line, tooLong)
			line, tooLong = line[:0], false
		}
	}
}

func errorObject(title string, offset int) []byte {
	b := []byte(`{"error":`)
	b = canonjson.AppendString(b, title)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, int64(offset), 10)
	return append(b, `,"ok":false}`...)
}

// DecodeFrameLine decodes one line of hex (one or more concatenated frames)
// with the rules of mode and returns one canonical JSON object per frame
// (§12.2 `frame decode`). A line that is not hex yields one "invalid hex"
// object; errors inside a delimited frame continue with the next frame; a
// stream-level error ends the line.
func DecodeFrameLine(line []byte, mode ccp.Mode) [][]byte {
	line = bytes.TrimSpace(line)
	raw := make([]byte, hex.DecodedLen(len(line)))
	if _, err := hex.Decode(raw, line); err != nil || len(line)%2 != 0 {
		return [][]byte{errorObject("invalid hex", 0)}
	}
	var out [][]byte
	for off := 0; off < len(raw); {
		f, n, err := ccp.Decode(raw[off:], mode)
		if err == ccp.ErrShortBuffer {
			err = ccp.EndOfStream(raw[off:])
		}
		if err != nil {
			var fe *ccp.FrameError
			if !errors.As(err, &fe) {
				out = append(out, errorObject(err.Error(), off))
				break
			}
			out = append(out, errorObject(fe.Err.Title(), off))
			if fe.Fatal {
				break
			}
			off += fe.Consumed
			continue
		}
		out = append(out, frameObject(f, n))
		off += n
	}
	return out
}

func frameObject(f ccp.Frame, consumed int) []byte {
	b := []byte(`{"channel_id":`)
	b = strconv.AppendUint(b, uint64(f.Channel), 10)
	b = append(b, `,"class":"`...)
	b = append(b, f.Type.Class().String()...)
	b = append(b, `","code":`...)
	b = strconv.AppendUint(b, uint64(f.Type), 10)
	b = append(b, `,"consumed":`...)
	b = strconv.AppendInt(b, int64(consumed), 10)
	if f.Type.Class() == ccp.Control {
		v, err := canonjson.ParseLenient(f.Payload)
		if err != nil {
			// The decoder accepted it as one JSON value, so only the
			// depth limit can get here; show the bytes instead.
			v = canonjson.StringValue(string(f.Payload))
		}
		b = append(b, `,"json":`...)
		b = v.AppendCanonical(b)
		b = append(b, `,"ok":true`...)
	} else {
		b = append(b, `,"ok":true,"payload_hex":"`...)
		b = hex.AppendEncode(b, f.Payload)
		b = append(b, `","payload_len":`...)
		b = strconv.AppendInt(b, int64(len(f.Payload)), 10)
	}
	b = append(b, `,"sequence":`...)
	b = strconv.AppendUint(b, uint64(f.Sequence), 10)
	b = append(b, `,"type":`...)
	b = canonjson.AppendString(b, f.Type.String())
	return append(b, '}')
}

func frameDecode(env *Env, mode ccp.Mode) int {
	w := bufio.NewWriter(env.Stdout)
	err := forEachLine(env.Stdin, func(line []byte, tooLong bool) {
		if tooLong {
			w.Write(errorObject("line too long", 0))
			w.WriteByte('\n')
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			return
		}
		for _, obj := range DecodeFrameLine(line, mode) {
			w.Write(obj)
			w.WriteByte('\n')
		}
	})
	w.Flush()
	if err != nil {
		env.errorf("reading input: %v", err)
		return ExitFail
	}
	return ExitOK
}

// EncodeFrameObject encodes one object of the form `frame decode` prints
// (§12.2 `frame encode`): `code` (preferred) or `type`, `channel_id`,
// `sequence`, and the payload as `payload_hex` or `json` (serialised as
// canonical JSON, §13a.6). `consumed`, `ok`, `class` and `payload_len` are
// ignored. The error message is a §2.6 title for a limit violation.
func EncodeFrameObject(obj []byte) ([]byte, error) {
	v, err := canonjson.Parse(obj)
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	if v.Kind != canonjson.Object {
		return nil, errors.New("invalid JSON: not an object")
	}
	var t ccp.FrameType
	if code, ok := v.Get("code"); ok && code.Kind != canonjson.Null {
		n, err := strconv.ParseUint(code.Num, 10, 64)
		if code.Kind != canonjson.Number || err != nil {
			return nil, errors.New("code must be an unsigned integer")
		}
		if n > 0xff || !ccp.FrameType(n).Valid() {
			return nil, errors.New(ccp.TitleInvalidFrameType)
		}
		t = ccp.FrameType(n)
	} else if name, ok := v.Get("type"); ok && name.Kind == canonjson.String {
		if t, ok = ccp.ParseFrameType(name.Str); !ok {
			return nil, errors.New(ccp.TitleInvalidFrameType)
		}
	} else {
		return nil, errors.New("code or type is required")
	}
	u32 := func(key, title string) (uint32, error) {
		m, ok := v.Get(key)
		if !ok || m.Kind == canonjson.Null {
			return 0, nil
		}
		n, err := strconv.ParseUint(m.Num, 10, 64)
		if m.Kind != canonjson.Number {
			return 0, fmt.Errorf("%s must be an unsigned integer", key)
		}
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return 0, errors.New(title)
			}
			return 0, fmt.Errorf("%s must be an unsigned integer", key)
		}
		if n > 0xffffffff {
			return 0, errors.New(title)
		}
		return uint32(n), nil
	}
	ch, err := u32("channel_id", ccp.TitleChannelIDTooLarge)
	if err != nil {
		return nil, err
	}
	seq, err := u32("sequence", ccp.TitleSequenceTooLarge)
	if err != nil {
		return nil, err
	}
	var payload []byte
	ph, hasHex := v.Get("payload_hex")
	js, hasJSON := v.Get("json")
	hasHex = hasHex && ph.Kind != canonjson.Null
	switch {
	case hasHex && hasJSON:
		return nil, errors.New("give payload_hex or json, not both")
	case hasHex:
		if ph.Kind != canonjson.String {
			return nil, errors.New("payload_hex must be a string")
		}
		if payload, err = hex.DecodeString(ph.Str); err != nil {
			return nil, errors.New("payload_hex is not hex")
		}
	case hasJSON:
		payload = js.Canonical()
	}
	if t.Class() == ccp.Control && len(payload) <= ccp.MaxControlPayload && !ccp.ValidControlJSON(payload) {
		return nil, errors.New(ccp.TitleInvalidControlJSON)
	}
	out, err := ccp.AppendFrame(nil, ccp.Frame{Type: t, Channel: ch, Sequence: seq, Payload: payload})
	if err != nil {
		var de *ccp.DecodeError
		if errors.As(err, &de) {
			return nil, errors.New(de.Title())
		}
		return nil, err
	}
	return out, nil
}

func frameEncode(env *Env) int {
	w := bufio.NewWriter(env.Stdout)
	failed := false
	err := forEachLine(env.Stdin, func(line []byte, tooLong bool) {
		if !tooLong && len(bytes.TrimSpace(line)) == 0 {
			return
		}
		var out []byte
		var err error
		if tooLong {
			err = errors.New("line too long")
		} else {
			out, err = EncodeFrameObject(line)
		}
		if err != nil {
			failed = true
			b := []byte(`{"error":`)
			b = canonjson.AppendString(b, err.Error())
			w.Write(append(b, `,"ok":false}`...))
		} else {
			w.WriteString(hex.EncodeToString(out))
		}
		w.WriteByte('\n')
	})
	w.Flush()
	if err != nil {
		env.errorf("reading input: %v", err)
		return ExitFail
	}
	if failed {
		return ExitFail
	}
	return ExitOK
}

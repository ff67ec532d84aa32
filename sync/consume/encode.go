package consume

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/protocol"
)

// DefaultHeaders are the record headers a consume line carries unless asked otherwise: the topic
// the device published on, the device's own clock, and the edge log's incarnation (with the
// provenance fields edge, edge_partition and edge_offset it names a reading uniquely, across an
// edge whose log was wiped or restored). With the record timestamp they are what a consumer of
// readings needs; the edge's bookkeeping (client id, packet id, payload hash, content type,
// receive times) is there with headers=all.
var DefaultHeaders = []string{"topic", "device-time", protocol.ProvEdgeIncarnation}

// HeaderSet says which headers a line carries: all of them, or those named.
type HeaderSet struct {
	All   bool
	Names []string
}

// ParseHeaders reads a headers parameter: "" (the defaults), "all", "none", or names separated
// by commas.
func ParseHeaders(s string) (HeaderSet, error) {
	switch s {
	case "":
		return HeaderSet{Names: DefaultHeaders}, nil
	case "all":
		return HeaderSet{All: true}, nil
	case "none":
		return HeaderSet{}, nil
	}
	var hs HeaderSet
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n == "" || len(n) > 256 {
			return HeaderSet{}, fmt.Errorf("headers %q: give all, none, or header names separated by commas", s)
		}
		hs.Names = append(hs.Names, n)
	}
	return hs, nil
}

func (hs HeaderSet) String() string {
	switch {
	case hs.All:
		return "all"
	case len(hs.Names) == 0:
		return "none"
	}
	return strings.Join(hs.Names, ",")
}

func (hs HeaderSet) keeps(key string) bool {
	return hs.All || slices.Contains(hs.Names, key)
}

// lineEncoder writes records as consume JSON lines, straight from the stored bytes into one
// buffer: no Message, no map, no reflection. The layout puts stream, partition and offset first so
// a client can track its position from a line's head without decoding the rest (see lineHead).
type lineEncoder struct {
	prefix  []byte // {"stream":"NAME","partition":
	headers HeaderSet
	// The formatted second of the last timestamp: readings of one second share it.
	sec       int64
	secText   []byte
	compacted bytes.Buffer
}

func newLineEncoder(stream string, headers HeaderSet) *lineEncoder {
	e := &lineEncoder{headers: headers, sec: -1 << 62}
	e.prefix = append(e.prefix, `{"stream":`...)
	e.prefix = appendJSONString(e.prefix, []byte(stream))
	e.prefix = append(e.prefix, `,"partition":`...)
	return e
}

// appendLine appends one record's line, newline included.
func (e *lineEncoder) appendLine(b []byte, partition int, offset int64, rec *storage.Record) []byte {
	b = append(b, e.prefix...)
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, offset, 10)
	b = append(b, `,"key":`...)
	b = appendJSONString(b, rec.Key)
	b = append(b, `,"timestamp":"`...)
	b = e.appendTime(b, rec.Timestamp)
	var edge, edgePartition, edgeOffset []byte
	for i := range rec.Headers {
		switch rec.Headers[i].Key {
		case protocol.ProvEdge:
			edge = rec.Headers[i].Value
		case protocol.ProvEdgePartition:
			edgePartition = rec.Headers[i].Value
		case protocol.ProvEdgeOffset:
			edgeOffset = rec.Headers[i].Value
		}
	}
	b = append(b, `","edge":`...)
	b = appendJSONString(b, edge)
	b = append(b, `,"edge_partition":`...)
	b = appendDecimal(b, edgePartition)
	b = append(b, `,"edge_offset":`...)
	b = appendDecimal(b, edgeOffset)
	b = append(b, `,"headers":{`...)
	first := true
	for i := range rec.Headers {
		h := &rec.Headers[i]
		switch h.Key {
		case protocol.ProvEdge, protocol.ProvEdgePartition, protocol.ProvEdgeOffset:
			continue
		}
		if !e.headers.keeps(h.Key) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, []byte(h.Key))
		b = append(b, ':')
		b = appendJSONString(b, h.Value)
	}
	b = append(b, '}')
	b = e.appendValue(b, rec.Value)
	return append(b, '}', '\n')
}

// appendValue writes "value" when the payload is JSON, else "value_base64". A JSON payload is
// copied as it is unless it spans lines, which a JSON line cannot.
func (e *lineEncoder) appendValue(b, v []byte) []byte {
	if len(v) > 0 && validJSON(v) {
		b = append(b, `,"value":`...)
		if bytes.IndexByte(v, '\n') < 0 && bytes.IndexByte(v, '\r') < 0 {
			return append(b, v...)
		}
		e.compacted.Reset()
		if err := json.Compact(&e.compacted, v); err == nil {
			return append(b, e.compacted.Bytes()...)
		}
		b = b[:len(b)-len(`,"value":`)]
	}
	b = append(b, `,"value_base64":"`...)
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

// appendTime writes t in UTC as RFC 3339 with as many fractional digits as it has (milliseconds
// at most, the stored precision), as encoding/json writes a time.Time.
func (e *lineEncoder) appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, "0001-01-01T00:00:00Z"...)
	}
	ms := t.UnixMilli()
	sec, frac := ms/1000, ms%1000
	if frac < 0 {
		sec, frac = sec-1, frac+1000
	}
	if sec != e.sec {
		e.sec = sec
		e.secText = time.Unix(sec, 0).UTC().AppendFormat(e.secText[:0], "2006-01-02T15:04:05")
	}
	b = append(b, e.secText...)
	if frac != 0 {
		d := [4]byte{'.', byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
		n := 4
		for d[n-1] == '0' {
			n--
		}
		b = append(b, d[:n]...)
	}
	return append(b, 'Z')
}

// appendDecimal writes a stored decimal header as a JSON number, or -1 when it is absent or
// not a decimal that fits an int64, as strconv.ParseInt reads it.
func appendDecimal(b, v []byte) []byte {
	digits, neg := v, false
	if len(digits) > 1 && (digits[0] == '-' || digits[0] == '+') {
		neg, digits = digits[0] == '-', digits[1:]
	}
	if len(digits) == 0 || len(digits) > 19 {
		return append(b, "-1"...)
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return append(b, "-1"...)
		}
	}
	if digits[0] != '0' && !neg && len(v) == len(digits) {
		return append(b, v...) // canonical already: the common case
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return append(b, "-1"...)
	}
	return strconv.AppendInt(b, n, 10)
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD, as encoding/json
// does, so every line is valid JSON whatever a device sent.
func appendJSONString(b, s []byte) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// lineHead reads the partition and offset from the head of a line appendLine wrote, without
// decoding the rest.
func lineHead(line []byte) (partition int, offset int64, ok bool) {
	rest, ok := bytes.CutPrefix(line, []byte(`{"stream":"`))
	if !ok {
		return 0, 0, false
	}
	i := 0
	for i < len(rest) && rest[i] != '"' {
		if rest[i] == '\\' {
			i++
		}
		i++
	}
	if i >= len(rest) {
		return 0, 0, false
	}
	if rest, ok = bytes.CutPrefix(rest[i+1:], []byte(`,"partition":`)); !ok {
		return 0, 0, false
	}
	p, rest, ok := leadingInt(rest)
	if !ok {
		return 0, 0, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"offset":`)); !ok {
		return 0, 0, false
	}
	o, rest, ok := leadingInt(rest)
	if !ok || len(rest) == 0 || rest[0] != ',' {
		return 0, 0, false
	}
	return int(p), o, true
}

func leadingInt(b []byte) (int64, []byte, bool) {
	var n int64
	i := 0
	for i < len(b) && i < 19 && b[i] >= '0' && b[i] <= '9' {
		n = n*10 + int64(b[i]-'0')
		i++
	}
	return n, b[i:], i > 0
}

// LineValueBase64 returns the base64 text of a line's "value_base64" and where it starts in the
// line, when the line appendLine wrote carries its payload that way (not JSON), reading only the
// line's tail: the value is the last field, and base64 holds no quote. A client that handles
// only such lines (the consume command decoding schema values) skips a JSON reading after a
// look at its last bytes instead of searching the whole line.
func LineValueBase64(line []byte) (b64 []byte, start int, ok bool) {
	const field = `,"value_base64":"`
	end := len(line) - len("\"}\n")
	if end < len(field) || string(line[end:]) != "\"}\n" {
		return nil, 0, false
	}
	i := end
	for i > 0 && isBase64Char(line[i-1]) {
		i--
	}
	if i < len(field) || string(line[i-len(field):i]) != field {
		return nil, 0, false
	}
	return line[i:end], i, true
}

func isBase64Char(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '='
}

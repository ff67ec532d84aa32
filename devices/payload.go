package devices

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Reason says why a reading was refused. Its values are short, stable, lower-case words so they serve
// unchanged as a metric label and as the dead-letter header; the empty Reason means accepted.
type Reason string

// Reasons returned by [Validate] (payload refusals, dead-lettered) and by [ReasonOf] (topic refusals,
// refused at publish).
const (
	ReasonNone          Reason = ""
	ReasonEmpty         Reason = "empty"           // zero-byte payload
	ReasonOversized     Reason = "oversized"       // larger than Policy.MaxPayloadBytes
	ReasonNotJSON       Reason = "not_json"        // stream declared JSON, payload is not valid JSON
	ReasonInvalidUTF8   Reason = "invalid_utf8"    // stream declared JSON, payload is JSON syntax but not UTF-8
	ReasonBadDeviceTime Reason = "bad_device_time" // "ts"/"time" present but not RFC 3339 or unix s/ms
	ReasonBadTopic      Reason = "bad_topic"       // topic invalid, or its device id or stream is
	ReasonNoRoute       Reason = "no_route"        // no mapping rule matches the topic
	ReasonReserved      Reason = "reserved_stream" // topic routes into a stream only the edge writes
	ReasonNotAuthorized Reason = "not_authorized"  // topic belongs to another device
	ReasonOther         Reason = "other"           // an error this package does not classify
	ReasonSchema        Reason = "schema"          // payload breaks the stream's JSON Schema
	ReasonNotProtobuf   Reason = "not_protobuf"    // payload is not the stream's protobuf message
	ReasonNotAvro       Reason = "not_avro"        // payload is not the stream's Avro schema
)

// PayloadReasons are the reasons [Validate] dead-letters a reading for, and TopicReasons those
// [ReasonOf] refuses a publish for: metrics start every one at zero, so an alert on a reason has
// data before its first event. A new Reason belongs in one of them.
var (
	PayloadReasons = []Reason{ReasonEmpty, ReasonOversized, ReasonNotJSON, ReasonInvalidUTF8, ReasonBadDeviceTime,
		ReasonSchema, ReasonNotProtobuf, ReasonNotAvro}
	TopicReasons = []Reason{ReasonBadTopic, ReasonNoRoute, ReasonReserved, ReasonNotAuthorized, ReasonOther}
)

// DefaultMaxPayloadBytes bounds a reading when a [Policy] leaves MaxPayloadBytes zero: far above any
// sensor reading, far below what would hurt an edge box holding many in flight.
const DefaultMaxPayloadBytes = 256 << 10

// Content types reported in [Reading.ContentType].
const (
	ContentTypeJSON   = "application/json"
	ContentTypeText   = "text/plain; charset=utf-8"
	ContentTypeBinary = "application/octet-stream"
)

// Policy is what a stream declares about its readings.
type Policy struct {
	// MaxPayloadBytes refuses larger payloads; zero means DefaultMaxPayloadBytes.
	MaxPayloadBytes int
	// JSON declares the stream JSON: payloads that are not valid JSON, that are not valid UTF-8
	// (RFC 8259 section 8.1), or whose "ts"/"time" field cannot be read as a time, are refused. On
	// other streams JSON payloads are still recognised and their device time extracted when it
	// parses, but nothing is refused for it; JSON syntax holding invalid UTF-8 is marked binary there.
	JSON bool
	// Schema, when set, checks every payload against the stream's declared schema after the
	// checks above (package devices/format builds them: JSON Schema, protobuf, Avro). A schema
	// for a binary format sets ContentType and leaves JSON false.
	Schema Checker
}

// Checker checks a payload against a declared schema. Check returns the reason and a short
// detail naming the rule and the place (a JSON path or a byte offset) when the payload does not
// conform; it is called concurrently.
type Checker interface {
	Check(payload []byte) (Reason, string)
	// ContentType is the content type of conforming payloads, for the record headers.
	ContentType() string
}

// Reading is what [Validate] learned about an accepted payload, for the record headers.
type Reading struct {
	ContentType string
	// DeviceTime is the time the device stamped in the payload's "ts" or "time" field ("ts" wins),
	// in UTC; zero when absent.
	DeviceTime time.Time
	// Detail says, for a refused payload, which rule it broke and where, when the reason alone
	// does not (a schema's rule and path, a byte offset); empty otherwise.
	Detail string
}

// Validate checks a payload against its stream's policy. It returns ReasonNone and what it found, or
// the reason to dead-letter the payload. It runs once per message, so it checks JSON with json.Valid
// and then scans only the top level of an object for the time fields, instead of decoding into a map.
//
// Device time is read from a top-level "ts" or "time" field: an RFC 3339 string, or a non-negative unix
// time number in seconds (fractions allowed) or, from 1e12 on, milliseconds.
func Validate(payload []byte, p Policy) (Reading, Reason) {
	limit := p.MaxPayloadBytes
	if limit <= 0 {
		limit = DefaultMaxPayloadBytes
	}
	switch {
	case len(payload) == 0:
		return Reading{}, ReasonEmpty
	case len(payload) > limit:
		return Reading{}, ReasonOversized
	}
	// Cheap first-byte test before json.Valid: binary and plain-text payloads on non-JSON streams
	// skip the JSON scan entirely.
	if p.Schema != nil && !p.JSON {
		if reason, detail := p.Schema.Check(payload); reason != ReasonNone {
			return Reading{Detail: detail}, reason
		}
		return Reading{ContentType: p.Schema.ContentType()}, ReasonNone
	}
	if !p.JSON && !looksLikeJSON(payload) {
		if utf8.Valid(payload) {
			return Reading{ContentType: ContentTypeText}, ReasonNone
		}
		return Reading{ContentType: ContentTypeBinary}, ReasonNone
	}
	if !json.Valid(payload) {
		if p.JSON {
			return Reading{Detail: syntaxDetail(payload)}, ReasonNotJSON
		}
		if utf8.Valid(payload) {
			return Reading{ContentType: ContentTypeText}, ReasonNone
		}
		return Reading{ContentType: ContentTypeBinary}, ReasonNone
	}
	// json.Valid checks syntax only: a string holding bytes that are not UTF-8 passes it, and
	// would reach consumers raw, where a strict decoder rejects the whole batch around it.
	if !utf8.Valid(payload) {
		if p.JSON {
			return Reading{}, ReasonInvalidUTF8
		}
		return Reading{ContentType: ContentTypeBinary}, ReasonNone
	}
	r := Reading{ContentType: ContentTypeJSON}
	t, found, ok := deviceTime(payload)
	switch {
	case found && ok:
		r.DeviceTime = t
	case found && p.JSON:
		return Reading{}, ReasonBadDeviceTime
	}
	if p.Schema != nil {
		if reason, detail := p.Schema.Check(payload); reason != ReasonNone {
			return Reading{Detail: detail}, reason
		}
	}
	return r, ReasonNone
}

// syntaxDetail says where a payload json.Valid refused stops being JSON; it runs on refusals only.
func syntaxDetail(payload []byte) string {
	var sink bytes.Buffer
	var se *json.SyntaxError
	if err := json.Compact(&sink, payload); errors.As(err, &se) {
		return "json syntax at byte " + strconv.FormatInt(se.Offset, 10) + ": " + se.Error()
	} else if err != nil {
		return err.Error()
	}
	return "json syntax"
}

// ReasonOf classifies an error from [Mapper.Map], [Mapper.Authorize] or [Cache.Authorize] into a
// Reason, so refused publishes share a metric label set with dead-lettered payloads.
func ReasonOf(err error) Reason {
	switch {
	case err == nil:
		return ReasonNone
	case errors.Is(err, ErrNotAuthorized), errors.Is(err, ErrUnknownDevice), errors.Is(err, ErrDeviceDisabled):
		return ReasonNotAuthorized
	case errors.Is(err, ErrReservedStream):
		return ReasonReserved
	case errors.Is(err, ErrNoRoute):
		return ReasonNoRoute
	case errors.Is(err, ErrInvalidTopic), errors.Is(err, ErrInvalidDeviceID), errors.Is(err, ErrInvalidStream):
		return ReasonBadTopic
	default:
		return ReasonOther
	}
}

func looksLikeJSON(b []byte) bool {
	for i, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{', '[', '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			return true
		case 't', 'f', 'n':
			// Text such as "temp=21.5" would otherwise pay for json.Valid and its error.
			b = b[i:]
			return bytes.HasPrefix(b, []byte("true")) || bytes.HasPrefix(b, []byte("false")) || bytes.HasPrefix(b, []byte("null"))
		default:
			return false
		}
	}
	return false
}

// deviceTime scans the top level of a JSON object already checked by json.Valid, so the scan can
// trust the syntax and only needs to find value boundaries. found reports a "ts" or "time" key, ok
// that its value parsed.
func deviceTime(b []byte) (t time.Time, found, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return time.Time{}, false, false
	}
	i++
	var timeValue []byte // value of "time", used only when there is no "ts"
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] == '}' {
			break
		}
		if b[i] == ',' {
			i++
			continue
		}
		keyStart := i
		i = skipString(b, i)
		key := b[keyStart:i]
		i = skipSpace(b, i)
		i++ // ':'
		i = skipSpace(b, i)
		valueStart := i
		i = skipValue(b, i)
		value := b[valueStart:i]
		switch {
		case keyIs(key, "ts"):
			t, ok = parseDeviceTime(value)
			return t, true, ok
		case timeValue == nil && keyIs(key, "time"):
			timeValue = value
		}
	}
	if timeValue == nil {
		return time.Time{}, false, false
	}
	t, ok = parseDeviceTime(timeValue)
	return t, true, ok
}

// keyIs compares a quoted JSON key with name. Escaped keys are decoded the slow way; they are rare.
func keyIs(quoted []byte, name string) bool {
	raw := quoted[1 : len(quoted)-1]
	for _, c := range raw {
		if c == '\\' {
			var s string
			return json.Unmarshal(quoted, &s) == nil && s == name
		}
	}
	return string(raw) == name
}

func parseDeviceTime(v []byte) (time.Time, bool) {
	if len(v) == 0 {
		return time.Time{}, false
	}
	if v[0] == '"' {
		s := string(v[1 : len(v)-1])
		if bytes.IndexByte(v, '\\') >= 0 {
			var ok bool
			if s, ok = unquote(v); !ok {
				return time.Time{}, false
			}
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, false
		}
		return t.UTC(), true
	}
	if v[0] != '-' && (v[0] < '0' || v[0] > '9') {
		return time.Time{}, false // true, false, null, object, array
	}
	// Integers take the exact path; floats lose sub-microsecond precision, which no sensor clock has.
	if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
		switch {
		case n < 0:
			return time.Time{}, false
		case n < 1e12:
			return time.Unix(n, 0).UTC(), true
		case n < 1e15:
			return time.UnixMilli(n).UTC(), true
		default:
			return time.Time{}, false
		}
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || f >= 1e15 {
		return time.Time{}, false
	}
	if f >= 1e12 {
		f /= 1e3
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true
}

// unquote decodes a JSON string with escapes; kept apart so the common path's string stays on the stack.
func unquote(quoted []byte) (string, bool) {
	var s string
	err := json.Unmarshal(quoted, &s)
	return s, err == nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number or literal
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return i
			}
			i++
		}
		return i
	}
}

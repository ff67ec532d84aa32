package format

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"time"
)

// Avro binary decoding into the generic values the JSON view shows: null → nil, int → int,
// long → int64, float → float32, double → float64, bytes → []byte (base64 in JSON), record and
// map → map[string]any, enum → its symbol, fixed → a list of byte values, a union → nil for
// null, else {"branch name": value}, or the bare value for a union of primitives inside a
// record, array or map (see avroType.bare); logical types become time.Time, time.Duration or
// *big.Rat. These are the values github.com/hamba/avro/v2 decodes into an `any`, which defined
// the JSON view before, but for those that view could not show as JSON: a NaN or an infinity
// becomes its name as a string (see nonFinite), and a time before year 0 or after 9999 a
// string of all its year's digits (see jsonTime). avro_hamba_test.go compares the two.

// avroMaxDepth bounds nesting, so a record that contains itself cannot recurse without end.
const avroMaxDepth = 1000

// avroDuration is the fixed(12) duration logical type.
type avroDuration struct {
	Months       uint32
	Days         uint32
	Milliseconds uint32
}

var errAvroTruncated = errors.New("datum is truncated")

type avroReader struct {
	buf   []byte
	pos   int
	depth int
}

// decodeAvroDatum decodes one datum of t and refuses bytes after it: a datum of another
// schema often decodes as a prefix of this one.
func decodeAvroDatum(t *avroType, payload []byte) (any, error) {
	r := &avroReader{buf: payload}
	v, err := r.value(t, true)
	if err != nil {
		return nil, fmt.Errorf("at byte %d: %w", r.pos, err)
	}
	if r.pos != len(payload) {
		return nil, fmt.Errorf("datum ends at byte %d of %d", r.pos, len(payload))
	}
	return v, nil
}

func (r *avroReader) long() (int64, error) { return r.varint(10) }

// varint reads a zigzag varint of at most max bytes.
func (r *avroReader) varint(max int) (int64, error) {
	var u uint64
	for shift := uint(0); shift < uint(7*max); shift += 7 {
		if r.pos >= len(r.buf) {
			return 0, errAvroTruncated
		}
		b := r.buf[r.pos]
		r.pos++
		if shift == 63 && b > 1 {
			break
		}
		u |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return int64(u>>1) ^ -int64(u&1), nil
		}
	}
	return 0, fmt.Errorf("varint longer than %d bytes", max)
}

func (r *avroReader) int() (int32, error) {
	n, err := r.varint(5)
	if err != nil {
		return 0, err
	}
	if n < math.MinInt32 || n > math.MaxInt32 {
		return 0, errors.New("int overflows 32 bits")
	}
	return int32(n), nil
}

func (r *avroReader) next(n int) ([]byte, error) {
	if n < 0 || n > len(r.buf)-r.pos {
		return nil, errAvroTruncated
	}
	b := r.buf[r.pos : r.pos+n]
	r.pos += n
	return b, nil
}

func (r *avroReader) bytes() ([]byte, error) {
	n, err := r.long()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("negative length %d", n)
	}
	if n > int64(len(r.buf)-r.pos) {
		return nil, errAvroTruncated
	}
	return r.next(int(n))
}

// blockCount reads the count of the next block of an array or map; a negative count is
// followed by the block's size in bytes, which is read and not needed.
func (r *avroReader) blockCount() (int64, error) {
	n, err := r.long()
	if err != nil {
		return 0, err
	}
	if n < 0 {
		if n == math.MinInt64 {
			return 0, errors.New("block count overflows")
		}
		n = -n
		if _, err := r.long(); err != nil {
			return 0, err
		}
	}
	// Each item takes at least a byte but for zero-size items (null, empty records), which
	// no real schema repeats; the bound keeps a forged count from allocating without end.
	if n > int64(len(r.buf)-r.pos) {
		return 0, fmt.Errorf("block of %d items in %d bytes", n, len(r.buf)-r.pos)
	}
	return n, nil
}

// value decodes a datum of t; top says it is the whole datum, not inside a record, array or map.
func (r *avroReader) value(t *avroType, top bool) (any, error) {
	switch t.kind {
	case "null":
		return nil, nil
	case "boolean":
		b, err := r.next(1)
		if err != nil {
			return nil, err
		}
		if b[0] > 1 {
			return nil, fmt.Errorf("invalid boolean byte %d", b[0])
		}
		return b[0] == 1, nil
	case "int":
		n, err := r.int()
		if err != nil {
			return nil, err
		}
		switch t.logical {
		case "date":
			return jsonTime(time.Unix(int64(n)*86400, 0).UTC()), nil
		case "time-millis":
			return time.Duration(n) * time.Millisecond, nil
		}
		return int(n), nil
	case "long":
		n, err := r.long()
		if err != nil {
			return nil, err
		}
		switch t.logical {
		case "time-micros":
			return time.Duration(n) * time.Microsecond, nil
		case "timestamp-millis", "local-timestamp-millis":
			sec := n / 1e3
			return jsonTime(avroTime(sec, (n-sec*1e3)*1e6, t.logical == "local-timestamp-millis")), nil
		case "timestamp-micros", "local-timestamp-micros":
			sec := n / 1e6
			return jsonTime(avroTime(sec, (n-sec*1e6)*1e3, t.logical == "local-timestamp-micros")), nil
		}
		return n, nil
	case "float":
		b, err := r.next(4)
		if err != nil {
			return nil, err
		}
		f := math.Float32frombits(binary.LittleEndian.Uint32(b))
		if s := nonFinite(float64(f)); s != "" {
			return s, nil
		}
		return f, nil
	case "double":
		b, err := r.next(8)
		if err != nil {
			return nil, err
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64(b))
		if s := nonFinite(f); s != "" {
			return s, nil
		}
		return f, nil
	case "bytes":
		b, err := r.bytes()
		if err != nil {
			return nil, err
		}
		if t.logical == "decimal" {
			return decimalRat(b, t.scale), nil
		}
		return append([]byte{}, b...), nil
	case "string":
		b, err := r.bytes()
		if err != nil {
			return nil, err
		}
		return string(b), nil
	case "fixed":
		b, err := r.next(t.size)
		if err != nil {
			return nil, err
		}
		switch t.logical {
		case "decimal":
			return decimalRat(b, t.scale), nil
		case "duration":
			return avroDuration{
				Months:       binary.LittleEndian.Uint32(b[0:]),
				Days:         binary.LittleEndian.Uint32(b[4:]),
				Milliseconds: binary.LittleEndian.Uint32(b[8:]),
			}, nil
		}
		list := make([]int, len(b))
		for i, c := range b {
			list[i] = int(c)
		}
		return list, nil
	case "enum":
		i, err := r.int()
		if err != nil {
			return nil, err
		}
		if i < 0 || int(i) >= len(t.symbols) {
			return nil, fmt.Errorf("enum %s has no symbol %d", t.name, i)
		}
		return t.symbols[i], nil
	}
	if r.depth++; r.depth > avroMaxDepth {
		return nil, fmt.Errorf("nested deeper than %d", avroMaxDepth)
	}
	defer func() { r.depth-- }()
	switch t.kind {
	case "record", "error":
		m := make(map[string]any, len(t.fields))
		for _, f := range t.fields {
			v, err := r.value(f.typ, false)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", f.name, err)
			}
			m[f.name] = v
		}
		return m, nil
	case "array":
		list := []any{}
		for {
			n, err := r.blockCount()
			if err != nil {
				return nil, err
			}
			if n == 0 {
				return list, nil
			}
			for ; n > 0; n-- {
				v, err := r.value(t.items, false)
				if err != nil {
					return nil, fmt.Errorf("array item %d: %w", len(list), err)
				}
				list = append(list, v)
			}
		}
	case "map":
		var m map[string]any
		for {
			n, err := r.blockCount()
			if err != nil {
				return nil, err
			}
			if n == 0 {
				if m == nil {
					m = map[string]any{}
				}
				return m, nil
			}
			if m == nil {
				m = make(map[string]any, n)
			}
			for ; n > 0; n-- {
				k, err := r.bytes()
				if err != nil {
					return nil, fmt.Errorf("map key: %w", err)
				}
				v, err := r.value(t.items, false)
				if err != nil {
					return nil, fmt.Errorf("map value %q: %w", k, err)
				}
				m[string(k)] = v
			}
		}
	case "union":
		// The branch is an int, as the spec has it and hamba reads it: a varint longer than
		// an int's 5 bytes is refused, not read as a long.
		i, err := r.int()
		if err != nil {
			return nil, err
		}
		if i < 0 || int(i) >= len(t.branches) {
			return nil, fmt.Errorf("union has no branch %d", i)
		}
		b := t.branches[i]
		if b.kind == "null" {
			return nil, nil
		}
		v, err := r.value(b, false)
		if err != nil || (t.bare && !top) {
			return v, err
		}
		return map[string]any{b.branchName(): v}, nil
	}
	return nil, fmt.Errorf("unknown type %s", t.kind)
}

// nonFinite names a NaN or an infinity as the proto3 JSON mapping does ("NaN", "Infinity",
// "-Infinity"), and is empty for a finite number. JSON numbers cannot hold them, yet they are
// valid Avro floats and doubles, and sensors send NaN for "no value": as strings they render
// instead of failing the whole datum's JSON.
func nonFinite(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return ""
}

// jsonTime is t, or for a year RFC 3339 cannot hold (before 0 or after 9999, which an Avro
// date or timestamp can carry and time.Time's JSON refuses) t in the same layout with all the
// year's digits, as a string: the reading still renders, and its time reads as what was sent.
func jsonTime(t time.Time) any {
	if y := t.Year(); y < 0 || y > 9999 {
		return t.Format(time.RFC3339Nano)
	}
	return t
}

func avroTime(sec, nsec int64, local bool) time.Time {
	t := time.Unix(sec, nsec)
	if local {
		// A local timestamp is wall-clock time in no zone: show it as the same wall clock in
		// this process's zone, as the library that defined the JSON view does.
		_, offset := t.Zone()
		return t.Add(time.Duration(-offset) * time.Second)
	}
	return t.UTC()
}

// decimalRat reads a decimal: a big-endian two's-complement unscaled value over 10^scale.
func decimalRat(b []byte, scale int) *big.Rat {
	num := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		num.Sub(num, new(big.Int).Lsh(big.NewInt(1), uint(len(b))*8))
	}
	denom := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)
	return new(big.Rat).SetFrac(num, denom)
}

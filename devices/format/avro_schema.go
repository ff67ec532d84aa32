package format

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
)

// avroType is one node of a parsed Avro schema. Named types are parsed once and every
// reference to the name points at the same node, so recursive records form a cycle.
//
// The schema is parsed here rather than by an Avro library: the ones at hand reach
// reflect's MethodByName, which makes the linker keep every exported method of every
// type in the binary.
type avroType struct {
	kind     string // null, boolean, int, long, float, double, bytes, string, record, error, enum, array, map, union, fixed
	name     string // full name of a record, error, enum or fixed
	logical  string // a logical type valid for kind, else ""
	scale    int    // decimal's scale
	fields   []avroField
	symbols  []string
	items    *avroType // array items or map values
	branches []*avroType
	size     int // fixed's size in bytes
	// bare: a union inside a record, array or map whose branches are all primitive (or a
	// logical type of one, but the local timestamps) shows its value without the branch name.
	bare bool
}

type avroField struct {
	name string
	typ  *avroType
}

// branchName is how a union branch is named in the JSON view: the full name of a named type,
// else the type, with its logical type after a dot.
func (t *avroType) branchName() string {
	if t.name != "" {
		return t.name
	}
	if t.logical != "" {
		return t.kind + "." + t.logical
	}
	return t.kind
}

// bareBranch: the union branches the JSON view has shown bare, the types hamba's decoder
// resolves a union to by default (github.com/hamba/avro/v2 resolver.go NewTypeResolver).
var bareBranch = map[string]bool{
	"null": true, "boolean": true, "int": true, "long": true, "float": true, "double": true,
	"bytes": true, "string": true, "int.date": true, "int.time-millis": true, "long.time-micros": true,
	"long.timestamp-millis": true, "long.timestamp-micros": true, "bytes.decimal": true, "string.uuid": true,
}

type avroParser struct {
	named map[string]*avroType
}

// parseAvroSchema parses an Avro schema in its JSON form. Like the Avro specification it
// takes a bare primitive name ("string") as well as its JSON string.
func parseAvroSchema(text string) (*avroType, error) {
	var v any
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil || dec.More() {
		v = strings.TrimSpace(text)
	}
	p := &avroParser{named: map[string]*avroType{}}
	return p.parse("", v)
}

func (p *avroParser) parse(namespace string, v any) (*avroType, error) {
	switch v := v.(type) {
	case nil:
		return &avroType{kind: "null"}, nil
	case string:
		return p.ref(namespace, v)
	case []any:
		return p.union(namespace, v)
	case map[string]any:
		return p.complex(namespace, v)
	}
	return nil, fmt.Errorf("avro: unknown type: %v", v)
}

func isPrimitive(s string) bool {
	switch s {
	case "null", "boolean", "int", "long", "float", "double", "bytes", "string":
		return true
	}
	return false
}

func (p *avroParser) ref(namespace, s string) (*avroType, error) {
	if isPrimitive(s) {
		return &avroType{kind: s}, nil
	}
	if t := p.named[fullName(namespace, s)]; t != nil {
		return t, nil
	}
	if t := p.named[s]; t != nil {
		return t, nil
	}
	return nil, fmt.Errorf("avro: unknown type: %s", s)
}

func fullName(namespace, name string) string {
	if namespace == "" || strings.ContainsRune(name, '.') {
		return name
	}
	return namespace + "." + name
}

func (p *avroParser) union(namespace string, vs []any) (*avroType, error) {
	t := &avroType{kind: "union"}
	seen := map[string]bool{}
	for _, v := range vs {
		b, err := p.parse(namespace, v)
		if err != nil {
			return nil, err
		}
		if b.kind == "union" {
			return nil, errors.New("avro: union type cannot be a union")
		}
		if seen[b.branchName()] {
			return nil, fmt.Errorf("avro: union type must be unique: %s", b.branchName())
		}
		seen[b.branchName()] = true
		t.branches = append(t.branches, b)
	}
	t.bare = true
	for _, b := range t.branches {
		t.bare = t.bare && bareBranch[b.branchName()]
	}
	return t, nil
}

func (p *avroParser) complex(namespace string, m map[string]any) (*avroType, error) {
	if vs, ok := m["type"].([]any); ok {
		return p.union(namespace, vs)
	}
	kind, ok := m["type"].(string)
	if !ok {
		return nil, fmt.Errorf("avro: unknown type: %v", m)
	}
	switch kind {
	case "null", "boolean", "int", "long", "float", "double", "bytes", "string":
		t := &avroType{kind: kind}
		lt, _ := m["logicalType"].(string)
		switch {
		case kind == "string" && lt == "uuid",
			kind == "int" && (lt == "date" || lt == "time-millis"),
			kind == "long" && (lt == "time-micros" || lt == "timestamp-millis" || lt == "timestamp-micros" ||
				lt == "local-timestamp-millis" || lt == "local-timestamp-micros"):
			t.logical = lt
		case kind == "bytes" && lt == "decimal":
			p.decimal(t, -1, m)
		}
		return t, nil
	case "record", "error":
		return p.record(kind, namespace, m)
	case "enum":
		t, _, err := p.declare("enum", namespace, m)
		if err != nil {
			return nil, err
		}
		syms, ok := m["symbols"].([]any)
		if !ok {
			return nil, fmt.Errorf("avro: enum %s needs a symbols list", t.name)
		}
		seen := map[string]bool{}
		for _, s := range syms {
			sym, ok := s.(string)
			if !ok || !validName(sym) || seen[sym] {
				return nil, fmt.Errorf("avro: enum %s has an invalid or repeated symbol %v", t.name, s)
			}
			seen[sym] = true
			t.symbols = append(t.symbols, sym)
		}
		if len(t.symbols) == 0 {
			return nil, fmt.Errorf("avro: enum %s needs at least one symbol", t.name)
		}
		return t, nil
	case "array", "map":
		key := "items"
		if kind == "map" {
			key = "values"
		}
		v, ok := m[key]
		if !ok {
			return nil, fmt.Errorf("avro: %s needs %s", kind, key)
		}
		items, err := p.parse(namespace, v)
		if err != nil {
			return nil, err
		}
		return &avroType{kind: kind, items: items}, nil
	case "fixed":
		t, _, err := p.declare("fixed", namespace, m)
		if err != nil {
			return nil, err
		}
		size, ok := intProp(m, "size")
		if !ok || size < 0 {
			return nil, fmt.Errorf("avro: fixed %s needs a size", t.name)
		}
		t.size = size
		switch lt, _ := m["logicalType"].(string); {
		case lt == "duration" && size == 12:
			t.logical = lt
		case lt == "decimal":
			p.decimal(t, size, m)
		}
		return t, nil
	}
	return p.ref(namespace, kind)
}

// decimal sets t's logical type to decimal if its precision and scale are valid; an
// invalid logical type leaves the underlying type, as the specification says.
func (p *avroParser) decimal(t *avroType, size int, m map[string]any) {
	prec, ok := intProp(m, "precision")
	if !ok || prec <= 0 {
		return
	}
	scale, ok := intProp(m, "scale")
	if _, present := m["scale"]; !present {
		scale, ok = 0, true
	}
	if !ok || scale < 0 || scale > prec {
		return
	}
	if size > 0 && prec > int(math.Floor(math.Log10(math.Pow(2, 8*float64(size))-1))) {
		return
	}
	t.logical, t.scale = "decimal", scale
}

func intProp(m map[string]any, key string) (int, bool) {
	n, ok := m[key].(json.Number)
	if !ok {
		return 0, false
	}
	i, err := n.Int64()
	if err != nil || i > math.MaxInt32 || i < math.MinInt32 {
		return 0, false
	}
	return int(i), true
}

// declare names a new record, error, enum or fixed and registers it before its body is
// parsed, so the body may refer to it. It returns the namespace the body's names are in.
func (p *avroParser) declare(kind, namespace string, m map[string]any) (*avroType, string, error) {
	name, _ := m["name"].(string)
	if ns, ok := m["namespace"].(string); ok && !strings.ContainsRune(name, '.') {
		namespace = ns
	}
	full := fullName(namespace, name)
	for _, part := range strings.Split(full, ".") {
		if !validName(part) {
			return nil, "", fmt.Errorf("avro: invalid %s name %q", kind, full)
		}
	}
	if p.named[full] != nil {
		return nil, "", fmt.Errorf("avro: redefined type %s", full)
	}
	t := &avroType{kind: kind, name: full}
	p.named[full] = t
	if i := strings.LastIndexByte(full, '.'); i >= 0 {
		namespace = full[:i]
	} else {
		namespace = ""
	}
	return t, namespace, nil
}

func (p *avroParser) record(kind, namespace string, m map[string]any) (*avroType, error) {
	t, ns, err := p.declare(kind, namespace, m)
	if err != nil {
		return nil, err
	}
	fields, ok := m["fields"].([]any)
	if !ok {
		return nil, fmt.Errorf("avro: record %s needs a fields list", t.name)
	}
	seen := map[string]bool{}
	for _, f := range fields {
		fm, ok := f.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("avro: record %s has a field that is not an object", t.name)
		}
		name, _ := fm["name"].(string)
		if !validName(name) || seen[name] {
			return nil, fmt.Errorf("avro: record %s has an invalid or repeated field name %q", t.name, name)
		}
		seen[name] = true
		v, ok := fm["type"]
		if !ok {
			return nil, fmt.Errorf("avro: field %s of record %s needs a type", name, t.name)
		}
		ft, err := p.parse(ns, v)
		if err != nil {
			return nil, err
		}
		t.fields = append(t.fields, avroField{name: name, typ: ft})
	}
	return t, nil
}

// validName: [A-Za-z_][A-Za-z0-9_]*, the specification's names.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range []byte(s) {
		if c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

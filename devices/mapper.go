package devices

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultPattern is the topic scheme used when no rules are configured: devices/<device-id>/<stream>,
// optionally followed by further levels that stay in the topic header but do not change the route.
const DefaultPattern = "devices/{device}/{stream}/#"

var (
	// ErrInvalidTopic reports a topic no MQTT client may publish to: empty, too long, or holding
	// wildcards or NUL.
	ErrInvalidTopic = errors.New("invalid topic")
	// ErrNoRoute reports a topic that matches none of the mapping rules.
	ErrNoRoute = errors.New("no mapping rule matches topic")
	// ErrNotAuthorized reports a device publishing to a topic that is not its own.
	ErrNotAuthorized = errors.New("topic not allowed for this device")
	// ErrInvalidRule reports a mapping rule that cannot be compiled.
	ErrInvalidRule = errors.New("invalid mapping rule")
)

// maxTopicLen is MQTT's limit: a topic is a length-prefixed UTF-8 string with a 16-bit length.
const maxTopicLen = 65535

// Rule maps the topics matching Pattern to a stream and a device key.
//
// Pattern is a list of topic levels separated by '/'. Each level is one of:
//
//	text       matches exactly that level
//	{device}   matches one level and takes it as the device id (the log key); required, once
//	{stream}   matches one level and takes it as the stream name; at most once
//	+          matches any one level
//	#          matches any number of remaining levels, including none; last level only
//
// When the pattern has no {stream}, Stream names the stream for every matching topic; when it has
// one, Stream must be empty, so a rule never has two answers to "which stream".
//
// Examples:
//
//	{Pattern: "devices/{device}/{stream}/#"}                 // the default scheme
//	{Pattern: "sensors/{device}/{stream}/#"}
//	{Pattern: "plant1/{device}/telemetry", Stream: "readings"}
//	{Pattern: "+/{device}/status", Stream: "status"}
type Rule struct {
	Pattern string `json:"pattern" yaml:"pattern"`
	Stream  string `json:"stream,omitempty" yaml:"stream,omitempty"`
}

// Route is where a reading goes: the stream, and the key (device id) that picks its partition.
// Both are substrings of the topic, so mapping does not allocate.
type Route struct {
	Stream string
	Key    string
}

// Mapper turns publish topics into routes with an ordered list of rules; the first rule whose
// pattern matches the topic decides. A Mapper is immutable and safe for concurrent use.
type Mapper struct {
	rules []compiledRule
}

type levelKind uint8

const (
	levelLiteral levelKind = iota
	levelAny               // +
	levelRest              // #
	levelDevice            // {device}
	levelStream            // {stream}
)

type patternLevel struct {
	kind levelKind
	text string // for levelLiteral
}

type compiledRule struct {
	pattern string
	levels  []patternLevel
	stream  string // fixed stream when the pattern has no {stream}
}

// NewMapper compiles rules in order. With no rules it uses [DefaultPattern] alone, so the zero
// configuration behaves like the documented default scheme.
func NewMapper(rules []Rule) (*Mapper, error) {
	if len(rules) == 0 {
		rules = []Rule{{Pattern: DefaultPattern}}
	}
	m := &Mapper{rules: make([]compiledRule, 0, len(rules))}
	for i, r := range rules {
		c, err := compileRule(r)
		if err != nil {
			return nil, fmt.Errorf("compile rule %d (%q): %w", i+1, r.Pattern, err)
		}
		m.rules = append(m.rules, c)
	}
	return m, nil
}

// DefaultMapper returns a Mapper for [DefaultPattern].
func DefaultMapper() *Mapper {
	m, err := NewMapper(nil)
	if err != nil {
		panic(err) // the default pattern is a constant; this is a programming error
	}
	return m
}

func compileRule(r Rule) (compiledRule, error) {
	if r.Pattern == "" {
		return compiledRule{}, fmt.Errorf("%w: empty pattern", ErrInvalidRule)
	}
	c := compiledRule{pattern: r.Pattern}
	parts := strings.Split(r.Pattern, "/")
	var devices, streams int
	for i, p := range parts {
		switch p {
		case "#":
			if i != len(parts)-1 {
				return compiledRule{}, fmt.Errorf("%w: '#' must be the last level", ErrInvalidRule)
			}
			c.levels = append(c.levels, patternLevel{kind: levelRest})
		case "+":
			c.levels = append(c.levels, patternLevel{kind: levelAny})
		case "{device}":
			devices++
			c.levels = append(c.levels, patternLevel{kind: levelDevice})
		case "{stream}":
			streams++
			c.levels = append(c.levels, patternLevel{kind: levelStream})
		default:
			if strings.ContainsAny(p, "+#{}\x00") {
				return compiledRule{}, fmt.Errorf("%w: level %q mixes text with a wildcard or placeholder; a placeholder must be a whole level", ErrInvalidRule, p)
			}
			c.levels = append(c.levels, patternLevel{kind: levelLiteral, text: p})
		}
	}
	if devices != 1 {
		return compiledRule{}, fmt.Errorf("%w: pattern needs exactly one {device} level, has %d", ErrInvalidRule, devices)
	}
	switch {
	case streams > 1:
		return compiledRule{}, fmt.Errorf("%w: pattern has %d {stream} levels, at most one allowed", ErrInvalidRule, streams)
	case streams == 1 && r.Stream != "":
		return compiledRule{}, fmt.Errorf("%w: pattern has a {stream} level and the rule also names stream %q; keep one", ErrInvalidRule, r.Stream)
	case streams == 0 && r.Stream == "":
		return compiledRule{}, fmt.Errorf("%w: pattern has no {stream} level; name the stream in the rule", ErrInvalidRule)
	case streams == 0:
		if err := CheckStream(r.Stream); err != nil {
			return compiledRule{}, fmt.Errorf("%w: %w", ErrInvalidRule, err)
		}
		if Reserved(r.Stream) {
			return compiledRule{}, fmt.Errorf("%w: %w %q is written by the edge only", ErrInvalidRule, ErrReservedStream, r.Stream)
		}
		c.stream = r.Stream
	}
	return c, nil
}

// Map returns the route of a publish topic. Errors wrap [ErrInvalidTopic], [ErrNoRoute],
// [ErrInvalidDeviceID], [ErrInvalidStream] or [ErrReservedStream]; [ReasonOf] turns them into a
// metric label. The first rule whose levels match decides: a match with a bad device id or stream
// is an error, not a reason to try the next rule, so a typo surfaces instead of being rerouted.
func (m *Mapper) Map(topic string) (Route, error) {
	if err := checkTopic(topic); err != nil {
		return Route{}, err
	}
	for i := range m.rules {
		route, ok := m.rules[i].match(topic)
		if !ok {
			continue
		}
		if !ValidDeviceID(route.Key) {
			return Route{}, fmt.Errorf("map topic %q: %w", topic, CheckDeviceID(route.Key))
		}
		if !ValidStream(route.Stream) {
			return Route{}, fmt.Errorf("map topic %q: %w", topic, CheckStream(route.Stream))
		}
		if Reserved(route.Stream) {
			return Route{}, fmt.Errorf("map topic %q: %w %q is written by the edge only", topic, ErrReservedStream, route.Stream)
		}
		return route, nil
	}
	return Route{}, fmt.Errorf("map topic %q: %w", topic, ErrNoRoute)
}

// Authorize maps topic and checks that it routes to deviceID's own key: a device may publish its own
// readings only. It returns the route so the caller maps each message once. Errors wrap those of
// [Mapper.Map], or [ErrNotAuthorized].
func (m *Mapper) Authorize(deviceID, topic string) (Route, error) {
	route, err := m.Map(topic)
	if err != nil {
		return Route{}, err
	}
	if route.Key != deviceID {
		return Route{}, fmt.Errorf("authorize device %q for topic %q: %w: the topic belongs to device %q", deviceID, topic, ErrNotAuthorized, route.Key)
	}
	return route, nil
}

// checkTopic refuses what no client may publish to; mochi checks this too, but the mapper is also
// fed by the external-broker source and by tests, so it does not rely on that.
func checkTopic(topic string) error {
	if topic == "" {
		return fmt.Errorf("map topic: %w: empty", ErrInvalidTopic)
	}
	if len(topic) > maxTopicLen {
		return fmt.Errorf("map topic: %w: %d bytes, at most %d allowed", ErrInvalidTopic, len(topic), maxTopicLen)
	}
	for i := 0; i < len(topic); i++ {
		switch topic[i] {
		case '+', '#':
			return fmt.Errorf("map topic %q: %w: wildcards are for subscriptions, not publishes", topic, ErrInvalidTopic)
		case 0:
			return fmt.Errorf("map topic %q: %w: contains NUL", topic, ErrInvalidTopic)
		}
	}
	return nil
}

// match walks the topic level by level without splitting it, so the per-message path allocates nothing.
func (c *compiledRule) match(topic string) (Route, bool) {
	route := Route{Stream: c.stream}
	rest, exhausted := topic, false
	for i, lv := range c.levels {
		if lv.kind == levelRest {
			// MQTT: wildcards at the first level do not match $-topics such as $SYS.
			return route, !(i == 0 && strings.HasPrefix(topic, "$"))
		}
		if exhausted {
			return Route{}, false
		}
		var level string
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			level, rest = rest[:j], rest[j+1:]
		} else {
			level, exhausted = rest, true
		}
		switch lv.kind {
		case levelLiteral:
			if level != lv.text {
				return Route{}, false
			}
		case levelAny:
			if i == 0 && strings.HasPrefix(level, "$") {
				return Route{}, false
			}
		case levelDevice:
			route.Key = level
		case levelStream:
			route.Stream = level
		}
	}
	return route, exhausted
}

// matchFilter reports whether topic matches an MQTT topic filter with '+' and '#' wildcards. It serves
// the extra topic filters a device may be granted in the registry.
func matchFilter(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		var f string
		fi := strings.IndexByte(filter, '/')
		if fi >= 0 {
			f, filter = filter[:fi], filter[fi+1:]
		} else {
			f = filter
		}
		if f == "#" {
			return true
		}
		var t string
		ti := strings.IndexByte(topic, '/')
		if ti >= 0 {
			t, topic = topic[:ti], topic[ti+1:]
		} else {
			t = topic
		}
		if f != "+" && f != t {
			return false
		}
		switch {
		case fi < 0 && ti < 0:
			return true
		case fi < 0:
			return false
		case ti < 0:
			// The topic ends; only a trailing "#" matches the parent level ("a/#" matches "a").
			return filter == "#"
		}
	}
}

// CheckFilter returns nil if filter is a well-formed MQTT topic filter: '#' only as the whole last
// level, '+' only as a whole level.
func CheckFilter(filter string) error {
	if filter == "" || len(filter) > maxTopicLen || strings.IndexByte(filter, 0) >= 0 {
		return fmt.Errorf("%w: topic filter %q is empty, too long or holds NUL", ErrInvalidTopic, filter)
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && l != "+" && l != "#" {
			return fmt.Errorf("%w: topic filter %q: a wildcard must be a whole level", ErrInvalidTopic, filter)
		}
		if l == "#" && i != len(levels)-1 {
			return fmt.Errorf("%w: topic filter %q: '#' must be the last level", ErrInvalidTopic, filter)
		}
	}
	return nil
}

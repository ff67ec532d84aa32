package devices

import (
	"errors"
	"strings"
	"testing"
)

func TestMapDefault(t *testing.T) {
	m := DefaultMapper()
	tests := []struct {
		topic   string
		want    Route
		wantErr error
	}{
		{"devices/boiler-7/temperature", Route{"temperature", "boiler-7"}, nil},
		{"devices/boiler-7/temperature/probe2/raw", Route{"temperature", "boiler-7"}, nil},
		{"devices/boiler-7/temperature/", Route{"temperature", "boiler-7"}, nil},
		{"devices/aa:bb:cc:dd:ee:ff/rssi", Route{"rssi", "aa:bb:cc:dd:ee:ff"}, nil},
		{"devices/B7/v1.metrics_x-y", Route{"v1.metrics_x-y", "B7"}, nil},
		{"", Route{}, ErrInvalidTopic},
		{"devices/+/temperature", Route{}, ErrInvalidTopic},
		{"devices/x/#", Route{}, ErrInvalidTopic},
		{"devices/x/t\x00", Route{}, ErrInvalidTopic},
		{"devices/boiler-7", Route{}, ErrNoRoute},
		{"devices", Route{}, ErrNoRoute},
		{"sensors/boiler-7/temperature", Route{}, ErrNoRoute},
		{"/devices/boiler-7/temperature", Route{}, ErrNoRoute},
		{"Devices/boiler-7/temperature", Route{}, ErrNoRoute},
		{"devices//temperature", Route{}, ErrInvalidDeviceID},
		{"devices/-x/temperature", Route{}, ErrInvalidDeviceID},
		{"devices/a b/temperature", Route{}, ErrInvalidDeviceID},
		{"devices/$x/temperature", Route{}, ErrInvalidDeviceID},
		{"devices/" + strings.Repeat("a", MaxDeviceIDLen+1) + "/t", Route{}, ErrInvalidDeviceID},
		{"devices/x/Temperature", Route{}, ErrInvalidStream},
		{"devices/x/..", Route{}, ErrInvalidStream},
		{"devices/x/.", Route{}, ErrInvalidStream},
		{"devices/x//more", Route{}, ErrInvalidStream},
		{"devices/x/" + strings.Repeat("s", MaxStreamNameLen+1), Route{}, ErrInvalidStream},
		{"devices/x/deadletter", Route{}, ErrReservedStream},
		{"devices/x/" + strings.Repeat("s", MaxStreamNameLen), Route{strings.Repeat("s", MaxStreamNameLen), "x"}, nil},
	}
	for _, tt := range tests {
		got, err := m.Map(tt.topic)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("Map(%q) error = %v, want %v", tt.topic, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("Map(%q) = %+v, want %+v", tt.topic, got, tt.want)
		}
		if err != nil && !strings.Contains(err.Error(), "topic") {
			t.Errorf("Map(%q) error %q does not mention the topic", tt.topic, err)
		}
	}
}

func TestMapRules(t *testing.T) {
	m, err := NewMapper([]Rule{
		{Pattern: "plant1/{device}/telemetry", Stream: "readings"},
		{Pattern: "sensors/{stream}/{device}/#"},
		{Pattern: "+/{device}/status", Stream: "status"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		topic   string
		want    Route
		wantErr error
	}{
		{"plant1/press-3/telemetry", Route{"readings", "press-3"}, nil},
		{"plant1/press-3/telemetry/extra", Route{}, ErrNoRoute},
		{"plant1/press-3", Route{}, ErrNoRoute},
		{"sensors/humidity/h-1", Route{"humidity", "h-1"}, nil},
		{"sensors/humidity/h-1/a/b", Route{"humidity", "h-1"}, nil},
		{"sensors/Humidity/h-1", Route{}, ErrInvalidStream},
		{"site9/gw-1/status", Route{"status", "gw-1"}, nil},
		{"$SYS/gw-1/status", Route{}, ErrNoRoute}, // '+' at the first level skips $-topics
		{"devices/x/temperature", Route{}, ErrNoRoute},
		// The first rule whose levels match decides; the bad id is reported, not rerouted.
		{"plant1/bad id/telemetry", Route{}, ErrInvalidDeviceID},
	}
	for _, tt := range tests {
		got, err := m.Map(tt.topic)
		if !errors.Is(err, tt.wantErr) || got != tt.want {
			t.Errorf("Map(%q) = %+v, %v; want %+v, %v", tt.topic, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestNewMapperRejectsBadRules(t *testing.T) {
	bad := []Rule{
		{Pattern: ""},
		{Pattern: "devices/{stream}"},                     // no device
		{Pattern: "a/{device}/{device}", Stream: "s"},     // two devices
		{Pattern: "a/{device}/{stream}/{stream}"},         // two streams
		{Pattern: "a/{device}/{stream}", Stream: "s"},     // stream twice
		{Pattern: "a/{device}"},                           // no stream at all
		{Pattern: "a/{device}", Stream: "Bad"},            // bad fixed stream
		{Pattern: "a/{device}", Stream: DeadLetterStream}, // reserved
		{Pattern: "#/{device}", Stream: "s"},              // # not last
		{Pattern: "a+/{device}", Stream: "s"},             // wildcard inside a level
		{Pattern: "a/dev-{device}", Stream: "s"},          // placeholder inside a level
		{Pattern: "a/{device}/{strem}", Stream: "s"},      // typo in a placeholder
	}
	for _, r := range bad {
		if _, err := NewMapper([]Rule{r}); !errors.Is(err, ErrInvalidRule) {
			t.Errorf("NewMapper(%+v) error = %v, want ErrInvalidRule", r, err)
		}
	}
}

func TestMapperAuthorize(t *testing.T) {
	m := DefaultMapper()
	if r, err := m.Authorize("boiler-7", "devices/boiler-7/temperature"); err != nil || r.Key != "boiler-7" {
		t.Fatalf("own topic: %+v, %v", r, err)
	}
	_, err := m.Authorize("boiler-7", "devices/boiler-8/temperature")
	if !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("other device's topic: error = %v, want ErrNotAuthorized", err)
	}
	if !strings.Contains(err.Error(), `"boiler-8"`) {
		t.Errorf("error %q should name the owner of the topic", err)
	}
	if ReasonOf(err) != ReasonNotAuthorized {
		t.Errorf("ReasonOf = %q", ReasonOf(err))
	}
	// A prefix of another id is not the same id.
	if _, err := m.Authorize("boiler", "devices/boiler-7/temperature"); !errors.Is(err, ErrNotAuthorized) {
		t.Errorf("prefix id: error = %v, want ErrNotAuthorized", err)
	}
}

func TestMatchFilter(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"devices/+/temperature", "devices/s1/temperature", true},
		{"devices/+/temperature", "devices/s1/humidity", false},
		{"devices/#", "devices/s1/temperature", true},
		{"devices/#", "devices", true},
		{"devices/+", "devices", false},
		{"devices/+", "devices/s1/x", false},
		{"#", "devices/s1/x", true},
		{"#", "$SYS/x", false},
		{"+/s1/x", "$SYS/s1/x", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a//c", "a//c", true},
		{"a/+/c", "a//c", true},
	}
	for _, tt := range tests {
		if got := matchFilter(tt.filter, tt.topic); got != tt.want {
			t.Errorf("matchFilter(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}

func TestReasonOf(t *testing.T) {
	m := DefaultMapper()
	for topic, want := range map[string]Reason{
		"devices/x/t":          ReasonNone,
		"devices/x/deadletter": ReasonReserved,
		"elsewhere/x/t":        ReasonNoRoute,
		"devices/x/T":          ReasonBadTopic,
		"devices/+/t":          ReasonBadTopic,
	} {
		_, err := m.Map(topic)
		if got := ReasonOf(err); got != want {
			t.Errorf("ReasonOf(Map(%q)) = %q, want %q (err %v)", topic, got, want, err)
		}
	}
	if got := ReasonOf(errors.New("disk on fire")); got != ReasonOther {
		t.Errorf("ReasonOf(unknown) = %q", got)
	}
}

func FuzzMap(f *testing.F) {
	for _, s := range []string{
		"devices/boiler-7/temperature", "devices/x/t/a/b", "devices//t", "devices/x/..", "$SYS/x",
		"devices/x/deadletter", "devices/x/+", "#", "/", "plant1/p/telemetry", "sensors/s/d/#",
	} {
		f.Add(s, "boiler-7", "temperature")
	}
	rules, err := NewMapper([]Rule{
		{Pattern: "plant1/{device}/telemetry", Stream: "readings"},
		{Pattern: "sensors/{stream}/{device}/#"},
		{Pattern: "+/{device}/+/{stream}"},
	})
	if err != nil {
		f.Fatal(err)
	}
	def := DefaultMapper()
	f.Fuzz(func(t *testing.T, topic, id, stream string) {
		for _, m := range []*Mapper{def, rules} {
			r, err := m.Map(topic)
			if err != nil {
				if r != (Route{}) {
					t.Fatalf("Map(%q) returned %+v with error %v", topic, r, err)
				}
				if ReasonOf(err) == ReasonOther {
					t.Fatalf("Map(%q) error %v is unclassified", topic, err)
				}
				continue
			}
			if !ValidDeviceID(r.Key) || !ValidStream(r.Stream) || r.Stream == DeadLetterStream {
				t.Fatalf("Map(%q) = %+v: invalid route accepted", topic, r)
			}
			if !strings.Contains(topic, r.Key) {
				t.Fatalf("Map(%q) = %+v: key not taken from the topic", topic, r)
			}
		}
		// Round trip: any valid id and stream comes back out of the default scheme.
		if ValidDeviceID(id) && ValidStream(stream) && stream != DeadLetterStream {
			topic := "devices/" + id + "/" + stream
			r, err := def.Map(topic)
			if err != nil || r != (Route{Stream: stream, Key: id}) {
				t.Fatalf("Map(%q) = %+v, %v; want {%s %s}", topic, r, err, stream, id)
			}
			if _, err := def.Authorize(id, topic); err != nil {
				t.Fatalf("Authorize(%q, %q): %v", id, topic, err)
			}
			if _, err := def.Authorize(id+"x", topic); !errors.Is(err, ErrNotAuthorized) {
				t.Fatalf("Authorize(%q, %q) = %v, want ErrNotAuthorized", id+"x", topic, err)
			}
		}
	})
}

func BenchmarkMap(b *testing.B) {
	rules, err := NewMapper([]Rule{
		{Pattern: "plant1/{device}/telemetry", Stream: "readings"},
		{Pattern: "sensors/{stream}/{device}/#"},
		{Pattern: DefaultPattern},
	})
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name  string
		m     *Mapper
		topic string
	}{
		{"default", DefaultMapper(), "devices/boiler-0042/temperature"},
		{"default-deep", DefaultMapper(), "devices/boiler-0042/temperature/probe2/raw"},
		{"3rules-last", rules, "devices/boiler-0042/temperature"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.m.Map(c.topic); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "topics/s")
		})
	}
}

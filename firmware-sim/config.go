package firmwaresim

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"
)

// Config describes a simulated fleet. Zero values mean the defaults documented on each field;
// a run must be bounded by Duration, Count or both.
type Config struct {
	// Broker is the MQTT broker URL: tcp://, ssl:// (also tls://, mqtts://), ws:// or wss://.
	Broker string
	// Devices is the number of simulated devices, each its own MQTT client. Default 1.
	Devices int
	// IDPrefix and the device number make the device id: "dev-" gives dev-0001, dev-0002, ...
	// Default "dev-".
	IDPrefix string
	// Passwords returns the password of device id; nil means no password. See
	// [PasswordTemplate] and [ReadPasswordFile].
	Passwords func(id string) string

	// Rate is readings per second per device; TotalRate, if set, is shared by the whole fleet and
	// overrides Rate. Both zero means as fast as the in-flight window allows.
	Rate      float64
	TotalRate float64
	// QoS is 0 (best effort, never acked) or 1 (acked by PUBACK). Default 0.
	QoS byte
	// Duration bounds the run in time, Count in readings per device; the first reached ends it.
	Duration time.Duration
	Count    uint64
	// InFlight is how many QoS 1 readings a device may have unacked at once. Default 16.
	InFlight int
	// PayloadSize pads each reading with a "pad" field to at least this many bytes. 0: no padding.
	PayloadSize int
	// Seed makes the signals reproducible; devices derive their own seed from it and their id.
	Seed int64

	// TLS is used for ssl:// and wss:// brokers; nil means the system roots. See [LoadTLS].
	TLS *tls.Config
	// ConnectTimeout bounds one connection attempt. Default 5s.
	ConnectTimeout time.Duration
	// AckTimeout is how long a QoS 1 reading may wait for its PUBACK before it counts as unacked.
	// Default 10s.
	AckTimeout time.Duration
	// DrainTimeout is how long the fleet waits for outstanding acks once publishing stops.
	// Default 5s.
	DrainTimeout time.Duration

	// Faults are the misbehaviours to inject; the zero value injects none.
	Faults Faults

	// Sparkplug, when set, makes each device a Sparkplug B edge node (see [SparkplugConfig]).
	Sparkplug *SparkplugConfig

	// Logger receives connection events and errors; nil discards them.
	Logger *slog.Logger
}

// Faults are misbehaviours a fleet can inject. Faulty publishes are counted apart from readings,
// carry seq 0 (or are not JSON at all) and so are never part of the expected set in verification.
type Faults struct {
	// ReconnectEvery makes every device drop its connection at the same moment, then reconnect at
	// once, every interval: the storm a gateway sees when a site's power or Wi-Fi returns.
	ReconnectEvery time.Duration
	// FlakyMeanInterval makes each device lose its connection at random, on average once per
	// interval (exponentially distributed), and reconnect after FlakyDowntime (default 200ms).
	FlakyMeanInterval time.Duration
	FlakyDowntime     time.Duration
	// ClockSkew offsets each device's clock by a fixed amount drawn uniformly from
	// [-ClockSkew, +ClockSkew], as devices without NTP drift.
	ClockSkew time.Duration
	// The fractions are probabilities per publish slot that the slot carries a faulty publish
	// instead of the next reading: a malformed (truncated, not JSON) payload, an oversized payload
	// of OversizedBytes (default 256 KiB), or a reading published on another device's topic.
	// Their sum must stay at or below 0.5.
	MalformedFraction  float64
	OversizedFraction  float64
	WrongTopicFraction float64
	OversizedBytes     int
}

// Fault kinds, as they appear in reports and in the "fault" field of faulty payloads.
const (
	FaultMalformed  = "malformed"
	FaultOversized  = "oversized"
	FaultWrongTopic = "wrong-topic"
)

// Defaults applied by [Config.withDefaults].
const (
	defaultIDPrefix       = "dev-"
	defaultInFlight       = 16
	defaultConnectTimeout = 5 * time.Second
	defaultAckTimeout     = 10 * time.Second
	defaultDrainTimeout   = 5 * time.Second
	defaultFlakyDowntime  = 200 * time.Millisecond
	defaultOversizedBytes = 256 << 10
	maxFaultFraction      = 0.5
)

func (c Config) withDefaults() Config {
	if c.Devices == 0 {
		c.Devices = 1
	}
	if c.IDPrefix == "" {
		c.IDPrefix = defaultIDPrefix
	}
	if c.InFlight == 0 {
		c.InFlight = defaultInFlight
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = defaultConnectTimeout
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = defaultAckTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = defaultDrainTimeout
	}
	if c.Faults.FlakyDowntime == 0 {
		c.Faults.FlakyDowntime = defaultFlakyDowntime
	}
	if c.Faults.OversizedBytes == 0 {
		c.Faults.OversizedBytes = defaultOversizedBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Sparkplug != nil {
		sp := *c.Sparkplug
		sp.withDefaults()
		c.Sparkplug = &sp
	}
	return c
}

func (c Config) validate() error {
	u, err := url.Parse(c.Broker)
	if err != nil {
		return fmt.Errorf("parse broker URL %q: %w", c.Broker, err)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return fmt.Errorf("broker URL %q: scheme must be tcp://, ssl://, ws:// or wss://", c.Broker)
	}
	var errs []error
	if c.Devices < 0 {
		errs = append(errs, fmt.Errorf("device count %d is negative", c.Devices))
	}
	if c.QoS > 1 {
		errs = append(errs, fmt.Errorf("QoS %d is not supported: use 0 or 1", c.QoS))
	}
	if c.Duration <= 0 && c.Count == 0 {
		errs = append(errs, errors.New("the run is unbounded: set a duration, a count per device, or both"))
	}
	if c.Rate < 0 || c.TotalRate < 0 {
		errs = append(errs, errors.New("rate is negative: use a positive rate, or 0 for as fast as acks allow"))
	}
	if c.InFlight < 1 || c.InFlight > 65000 {
		errs = append(errs, fmt.Errorf("in-flight limit %d is outside 1..65000 (MQTT packet ids are 16 bits)", c.InFlight))
	}
	f := c.Faults
	for name, v := range map[string]float64{
		"malformed fraction": f.MalformedFraction, "oversized fraction": f.OversizedFraction,
		"wrong-topic fraction": f.WrongTopicFraction,
	} {
		if v < 0 || v > 1 {
			errs = append(errs, fmt.Errorf("%s %g is outside 0..1", name, v))
		}
	}
	if sum := f.MalformedFraction + f.OversizedFraction + f.WrongTopicFraction; sum > maxFaultFraction {
		errs = append(errs, fmt.Errorf("fault fractions add up to %g: keep them at or below %g so readings still flow", sum, maxFaultFraction))
	}
	if f.ReconnectEvery < 0 || f.FlakyMeanInterval < 0 || f.ClockSkew < 0 {
		errs = append(errs, errors.New("fault intervals and clock skew must not be negative"))
	}
	if c.Sparkplug != nil {
		if err := c.Sparkplug.validate(); err != nil {
			errs = append(errs, err)
		}
		if c.QoS != 1 {
			errs = append(errs, errors.New("the Sparkplug mode needs QoS 1: births must be acked before data can be resolved"))
		}
	}
	return errors.Join(errs...)
}

// perDeviceRate is the readings/s each device aims for; 0 means unpaced.
func (c Config) perDeviceRate() float64 {
	if c.TotalRate > 0 {
		return c.TotalRate / float64(c.Devices)
	}
	return c.Rate
}

// DeviceID returns the id of device n (1-based) for a prefix: DeviceID("dev-", 1) is "dev-0001".
func DeviceID(prefix string, n int) string { return fmt.Sprintf("%s%04d", prefix, n) }

// ReadingsTopic is the topic device id publishes its readings on (DESIGN: devices/<id>/<stream>).
func ReadingsTopic(id string) string { return "devices/" + id + "/readings" }

// PasswordTemplate returns a password function that replaces every "{id}" in tmpl with the device
// id: PasswordTemplate("secret-{id}")("dev-0001") is "secret-dev-0001".
func PasswordTemplate(tmpl string) func(id string) string {
	return func(id string) string { return strings.ReplaceAll(tmpl, "{id}", id) }
}

// ReadPasswordFile reads "id:password" lines (blank lines and lines starting with # are skipped)
// and returns a password function; devices not in the file get no password.
func ReadPasswordFile(r io.Reader) (func(id string) string, error) {
	passwords := make(map[string]string)
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		id, password, ok := strings.Cut(text, ":")
		if !ok || id == "" {
			return nil, fmt.Errorf("password file line %d: want id:password", line)
		}
		passwords[id] = password
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read password file: %w", err)
	}
	return func(id string) string { return passwords[id] }, nil
}

// LoadTLS builds a client TLS configuration: caFile (PEM) replaces the system roots when set;
// insecure skips server certificate verification, for test brokers with self-signed certificates.
func LoadTLS(caFile string, insecure bool) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // opt-in flag for test brokers
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate: pass the broker's CA certificate in PEM form", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

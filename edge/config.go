package edge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	// yaml.v3 reads the agent's config file; KnownFields catches misspelt keys, which would
	// otherwise silently fall back to defaults on a gateway nobody watches.
	"gopkg.in/yaml.v3"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/devices/format"
	"github.com/tributary-iot/tributary/storage"
)

// Config is the edge agent's configuration: the agent's part of the edge node's YAML file (the
// node, sync/edgenode, adds forwarding to central). The zero value of each field means its default
// (see [Config.withDefaults]).
type Config struct {
	// ConfigDir resolves relative schema paths in Streams; sync/edgenode's LoadConfig sets it to
	// the config file's folder. Empty: the working directory.
	ConfigDir string `yaml:"-"`
	// DataDir holds the log (streams/, meta.db) and, by default, the device registry devices.db.
	DataDir string `yaml:"data_dir"`
	// Registry is the device registry file; default DataDir/devices.db.
	Registry string `yaml:"registry"`
	// EdgeID names this gateway; it is part of the source's default client id, and the edge node
	// names the gateway to central with it.
	EdgeID string `yaml:"edge_id"`

	MQTT MQTTConfig `yaml:"mqtt"`
	// HTTPListen serves /metrics, /healthz and /readyz; empty or "off" disables it. The
	// tributary edge command fills in DefaultHTTPListen when neither its file nor its flags set it.
	HTTPListen string `yaml:"http_listen"`
	// HTTPTLS, when set, serves HTTPListen over TLS only (HTTPS). The edge node builds it from
	// its http_tls_cert, http_tls_key and http_client_ca keys, named as central's.
	HTTPTLS *tls.Config `yaml:"-"`

	// Fsync is the storage fsync policy: group (default; the only one under which a PUBACK means
	// durable), interval or none.
	Fsync         string        `yaml:"fsync"`
	FsyncInterval time.Duration `yaml:"fsync_interval"`
	// QuotaBytes bounds the log on disk; 0 means no quota. QuotaPolicy is backpressure (default:
	// stop acking) or drop-oldest.
	QuotaBytes  int64  `yaml:"quota_bytes"`
	QuotaPolicy string `yaml:"quota_policy"`
	// SegmentBytes rolls active segments at this size; 0 means the storage default.
	SegmentBytes int64 `yaml:"segment_bytes"`
	// GroupLinger, when positive, makes every group commit wait this long for more readings before
	// its write and fsync, instead of the adaptive wait of AckLatencyBudget; negative commits at
	// once (one fsync per reading for devices that wait for each ack). Default 0: adaptive.
	GroupLinger time.Duration `yaml:"group_linger"`
	// AckLatencyBudget is what a reading's group commit may add to its ack latency (default 20ms,
	// negative: commit at once). Within it the committer gathers readings from the load and the
	// disk's measured fsync latency: at most 2/budget fsyncs a second per partition (100 with
	// 20ms), no waiting once fsyncs alone take half of it, and the oldest reading of a group
	// held at most half of it less one fsync. Devices each wait for their ack, so without it a
	// group holds only what arrived during the previous fsync: more fsyncs, more CPU, more flash wear.
	AckLatencyBudget time.Duration `yaml:"ack_latency_budget"`
	// AutoMemoryLimit sets the Go runtime's soft memory limit from the number of connected
	// devices (memory.go). "tributary edge" sets it unless GOMEMLIMIT is given; it is off for
	// agents embedded in a larger process, such as the demo.
	AutoMemoryLimit bool `yaml:"-"`

	// DefaultStream is documentation for operators: the stream most devices publish to, created at
	// start with DefaultPartitions partitions so the forwarder sees it before the first reading.
	DefaultStream string `yaml:"default_stream"`
	// DefaultPartitions is the partition count of streams created on demand; default 2 (see
	// DefaultPartitionCount). Streams already on disk keep theirs.
	DefaultPartitions int `yaml:"default_partitions"`
	// Streams declares streams and their settings. Devices publish only to declared streams: the
	// default stream, these, JSONStreams and the streams mapping rules name; a publish to any other
	// is refused (see UndeclaredStreams), so a typo in a topic does not become a stream here and at
	// central.
	Streams map[string]StreamConfig `yaml:"streams"`
	// UndeclaredStreams is what a publish to a stream nobody declared gets: "refuse" (default) or
	// "create" (the stream is made on demand, up to MaxStreams).
	UndeclaredStreams string `yaml:"undeclared_streams"`
	// MaxStreams bounds how many streams devices can create through their topics; default 64.
	MaxStreams int `yaml:"max_streams"`
	// MaxPayloadBytes dead-letters larger payloads; default devices.DefaultMaxPayloadBytes.
	MaxPayloadBytes int `yaml:"max_payload_bytes"`
	// JSONStreams lists streams whose payloads must be JSON (also settable per stream).
	JSONStreams []string `yaml:"json_streams"`

	// AllowAnonymous accepts clients without credentials even on non-loopback listeners.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// AnonymousPublish is what an anonymous client may publish: "own" (default) treats its client
	// id as its device id, so it publishes only under its own topics; "any" lets it publish for any
	// device, for a trusted local bridge.
	AnonymousPublish string `yaml:"anonymous_publish"`
	// AllowSubscribe lets devices subscribe under their own topics; by default subscriptions are
	// refused, since readings are stored, not fanned out.
	AllowSubscribe bool `yaml:"allow_subscribe"`
	// Mapping are topic mapping rules tried in order; empty means devices/{device}/{stream}/#.
	Mapping []devices.Rule `yaml:"mapping"`
	// Auth bounds the cost of failed password logins (see [AuthConfig]).
	Auth AuthConfig `yaml:"auth"`

	// MaxPendingPerClient caps QoS 1/2 readings of one client waiting for their group commit. The
	// client's read goroutine blocks above it, which paces the device; MQTT 5 clients are told it
	// as Receive Maximum. Default 256.
	MaxPendingPerClient int `yaml:"max_pending_per_client"`
	// DedupeWindow is how many records per partition are scanned at start to rebuild the memory
	// that recognises device resends (2 x MaxPendingPerClient readings per client).
	// Default 4096.
	DedupeWindow int `yaml:"dedupe_window"`
	// DrainTimeout bounds how long shutdown waits for pending acks; default 5s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`

	// Sparkplug configures Sparkplug B ingest (spBv1.0/ topics; see [SparkplugConfig]).
	Sparkplug SparkplugConfig `yaml:"sparkplug"`

	// Source subscribes to an existing broker instead of (or besides) devices connecting here.
	Source *SourceConfig `yaml:"source"`

	// Logger receives the agent's logs; nil discards them.
	Logger *slog.Logger `yaml:"-"`
}

// MQTTConfig configures the embedded broker's listeners.
type MQTTConfig struct {
	// Listen is the plain TCP listener; default 127.0.0.1:1883. "-" disables it.
	Listen string `yaml:"listen"`
	// TLSListen, with TLSCert and TLSKey, adds a TLS listener. TLSClientCA, when set, asks clients
	// for a certificate signed by it; a verified certificate's CN is the device id. The three
	// files are read again when they change (devices/certreload): renewals need no restart.
	TLSListen   string `yaml:"tls_listen"`
	TLSCert     string `yaml:"tls_cert"`
	TLSKey      string `yaml:"tls_key"`
	TLSClientCA string `yaml:"tls_client_ca"`
	// WSListen adds a WebSocket listener (MQTT over ws://ADDR/).
	WSListen string `yaml:"ws_listen"`
	// WSAllowedOrigins lists the web origins (scheme://host[:port]) whose pages may connect over
	// WebSocket; "*" allows any. Empty allows only same-origin pages and clients that send no
	// Origin (devices and libraries do not; browsers always do).
	WSAllowedOrigins []string `yaml:"ws_allowed_origins"`
	// MaxPacketBytes bounds an MQTT packet; larger ones drop the connection. Default is
	// MaxPayloadBytes + 64 KiB, so oversized payloads up to that size are dead-lettered instead.
	MaxPacketBytes int `yaml:"max_packet_bytes"`
	// MaxConnections caps the open connections of the TCP, TLS and WebSocket listeners together,
	// before and after CONNECT. Past it new connections wait in the kernel's backlog. Default and
	// ceiling: the file descriptor limit less a reserve for the agent's own files (an eighth, at
	// least 64).
	MaxConnections int `yaml:"max_connections"`
	// ConnectTimeout closes a connection that has not sent its whole CONNECT this long after it
	// was accepted, the TLS handshake included. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// WriteTimeout closes a connection whose client has taken no data for this long while the
	// agent writes to it (an ack, a CONNACK). Default 30s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// SessionExpiry is the longest a disconnected persistent session is kept (MQTT 3.1.1 clean
	// session 0, or an MQTT 5 session expiry interval, which is capped to it). Readings do not
	// depend on it: the dedupe memory recognises resends without the session. Default 1h.
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// MaxSessions caps the sessions, connected or kept, of all clients; past it a CONNECT for a
	// new client id is refused (MQTT 5 0x97, MQTT 3.1.1 0x03). Default 10000.
	MaxSessions int `yaml:"max_sessions"`
	// MaxSessionsPerDevice caps the client ids one device's credentials may hold sessions
	// under. Default 4.
	MaxSessionsPerDevice int `yaml:"max_sessions_per_device"`
}

// StreamConfig declares one stream.
type StreamConfig struct {
	Partitions int `yaml:"partitions"`
	// JSON is short for format: json.
	JSON            bool `yaml:"json"`
	MaxPayloadBytes int  `yaml:"max_payload_bytes"`
	// Format, Schema and Message declare what the stream's payloads are (see format.Spec): bytes
	// (anything, the default), json, json with a JSON Schema, protobuf with a message type from a
	// .proto file or a descriptor set, avro with a schema file. A payload that does not conform
	// goes to the deadletter stream with the reason.
	format.Spec `yaml:",inline"`
}

// SourceConfig subscribes to an external broker with a persistent session and acks each message
// only after its durable append. Topics must map through the same rules as device topics.
type SourceConfig struct {
	Broker   string   `yaml:"broker"` // tcp://host:port, ssl://host:port or ws://host:port
	ClientID string   `yaml:"client_id"`
	Username string   `yaml:"username"`
	Password string   `yaml:"password"`
	Topics   []string `yaml:"topics"` // filters; default devices/#
	QoS      byte     `yaml:"qos"`    // 1 (default) or 2
}

// Defaults applied by withDefaults.
const (
	DefaultMQTTListen = "127.0.0.1:1883"
	// DefaultHTTPListen is where the tributary edge command serves /metrics, /healthz and /readyz
	// unless told otherwise: loopback, on the port deploy/prometheus/scrape.yml scrapes.
	DefaultHTTPListen = "127.0.0.1:9464"
	DefaultStreamName = "readings"
	// DefaultPartitionCount is small because a gateway has one disk: each partition is a segment
	// file fsynced in every group commit that has readings for it, and fsyncs take turns across
	// the log, so more partitions buy no write parallelism; they cost fsyncs (CPU, flash wear) and
	// make groups smaller. Measured with edge BenchmarkDevices1000 and
	// BenchmarkSingleClient100InFlight on a 2-core VM (medians of five runs): 1,000 devices reached
	// 83% of the no-persistence ceiling with 2 partitions, 72% with 4 and 70% with 8; one client
	// with 100 readings in flight 42k, 33k and 26k readings/s. Order per device holds with any
	// count, and central re-partitions by device; two edge partitions still forward 0.9M-1.0M
	// readings/s to central (sync/central BenchmarkCatchUp -catchup-partitions 2).
	DefaultPartitionCount      = 2
	DefaultMaxStreams          = 64
	DefaultMaxPendingPerClient = 256
	DefaultDedupeWindow        = 4096
	DefaultConnectTimeout      = 10 * time.Second
	DefaultWriteTimeout        = 30 * time.Second
	// DefaultSessionExpiry was a day; an edge's devices publish, so a session holds little more
	// than QoS 2 PUBRECs awaiting their PUBREL, and an hour covers a device's reconnects.
	DefaultSessionExpiry        = time.Hour
	DefaultMaxSessions          = 10000
	DefaultMaxSessionsPerDevice = 4
)

// ReadConfigFile decodes the YAML file at path into v: a *Config, or a pointer to a struct that
// embeds Config inline, as sync/edgenode's does for the edge node's file. It is the one reader of
// both. Unknown keys are an error naming the key; an empty file leaves v as it was (all
// defaults). The caller sets ConfigDir to the file's folder first, as decoding leaves it alone.
func ReadConfigFile(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	// An empty file decodes as io.EOF and means "all defaults".
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read config %s: %w", filepath.Base(path), err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MQTT.Listen == "" {
		c.MQTT.Listen = DefaultMQTTListen
	}
	if c.MQTT.Listen == "-" {
		c.MQTT.Listen = ""
	}
	if c.Registry == "" && c.DataDir != "" {
		c.Registry = filepath.Join(c.DataDir, "devices.db")
	}
	if c.DefaultStream == "" {
		c.DefaultStream = DefaultStreamName
	}
	if c.DefaultPartitions <= 0 {
		c.DefaultPartitions = DefaultPartitionCount
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxPayloadBytes <= 0 {
		c.MaxPayloadBytes = devices.DefaultMaxPayloadBytes
	}
	c.Sparkplug = c.Sparkplug.withDefaults(c.DefaultPartitions)
	if c.MQTT.ConnectTimeout <= 0 {
		c.MQTT.ConnectTimeout = DefaultConnectTimeout
	}
	if c.MQTT.WriteTimeout <= 0 {
		c.MQTT.WriteTimeout = DefaultWriteTimeout
	}
	if c.MQTT.SessionExpiry <= 0 {
		c.MQTT.SessionExpiry = DefaultSessionExpiry
	}
	if c.MQTT.MaxSessions <= 0 {
		c.MQTT.MaxSessions = DefaultMaxSessions
	}
	if c.MQTT.MaxSessionsPerDevice <= 0 {
		c.MQTT.MaxSessionsPerDevice = DefaultMaxSessionsPerDevice
	}
	if c.MQTT.MaxPacketBytes <= 0 {
		c.MQTT.MaxPacketBytes = c.MaxPayloadBytes + 64<<10
	}
	if c.AnonymousPublish == "" {
		c.AnonymousPublish = "own"
	}
	if c.MaxPendingPerClient <= 0 {
		c.MaxPendingPerClient = DefaultMaxPendingPerClient
	}
	if c.MaxPendingPerClient > 65535 {
		c.MaxPendingPerClient = 65535
	}
	if c.DedupeWindow <= 0 {
		c.DedupeWindow = DefaultDedupeWindow
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 5 * time.Second
	}
	if c.AckLatencyBudget == 0 {
		c.AckLatencyBudget = DefaultAckLatencyBudget
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Source != nil {
		s := *c.Source
		if len(s.Topics) == 0 {
			s.Topics = []string{"devices/#"}
		}
		if s.QoS == 0 {
			s.QoS = 1
		}
		if s.ClientID == "" {
			s.ClientID = "tributary-edge"
			if c.EdgeID != "" {
				s.ClientID += "-" + c.EdgeID
			}
		}
		c.Source = &s
	}
	return c
}

// validate checks a defaulted config and says what to change.
func (c Config) validate() error {
	if c.DataDir == "" {
		return errors.New("no data directory: set --data-dir or data_dir in the config file")
	}
	if _, err := storage.ParseFsyncPolicy(orDefault(c.Fsync, "group")); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	if _, err := storage.ParseQuotaPolicy(orDefault(c.QuotaPolicy, "backpressure")); err != nil {
		return fmt.Errorf("quota_policy: %w", err)
	}
	if err := devices.CheckStream(c.DefaultStream); err != nil {
		return fmt.Errorf("default_stream: %w", err)
	}
	for name, sc := range c.Streams {
		if err := devices.CheckStream(name); err != nil {
			return fmt.Errorf("streams: %w", err)
		}
		if err := sc.Spec.Check(); err != nil {
			return fmt.Errorf("streams.%s: %w", name, err)
		}
		if sc.JSON && sc.Format != "" && sc.Format != format.JSON {
			return fmt.Errorf("streams.%s: json: true and format: %s disagree; keep one", name, sc.Format)
		}
		if sc.Partitions < 0 {
			return fmt.Errorf("streams.%s.partitions: must be positive", name)
		}
	}
	for _, name := range c.JSONStreams {
		if err := devices.CheckStream(name); err != nil {
			return fmt.Errorf("json_streams: %w", err)
		}
	}
	if err := c.Sparkplug.validate(); err != nil {
		return err
	}
	if u := orDefault(c.UndeclaredStreams, "refuse"); u != "refuse" && u != "create" {
		return fmt.Errorf("undeclared_streams %q: want refuse or create", c.UndeclaredStreams)
	}
	if c.AnonymousPublish != "own" && c.AnonymousPublish != "any" {
		return fmt.Errorf("anonymous_publish %q: want own or any", c.AnonymousPublish)
	}
	if c.MQTT.TLSListen != "" && (c.MQTT.TLSCert == "" || c.MQTT.TLSKey == "") {
		return errors.New("mqtt.tls_listen needs mqtt.tls_cert and mqtt.tls_key")
	}
	if c.MQTT.Listen == "" && c.MQTT.TLSListen == "" && c.MQTT.WSListen == "" && c.Source == nil {
		return errors.New("nothing to ingest from: configure an MQTT listener or a source")
	}
	if c.Source != nil {
		if c.Source.Broker == "" {
			return errors.New("source.broker is empty: give the external broker's URL, such as tcp://127.0.0.1:1883")
		}
		if c.Source.QoS > 2 {
			return fmt.Errorf("source.qos %d: want 1 or 2", c.Source.QoS)
		}
	}
	return nil
}

// policy returns the validation policy of a stream.
func (c Config) policy(stream string) devices.Policy {
	p := devices.Policy{MaxPayloadBytes: c.MaxPayloadBytes}
	if sc, ok := c.Streams[stream]; ok {
		p.JSON = sc.JSON || sc.Format == format.JSON
		if sc.MaxPayloadBytes > 0 {
			p.MaxPayloadBytes = sc.MaxPayloadBytes
		}
	}
	for _, s := range c.JSONStreams {
		if s == stream {
			p.JSON = true
		}
	}
	return p
}

// declaredStreams returns the streams devices may publish to when UndeclaredStreams is "refuse";
// nil means any.
func (c Config) declaredStreams() map[string]bool {
	if c.UndeclaredStreams == "create" {
		return nil
	}
	d := map[string]bool{c.DefaultStream: true}
	for name := range c.Streams {
		d[name] = true
	}
	for _, name := range c.JSONStreams {
		d[name] = true
	}
	for _, r := range c.Mapping {
		if r.Stream != "" {
			d[r.Stream] = true
		}
	}
	if c.Sparkplug.enabled() {
		d[c.Sparkplug.Stream] = true
	}
	return d
}

// partitions returns the partition count a stream is created with.
func (c Config) partitions(stream string) int {
	if sc, ok := c.Streams[stream]; ok && sc.Partitions > 0 {
		return sc.Partitions
	}
	if c.Sparkplug.enabled() && stream == c.Sparkplug.Stream {
		return c.Sparkplug.Partitions
	}
	return c.DefaultPartitions
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// DefaultAckLatencyBudget keeps the p99 ack latency within 20ms on a gateway whose fsyncs take a
// few milliseconds, while a 1,000-device fleet at 2k readings/s shares each fsync among ~10
// readings instead of ~3 (the fixed 1ms linger before it). deploy/README.md, "Flash wear", has
// the figures.
const DefaultAckLatencyBudget = 20 * time.Millisecond

// Check validates a config as New would, without opening the log or binding listeners, so an
// operator can test a config before restarting a gateway ("tributary edge --check-config").
func (c Config) Check() error {
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return err
	}
	if _, err := devices.NewMapper(c.Mapping); err != nil {
		return fmt.Errorf("mapping: %w", err)
	}
	if _, err := loadSchemas(c); err != nil {
		return err
	}
	files := []struct{ key, path string }{
		{"mqtt.tls_cert", c.MQTT.TLSCert}, {"mqtt.tls_key", c.MQTT.TLSKey}, {"mqtt.tls_client_ca", c.MQTT.TLSClientCA},
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s: %w", f.key, err)
		}
	}
	if (c.MQTT.TLSListen != "") != (c.MQTT.TLSCert != "" && c.MQTT.TLSKey != "") {
		return errors.New("mqtt.tls_listen needs mqtt.tls_cert and mqtt.tls_key, and they need tls_listen")
	}
	return nil
}

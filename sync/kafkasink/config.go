package kafkasink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	// franz-go: a pure-Go Kafka client with an idempotent producer by default, Kafka's murmur2
	// partitioner, and an in-process fake cluster (kfake) the tests run against.
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/tributary-iot/tributary/devices/certreload"
)

// Config configures a [Sink]. It is meant to sit under `sinks: kafka:` in central's YAML config;
// the zero value of each field means its default.
type Config struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string `yaml:"brokers"`
	// Topic is the Kafka topic to produce to. It must exist; give it as many partitions as the
	// central stream has, and every device lands on the same partition number as on central.
	Topic string `yaml:"topic"`
	// Stream is the central stream to export; default "readings".
	Stream string `yaml:"stream"`
	// Cursor names the sink's cursor in the central log; default "kafka-sink". Retention keeps
	// every record this cursor has not passed. Two sinks exporting to different topics need
	// different cursor names.
	Cursor string `yaml:"cursor"`
	// ClientID is the Kafka client id; default "tributary-central".
	ClientID string `yaml:"client_id"`
	// MaxBufferedRecords bounds records produced but not yet acknowledged by Kafka; default 10000.
	MaxBufferedRecords int `yaml:"max_buffered_records"`
	// CheckpointInterval is how often the sink waits for Kafka to acknowledge everything sent and
	// then stores its cursor. Longer means fewer metadata writes and a longer scan of Kafka's tail
	// after a crash; it never affects correctness. Default 1s.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// MaxRetryBackoff caps the wait between attempts while Kafka is unreachable; default 30s.
	MaxRetryBackoff time.Duration `yaml:"max_retry_backoff"`
	// ScanTimeout bounds the read of Kafka's tail at start and after an error; default 2m.
	ScanTimeout time.Duration `yaml:"scan_timeout"`

	// ConfluentFraming prefixes the values of readings checked against a schema (protobuf, Avro,
	// JSON Schema streams) with the Confluent wire format: magic byte 0, the 4-byte schema id
	// central's registry serves the schema under and, for protobuf, the message index. Standard
	// Schema Registry deserializers then decode them. Other values pass unchanged.
	ConfluentFraming bool `yaml:"confluent_framing"`
	// SchemaKnown tells whether central's registry serves a schema id yet. With framing on, the
	// sink holds a value back until its schema is served: the edge forwards its schemas stream
	// and its readings independently, and a value in Kafka whose id the registry does not know
	// fails Schema Registry deserializers. Central sets it; nil produces at once.
	SchemaKnown func(ctx context.Context, id int32) (bool, error) `yaml:"-"`

	TLS  *TLSConfig  `yaml:"tls"`
	SASL *SASLConfig `yaml:"sasl"`

	// Logger receives the sink's logs; nil discards them.
	Logger *slog.Logger `yaml:"-"`
	// KafkaOptions are appended to the client options the sink builds, for what the YAML cannot
	// say (a custom dialer, a kgo logger).
	KafkaOptions []kgo.Opt `yaml:"-"`
}

// TLSConfig enables TLS to the brokers. An empty CAFile uses the system roots.
type TLSConfig struct {
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"` // client certificate, for mTLS
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

// SASLConfig authenticates to the brokers.
type SASLConfig struct {
	Mechanism string `yaml:"mechanism"` // plain, scram-sha-256 or scram-sha-512
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// Defaults.
const (
	DefaultStream             = "readings"
	DefaultCursor             = "kafka-sink"
	DefaultClientID           = "tributary-central"
	DefaultMaxBufferedRecords = 10000
	DefaultCheckpointInterval = time.Second
	DefaultMaxRetryBackoff    = 30 * time.Second
	DefaultScanTimeout        = 2 * time.Minute
)

func (c Config) withDefaults() Config {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Cursor == "" {
		c.Cursor = DefaultCursor
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.MaxBufferedRecords <= 0 {
		c.MaxBufferedRecords = DefaultMaxBufferedRecords
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.MaxRetryBackoff <= 0 {
		c.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	if c.ScanTimeout <= 0 {
		c.ScanTimeout = DefaultScanTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("sinks.kafka.brokers is empty: list at least one broker as host:port")
	}
	if c.Topic == "" {
		return errors.New("sinks.kafka.topic is empty: name the Kafka topic to produce to")
	}
	if c.SASL != nil {
		switch strings.ToLower(c.SASL.Mechanism) {
		case "plain", "scram-sha-256", "scram-sha-512":
		default:
			return fmt.Errorf("sinks.kafka.sasl.mechanism %q: use plain, scram-sha-256 or scram-sha-512", c.SASL.Mechanism)
		}
	}
	if c.TLS != nil && (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("sinks.kafka.tls: cert_file and key_file go together")
	}
	return nil
}

// clientOptions are the options shared by the producer and the tail scanner.
func (c Config) clientOptions() ([]kgo.Opt, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.ClientID(c.ClientID)}
	if c.TLS != nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLS.ServerName}
		if c.TLS.CAFile != "" {
			pem, err := os.ReadFile(c.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read kafka CA file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("kafka CA file %s holds no PEM certificate", c.TLS.CAFile)
			}
		}
		if c.TLS.CertFile != "" {
			// Read again when the files change: a renewed certificate is offered from the next
			// connection to a broker on, without a restart.
			cert, err := certreload.New(certreload.Options{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile,
				CertName: "sinks.kafka.tls.cert_file", KeyName: "sinks.kafka.tls.key_file", Listener: "kafka sink", Logger: c.Logger})
			if err != nil {
				return nil, fmt.Errorf("load kafka client certificate: %w", err)
			}
			tc.GetClientCertificate = cert.GetClientCertificate
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if c.SASL != nil {
		switch strings.ToLower(c.SASL.Mechanism) {
		case "plain":
			opts = append(opts, kgo.SASL(plain.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsMechanism()))
		case "scram-sha-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha256Mechanism()))
		case "scram-sha-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha512Mechanism()))
		}
	}
	return append(opts, c.KafkaOptions...), nil
}

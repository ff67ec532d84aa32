package central

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/kafkaserve"
)

// KafkaListener is central.yaml's `kafka:` section: central's streams served on Kafka's wire
// protocol, read-only, for Kafka tools and clients.
type KafkaListener struct {
	// Listen is the address, e.g. 127.0.0.1:9092; empty means no Kafka listener.
	Listen string `yaml:"listen"`
	// Advertise is the host:port given to clients in Metadata; empty means the address each
	// client connected to. Set it when clients reach central through NAT or a proxy.
	Advertise string `yaml:"advertise"`
	// Compression of served batches: none (default) or zstd.
	Compression string `yaml:"compression"`
}

// tokenUsers lets any SASL user name log in with central's API token as the password; the name
// only labels the client in central's log.
type tokenUsers string

func (t tokenUsers) Password(user string) (string, bool) { return string(t), user != "" }

// listenKafka opens the Kafka listener when configured. Its security follows central's: TLS
// when central has a certificate, SASL when central has an API token, and a non-loopback
// address only with a token, and with TLS or --insecure.
func listenKafka(cfg Config, log *storage.Log, tcfg *tls.Config, logger *slog.Logger) (*kafkaserve.Server, net.Listener, error) {
	k := cfg.Kafka
	if k.Listen == "" {
		return nil, nil, nil
	}
	if !IsLoopback(k.Listen) {
		if cfg.APIToken == "" {
			return nil, nil, fmt.Errorf("refusing the Kafka listener on %s, which is not a loopback address, without credentials: anyone could read every reading. Set --api-token (clients log in with SASL PLAIN or SCRAM-SHA-256, password = the token) or listen on 127.0.0.1", k.Listen)
		}
		if tcfg == nil && !cfg.Insecure {
			return nil, nil, fmt.Errorf("refusing the Kafka listener on %s without TLS: the API token would travel in clear. Give --tls-cert and --tls-key, or --insecure if a trusted proxy terminates TLS", k.Listen)
		}
	}
	sc := kafkaserve.Config{Log: log, Advertise: k.Advertise, Compression: k.Compression, Logger: logger.With("component", "kafka")}
	if cfg.APIToken != "" {
		sc.Users = tokenUsers(cfg.APIToken)
	}
	if tcfg != nil {
		t := tcfg.Clone()
		t.NextProtos = nil
		// Consumers log in with SASL, not edge certificates: no client CA, not even the one
		// certreload's GetConfigForClient would serve. The certificate still follows renewals.
		t.ClientAuth, t.ClientCAs, t.GetConfigForClient = tls.NoClientCert, nil, nil
		sc.TLS = t
	}
	srv, err := kafkaserve.New(sc)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", k.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen for Kafka clients on %s: %w", k.Listen, err)
	}
	return srv, ln, nil
}

// serveKafka runs srv until ctx ends.
func serveKafka(ctx context.Context, srv *kafkaserve.Server, ln net.Listener) error {
	if err := srv.Serve(ctx, ln); err != nil {
		return fmt.Errorf("kafka listener: %w", err)
	}
	return nil
}

package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tributary-iot/tributary/edge"
	"github.com/tributary-iot/tributary/edge/status"
	"github.com/tributary-iot/tributary/sync/edgenode"
	"github.com/tributary-iot/tributary/sync/forward"
)

// edgeFlags are the flags of "tributary edge"; each one set on the command line overrides the
// config file.
type edgeFlags struct {
	config         string
	dataDir        string
	mqttListen     string
	httpListen     string
	httpToken      string
	httpTLSCert    string
	httpTLSKey     string
	httpClientCA   string
	central        string
	edgeID         string
	allowAnonymous bool
	fsync          string
	logLevel       string
	tokenFile      string
	centralCA      string
	backoffMax     time.Duration
	checkConfig    bool
	pprofListen    string
	// httpDefaulted is set when neither the file nor the flags chose an HTTP address, so the
	// edge serves on edge.DefaultHTTPListen if that port is free.
	httpDefaulted bool
}

func newEdgeCmd() *cobra.Command {
	f := &edgeFlags{}
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run the edge agent: an MQTT broker that stores every reading durably before acking it",
		Long: `Run the edge agent on a gateway. Devices publish readings over MQTT to devices/<id>/<stream>;
each reading is appended to a partitioned log in the data directory and acknowledged (QoS 1/2) only once
it is on disk. With --central, the agent forwards the log to the central node; without it, it only logs.

Devices authenticate with credentials from the registry (tributary devices add). Clients without
credentials are accepted only while every MQTT listener is on loopback, unless allow_anonymous is set.

Flags override the config file (--config, YAML). SIGTERM or SIGINT stops the agent gracefully: new
connections are refused, pending acks are sent, the broker closes, then the log.`,
		Example: `  tributary edge --data-dir /var/lib/tributary --mqtt-listen 0.0.0.0:1883 --edge-id gw-7 \
      --central https://central.example:7443 --http-listen 0.0.0.0:9464
  tributary edge --config /etc/tributary/edge.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.load(cmd)
			if err != nil {
				return err
			}
			if f.checkConfig {
				if err := cfg.Check(); err != nil {
					return fmt.Errorf("config is not valid: %w", err)
				}
				fmt.Fprintln(cmd.OutOrStdout(), "config OK")
				return nil
			}
			logger, err := newLogger(f.logLevel)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if f.httpDefaulted {
				cfg.HTTPListen = defaultHTTPListen(logger)
			}
			cfg.AutoMemoryLimit = autoMemoryLimit()
			if f.pprofListen != "" {
				stopPprof, err := servePprof(f.pprofListen, logger)
				if err != nil {
					return err
				}
				defer stopPprof()
			}
			cfg.Logger = logger
			cfg.Version = currentBuildInfo().Version
			node, err := edgenode.New(cfg)
			if err != nil {
				return err
			}
			return node.Run(ctx)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "YAML config file; flags given on the command line override it")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the log and the device registry (devices.db)")
	fl.StringVar(&f.mqttListen, "mqtt-listen", "", `MQTT TCP listen address (default "`+edge.DefaultMQTTListen+`"; "-" disables)`)
	fl.StringVar(&f.httpListen, "http-listen", "", `address for /metrics, /healthz and /readyz (default "`+edge.DefaultHTTPListen+`"; "off" disables)`)
	fl.StringVar(&f.httpToken, "http-token-file", "", "file holding the token that guards the status page at / on --http-listen (without one it is served to loopback clients only; or set "+status.TokenEnv+")")
	fl.StringVar(&f.httpTLSCert, "http-tls-cert", "", "PEM certificate: serve --http-listen over HTTPS only (with --http-tls-key; like central's --tls-cert)")
	fl.StringVar(&f.httpTLSKey, "http-tls-key", "", "PEM private key of --http-tls-cert")
	fl.StringVar(&f.httpClientCA, "http-client-ca", "", "PEM CA bundle: require clients of --http-listen (Prometheus, browsers) to present a certificate signed by it (mTLS)")
	fl.StringVar(&f.central, "central", "", "URL of the central node; empty means no forwarding, log only")
	fl.StringVar(&f.edgeID, "edge-id", "", "this gateway's id at central (needed with --central)")
	fl.BoolVar(&f.allowAnonymous, "allow-anonymous", false, "accept clients without credentials on non-loopback listeners too")
	fl.StringVar(&f.fsync, "fsync", "", "fsync policy: group (default; ack means durable), interval or none")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.tokenFile, "central-token-file", "", "file holding this edge's token from 'tributary central edges add ID' (or set "+edgenode.TokenEnv+")")
	fl.BoolVar(&f.checkConfig, "check-config", false, "validate the configuration (file and flags) and exit")
	fl.StringVar(&f.centralCA, "central-ca", "", "PEM bundle to trust for central's TLS certificate instead of the system roots")
	fl.StringVar(&f.pprofListen, "pprof-listen", "", "serve Go's runtime profiles (heap, goroutines, CPU) under /debug/pprof/ on this loopback address, for profiling; off by default")
	fl.DurationVar(&f.backoffMax, "forward-backoff-max", 0, "longest wait between retries while central is unreachable, so the longest until forwarding resumes after central returns (default "+forward.DefaultBackoffMax.String()+")")
	return cmd
}

// load reads the config file, then applies the flags the user set.
func (f *edgeFlags) load(cmd *cobra.Command) (edgenode.Config, error) {
	var cfg edgenode.Config
	if f.config != "" {
		c, err := edgenode.LoadConfig(f.config)
		if err != nil {
			return cfg, err
		}
		cfg = c
	}
	set := func(name string, dst *string, v string) {
		if cmd.Flags().Changed(name) {
			*dst = v
		}
	}
	set("data-dir", &cfg.DataDir, f.dataDir)
	set("mqtt-listen", &cfg.MQTT.Listen, f.mqttListen)
	set("http-listen", &cfg.HTTPListen, f.httpListen)
	set("http-token-file", &cfg.HTTPTokenFile, f.httpToken)
	set("http-tls-cert", &cfg.HTTPTLSCert, f.httpTLSCert)
	set("http-tls-key", &cfg.HTTPTLSKey, f.httpTLSKey)
	set("http-client-ca", &cfg.HTTPClientCA, f.httpClientCA)
	set("central", &cfg.Central, f.central)
	set("edge-id", &cfg.EdgeID, f.edgeID)
	set("fsync", &cfg.Fsync, f.fsync)
	set("central-token-file", &cfg.Forward.TokenFile, f.tokenFile)
	set("central-ca", &cfg.Forward.CAFile, f.centralCA)
	if cfg.HTTPListen == "" {
		// With a certificate the operator asked for the listener: a busy default port fails the
		// start instead of turning it off.
		cfg.HTTPListen, f.httpDefaulted = edge.DefaultHTTPListen, cfg.HTTPTLSCert == ""
	}
	if cmd.Flags().Changed("forward-backoff-max") {
		cfg.Forward.BackoffMax = f.backoffMax
	}
	if cmd.Flags().Changed("allow-anonymous") {
		cfg.AllowAnonymous = f.allowAnonymous
	}
	if cfg.Central != "" && cfg.EdgeID == "" {
		return cfg, fmt.Errorf("--central is set but --edge-id is not: give this gateway an id, such as --edge-id %s", hostnameOr("gw-1"))
	}
	return cfg, nil
}

// defaultHTTPListen returns edge.DefaultHTTPListen when its port is free, and "off" with a warning
// when it is not (a second edge on one machine, say): a listener nobody asked for must not stop the
// agent from starting, but the operator learns why /metrics is missing. An address the operator
// chose is never replaced: a busy one fails the start.
func defaultHTTPListen(logger *slog.Logger) string {
	ln, err := net.Listen("tcp", edge.DefaultHTTPListen)
	if err != nil {
		logger.Warn("default HTTP address is in use; /metrics, /healthz and /readyz are off: choose one with --http-listen ADDR (or http_listen in the config)",
			"addr", edge.DefaultHTTPListen, "err", err)
		return "off"
	}
	ln.Close()
	return edge.DefaultHTTPListen
}

func hostnameOr(d string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return d
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// Package edgenode assembles the edge node: the edge agent (MQTT broker and durable log, package
// edge), the forwarder that reads the agent's log and sends it to central when a central URL is
// configured (package sync/forward), and the status page on the agent's HTTP listener (package
// edge/status, at / beside /metrics). It has the shape of sync/central: a [Config] read from
// YAML with its defaults and validation, [New], and [Node.Run]. cmd/tributary only parses flags
// into a Config.
//
// It is the one sync package that imports edge, and only to assemble the process: the sync
// protocol itself (forward, receive, protocol) knows nothing of the agent, only of the storage
// log they share.
package edgenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/edge"
	"github.com/tributary-iot/tributary/edge/status"
	"github.com/tributary-iot/tributary/sync/forward"
)

// Config is the edge node's configuration: the YAML file's schema, and what "tributary edge"
// flags override. The agent's settings sit at the top level of the file (edge.Config, inline);
// central and forward configure forwarding. Logger (in edge.Config) is shared: nil discards.
type Config struct {
	edge.Config `yaml:",inline"`
	// Central is the URL of the central node; empty means no forwarding: the agent only logs.
	Central string `yaml:"central"`
	// Forward configures forwarding to central; it is read only when Central is set.
	Forward ForwardConfig `yaml:"forward"`
	// HTTPTokenFile holds the token that guards the status page at / on HTTPListen (a login form
	// for browsers, "Authorization: Bearer" for scripts). Without one the page is served to
	// loopback clients only. /metrics, /healthz and /readyz stay open as before.
	HTTPTokenFile string `yaml:"http_token_file"`
	// HTTPTLSCert and HTTPTLSKey, a PEM certificate and its private key, serve HTTPListen over
	// TLS only, as central's tls_cert and tls_key do its listener: read again when they change,
	// so a renewed certificate takes no restart. HTTPClientCA, a PEM bundle as central's client_ca, then
	// requires every client of the listener (Prometheus and browsers too) to present a
	// certificate signed by it; without a token such a client is let in to the status page.
	HTTPTLSCert  string `yaml:"http_tls_cert"`
	HTTPTLSKey   string `yaml:"http_tls_key"`
	HTTPClientCA string `yaml:"http_client_ca"`
	// StatusResolution is the interval of the status page's plots (default 10s); the page keeps
	// one hour of them.
	StatusResolution time.Duration `yaml:"status_resolution"`

	// Version is the build's version, shown on the status page.
	Version string `yaml:"-"`
}

// ForwardConfig is how this edge reaches central.
type ForwardConfig struct {
	// Token authenticates this edge; it is printed once by "tributary central edges add ID".
	// TokenFile reads it from a file instead (preferred: it keeps the token out of the config and
	// of process listings). Without either, the TokenEnv environment variable is read.
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// CAFile is a PEM bundle to trust for central's certificate instead of the system roots;
	// CertFile and KeyFile are this edge's client certificate when central requires mTLS.
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// InFlight is how many chunks one partition may have unanswered (default 4); raise it on
	// links with long round trips.
	InFlight int `yaml:"in_flight"`
	// BandwidthBytesPerSec caps the bytes sent to central, all partitions together; 0 is no cap.
	BandwidthBytesPerSec int64 `yaml:"bandwidth_bytes_per_sec"`
	// BackoffMax caps the wait between retries while central is unreachable or refuses, so it
	// is the longest the edge takes to notice central is back; 0 means the forwarder's default
	// (forward.DefaultBackoffMax). Longer spares a central that a large fleet retries against.
	BackoffMax time.Duration `yaml:"backoff_max"`
}

// TokenEnv lets service managers pass the edge token without a file or a flag.
const TokenEnv = "TRIBUTARY_EDGE_TOKEN"

// LoadConfig reads a YAML config file. Unknown keys are an error; an empty file means all defaults.
func LoadConfig(path string) (Config, error) {
	var c Config
	c.ConfigDir = filepath.Dir(path) // stream schema files are relative to the config's folder
	err := edge.ReadConfigFile(path, &c)
	return c, err
}

// validate checks what the node adds to the agent's config (which edge.New checks).
func (c Config) validate() error {
	if c.Central != "" && c.EdgeID == "" {
		return errors.New("central is set but edge_id is not: give this gateway an id (edge_id in the config, or --edge-id)")
	}
	if c.Forward.BackoffMax < 0 {
		return fmt.Errorf("forward.backoff_max %v: want a positive duration such as 3s, or 0 for the default", c.Forward.BackoffMax)
	}
	return c.validateHTTPTLS()
}

// Check validates a config as New would, without opening the log or binding listeners, so an
// operator can test a config before restarting a gateway ("tributary edge --check-config").
func (c Config) Check() error {
	if err := c.Config.Check(); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	files := []struct{ key, path string }{
		{"http_token_file", c.HTTPTokenFile}, {"forward.token_file", c.Forward.TokenFile}, {"forward.ca_file", c.Forward.CAFile},
		{"forward.cert_file", c.Forward.CertFile}, {"forward.key_file", c.Forward.KeyFile},
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s: %w", f.key, err)
		}
	}
	_, err := c.httpTLS()
	return err
}

// Node is the edge process: the agent, the forwarder on its log when Central is set, and the
// status page on the agent's HTTP listener.
type Node struct {
	agent *edge.Agent
	fwd   *forward.Forwarder // nil without Central
	page  *status.Page       // the status page at / on the HTTP listener; nil when it is off
}

// New validates cfg, opens the agent (its log, registry and listeners; Run serves them), builds
// the forwarder when Central is set and the status page when the HTTP listener is on. The token is read here so a missing one fails the start.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
		cfg.Logger = logger
	}
	var token string
	var err error
	if cfg.Central != "" {
		if token, err = edgeToken(cfg.Forward); err != nil {
			return nil, err
		}
	}
	// The certificate is loaded before the log opens, so a wrong one fails the start at once.
	if cfg.HTTPTLS, err = cfg.httpTLS(); err != nil {
		return nil, err
	}
	agent, err := edge.New(cfg.Config)
	if err != nil {
		return nil, err
	}
	n := &Node{agent: agent}
	if cfg.Central != "" {
		n.fwd, err = forward.New(agent.Log(), forward.Config{
			CentralURL: cfg.Central, EdgeID: cfg.EdgeID, Version: cfg.Version, Token: token, TokenFile: tokenFile(cfg.Forward),
			CAFile: cfg.Forward.CAFile, CertFile: cfg.Forward.CertFile, KeyFile: cfg.Forward.KeyFile,
			InFlight: cfg.Forward.InFlight, BandwidthBytesPerSec: cfg.Forward.BandwidthBytesPerSec,
			BackoffMax: cfg.Forward.BackoffMax, Logger: logger.With("component", "forwarder"), Registerer: agent.Registerer(),
		})
		if err != nil {
			agent.Close()
			return nil, err
		}
	}
	if edge.HTTPEnabled(cfg.HTTPListen) {
		if n.page, err = newStatusPage(cfg, n, logger); err != nil {
			agent.Close()
			return nil, err
		}
		agent.HandleHTTP("/", n.page)
	}
	return n, nil
}

// newStatusPage builds the edge's status page over the agent, its log and the forwarder.
func newStatusPage(cfg Config, n *Node, logger *slog.Logger) (*status.Page, error) {
	token, err := status.LoadToken(cfg.HTTPTokenFile)
	if err != nil {
		return nil, err
	}
	warnExposure(cfg, token, logger)
	sc := status.Config{EdgeID: cfg.EdgeID, Version: cfg.Version, Clients: n.agent, Log: n.agent.Log(),
		QuotaBytes: cfg.QuotaBytes, QuotaPolicy: cfg.QuotaPolicy, Token: token, Resolution: cfg.StatusResolution, Logger: logger.With("component", "status")}
	if n.fwd != nil {
		sc.Central, sc.Forwarding = cfg.Central, func() status.Forwarding { return forwarding(n.fwd) }
	}
	return status.New(sc)
}

// forwarding hands the forwarder's lanes to the status page, which knows nothing of sync.
func forwarding(f *forward.Forwarder) status.Forwarding {
	lanes := f.Status()
	out := status.Forwarding{TokenRefused: f.TokenRefused(), Lanes: make([]status.Lane, 0, len(lanes))}
	for _, l := range lanes {
		out.Lanes = append(out.Lanes, status.Lane{Stream: l.Stream, Partition: l.Partition, End: l.End, Acked: l.Acked,
			Connected: l.Connected, Stalled: l.Stalled, LastError: l.LastError})
	}
	return out
}

// Agent is the node's edge agent, for the addresses it bound and its log.
func (n *Node) Agent() *edge.Agent { return n.agent }

// Forwarder is the node's forwarder, for its status; nil when Central is not set.
func (n *Node) Forwarder() *forward.Forwarder { return n.fwd }

// tokenFile is the file the forwarder watches for a rotated token: forward.token_file when
// the token comes from it, none when a token is given inline.
func tokenFile(f ForwardConfig) string {
	if f.Token != "" {
		return ""
	}
	return f.TokenFile
}

func edgeToken(f ForwardConfig) (string, error) {
	switch {
	case f.Token != "":
		return f.Token, nil
	case f.TokenFile != "":
		b, err := os.ReadFile(f.TokenFile)
		if err != nil {
			return "", fmt.Errorf("read edge token: %w", err)
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
		return "", fmt.Errorf("edge token file %s is empty: put the token from 'tributary central edges add ID' in it", f.TokenFile)
	case os.Getenv(TokenEnv) != "":
		return strings.TrimSpace(os.Getenv(TokenEnv)), nil
	}
	return "", errors.New("forwarding to central needs this edge's token: run 'tributary central edges add EDGE-ID' at central, " +
		"then pass it with --central-token-file FILE (or forward.token_file in the config, or " + TokenEnv + ")")
}

// Run serves until ctx ends. The forwarder stops first, so it never reads a closed log; then the
// agent drains pending acks, closes the broker and closes the log last.
func (n *Node) Run(ctx context.Context) error {
	if n.page != nil {
		pageCtx, stopPage := context.WithCancel(ctx)
		defer stopPage()
		go n.page.Run(pageCtx)
	}
	if n.fwd == nil {
		return n.agent.Run(ctx)
	}
	agentCtx, stopAgent := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAgent()
	fwdErr := make(chan error, 1)
	go func() {
		err := n.fwd.Run(ctx)
		if errors.Is(err, context.Canceled) {
			err = nil
		}
		fwdErr <- err
		stopAgent()
	}()
	err := n.agent.Run(agentCtx)
	stopAgent()
	if ferr := <-fwdErr; err == nil && ferr != nil {
		err = fmt.Errorf("forwarder: %w", ferr)
	}
	return err
}

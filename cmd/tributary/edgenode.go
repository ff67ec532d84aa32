package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/tributary-iot/tributary/edge"
	"github.com/tributary-iot/tributary/edge/status"
	"github.com/tributary-iot/tributary/sync/forward"
)

// edgeNode is the edge process: the agent (broker + log) and, when a central URL is configured,
// the forwarder reading the agent's log. Both "tributary edge" and "tributary demo" run one.
type edgeNode struct {
	agent *edge.Agent
	fwd   *forward.Forwarder // nil without --central
	page  *status.Page       // the status page at / on the HTTP listener; nil when it is off
}

// tokenEnv lets service managers pass the edge token without a file or a flag.
const tokenEnv = "TRIBUTARY_EDGE_TOKEN"

func newEdgeNode(cfg edge.Config, logger *slog.Logger) (*edgeNode, error) {
	var token string
	if cfg.Central != "" {
		var err error
		if token, err = edgeToken(cfg.Forward); err != nil {
			return nil, err
		}
	}
	agent, err := edge.New(cfg, logger)
	if err != nil {
		return nil, err
	}
	n := &edgeNode{agent: agent}
	if cfg.Central != "" {
		n.fwd = forward.New(agent.Log(), forward.Config{
			CentralURL: cfg.Central, EdgeID: cfg.EdgeID, Token: token, TokenFile: tokenFile(cfg.Forward),
			CAFile: cfg.Forward.CAFile, CertFile: cfg.Forward.CertFile, KeyFile: cfg.Forward.KeyFile,
			InFlight: cfg.Forward.InFlight, BandwidthBytesPerSec: cfg.Forward.BandwidthBytesPerSec,
			BackoffMax: cfg.Forward.BackoffMax, Logger: logger.With("component", "forwarder"), Registerer: agent.Registerer(),
		})
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
func newStatusPage(cfg edge.Config, n *edgeNode, logger *slog.Logger) (*status.Page, error) {
	token, err := status.LoadToken(cfg.HTTPTokenFile)
	if err != nil {
		return nil, err
	}
	if token == "" && !status.IsLoopback(cfg.HTTPListen) {
		logger.Warn("the status page on the HTTP listener is served to this machine only: set http_token_file to open it to the network",
			"http_listen", cfg.HTTPListen)
	}
	sc := status.Config{EdgeID: cfg.EdgeID, Version: currentBuildInfo().Version, Clients: n.agent, Log: n.agent.Log(),
		QuotaBytes: cfg.QuotaBytes, QuotaPolicy: cfg.QuotaPolicy, Token: token, Logger: logger.With("component", "status")}
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

// tokenFile is the file the forwarder watches for a rotated token: forward.token_file when
// the token comes from it, none when a token is given inline.
func tokenFile(f edge.ForwardConfig) string {
	if f.Token != "" {
		return ""
	}
	return f.TokenFile
}

func edgeToken(f edge.ForwardConfig) (string, error) {
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
	case os.Getenv(tokenEnv) != "":
		return strings.TrimSpace(os.Getenv(tokenEnv)), nil
	}
	return "", errors.New("forwarding to central needs this edge's token: run 'tributary central edges add EDGE-ID' at central, " +
		"then pass it with --central-token-file FILE (or forward.token_file in the config, or " + tokenEnv + ")")
}

// Run serves until ctx ends. The forwarder stops first, so it never reads a closed log; then the
// agent drains pending acks, closes the broker and closes the log last.
func (n *edgeNode) Run(ctx context.Context) error {
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

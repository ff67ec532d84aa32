package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"
	// x/term tells a terminal from a file or pipe on every platform the binaries build for.
	"golang.org/x/term"
	// yaml.v3 reads --config files; flags given on the command line override them.
	"gopkg.in/yaml.v3"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/receive"
)

func newCentralCmd() *cobra.Command {
	var cfg central.Config
	var configFile string
	cmd := &cobra.Command{
		Use:   "central --data-dir DIR --listen ADDR [--config F]",
		Short: "Run the central node: receive edges' readings exactly once and serve the merged stream",
		Long: `Run the central node. Edges forward their logs to it over HTTP(S); central checks every
chunk, stores each reading exactly once in its own log (re-partitioned by device, with provenance
headers), and serves consumers (tributary consume), the edges view (tributary edges) and
Prometheus metrics (/metrics) on the same listener.

A listener on a non-loopback address needs TLS (--tls-cert, --tls-key), or --insecure when a
trusted proxy terminates TLS. --client-ca additionally requires edges to present a client
certificate (mTLS). Edges authenticate with a token from "tributary central edges add ID".`,
		Example: `  tributary central edges add gw-17 --data-dir central-data
  tributary central --data-dir central-data --listen 127.0.0.1:7443
  tributary central --data-dir /var/lib/tributary --listen :7443 --tls-cert c.pem --tls-key k.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			merged, err := loadCentralConfig(configFile, cmd, cfg)
			if err != nil {
				return err
			}
			merged.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			node, err := central.New(merged)
			if err != nil {
				return err
			}
			return node.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML file with the same keys as the flags (data-dir, listen, tls-cert, ...)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory of central's log")
	f.StringVar(&cfg.Listen, "listen", "", "address to serve edges, consumers and /metrics on, e.g. 127.0.0.1:7443")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate for TLS")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key for TLS")
	f.StringVar(&cfg.ClientCA, "client-ca", "", "PEM CA bundle: require edge client certificates signed by it (mTLS)")
	f.BoolVar(&cfg.Insecure, "insecure", false, "allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy)")
	f.IntVar(&cfg.Partitions, "partitions", 0, fmt.Sprintf("partitions of central streams created from now on (default %d)", central.DefaultPartitions))
	f.StringVar(&cfg.APIToken, "api-token", "", "require this bearer token on the consume, groups and edges API (visible in ps: prefer --api-token-file or "+central.APITokenEnv+")")
	f.StringVar(&cfg.APITokenFile, "api-token-file", "", "file holding the API token (required with a non-loopback --listen unless --client-ca is set)")
	f.IntVar(&cfg.MaxConnections, "max-connections", 0, fmt.Sprintf("open connections the listener accepts at most (default %d)", central.DefaultMaxConnections))
	f.IntVar(&cfg.MaxStreams, "max-streams", 0, fmt.Sprintf("streams edges may create at central; a chunk for one more is refused (default %d)", central.DefaultMaxStreams))
	f.StringVar(&cfg.Fsync, "fsync", "group", "fsync policy of central's log: group, interval or none")
	f.StringVar(&cfg.Kafka.Listen, "kafka-listen", "", "also serve the streams to Kafka clients (kcat, librdkafka, ...) on this address, read-only, e.g. 127.0.0.1:9092")
	f.Int64Var(&cfg.QuotaBytes, "quota-bytes", 0, "disk quota of central's log; when full, edges are told to retry later (0: none)")
	cmd.AddCommand(newCentralEdgesCmd())
	return cmd
}

// loadCentralConfig reads the YAML file, then lets every flag set on the command line win.
func loadCentralConfig(path string, cmd *cobra.Command, flags central.Config) (central.Config, error) {
	var cfg central.Config // New fills in what neither the file nor a flag sets
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true) // a misspelt key is an error, not a silently ignored setting
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return cfg, fmt.Errorf("parse config %s: %w", path, err)
		}
	}
	set := func(name string, apply func()) {
		if path == "" || cmd.Flags().Changed(name) {
			apply()
		}
	}
	set("data-dir", func() { cfg.DataDir = flags.DataDir })
	set("listen", func() { cfg.Listen = flags.Listen })
	set("tls-cert", func() { cfg.TLSCert = flags.TLSCert })
	set("tls-key", func() { cfg.TLSKey = flags.TLSKey })
	set("client-ca", func() { cfg.ClientCA = flags.ClientCA })
	set("insecure", func() { cfg.Insecure = flags.Insecure })
	set("partitions", func() { cfg.Partitions = flags.Partitions })
	set("api-token", func() { cfg.APIToken = flags.APIToken })
	set("api-token-file", func() { cfg.APITokenFile = flags.APITokenFile })
	set("max-connections", func() { cfg.MaxConnections = flags.MaxConnections })
	if cfg.APIToken == "" && cfg.APITokenFile == "" {
		cfg.APIToken = strings.TrimSpace(os.Getenv(central.APITokenEnv))
	}
	set("max-streams", func() { cfg.MaxStreams = flags.MaxStreams })
	set("fsync", func() { cfg.Fsync = flags.Fsync })
	set("quota-bytes", func() { cfg.QuotaBytes = flags.QuotaBytes })
	set("kafka-listen", func() { cfg.Kafka.Listen = flags.Kafka.Listen })
	return cfg, nil
}

func newCentralEdgesCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "edges",
		Short: "Register, list and revoke the edges allowed to forward to this central",
		Long: `Register, list and revoke edges. "add" prints the edge's token once; central stores only its
SHA-256 hash. Works whether or not central is running: a running central is reached through its
admin socket in the data directory, and changes apply at once.`,
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", "", "central's data directory")
	withAdmin := func(fn func(c *http.Client) error, offline func(log *storage.Log) error) error {
		if dataDir == "" {
			return errors.New("no data directory: pass --data-dir DIR (central's)")
		}
		if c, ok := central.AdminClient(dataDir); ok {
			return fn(c)
		}
		log, err := storage.Open(dataDir, nil)
		if err != nil {
			return err
		}
		defer log.Close()
		return offline(log)
	}
	var rotate bool
	add := &cobra.Command{
		Use:   "add ID",
		Short: "Register an edge and print its token (--rotate: issue a registered edge a new one)",
		Long: `Register an edge and print its token, once. An id that is already registered is refused,
because a new token locks out the edge that uses the current one. --rotate issues a registered
edge a new token (and re-activates a revoked one): its old token is refused from then on, so put
the new one in the edge's token file, which a running edge reads again within seconds.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var token string
			path := "/edges/" + url.PathEscape(args[0])
			issue := receive.AddEdge
			if rotate {
				path += "?rotate=1"
				issue = receive.RotateEdge
			}
			err := withAdmin(func(c *http.Client) error {
				var out map[string]string
				err := central.AdminDo(c, http.MethodPost, path, &out)
				token = out["token"]
				return err
			}, func(log *storage.Log) error {
				var err error
				token, _, err = issue(log, args[0])
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), token)
			// Where the token went: on a terminal it is the line above; redirected, it is in
			// the file or pipe standard output goes to.
			where := "above"
			if !isTerminal(cmd.OutOrStdout()) {
				where = "written to standard output"
			}
			if rotate {
				fmt.Fprintf(cmd.ErrOrStderr(), "edge %s has a new token (%s, shown once); its old token is refused from now on. Write it to the edge's\n"+
					"token file (--central-token-file or forward.token_file): a running edge reads it again within seconds, no restart needed\n", args[0], where)
				return nil
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "edge %s registered; its token (%s) is shown once: save it in a file on the gateway and run\n  tributary edge --edge-id %s --central URL --central-token-file FILE\n", args[0], where, args[0])
			return nil
		},
	}
	add.Flags().BoolVar(&rotate, "rotate", false, "issue a registered edge a new token; its current token stops working")
	list := &cobra.Command{
		Use:   "list",
		Short: "List registered edges",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var edges []receive.EdgeInfo
			err := withAdmin(func(c *http.Client) error {
				return central.AdminDo(c, http.MethodGet, "/edges", &edges)
			}, func(log *storage.Log) error {
				var err error
				edges, err = receive.ListEdges(log)
				return err
			})
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tCREATED\tTOKEN-ROTATED")
			for _, e := range edges {
				state := "active"
				if e.Revoked {
					state = "revoked"
				}
				rotated := "never"
				if !e.Rotated.IsZero() {
					rotated = e.Rotated.Format("2006-01-02 15:04:05Z")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.ID, state, e.Created.Format("2006-01-02 15:04:05Z"), rotated)
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Refuse an edge's token from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := withAdmin(func(c *http.Client) error {
				var out map[string]string
				return central.AdminDo(c, http.MethodDelete, "/edges/"+args[0], &out)
			}, func(log *storage.Log) error {
				_, err := receive.RevokeEdge(log, args[0])
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "edge %s revoked\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(add, list, revoke)
	return cmd
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

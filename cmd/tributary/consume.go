package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tributary-iot/tributary/sync/consume"
)

func init() { register(newConsumeCmd) }

func newConsumeCmd() *cobra.Command {
	var (
		centralURL, group, format, since, offsets string
		tokens                                    apiTokenFlags
		opts                                      consume.Options
	)
	cmd := &cobra.Command{
		Use:   "consume --central URL [--stream readings] [--from-beginning] [--group G] [--follow] [--format jsonl]",
		Short: "Print central's merged stream as JSON lines",
		Long: `Print central's merged stream, one JSON object per line:
{"stream","partition","offset","key","timestamp","edge","edge_partition","edge_offset","headers","value"}
where "value" is the payload when it is JSON, else "value_base64" holds it.

Without --follow it prints what is there and exits; with --follow it keeps printing until
interrupted. Where it starts: --offsets, else the group's committed offsets (--group), else the
beginning (--from-beginning, and the default without --follow), else the end (with --follow).
With --group, offsets are committed after each printed batch, so the next run resumes there.`,
		Example: `  tributary consume --central http://127.0.0.1:7443
  tributary consume --central https://central:7443 --group dashboards --follow
  tributary consume --central http://127.0.0.1:7443 --since 2025-01-01T00:00:00Z`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if centralURL == "" {
				return fmt.Errorf("no central: pass --central URL (the address central listens on)")
			}
			if format != "jsonl" {
				return fmt.Errorf("format %q: only jsonl is supported", format)
			}
			if since != "" {
				t, err := time.Parse(time.RFC3339Nano, since)
				if err != nil {
					return fmt.Errorf("--since %q: give an RFC 3339 time such as 2025-01-02T15:04:05Z", since)
				}
				opts.Since = t
			}
			if offsets != "" {
				o, err := consume.ParseOffsets(offsets)
				if err != nil {
					return err
				}
				opts.Offsets = o
			}
			opts.Group = group
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			w := bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
			defer w.Flush()
			enc := json.NewEncoder(w)
			token, err := tokens.get()
			if err != nil {
				return err
			}
			cl := &consume.Client{BaseURL: centralURL, Token: token}
			opts.AfterBatch = w.Flush
			return cl.Consume(ctx, opts, func(m consume.Message) error { return enc.Encode(m) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&centralURL, "central", "", "central's URL, e.g. http://127.0.0.1:7443")
	tokens.register(cmd)
	f.StringVar(&opts.Stream, "stream", "readings", "stream to read")
	f.BoolVar(&opts.FromBeginning, "from-beginning", false, "start at the oldest record")
	f.StringVar(&group, "group", "", "consumer group: resume from and commit offsets under this name")
	f.BoolVar(&opts.Follow, "follow", false, "keep printing new records until interrupted")
	f.StringVar(&format, "format", "jsonl", "output format (jsonl)")
	f.StringVar(&since, "since", "", "skip records older than this RFC 3339 time")
	f.StringVar(&offsets, "offsets", "", "start at PARTITION:OFFSET,...")
	return cmd
}

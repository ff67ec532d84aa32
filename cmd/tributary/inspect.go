package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tributary-iot/tributary/edge"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
)

func newInspectCmd() *cobra.Command {
	var verify, segments bool
	var format string
	cmd := &cobra.Command{
		Use:   "inspect DIR",
		Short: "Show the streams, partitions, segments, offsets, cursors and gaps of a log directory",
		Long: `Inspect prints what a Tributary log directory (an edge's or central's --data-dir) holds.

When an edge or central is running on the directory, inspect reads its live view through the
node's admin socket in the directory (only the directory's owner can reach it). Otherwise it reads
the log itself without writing anything, so it works on a copy on read-only media and leaves
evidence as it is: what the node would repair at its next start (a torn tail, a damaged sealed
segment or index, a damaged meta.db) is reported, not changed.

Cursors include every consumer group (group.<name>) with its LAG: the records it has not read.

With --verify every stored byte is read and checked (frame and batch checksums, offsets); the
command exits with status 2 when it finds damage.`,
		Example: `  tributary inspect /var/lib/tributary/edge
  tributary inspect --segments --verify ./data
  tributary inspect --format json ./data | jq .streams`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			report, live, err := inspectDir(args[0], verify)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if live != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "the %s is running: this is its live view, read through its admin socket\n", live)
			}
			switch format {
			case "json":
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(report); err != nil {
					return err
				}
			case "text", "":
				printInspect(out, report, segments)
			default:
				return fmt.Errorf("unknown --format %q: use text or json", format)
			}
			if verify && (len(report.Problems) > 0 || report.Meta != nil) {
				return exitError{code: 2, msg: fmt.Sprintf("%d problems found; damaged sealed segments are moved to quarantine/ and reported as gaps when the agent next starts", len(report.Problems))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&verify, "verify", false, "read and check every stored byte; exit 2 on damage")
	cmd.Flags().BoolVar(&segments, "segments", false, "list every segment, not only per-partition totals")
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

// exitError carries a specific exit status to main.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// inspectDir reports a data directory: through the running node's admin socket when one serves
// it (the log's metadata file admits one process), else by opening the log itself.
func inspectDir(dir string, verify bool) (rep *storage.Report, live string, err error) {
	if _, err := os.Stat(filepath.Join(dir, "meta.db")); err != nil {
		return nil, "", fmt.Errorf("%s is not a Tributary data directory (no meta.db): pass the --data-dir of an edge or central", dir)
	}
	for _, node := range []struct{ name, socket string }{{"central", central.AdminSocket(dir)}, {"edge", edge.AdminSocket(dir)}} {
		c, ok := central.SocketClient(node.socket)
		if !ok {
			continue
		}
		path := "/inspect"
		if verify {
			path += "?verify=1"
		}
		rep = &storage.Report{}
		if err := central.AdminDo(c, http.MethodGet, path, rep); err != nil {
			return nil, "", fmt.Errorf("inspect the running %s through %s: %w", node.name, node.socket, err)
		}
		return rep, node.name, nil
	}
	l, err := storage.OpenReadOnly(dir, &storage.Options{SkipVerifyOnOpen: true})
	if err != nil {
		return nil, "", err
	}
	defer l.Close()
	rep, err = l.Report(verify)
	return rep, "", err
}

func printInspect(w io.Writer, rep *storage.Report, segments bool) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "data dir %s\n\n", rep.Dir)
	if len(rep.Streams) == 0 {
		fmt.Fprintln(tw, "no streams yet")
	}
	for _, s := range rep.Streams {
		var recs, raw, stored int64
		for _, p := range s.Partitions {
			recs += p.EndOffset - p.StartOffset
			raw += p.RawBytes
			stored += p.StoredBytes
		}
		fmt.Fprintf(tw, "stream %s: %d partitions, %d records, %s raw, %s on disk\n", s.Name, len(s.Partitions), recs, byteSize(raw), byteSize(stored))
		fmt.Fprintln(tw, "PARTITION\tSTART\tEND\tRECORDS\tSEGMENTS\tSEALED\tRAW\tSTORED\tRATIO\tGAPS")
		for _, p := range s.Partitions {
			sealed := 0
			for _, seg := range p.Segments {
				if seg.Sealed {
					sealed++
				}
			}
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%d\n", p.Partition, p.StartOffset, p.EndOffset,
				p.EndOffset-p.StartOffset, len(p.Segments), sealed, byteSize(p.RawBytes), byteSize(p.StoredBytes), ratio(p.RawBytes, p.StoredBytes), len(p.Gaps))
			if segments {
				for _, seg := range p.Segments {
					kind := "plain"
					if seg.Sealed {
						kind = fmt.Sprintf("sealed, %d frames", seg.Frames)
					}
					fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%s\t\t%s\t%s\t%s\t\n", seg.File, seg.Base, seg.Next, seg.Next-seg.Base, kind, byteSize(seg.RawBytes), byteSize(seg.StoredBytes), ratio(seg.RawBytes, seg.StoredBytes))
				}
			}
			for _, g := range p.Gaps {
				fmt.Fprintf(tw, "  gap\t%d\t%d\t%d\t%s at %s\n", g.From, g.To, g.Records, g.Reason, g.Time.Format(time.RFC3339))
			}
		}
		fmt.Fprintln(tw)
	}
	if len(rep.Cursors) > 0 {
		// Consumer groups are the cursors named group.<name>; LAG is what each has not read.
		fmt.Fprintln(tw, "CURSOR\tSTREAM\tPARTITION\tOFFSET\tLAG\tREQUIRED")
		for _, c := range rep.Cursors {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%v\n", c.Name, c.Stream, c.Partition, c.Offset, c.Lag, c.Required)
		}
		fmt.Fprintln(tw)
	}
	if m := rep.Meta; m != nil {
		fmt.Fprintf(tw, "DAMAGE\tmeta.db: %s; %s\n", m.Cause, m.Lost)
	}
	if rep.Verified || len(rep.Problems) > 0 {
		if len(rep.Problems) == 0 && rep.Meta == nil {
			fmt.Fprintln(tw, "verify: every checksum and offset is intact")
		}
		for _, pr := range rep.Problems {
			fmt.Fprintf(tw, "DAMAGE\tstream %s partition %d segment %d offset %d: %s\n", pr.Stream, pr.Partition, pr.Segment, pr.Offset, pr.Problem)
		}
	}
	tw.Flush()
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func ratio(raw, stored int64) string {
	if stored == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fx", float64(raw)/float64(stored))
}

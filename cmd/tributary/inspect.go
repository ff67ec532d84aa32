package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tributary-iot/tributary/storage"
)

func init() { register(newInspectCmd) }

func newInspectCmd() *cobra.Command {
	var verify, segments bool
	var format string
	cmd := &cobra.Command{
		Use:   "inspect DIR",
		Short: "Show the streams, partitions, segments, offsets, cursors and gaps of a log directory",
		Long: `Inspect prints what a Tributary log directory (an edge's or central's --data-dir) holds.

The agent using the directory must be stopped: the log's metadata file allows one process at a
time. Opening recovers the log as the agent would (a torn tail of an active segment is cut back);
damaged sealed segments are reported, not moved.

With --verify every stored byte is read and checked (frame and batch checksums, offsets); the
command exits with status 2 when it finds damage.`,
		Example: `  tributary inspect /var/lib/tributary/edge
  tributary inspect --segments --verify ./data
  tributary inspect --format json ./data | jq .streams`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			report, err := inspectDir(args[0], verify)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
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
			if verify && len(report.Problems) > 0 {
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

type inspectReport struct {
	Dir      string                  `json:"dir"`
	Streams  []inspectStream         `json:"streams"`
	Cursors  []storage.CursorInfo    `json:"cursors"`
	Problems []storage.VerifyProblem `json:"problems,omitempty"`
	Verified bool                    `json:"verified"`
}

type inspectStream struct {
	Name       string             `json:"name"`
	Partitions []inspectPartition `json:"partitions"`
}

type inspectPartition struct {
	Partition   int                   `json:"partition"`
	StartOffset int64                 `json:"start_offset"`
	EndOffset   int64                 `json:"end_offset"`
	RawBytes    int64                 `json:"raw_bytes"`
	StoredBytes int64                 `json:"stored_bytes"`
	Segments    []storage.SegmentInfo `json:"segments"`
	Gaps        []storage.Gap         `json:"gaps,omitempty"`
}

func inspectDir(dir string, verify bool) (*inspectReport, error) {
	if _, err := os.Stat(filepath.Join(dir, "meta.db")); err != nil {
		return nil, fmt.Errorf("%s is not a Tributary data directory (no meta.db): pass the --data-dir of an edge or central", dir)
	}
	l, err := storage.Open(dir, &storage.Options{SkipVerifyOnOpen: true, SegmentAge: -1})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	rep := &inspectReport{Dir: dir, Cursors: l.Cursors(), Verified: verify}
	sort.Slice(rep.Cursors, func(i, j int) bool {
		a, b := rep.Cursors[i], rep.Cursors[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Stream != b.Stream {
			return a.Stream < b.Stream
		}
		return a.Partition < b.Partition
	})
	for _, s := range l.Streams() {
		is := inspectStream{Name: s.Name()}
		for i := 0; i < s.Partitions(); i++ {
			p := s.Partition(i)
			ip := inspectPartition{Partition: i, StartOffset: p.StartOffset(), EndOffset: p.EndOffset(),
				Segments: p.Segments(), Gaps: p.Gaps()}
			for _, seg := range ip.Segments {
				ip.RawBytes += seg.RawBytes
				ip.StoredBytes += seg.StoredBytes
			}
			is.Partitions = append(is.Partitions, ip)
		}
		rep.Streams = append(rep.Streams, is)
	}
	if verify {
		probs, err := l.Verify()
		if err != nil {
			return nil, err
		}
		rep.Problems = probs
	}
	for _, d := range l.Damage() {
		rep.Problems = append(rep.Problems, storage.VerifyProblem{Stream: d.Stream, Partition: d.Partition,
			Segment: d.Segment, Offset: d.Offset, Problem: d.Reason})
	}
	return rep, nil
}

func printInspect(w io.Writer, rep *inspectReport, segments bool) {
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
		fmt.Fprintln(tw, "CURSOR\tSTREAM\tPARTITION\tOFFSET\tREQUIRED")
		for _, c := range rep.Cursors {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%v\n", c.Name, c.Stream, c.Partition, c.Offset, c.Required)
		}
		fmt.Fprintln(tw)
	}
	if rep.Verified || len(rep.Problems) > 0 {
		if len(rep.Problems) == 0 {
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

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tributary-iot/tributary/sync/consume"
)

func newConsumeCmd() *cobra.Command {
	var (
		centralURL, group, format, since, offsets, headers, compress string
		tokens                                                       apiTokenFlags
		partition                                                    int
		quiet                                                        bool
		cpuProfile                                                   string
		opts                                                         consume.Options
	)
	cmd := &cobra.Command{
		Use:   "consume --central URL [--stream readings] [--from-beginning] [--group G] [--follow] [--format jsonl|value|raw]",
		Short: "Print central's merged stream as JSON lines",
		Long: `Print central's merged stream, one JSON object per line:
{"stream","partition","offset","key","timestamp","edge","edge_partition","edge_offset","headers","value"}
where "value" is the payload when it is JSON, or the decoded value as JSON for protobuf and Avro
streams (their schema comes from central's registry), else "value_base64" holds it. "headers" carries
the topic, the device's time (device-time) and the edge log's incarnation (edge-incarnation,
which with the edge fields names a reading uniquely) by default; --headers all adds the edge's
bookkeeping (content type, client id, packet id, payload hash, receive times), --headers none
or a list of names picks others. Central writes the lines; this command copies them as they come.

--format value prints the payload alone, one per line (JSON payloads as they are, others as a
JSON string of their base64); --format raw prints the payload's bytes followed by a newline.

Without --follow it prints what is there and exits; with --follow it keeps printing until
interrupted, and when central goes away it reconnects with backoff and goes on after the last
record it printed. Where it starts: --offsets (only the partitions named), else the group's
committed offsets (--group), else the beginning (--from-beginning, and the default without
--follow), else the end (with --follow); --since starts each partition at its first record
that new. With --group, offsets are committed after output is flushed (at most once a second,
and at the end), so the next run resumes there. At the end a summary goes to stderr: records,
partitions and the last offset printed per partition.`,
		Example: `  tributary consume --central http://127.0.0.1:7443
  tributary consume --central https://central:7443 --group dashboards --follow
  tributary consume --central http://127.0.0.1:7443 --key sensor-0042 --format value --count 10
  tributary consume --central http://127.0.0.1:7443 --offsets 3:1041 --count 1 --headers all
  tributary consume --central http://127.0.0.1:7443 --since 2025-01-01T00:00:00Z`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if centralURL == "" {
				return fmt.Errorf("no central: pass --central URL (the address central listens on)")
			}
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			write, err := lineWriter(format)
			if err != nil {
				return err
			}
			if format != "jsonl" && !cmd.Flags().Changed("headers") {
				headers = "none" // only the value is printed
			}
			if _, err := consume.ParseHeaders(headers); err != nil {
				return fmt.Errorf("--headers: %w", err)
			}
			opts.Headers = withSchemaHeaders(headers)
			switch compress {
			case "auto", "zstd", "gzip", "none":
				opts.Compress = compress
			default:
				return fmt.Errorf("--compress %q: use auto, zstd, gzip or none", compress)
			}
			if since != "" {
				t, err := parseSinceFlag(since)
				if err != nil {
					return err
				}
				opts.Since = t
			}
			if offsets != "" {
				o, err := consume.ParseOffsets(offsets)
				if err != nil {
					return fmt.Errorf("--offsets: %w", err)
				}
				opts.Offsets = o
			}
			if cmd.Flags().Changed("partition") {
				if partition < 0 {
					return fmt.Errorf("--partition %d: give a partition number, 0 or more", partition)
				}
				if len(opts.Offsets) > 0 {
					for p := range opts.Offsets {
						if p != partition {
							return fmt.Errorf("--offsets names partition %d but --partition is %d: give one or the other", p, partition)
						}
					}
				}
				opts.Partition = &partition
			}
			if opts.Count < 0 {
				return fmt.Errorf("--count %d: give a positive number of records, or 0 for no limit", opts.Count)
			}
			opts.Group = group
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			w := bufio.NewWriterSize(cmd.OutOrStdout(), 256<<10)
			errOut := cmd.ErrOrStderr()
			opts.AfterBatch = w.Flush
			opts.OnReconnect = func(err error, retryIn time.Duration) {
				fmt.Fprintf(errOut, "consume: lost central (%v); reconnecting in %v, resuming after the last record printed\n", err, retryIn)
			}
			token, err := tokens.get()
			if err != nil {
				return err
			}
			cl := &consume.Client{BaseURL: centralURL, Token: token}
			began := time.Now()
			decoder := newSchemaDecoder(centralURL, token, func(msg string) { fmt.Fprintln(errOut, msg) })
			sum, err := cl.Lines(ctx, opts, func(line []byte, _ int, _ int64) error { return write(w, decoder.rewrite(ctx, line)) })
			if ferr := w.Flush(); err == nil && ferr != nil {
				err = fmt.Errorf("write output: %w", ferr)
			}
			if !quiet {
				fmt.Fprintln(errOut, summaryLine(sum, time.Since(began)))
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&centralURL, "central", "", "central's URL, e.g. http://127.0.0.1:7443")
	tokens.register(cmd)
	f.StringVar(&opts.Stream, "stream", "readings", "stream to read")
	f.BoolVar(&opts.FromBeginning, "from-beginning", false, "start at the oldest record")
	f.StringVar(&group, "group", "", "consumer group: resume from and commit offsets under this name")
	f.BoolVar(&opts.Follow, "follow", false, "keep printing new records until interrupted, reconnecting when central restarts")
	f.StringVar(&format, "format", "jsonl", "output: jsonl (one JSON object per record), value (the payload per line) or raw (payload bytes and a newline)")
	f.StringVar(&since, "since", "", "start each partition at its first record at or after this time (RFC 3339 or unix milliseconds)")
	f.StringVar(&offsets, "offsets", "", "read only these partitions, from PARTITION:OFFSET,...")
	f.IntVar(&partition, "partition", 0, "read only this partition")
	f.StringVar(&opts.Key, "key", "", "print only this key's records (a device id)")
	f.IntVar(&opts.Count, "count", 0, "stop after this many records (0: no limit)")
	f.StringVar(&headers, "headers", "", `record headers in each line: all, none, or names separated by commas (default "topic,device-time,edge-incarnation")`)
	f.StringVar(&compress, "compress", "auto", "ask central to compress: auto (zstd unless central is on loopback), zstd, gzip or none")
	f.BoolVar(&quiet, "quiet", false, "no summary on stderr at the end")
	// For BenchmarkConsumeCLI and anyone chasing the command's CPU per record; not a user feature.
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile of this run to this file")
	f.MarkHidden("cpuprofile")
	return cmd
}

// startCPUProfile writes a CPU profile to path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func parseSinceFlag(s string) (time.Time, error) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: give an RFC 3339 time such as 2025-01-02T15:04:05Z, or unix milliseconds", s)
	}
	return t, nil
}

// lineWriter returns how a line from central reaches the output in a format.
func lineWriter(format string) (func(w *bufio.Writer, line []byte) error, error) {
	switch format {
	case "jsonl":
		return func(w *bufio.Writer, line []byte) error {
			_, err := w.Write(line)
			return err
		}, nil
	case "value", "raw":
		raw := format == "raw"
		return func(w *bufio.Writer, line []byte) error {
			var v struct {
				Value       json.RawMessage `json:"value"`
				ValueBase64 []byte          `json:"value_base64"`
			}
			if err := json.Unmarshal(line, &v); err != nil {
				return fmt.Errorf("decode a line from central: %w", err)
			}
			switch {
			case v.Value != nil:
				w.Write(v.Value)
			case raw:
				w.Write(v.ValueBase64)
			default:
				b, _ := json.Marshal(v.ValueBase64)
				w.Write(b)
			}
			return w.WriteByte('\n')
		}, nil
	}
	return nil, fmt.Errorf("--format %q: use jsonl, value or raw", format)
}

// summaryLine is the closing line on stderr: records, partitions and last offsets printed.
func summaryLine(sum consume.Summary, took time.Duration) string {
	parts := make([]int, 0, len(sum.Last))
	for p := range sum.Last {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	var last strings.Builder
	for i, p := range parts {
		if i > 0 {
			last.WriteByte(',')
		}
		fmt.Fprintf(&last, "%d:%d", p, sum.Last[p])
	}
	if last.Len() == 0 {
		last.WriteString("none")
	}
	s := fmt.Sprintf("consumed %d records from %d partitions in %.1fs; last offsets %s", sum.Records, len(parts), took.Seconds(), last.String())
	if sum.Reconnects > 0 {
		s += fmt.Sprintf("; reconnected %d times", sum.Reconnects)
	}
	return s
}

// Command firmware-sim simulates a fleet of MQTT sensor devices against a broker (usually a
// Tributary edge agent) and verifies what reached the central node's merged stream.
//
// This file is wiring and flags only; the simulator and verifier live in package firmwaresim.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	// cobra gives both subcommands --help, flag parsing and usage errors the way the tributary
	// binary does, so the two tools feel the same.
	"github.com/spf13/cobra"

	firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
)

// Exit codes: scripts tell a failed verification from a tool that could not run.
const (
	exitOK        = 0
	exitFailed    = 1 // verification found lost, duplicated or reordered readings
	exitTrouble   = 2 // bad flags, unreadable files, a broker that refused the fleet
	defaultRows   = 20
	formatTable   = "table"
	formatJSON    = "json"
	defaultBroker = "tcp://127.0.0.1:1883"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errVerifyFailed marks a verification that ran and failed, for the exit code.
var errVerifyFailed = errors.New("verification failed")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errVerifyFailed):
		fmt.Fprintf(stderr, "firmware-sim: %v\n", err)
		return exitFailed
	default:
		fmt.Fprintf(stderr, "firmware-sim: %v\n", err)
		return exitTrouble
	}
}

type simFlags struct {
	cfg              firmwaresim.Config
	qos              uint8
	passwordTemplate string
	passwordFile     string
	caFile           string
	insecure         bool
	format           string
	reportJSON       string
	manifest         string
	rows             int
	verbose          bool
	progress         string
	sparkplug        bool
	sp               firmwaresim.SparkplugConfig
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	f := &simFlags{}
	cmd := &cobra.Command{
		Use:   "firmware-sim --broker URL --devices N --rate R --qos Q --duration D [flags]",
		Short: "Simulate MQTT sensor devices and verify what reached central",
		Long: `firmware-sim runs a fleet of simulated sensor devices, each its own MQTT client
(client id and username = device id), publishing JSON readings to devices/<id>/readings:

  {"device":"dev-0001","seq":1,"ts":<device unix ms>,"temperature":..,"humidity":..,
   "pressure":..,"vibration":..,"battery":..}

seq starts at 1 and grows by one per reading, across reconnects. Readings follow daily cycles with
noise, drift, rare spikes and a draining battery, reproducible with --seed. A device never resends
a reading: one without a PUBACK is counted as unacked and the device moves on.

At the end it prints a load report (offered and acked readings/s, ack latency, errors, per device)
and, with --manifest, writes which seqs each device had acked, for "firmware-sim verify".

Misbehaviour on demand: --reconnect-every (storms), --flaky-every (random link loss),
--clock-skew, --malformed-fraction, --oversized-fraction, --wrong-topic-fraction.

--sparkplug makes each device a Sparkplug B edge node instead: node <id> of --sparkplug-group
carrying one device (--sparkplug-device), with client id and username <group>:<id>. Every
connection starts with NBIRTH (seq 0) and DBIRTH naming the metrics seq, temperature, humidity,
pressure, vibration and battery with aliases 1-6; readings follow as DDATA with aliases only, seq
0-255 per node, and the reading's seq as the "seq" metric; NDEATH is the will, and is published
before a clean disconnect. --sparkplug-skip-fraction skips Sparkplug seqs to make gaps. verify
checks the keys <group>/<id>/<device> and fails on metrics stored without a name.

Exit status: 0 when the run completed, 2 when it could not run (bad flags, broker refused).`,
		Example: `  # 100 devices, 2 readings/s each, QoS 1, for a minute, against a local edge agent
  firmware-sim --broker tcp://127.0.0.1:1883 --devices 100 --rate 2 --qos 1 --duration 1m \
    --password-template 'secret-{id}' --manifest run.manifest.json --report-json run.report.json

  # then check central's merged stream against what was acked
  tributary consume --central https://central:7443 --from-beginning --format jsonl > stream.jsonl
  firmware-sim verify --input stream.jsonl --manifest run.manifest.json`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSim(cmd.Context(), f, stdout, stderr)
		},
	}
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.CompletionOptions.DisableDefaultCmd = true

	fl := cmd.Flags()
	c := &f.cfg
	fl.StringVar(&c.Broker, "broker", defaultBroker, "MQTT broker URL: tcp://host:port, ssl://host:port, ws://host:port/path or wss://")
	fl.IntVar(&c.Devices, "devices", 1, "number of simulated devices, each its own MQTT connection")
	fl.StringVar(&c.IDPrefix, "id-prefix", "dev-", "device id prefix; ids are <prefix>0001, <prefix>0002, ...")
	fl.StringVar(&f.passwordTemplate, "password-template", "", `password per device, "{id}" replaced by the device id, e.g. "secret-{id}"`)
	fl.StringVar(&f.passwordFile, "password-file", "", "file of id:password lines (overrides --password-template)")
	fl.Float64Var(&c.Rate, "rate", 1, "readings per second per device; 0 = as fast as acks allow")
	fl.Float64Var(&c.TotalRate, "total-rate", 0, "readings per second for the whole fleet (overrides --rate)")
	fl.Uint8Var(&f.qos, "qos", 1, "MQTT QoS: 0 (best effort) or 1 (acked after the edge made it durable)")
	fl.DurationVar(&c.Duration, "duration", 10*time.Second, "how long to publish; 0 = until --count is reached")
	fl.Uint64Var(&c.Count, "count", 0, "readings per device; 0 = until --duration ends")
	fl.IntVar(&c.InFlight, "in-flight", 16, "unacked QoS 1 readings a device may have at once")
	fl.IntVar(&c.PayloadSize, "payload-size", 0, "pad each reading to at least this many bytes (0 = no padding, ~130 bytes)")
	fl.Int64Var(&c.Seed, "seed", 1, "seed for the signals and faults; the same seed replays the same readings")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM CA certificate to trust for ssl:// and wss:// brokers")
	fl.BoolVar(&f.insecure, "insecure-skip-verify", false, "do not verify the broker's TLS certificate (test brokers only)")
	fl.DurationVar(&c.ConnectTimeout, "connect-timeout", 5*time.Second, "timeout of one connection attempt")
	fl.DurationVar(&c.AckTimeout, "ack-timeout", 10*time.Second, "how long a reading may wait for its PUBACK before it counts as unacked")
	fl.DurationVar(&c.DrainTimeout, "drain-timeout", 5*time.Second, "how long to wait for outstanding PUBACKs after publishing stops")

	fl.StringVar(&f.progress, "progress", "auto", `progress line on stderr: "auto" (every second in place on a terminal, else a line every 10s), "off", or an interval such as 5s`)
	fl.DurationVar(&c.Faults.ReconnectEvery, "reconnect-every", 0, "reconnect storm: every device drops its connection and reconnects at once, this often")
	fl.DurationVar(&c.Faults.FlakyMeanInterval, "flaky-every", 0, "flaky links: each device loses its connection at random, on average this often")
	fl.DurationVar(&c.Faults.FlakyDowntime, "flaky-downtime", 200*time.Millisecond, "how long a flaky link stays down")
	fl.DurationVar(&c.Faults.ClockSkew, "clock-skew", 0, "offset each device clock by a fixed random amount within ±this")
	fl.Float64Var(&c.Faults.MalformedFraction, "malformed-fraction", 0, "fraction of publishes that are truncated, non-JSON payloads")
	fl.Float64Var(&c.Faults.OversizedFraction, "oversized-fraction", 0, "fraction of publishes that are oversized payloads")
	fl.IntVar(&c.Faults.OversizedBytes, "oversized-bytes", 256<<10, "size of an oversized payload")
	fl.Float64Var(&c.Faults.WrongTopicFraction, "wrong-topic-fraction", 0, "fraction of publishes sent on another device's topic")

	fl.StringVar(&f.format, "format", formatTable, "report format on stdout: table or json")
	fl.StringVar(&f.reportJSON, "report-json", "", "also write the report as JSON to this file")
	fl.StringVar(&f.manifest, "manifest", "", "write the acked-seq manifest to this file, for verify --manifest")
	fl.IntVar(&f.rows, "max-device-rows", defaultRows, "device rows in the table report (0 = all)")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log connection events to stderr")

	fl.BoolVar(&f.sparkplug, "sparkplug", false, "Sparkplug B mode: each device is an edge node (client id and username <group>:<id>) publishing NBIRTH, DBIRTH, then DDATA with aliases to spBv1.0/<group>/DDATA/<id>/<device>, NDEATH as its will")
	fl.StringVar(&f.sp.Group, "sparkplug-group", "sim", "Sparkplug group id")
	fl.StringVar(&f.sp.Device, "sparkplug-device", "sensor", "Sparkplug device id each node carries")
	fl.Float64Var(&f.sp.SkipFraction, "sparkplug-skip-fraction", 0, "fraction of DDATA before which the node skips a seq, as if a message were lost (the edge records a sparkplug_seq gap)")

	cmd.AddCommand(newVerifyCmd(stdout, stderr))
	return cmd
}

func runSim(ctx context.Context, f *simFlags, stdout, stderr io.Writer) error {
	if f.format != formatTable && f.format != formatJSON {
		return fmt.Errorf("--format %q: use table or json", f.format)
	}
	cfg := f.cfg
	cfg.QoS = f.qos
	if f.sparkplug {
		cfg.Sparkplug = &f.sp
	}
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	switch {
	case f.passwordFile != "":
		file, err := os.Open(f.passwordFile)
		if err != nil {
			return fmt.Errorf("open password file: %w", err)
		}
		cfg.Passwords, err = firmwaresim.ReadPasswordFile(file)
		file.Close()
		if err != nil {
			return err
		}
	case f.passwordTemplate != "":
		cfg.Passwords = firmwaresim.PasswordTemplate(f.passwordTemplate)
	}
	if strings.HasPrefix(cfg.Broker, "ssl://") || strings.HasPrefix(cfg.Broker, "tls://") ||
		strings.HasPrefix(cfg.Broker, "mqtts://") || strings.HasPrefix(cfg.Broker, "wss://") || f.caFile != "" || f.insecure {
		tlsCfg, err := firmwaresim.LoadTLS(f.caFile, f.insecure)
		if err != nil {
			return err
		}
		cfg.TLS = tlsCfg
	}

	fleet, err := firmwaresim.NewFleet(cfg)
	if err != nil {
		return err
	}
	stopProgress, err := startProgress(fleet, f.progress, cfg.Duration, stderr)
	if err != nil {
		return err
	}
	rep, runErr := fleet.Run(ctx)
	stopProgress()
	if rep == nil {
		return runErr
	}
	if f.manifest != "" {
		if err := writeFile(f.manifest, rep.Manifest.WriteJSON); err != nil {
			return err
		}
	}
	if f.reportJSON != "" {
		if err := writeFile(f.reportJSON, rep.WriteJSON); err != nil {
			return err
		}
	}
	if f.format == formatJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout, f.rows)
	}
	if runErr != nil {
		return fmt.Errorf("some devices stopped early (check the broker URL and credentials): %w", runErr)
	}
	return err
}

// writeFile writes through a temp file and a rename, so a reader never sees half a report.
func writeFile(path string, write func(io.Writer) error) error {
	tmp := path + ".tmp"
	file, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := write(file); err != nil {
		file.Close()
		os.Remove(tmp)
		return err
	}
	if err := file.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}

func newVerifyCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		input, manifestPath, format string
		centralURL, token           string
		opts                        firmwaresim.VerifyOptions
		rows                        int
	)
	cmd := &cobra.Command{
		Use:   "verify --input FILE | --central URL [--manifest FILE]",
		Short: "Check central's merged stream for lost, duplicated and out-of-order readings",
		Long: `verify reads the merged stream as JSON lines, as "tributary consume --format jsonl" prints them:

  {"stream","partition","offset","key","timestamp","edge","edge_partition","edge_offset","headers","value"}

and checks, per device, that the readings' seqs run 1, 2, 3, ... with no gap, no repeat and no step
back. With --manifest (written by a firmware-sim run), a missing reading that was never acked counts
as "unacked missing" rather than lost; without it every gap counts as lost, so consume with
--from-beginning. Latency is the record timestamp (or --latency-header) minus the device ts.

Exit status: 0 when nothing was lost, duplicated or reordered; 1 when something was;
2 when the input could not be read.`,
		Example: `  firmware-sim verify --central http://127.0.0.1:7443 --manifest run.manifest.json
  tributary consume --central URL --from-beginning --format jsonl | firmware-sim verify --input - --manifest run.manifest.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (input == "") == (centralURL == "") {
				return errors.New("give one of --input (a JSON lines file, or - for stdin) and --central URL")
			}
			var src firmwaresim.Source = firmwaresim.FileSource{Path: input}
			if centralURL != "" {
				src = firmwaresim.CentralSource{URL: centralURL, Stream: opts.Stream, Token: token}
			}
			if format != formatTable && format != formatJSON {
				return fmt.Errorf("--format %q: use table or json", format)
			}
			if manifestPath != "" {
				file, err := os.Open(manifestPath)
				if err != nil {
					return fmt.Errorf("open manifest: %w", err)
				}
				opts.Manifest, err = firmwaresim.ReadManifest(file)
				file.Close()
				if err != nil {
					return err
				}
			}
			v, err := firmwaresim.VerifySource(cmd.Context(), src, &opts)
			if err != nil {
				return err
			}
			if format == formatJSON {
				err = v.WriteJSON(stdout)
			} else {
				err = v.WriteTable(stdout, rows)
			}
			if err != nil {
				return err
			}
			if v.Err() != nil {
				return fmt.Errorf("%w: %d lost, %d duplicated, %d out of order, %d unreadable lines, %d Sparkplug metrics with unresolved aliases",
					errVerifyFailed, v.Lost, v.Duplicated, v.OutOfOrder, v.BadLines, v.Sparkplug.UnresolvedAliases)
			}
			return nil
		},
	}
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	fl := cmd.Flags()
	fl.StringVar(&input, "input", "", "JSON lines file of the merged stream, or - for stdin")
	fl.StringVar(&centralURL, "central", "", "read the merged stream from central's consume API at this URL, from the beginning to its current end")
	fl.StringVar(&token, "token", "", "central's API token, if it has one")
	fl.StringVar(&manifestPath, "manifest", "", "manifest from the firmware-sim run, to tell acked-and-lost from never-acked")
	fl.StringVar(&opts.Stream, "stream", "", "only check records of this stream (default: all)")
	fl.StringVar(&opts.LatencyHeader, "latency-header", "", "header holding the arrival time (unix ms or RFC 3339); default: the record timestamp")
	fl.StringVar(&format, "format", formatTable, "output format: table or json")
	fl.IntVar(&rows, "max-device-rows", defaultRows, "device rows in the table (0 = all)")
	return cmd
}

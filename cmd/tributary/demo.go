package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/edge"
	firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/edgenode"
	"github.com/tributary-iot/tributary/sync/forward"
	"github.com/tributary-iot/tributary/sync/receive"
)

type demoOptions struct {
	duration time.Duration
	devices  int
	rate     float64
	dataDir  string
	keep     bool
	refresh  time.Duration
	plain    bool
}

func newDemoCmd() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run central, an edge, a simulated fleet and a live consumer in one process",
		Long: `Demo shows the whole flow on this machine with no setup: it starts a central node, an edge agent
with its embedded MQTT broker, a fleet of simulated devices publishing readings with QoS 1, and a
consumer reading central's merged stream. Everything listens on 127.0.0.1 and lives in a temporary
directory that is removed at the end (keep it with --keep).

The live view shows, per device, the last reading central delivered, and overall: readings acked by
the edge, forwarded, consumed, forward lag and bytes saved by compression. Ctrl-C (or --duration)
stops it cleanly and prints a summary that checks every acked reading arrived exactly once, in order.`,
		Example: `  tributary demo
  tributary demo --duration 30s --devices 200 --rate 5
  tributary demo --duration 10s --plain > demo.log`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDemo(ctx, cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.duration, "duration", 0, "stop after this long (default: run until Ctrl-C)")
	f.IntVar(&o.devices, "devices", 50, "simulated devices")
	f.Float64Var(&o.rate, "rate", 2, "readings per second per device")
	f.StringVar(&o.dataDir, "data-dir", "", "directory for the edge and central logs (default: a new temporary directory)")
	f.BoolVar(&o.keep, "keep", false, "keep the data directory at the end, to look at it with 'tributary inspect'")
	f.DurationVar(&o.refresh, "refresh", time.Second, "how often the live view is redrawn")
	f.BoolVar(&o.plain, "plain", false, "print a status line per refresh instead of redrawing the screen")
	return cmd
}

func runDemo(ctx context.Context, out io.Writer, o demoOptions) (err error) {
	if o.devices < 1 || o.rate <= 0 {
		return errors.New("--devices must be at least 1 and --rate above 0")
	}
	root := o.dataDir
	if root == "" {
		if root, err = os.MkdirTemp("", "tributary-demo-"); err != nil {
			return fmt.Errorf("create demo directory: %w", err)
		}
		if !o.keep {
			defer os.RemoveAll(root)
		}
	}
	centralDir, edgeDir := filepath.Join(root, "central"), filepath.Join(root, "edge")
	// Components log to a file, so the live view stays readable; the file is in the demo directory.
	logFile, err := os.OpenFile(filepath.Join(root, "demo.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("create demo log: %w", err)
	}
	defer logFile.Close()
	logger := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))

	// Register the edge at central before central starts: central keeps only the token's hash.
	token, err := demoRegisterEdge(centralDir, "demo-edge")
	if err != nil {
		return err
	}

	runCtx, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	centralCtx, stopCentral := context.WithCancel(runCtx)
	defer stopCentral()
	ready := make(chan string, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := central.Run(centralCtx, central.Config{DataDir: centralDir, Listen: "127.0.0.1:0", Logger: logger.With("component", "central"),
			Ready: func(addr string) { ready <- addr }}); err != nil {
			errc <- fmt.Errorf("central: %w", err)
		}
	}()
	var centralURL string
	select {
	case addr := <-ready:
		centralURL = "http://" + addr
	case err := <-errc:
		return err
	case <-time.After(15 * time.Second):
		return errors.New("central did not start within 15s; see demo.log in " + root)
	}

	// The fleet's devices get identities in the edge registry, as real devices would.
	if err := demoRegisterDevices(edgeDir, o.devices); err != nil {
		return err
	}
	node, err := edgenode.New(edgenode.Config{Central: centralURL, Forward: edgenode.ForwardConfig{Token: token},
		Config: edge.Config{DataDir: edgeDir, EdgeID: "demo-edge", MQTT: edge.MQTTConfig{Listen: "127.0.0.1:0"},
			Logger: logger.With("component", "edge")}})
	if err != nil {
		return fmt.Errorf("start edge: %w", err)
	}
	agent, fwd := node.Agent(), node.Forwarder()
	edgeCtx, stopEdge := context.WithCancel(runCtx)
	defer stopEdge()
	edgeDone := make(chan struct{})
	go func() {
		defer close(edgeDone)
		if err := node.Run(edgeCtx); err != nil {
			errc <- fmt.Errorf("edge: %w", err)
		}
	}()

	tally := &demoTally{devices: map[string]*demoDevice{}}
	client := &consume.Client{BaseURL: centralURL}
	consCtx, stopCons := context.WithCancel(runCtx)
	defer stopCons()
	consDone := make(chan struct{})
	go func() {
		defer close(consDone)
		err := client.Consume(consCtx, consume.Options{Stream: "readings", FromBeginning: true, Follow: true},
			func(m consume.Message) error { tally.add(m); return nil })
		if err != nil && consCtx.Err() == nil {
			errc <- fmt.Errorf("consumer: %w", err)
		}
	}()

	fleetCfg := firmwaresim.Config{Broker: "tcp://" + agent.MQTTAddr(), Devices: o.devices, Rate: o.rate, QoS: 1,
		Passwords: firmwaresim.PasswordTemplate(demoPassword), Seed: 1, Logger: logger.With("component", "fleet"), Duration: o.duration}
	if o.duration <= 0 {
		fleetCfg.Duration = 365 * 24 * time.Hour // until Ctrl-C
	}
	fleet, err := firmwaresim.NewFleet(fleetCfg)
	if err != nil {
		return err
	}
	fleetCtx, stopFleet := context.WithCancel(ctx)
	defer stopFleet()
	var report *firmwaresim.Report
	fleetDone := make(chan error, 1)
	go func() {
		r, err := fleet.Run(fleetCtx)
		report = r
		fleetDone <- err
	}()

	start := time.Now()
	view := &demoView{out: out, plain: o.plain, start: start, devices: o.devices, rate: o.rate, root: root, console: centralURL + "/"}
	if o.plain {
		fmt.Fprintf(out, "central's web console: %s (while the demo runs)\n", view.console)
	}
	tick := time.NewTicker(o.refresh)
	defer tick.Stop()
	var fleetErr error
loop:
	for {
		select {
		case fleetErr = <-fleetDone:
			break loop
		case err := <-errc:
			stopFleet()
			<-fleetDone
			return err
		case <-tick.C:
			view.draw(tally, agent.Log(), fwd.Status())
		}
	}
	if fleetErr != nil && !errors.Is(fleetErr, context.Canceled) {
		return fmt.Errorf("fleet: %w", fleetErr)
	}

	// Let forwarding and the consumer catch up with what the edge acked, then stop in order:
	// consumer, forwarder, edge (which closes its log last), central.
	fmt.Fprintln(out, "\nstopping: waiting for central to deliver every acked reading...")
	var acked uint64
	if report != nil {
		acked = report.Acked
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		tally.mu.Lock()
		n := tally.consumed
		tally.mu.Unlock()
		if uint64(n) >= acked && lanesIdle(fwd.Status()) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	lanes := fwd.Status()
	stats := agent.Log().Stats()
	stopCons()
	<-consDone
	// The verdict is firmware-sim's verifier reading central's stream from the beginning, as any
	// consumer would, against the fleet's manifest of what the edge acked.
	opts := &firmwaresim.VerifyOptions{Stream: "readings"}
	if report != nil {
		opts.Manifest = report.Manifest
	}
	verifyCtx, stopVerify := context.WithTimeout(runCtx, time.Minute)
	v, verr := firmwaresim.VerifySource(verifyCtx, firmwaresim.CentralSource{URL: centralURL}, opts)
	stopVerify()
	stopEdge() // the forwarder stops first, then the agent closes its log
	<-edgeDone
	stopCentral()
	wg.Wait()
	if verr != nil {
		return fmt.Errorf("verify central's stream: %w", verr)
	}
	return view.summary(tally, v, report, stats, lanes, time.Since(start))
}

func lanesIdle(lanes []forward.LaneStatus) bool {
	for _, l := range lanes {
		if l.Behind > 0 {
			return false
		}
	}
	return true
}

// demoPassword is the password template of the demo's simulated devices.
const demoPassword = "demo-secret-{id}"

func demoRegisterDevices(edgeDir string, n int) error {
	if err := os.MkdirAll(edgeDir, 0o755); err != nil {
		return err
	}
	// The lowest bcrypt cost keeps 50 registrations instant; real registrations use the default.
	reg := devices.NewRegistry(filepath.Join(edgeDir, "devices.db"), &devices.RegistryOptions{BcryptCost: 4})
	pw := firmwaresim.PasswordTemplate(demoPassword)
	for i := 1; i <= n; i++ {
		id := firmwaresim.DeviceID("dev-", i)
		if err := reg.Add(devices.Device{ID: id}, pw(id)); err != nil && !errors.Is(err, devices.ErrDeviceExists) {
			return fmt.Errorf("register demo device %s: %w", id, err)
		}
	}
	return nil
}

func demoRegisterEdge(dir, id string) (string, error) {
	l, err := storage.Open(dir, nil)
	if err != nil {
		return "", fmt.Errorf("open central log: %w", err)
	}
	token, _, err := receive.AddEdge(l, id)
	if cerr := l.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("register demo edge: %w", err)
	}
	return token, nil
}

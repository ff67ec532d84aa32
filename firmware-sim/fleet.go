package firmwaresim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Fleet is a set of simulated devices publishing to one broker.
type Fleet struct {
	cfg Config

	mu      sync.Mutex // guards devices and start, which Run sets, for Progress
	devices []*device
	start   time.Time
}

// NewFleet checks cfg and prepares the devices; nothing connects until [Fleet.Run].
func NewFleet(cfg Config) (*Fleet, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("check fleet configuration: %w", err)
	}
	return &Fleet{cfg: cfg}, nil
}

// DeviceIDs lists the ids of the fleet's devices, in order.
func (f *Fleet) DeviceIDs() []string {
	ids := make([]string, f.cfg.Devices)
	for i := range ids {
		ids[i] = DeviceID(f.cfg.IDPrefix, i+1)
	}
	return ids
}

// Run connects every device, publishes until Duration has passed or every device has published
// Count readings (or ctx ends), waits up to DrainTimeout for outstanding acks, disconnects and
// returns the report. The report is returned even with an error, which joins the devices that gave
// up (for example because the broker refused them).
func (f *Fleet) Run(ctx context.Context) (*Report, error) {
	cfg := &f.cfg
	start := time.Now()
	devices := make([]*device, cfg.Devices)
	for i := range devices {
		devices[i] = newDevice(cfg, i, start)
	}
	f.mu.Lock()
	f.devices, f.start = devices, start
	f.mu.Unlock()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Duration > 0 {
		runCtx, cancel = context.WithTimeout(runCtx, cfg.Duration)
		defer cancel()
	}
	// watchers wait on faulty publishes and on acks stranded by a dropped connection, apart
	// from the in-order ackers.
	// drained closes DrainTimeout after publishing stops: outstanding acks are given up then.
	drained := make(chan struct{})

	var (
		publishers, ackers, watchers, chaos sync.WaitGroup
		errMu                               sync.Mutex
		errs                                []error
	)
	for _, d := range f.devices {
		out := make(chan pending, cfg.InFlight)
		inflight := make(chan struct{}, cfg.InFlight)
		publishers.Go(func() {
			if err := d.publish(runCtx, start, out, inflight, &watchers, drained); err != nil {
				cfg.Logger.Error("device stopped", "device", d.id, "err", err)
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
			}
		})
		ackers.Go(func() { d.ack(out, inflight, drained, &watchers) })
		if cfg.Faults.FlakyMeanInterval > 0 {
			chaos.Go(func() { d.flaky(runCtx) })
		}
	}
	if cfg.Faults.ReconnectEvery > 0 {
		chaos.Go(func() { f.storms(runCtx) })
	}

	publishers.Wait()
	publishEnd := time.Now()
	cancel() // stop storms and flaky links once no device publishes
	chaos.Wait()
	drainTimer := time.AfterFunc(cfg.DrainTimeout, func() { close(drained) })
	ackers.Wait()
	watchers.Wait()
	drainTimer.Stop()

	var disconnects sync.WaitGroup
	for _, d := range f.devices {
		disconnects.Go(d.disconnect)
	}
	disconnects.Wait()
	return f.report(start, publishEnd.Sub(start)), errors.Join(errs...)
}

// storms drops every device's connection at the same instant every ReconnectEvery and reconnects
// them all at once, until ctx ends.
func (f *Fleet) storms(ctx context.Context) {
	t := time.NewTicker(f.cfg.Faults.ReconnectEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.cfg.Logger.Info("reconnect storm", "devices", len(f.devices))
		for _, d := range f.devices {
			d.drop(0)
		}
		var wg sync.WaitGroup
		for _, d := range f.devices {
			wg.Go(func() {
				if _, _, err := d.connect(ctx); err != nil && ctx.Err() == nil {
					// The publisher retries with backoff on its next reading.
					f.cfg.Logger.Warn("reconnect after storm failed", "device", d.id, "err", err)
				}
			})
		}
		wg.Wait()
	}
}

package edge

import (
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// logProblem reports stopped log partitions for /readyz: readings routed to them are refused
// (not acked) until storage resumes them by itself, which it does once the disk takes writes
// again. /healthz stays green meanwhile: a restart would not free the disk, and the partitions
// that still work keep taking readings.
func (a *Agent) logProblem() error {
	failures := a.log.Failures()
	if len(failures) == 0 {
		return nil
	}
	parts := make([]string, 0, len(failures))
	noSpace := false
	for _, f := range failures {
		parts = append(parts, fmt.Sprintf("%s/%d (since %s)", f.Stream, f.Partition, f.Since.UTC().Format(time.TimeOnly)))
		noSpace = noSpace || f.NoSpace
	}
	if noSpace {
		return fmt.Errorf("edge log partitions %s stopped: no space left on the disk of %s; free space and they resume within seconds",
			strings.Join(parts, ", "), a.cfg.DataDir)
	}
	return fmt.Errorf("edge log partitions %s stopped after a write error; they retry every second, check the storage device: %w",
		strings.Join(parts, ", "), failures[0].Err)
}

// registerFailures exports the number of stopped partitions, for an alert that names the cause.
func (m *metrics) registerFailures(a *Agent) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tributary_edge_log_partitions_stopped",
		Help: "Edge log partitions refusing appends after a write error (a full disk); they resume by themselves.",
	}, func() float64 { return float64(len(a.log.Failures())) }))
}

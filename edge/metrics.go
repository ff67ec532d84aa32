package edge

import (
	"slices"
	"strconv"
	"time"

	// client_golang exposes the agent's counters in the Prometheus text format operators already
	// scrape; a private registry keeps several agents in one process (tests, demo) apart.
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/storage"
)

// The labels of tributary_edge_readings_rejected_total for append failures (see Agent.failed) and of
// tributary_edge_connect_refused_total (see authReason), listed so they start at zero.
var (
	appendFailureReasons  = []string{"append_error", "log_full", "log_closed", "record_too_large"}
	connectRefusedReasons = []string{"shutting_down", "anonymous", "unknown_device", "bad_password", "disabled", "wrong_credential_type", "other", reasonSessionLimit}
	// protocolReasons are refusals of protocolHook (conformance.go).
	protocolReasons = []string{"reserved_topic", "retain_not_supported", "will_refused"}
)

type metrics struct {
	registry *prometheus.Registry

	readingsIn  *prometheus.CounterVec // by qos
	receivedQoS [3]prometheus.Counter  // readingsIn per QoS, resolved once: the per-packet path skips the label lookup
	acked       prometheus.Counter
	rejected    *prometheus.CounterVec // by reason: refused publishes and failed appends
	deadLetters *prometheus.CounterVec // by reason
	duplicates  *prometheus.CounterVec // by dup: whether the resend carried the DUP flag
	resendsDup  [2]prometheus.Counter  // duplicates without and with DUP, resolved once
	authFailed  *prometheus.CounterVec // by reason
	connected   prometheus.Gauge
	pendingAcks prometheus.Gauge
	paced       prometheus.Counter
	ackFailures prometheus.Counter
	acksLate    prometheus.Counter
	fsync       prometheus.Histogram
	ackLatency  prometheus.Histogram
	// logSuppressed counts log lines held back by a client's log budget (logfilter.go).
	logSuppressed prometheus.Counter
}

func newMetrics() *metrics {
	r := prometheus.NewRegistry()
	m := &metrics{
		registry: r,
		readingsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_edge_readings_received_total",
			Help: "PUBLISH packets received from devices or the external source, by QoS.",
		}, []string{"qos"}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_edge_readings_acked_total",
			Help: "QoS 1/2 readings acknowledged after their durable append.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_edge_readings_rejected_total",
			Help: "Readings refused (ACL, topic) or not stored (append errors), by reason.",
		}, []string{"reason"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_edge_dead_letters_total",
			Help: "Readings stored in the deadletter stream instead of their own, by reason.",
		}, []string{"reason"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_edge_duplicates_total",
			Help: "Resends of readings already stored, acknowledged without storing them again, by whether the client set the DUP flag.",
		}, []string{"dup"}),
		authFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_edge_connect_refused_total",
			Help: "CONNECTs refused, by reason.",
		}, []string{"reason"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tributary_edge_connected_devices",
			Help: "MQTT clients connected now.",
		}),
		pendingAcks: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tributary_edge_pending_acks",
			Help: "QoS 1/2 readings waiting for their group commit before the ack goes out.",
		}),
		paced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_edge_client_paced_total",
			Help: "Times a client's reads paused because it had max_pending_per_client readings in flight.",
		}),
		ackFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_edge_append_failures_total",
			Help: "Clients disconnected because an append failed; they resend what was not acked.",
		}),
		acksLate: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_edge_acks_deferred_total",
			Help: "Acks the client's socket did not take at once (the client reads slowly); sent as it drains.",
		}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tributary_edge_fsync_seconds",
			Help:    "Duration of segment fsyncs (one per group commit).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		// What a device waits for its PUBACK, as the edge sees it: the group commit's gathering
		// (up to ack_latency_budget), the fsync, and the ack's write. A device's own figure adds
		// the network and its own scheduling; the two side by side tell which one is slow.
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tributary_edge_ack_latency_seconds",
			Help: "Time from a QoS 1/2 PUBLISH read by the edge to its PUBACK (PUBREC) written to the client's socket.",
			// Fine around the 20 ms budget, where an operator reads the p99.
			Buckets: []float64{.0005, .001, .002, .003, .005, .0075, .01, .0125, .015, .0175, .02, .025, .03, .04, .05, .075, .1, .25, .5, 1, 2.5},
		}),
	}
	m.logSuppressed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tributary_edge_log_lines_suppressed_total",
		Help: "Log lines about MQTT clients beyond their budget (5 a minute per client, 300 for all), not written.",
	})
	r.MustRegister(m.logSuppressed)
	for qos := range m.receivedQoS {
		m.receivedQoS[qos] = m.readingsIn.WithLabelValues(strconv.Itoa(qos))
	}
	// Every reason an operator may alert on is exported at zero from the start, so a dashboard
	// shows 0 rather than "no data" until the first event.
	for _, r := range devices.PayloadReasons {
		m.deadLetters.WithLabelValues(string(r))
	}
	for _, r := range devices.TopicReasons {
		m.rejected.WithLabelValues(string(r))
	}
	for _, r := range []devices.Reason{reasonUndeclaredStream, reasonStreamLimit} {
		m.rejected.WithLabelValues(string(r))
		m.deadLetters.WithLabelValues(string(r))
	}
	for _, r := range slices.Concat(appendFailureReasons, protocolReasons) {
		m.rejected.WithLabelValues(r)
	}
	for _, r := range connectRefusedReasons {
		m.authFailed.WithLabelValues(r)
	}
	for i, dup := range []string{"false", "true"} {
		m.resendsDup[i] = m.duplicates.WithLabelValues(dup)
	}
	r.MustRegister(m.readingsIn, m.acked, m.rejected, m.deadLetters, m.duplicates, m.authFailed,
		m.connected, m.pendingAcks, m.paced, m.ackFailures, m.acksLate, m.fsync, m.ackLatency)
	return m
}

func (m *metrics) observeFsync(d time.Duration) { m.fsync.Observe(d.Seconds()) }

// resends is the duplicates counter for a recognised resend with or without the DUP flag.
func (m *metrics) resends(dup bool) prometheus.Counter {
	if dup {
		return m.resendsDup[1]
	}
	return m.resendsDup[0]
}

// registerLog exports storage's counters, read at scrape time.
func (m *metrics) registerLog(l *storage.Log, quotaBytes int64) {
	gauge := func(name, help string, f func(storage.Stats) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(f(l.Stats())) })
	}
	counter := func(name, help string, f func(storage.Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(l.Stats())) })
	}
	m.registry.MustRegister(
		gauge("tributary_edge_log_disk_bytes", "Bytes of the edge log on disk.", func(s storage.Stats) int64 { return s.DiskBytes }),
		counter("tributary_edge_log_bytes_written_total", "Bytes written to active segments.", func(s storage.Stats) int64 { return s.BytesWritten }),
		counter("tributary_edge_log_records_appended_total", "Records appended to the log.", func(s storage.Stats) int64 { return s.RecordsAppended }),
		counter("tributary_edge_log_fsyncs_total", "Segment fsyncs.", func(s storage.Stats) int64 { return s.Fsyncs }),
		counter("tributary_edge_log_dropped_records_total", "Records dropped by the quota policy.", func(s storage.Stats) int64 { return s.DroppedRecords }),
		// The configured quota beside the disk bytes lets an alert fire before the policy acts.
		gauge("tributary_edge_log_quota_bytes", "Configured disk quota of the edge log (0: none).", func(storage.Stats) int64 { return quotaBytes }),
	)
}

package receive

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics is the receiver's Prometheus collector: counters as vectors, lane gauges computed at
// scrape time from the lanes themselves so they cannot drift.
type metrics struct {
	r          *Receiver
	applied    *prometheus.CounterVec
	duplicates *prometheus.CounterVec
	wireBytes  *prometheus.CounterVec
	rawBytes   *prometheus.CounterVec
	gapRecords *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	// refusedEdges counts 401s by edge id (registered ids only) and reason.
	refusedEdges *prometheus.CounterVec
	epochs       *prometheus.CounterVec

	next, edgeEnd, behind, stalled, sinceSeen, sinceAdvance *prometheus.Desc
	tokenRefused                                            *prometheus.Desc
}

var laneLabels = []string{"edge", "stream", "partition"}

func newMetrics(r *Receiver) *metrics {
	ns := "tributary_central_"
	return &metrics{
		r: r,
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "applied_records_total",
			Help: "Records from edges stored in central's log."}, laneLabels),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "duplicate_records_total",
			Help: "Records received again and skipped (resends after timeouts or restarts)."}, laneLabels),
		wireBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "wire_bytes_total",
			Help: "Compressed chunk bytes received and applied."}, laneLabels),
		rawBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "raw_bytes_total",
			Help: "Raw batch bytes inside applied chunks; raw/wire is the wire compression ratio."}, laneLabels),
		gapRecords: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "gap_records_total",
			Help: "Records edges reported as lost (quota drops, damaged segments)."}, laneLabels),
		epochs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "lane_epochs_total",
			Help: "New lane epochs: the edge came back with a different log (wiped, replaced or older data dir)."}, laneLabels),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "rejected_requests_total",
			Help: "Sync requests refused, by reason."}, []string{"reason"}),
		refusedEdges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "edge_refused_requests_total",
			Help: "Sync requests refused with 401, by edge id (\"(unknown)\" for ids not registered) and reason: unknown_edge, revoked, wrong_token."},
			[]string{"edge", "reason"}),
		tokenRefused: prometheus.NewDesc(ns+"edge_token_refused",
			"1 while a registered edge's last call was refused (401): it cannot forward until it uses its current token.",
			[]string{"edge"}, nil),
		next: prometheus.NewDesc(ns+"lane_next_offset", "Next edge offset central expects on the lane.", laneLabels, nil),
		edgeEnd: prometheus.NewDesc(ns+"lane_edge_end_offset", "End offset the edge last reported for the lane.",
			laneLabels, nil),
		behind: prometheus.NewDesc(ns+"lane_records_behind", "Records the edge holds that central has not applied.",
			laneLabels, nil),
		stalled: prometheus.NewDesc(ns+"lane_stalled",
			"1 when the edge keeps talking and is behind but the lane has not advanced for the stall period (connected but not moving).",
			laneLabels, nil),
		sinceSeen: prometheus.NewDesc(ns+"lane_seconds_since_request", "Seconds since the edge last called on the lane.",
			laneLabels, nil),
		sinceAdvance: prometheus.NewDesc(ns+"lane_seconds_since_advance", "Seconds since the lane last advanced.",
			laneLabels, nil),
	}
}

// knownEdge exports a registered edge's refusal series at 0, so an alert on them has data
// before the first refusal; the series for unknown ids exists from the start.
func (m *metrics) knownEdge(id string) {
	m.refusedEdges.WithLabelValues(id, refusedWrongToken)
	m.refusedEdges.WithLabelValues(id, refusedRevoked)
}

func (m *metrics) vecs() []prometheus.Collector {
	return []prometheus.Collector{m.applied, m.duplicates, m.wireBytes, m.rawBytes, m.gapRecords, m.rejected, m.refusedEdges, m.epochs}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.vecs() {
		c.Describe(ch)
	}
	for _, d := range []*prometheus.Desc{m.next, m.edgeEnd, m.behind, m.stalled, m.sinceSeen, m.sinceAdvance, m.tokenRefused} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.vecs() {
		c.Collect(ch)
	}
	for id, refusing := range m.r.refusing() {
		ch <- prometheus.MustNewConstMetric(m.tokenRefused, prometheus.GaugeValue, b2f(refusing), id)
	}
	now := time.Now()
	for _, l := range m.r.Lanes() {
		lv := []string{l.Edge, l.Stream, strconv.Itoa(l.Partition)}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
		}
		gauge(m.next, float64(l.Next))
		gauge(m.edgeEnd, float64(l.EdgeEnd))
		gauge(m.behind, float64(l.Behind))
		stalled := 0.0
		if l.Stalled {
			stalled = 1
		}
		gauge(m.stalled, stalled)
		if !l.LastSeen.IsZero() {
			gauge(m.sinceSeen, now.Sub(l.LastSeen).Seconds())
		}
		if !l.LastAdvance.IsZero() {
			gauge(m.sinceAdvance, now.Sub(l.LastAdvance).Seconds())
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

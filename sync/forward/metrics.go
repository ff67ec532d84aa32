package forward

import (
	"context"
	"strconv"
	"time"

	// client_golang: the forwarder's lag, age and stall gauges are what an alert on a gateway
	// fleet watches.
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/storage"
)

// metrics computes every lane's figures at scrape time from the lanes themselves.
type metrics struct {
	f                                                          *Forwarder
	behind, age, wire, raw, ratio, records, retries, connected *prometheus.Desc
	stalled, tokenRefused                                      *prometheus.Desc
}

func newMetrics(f *Forwarder) *metrics {
	ns := "tributary_forwarder_"
	labels := []string{"stream", "partition"}
	constLabels := prometheus.Labels{"edge": f.cfg.EdgeID}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(ns+name, help, labels, constLabels)
	}
	return &metrics{
		f:         f,
		behind:    d("records_behind", "Records in the edge log that central has not acknowledged."),
		age:       d("oldest_unforwarded_age_seconds", "Age of the oldest record central has not acknowledged (0 when none)."),
		wire:      d("wire_bytes_total", "Chunk bytes sent and acknowledged."),
		raw:       d("raw_bytes_total", "Raw batch bytes inside acknowledged chunks."),
		ratio:     d("wire_compression_ratio", "raw_bytes_total / wire_bytes_total."),
		records:   d("records_sent_total", "Records in acknowledged chunks (including resends central skipped)."),
		retries:   d("retries_total", "Failed exchanges with central that were retried."),
		connected: d("connected", "1 when central answered the lane within the last 30 seconds."),
		stalled: d("stalled", "1 when central answers and the lane is behind but has not advanced for the stall "+
			"period: connected but not moving."),
		tokenRefused: prometheus.NewDesc(ns+"token_refused", "1 while central refuses this edge's token (401): "+
			"put the edge's current token in its token file (read again within seconds).", nil, constLabels),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.behind, m.age, m.wire, m.raw, m.ratio, m.records, m.retries, m.connected, m.stalled, m.tokenRefused} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(m.tokenRefused, prometheus.GaugeValue, b2f(m.f.tokenRefused.Load()))
	now := time.Now()
	for _, ln := range m.f.snapshot() {
		s := ln.status(now, m.f.cfg.StallAfter)
		lv := []string{s.Stream, strconv.Itoa(s.Partition)}
		emit := func(d *prometheus.Desc, t prometheus.ValueType, v float64) {
			ch <- prometheus.MustNewConstMetric(d, t, v, lv...)
		}
		emit(m.behind, prometheus.GaugeValue, float64(s.Behind))
		emit(m.age, prometheus.GaugeValue, oldestAge(ln.p, s, now))
		emit(m.wire, prometheus.CounterValue, float64(s.WireBytes))
		emit(m.raw, prometheus.CounterValue, float64(s.RawBytes))
		ratio := 0.0
		if s.WireBytes > 0 {
			ratio = float64(s.RawBytes) / float64(s.WireBytes)
		}
		emit(m.ratio, prometheus.GaugeValue, ratio)
		emit(m.records, prometheus.CounterValue, float64(s.Records))
		emit(m.retries, prometheus.CounterValue, float64(s.Retries))
		emit(m.connected, prometheus.GaugeValue, b2f(s.Connected))
		emit(m.stalled, prometheus.GaugeValue, b2f(s.Stalled))
	}
}

// oldestAge reads the first unacknowledged record's timestamp: one small read per lane and
// scrape, only for lanes that are behind.
func oldestAge(p *storage.Partition, s LaneStatus, now time.Time) float64 {
	if s.Behind <= 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	e, err := p.NewReader(s.Acked, &storage.ReaderOptions{ReadBytes: 64 << 10}).Next(ctx)
	if err != nil || e.Gap != nil || e.Timestamp.IsZero() {
		return 0
	}
	return max(now.Sub(e.Timestamp).Seconds(), 0)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

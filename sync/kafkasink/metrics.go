package kafkasink

import (
	"strconv"

	// client_golang: central already serves /metrics in Prometheus format; the sink is one more
	// collector on that registry.
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, for dashboards and alert rules (deploy/prometheus/).
const (
	MetricRecordsBehind   = "tributary_kafka_sink_records_behind"
	MetricRecordsProduced = "tributary_kafka_sink_records_produced_total"
	MetricProduceErrors   = "tributary_kafka_sink_produce_errors_total"
	MetricRecoveries      = "tributary_kafka_sink_recoveries_total"
	MetricGapRecords      = "tributary_kafka_sink_gap_records_total"
	MetricUp              = "tributary_kafka_sink_up"
	MetricLastAck         = "tributary_kafka_sink_last_ack_timestamp_seconds"
)

type metrics struct {
	behind, produced, errors, recoveries, gaps, up, lastAck *prometheus.Desc
}

func newMetrics(cfg Config) metrics {
	constLabels := prometheus.Labels{"topic": cfg.Topic}
	return metrics{
		behind: prometheus.NewDesc(MetricRecordsBehind,
			"Records of the central partition not yet acknowledged by Kafka.", []string{"stream", "partition"}, constLabels),
		produced: prometheus.NewDesc(MetricRecordsProduced,
			"Records Kafka acknowledged since start.", nil, constLabels),
		errors: prometheus.NewDesc(MetricProduceErrors,
			"Sessions that ended with an error (Kafka unreachable, produce failed); each is followed by a tail scan and a resume.", nil, constLabels),
		recoveries: prometheus.NewDesc(MetricRecoveries,
			"Restarts of the producer after an error.", nil, constLabels),
		gaps: prometheus.NewDesc(MetricGapRecords,
			"Central offsets skipped because central recorded them as a gap (lost at an edge or quarantined).", nil, constLabels),
		up: prometheus.NewDesc(MetricUp,
			"1 while the sink is connected and producing, 0 while it waits or recovers.", nil, constLabels),
		lastAck: prometheus.NewDesc(MetricLastAck,
			"Unix time of the last record Kafka acknowledged; 0 before the first.", nil, constLabels),
	}
}

func (m metrics) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.behind, m.produced, m.errors, m.recoveries, m.gaps, m.up, m.lastAck} {
		ch <- d
	}
}

func (m metrics) collect(s *Sink, ch chan<- prometheus.Metric) {
	s.mu.Lock()
	stream := s.stream
	s.mu.Unlock()
	if stream != nil {
		for p := range stream.Partitions() {
			behind := stream.Partition(p).EndOffset() - s.acked[p].Load()
			ch <- prometheus.MustNewConstMetric(m.behind, prometheus.GaugeValue, float64(max(behind, 0)), stream.Name(), strconv.Itoa(p))
		}
	}
	ch <- prometheus.MustNewConstMetric(m.produced, prometheus.CounterValue, float64(s.produced.Load()))
	ch <- prometheus.MustNewConstMetric(m.errors, prometheus.CounterValue, float64(s.errs.Load()))
	ch <- prometheus.MustNewConstMetric(m.recoveries, prometheus.CounterValue, float64(s.recoveries.Load()))
	ch <- prometheus.MustNewConstMetric(m.gaps, prometheus.CounterValue, float64(s.gapRecords.Load()))
	up := 0.0
	if s.up.Load() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(m.up, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(m.lastAck, prometheus.GaugeValue, float64(s.lastAck.Load())/1000)
}

package firmwaresim

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"
)

// DeviceStats counts what one device did during a run.
type DeviceStats struct {
	Device string `json:"device"`
	// Offered is readings handed to the MQTT client (faulty publishes excluded).
	Offered uint64 `json:"offered"`
	// Acked is QoS 1 readings whose PUBACK arrived; Unacked is QoS 1 readings that got none
	// (connection lost, timed out, or still pending when the run stopped).
	Acked   uint64 `json:"acked"`
	Unacked uint64 `json:"unacked"`
	// Written is QoS 0 readings the client wrote to the network (QoS 0 has no ack).
	Written uint64 `json:"written"`
	// LastSeq is the highest seq published; AckedThrough the highest with every seq up to it acked.
	LastSeq      uint64 `json:"last_seq"`
	AckedThrough uint64 `json:"acked_through"`
	Bytes        uint64 `json:"bytes"`
	// Errors counts readings that did not complete, by reason: error, not-connected, timeout,
	// pending-at-stop.
	Errors              map[string]uint64 `json:"errors,omitempty"`
	ConnectErrors       uint64            `json:"connect_errors"`
	Connects            uint64            `json:"connects"`
	InjectedDisconnects uint64            `json:"injected_disconnects"`
	// Faults counts faulty publishes sent, by kind; FaultsAcked how many of them a broker acked.
	Faults      map[string]uint64 `json:"faults,omitempty"`
	FaultsAcked uint64            `json:"faults_acked"`
	// SeqSkipped counts Sparkplug seqs the node skipped on purpose (SparkplugConfig.SkipFraction).
	SeqSkipped uint64         `json:"sparkplug_seq_skipped,omitempty"`
	ClockSkew  time.Duration  `json:"clock_skew_ns"`
	AckLatency LatencySummary `json:"ack_latency"`
}

// Report is the load report of a run: what was offered, what was acked, how fast, and per device.
type Report struct {
	Broker        string    `json:"broker"`
	QoS           byte      `json:"qos"`
	Devices       int       `json:"devices"`
	RatePerDevice float64   `json:"rate_per_device"` // target; 0 means unpaced
	Started       time.Time `json:"started"`
	// Elapsed is the publishing time (draining acks afterwards is not included).
	Elapsed time.Duration `json:"elapsed_ns"`

	Offered             uint64            `json:"offered"`
	Acked               uint64            `json:"acked"`
	Unacked             uint64            `json:"unacked"`
	Written             uint64            `json:"written"`
	Bytes               uint64            `json:"bytes"`
	OfferedPerSecond    float64           `json:"offered_per_second"`
	AckedPerSecond      float64           `json:"acked_per_second"`
	AckLatency          LatencySummary    `json:"ack_latency"`
	Errors              map[string]uint64 `json:"errors,omitempty"`
	ConnectErrors       uint64            `json:"connect_errors"`
	Reconnects          uint64            `json:"reconnects"`
	InjectedDisconnects uint64            `json:"injected_disconnects"`
	Faults              map[string]uint64 `json:"faults,omitempty"`
	FaultsAcked         uint64            `json:"faults_acked"`

	PerDevice []DeviceStats `json:"per_device"`
	// Manifest says which readings were acked, for verification; it is written to its own file.
	Manifest *Manifest `json:"-"`
}

func (f *Fleet) report(start time.Time, elapsed time.Duration) *Report {
	r := &Report{
		Broker:        f.cfg.Broker,
		QoS:           f.cfg.QoS,
		Devices:       f.cfg.Devices,
		RatePerDevice: f.cfg.perDeviceRate(),
		Started:       start,
		Elapsed:       elapsed,
		Manifest: &Manifest{
			Version: ManifestVersion,
			QoS:     f.cfg.QoS,
			Started: start,
			Devices: make(map[string]*DeviceManifest, len(f.devices)),
		},
	}
	var all histogram
	for _, d := range f.devices {
		d.statsMu.Lock()
		s := d.stats
		s.Errors = maps.Clone(s.Errors)
		s.Faults = maps.Clone(s.Faults)
		s.AckedThrough = d.acked.through
		s.AckLatency = d.latency.summary()
		all.merge(&d.latency)
		r.Manifest.Devices[d.id] = &DeviceManifest{
			LastSeq:      s.LastSeq,
			AckedThrough: d.acked.through,
			Acked:        d.acked.ranges(),
			Faults:       maps.Clone(s.Faults),
		}
		d.statsMu.Unlock()

		r.Offered += s.Offered
		r.Acked += s.Acked
		r.Unacked += s.Unacked
		r.Written += s.Written
		r.Bytes += s.Bytes
		r.ConnectErrors += s.ConnectErrors
		r.Reconnects += max(s.Connects, 1) - 1
		r.InjectedDisconnects += s.InjectedDisconnects
		r.FaultsAcked += s.FaultsAcked
		r.Errors = addCounts(r.Errors, s.Errors)
		r.Faults = addCounts(r.Faults, s.Faults)
		r.PerDevice = append(r.PerDevice, s)
	}
	r.AckLatency = all.summary()
	if secs := elapsed.Seconds(); secs > 0 {
		r.OfferedPerSecond = float64(r.Offered) / secs
		r.AckedPerSecond = float64(r.Acked) / secs
	}
	return r
}

func addCounts(dst, src map[string]uint64) map[string]uint64 {
	for k, v := range src {
		if dst == nil {
			dst = make(map[string]uint64)
		}
		dst[k] += v
	}
	return dst
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write report JSON: %w", err)
	}
	return nil
}

// WriteTable writes the report for people: a summary, then up to maxDevices device rows
// (0 means all), listing devices with errors first.
func (r *Report) WriteTable(w io.Writer, maxDevices int) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	rate := "unpaced"
	if r.RatePerDevice > 0 {
		rate = fmt.Sprintf("%.4g/s per device", r.RatePerDevice)
	}
	fmt.Fprintf(tw, "broker\t%s\n", r.Broker)
	fmt.Fprintf(tw, "devices\t%d (QoS %d, %s)\n", r.Devices, r.QoS, rate)
	fmt.Fprintf(tw, "elapsed\t%s\n", r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(tw, "offered\t%d readings, %.1f readings/s, %d bytes\n", r.Offered, r.OfferedPerSecond, r.Bytes)
	if r.QoS == 1 {
		fmt.Fprintf(tw, "acked\t%d readings, %.1f readings/s, %d unacked\n", r.Acked, r.AckedPerSecond, r.Unacked)
		fmt.Fprintf(tw, "ack latency\tp50 %s  p99 %s  max %s\n", r.AckLatency.fmt(r.AckLatency.P50), r.AckLatency.fmt(r.AckLatency.P99), r.AckLatency.fmt(r.AckLatency.Max))
	} else {
		fmt.Fprintf(tw, "written\t%d readings (QoS 0: no acks)\n", r.Written)
	}
	fmt.Fprintf(tw, "errors\t%s\n", fmtCounts(r.Errors))
	fmt.Fprintf(tw, "connections\t%d reconnects, %d connect errors, %d injected disconnects\n", r.Reconnects, r.ConnectErrors, r.InjectedDisconnects)
	fmt.Fprintf(tw, "faults sent\t%s (%d acked)\n", fmtCounts(r.Faults), r.FaultsAcked)
	fmt.Fprintln(tw)

	rows := slices.Clone(r.PerDevice)
	slices.SortStableFunc(rows, func(a, b DeviceStats) int { return int(b.Unacked+sum(b.Errors)) - int(a.Unacked+sum(a.Errors)) })
	if maxDevices > 0 && len(rows) > maxDevices {
		rows = rows[:maxDevices]
	}
	fmt.Fprintln(tw, "device\toffered\tacked\tunacked\tlast seq\tacked through\tp50\tp99\terrors\tfaults\treconnects")
	for _, s := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%d\n", s.Device, s.Offered, s.Acked, s.Unacked, s.LastSeq,
			s.AckedThrough, s.AckLatency.fmt(s.AckLatency.P50), s.AckLatency.fmt(s.AckLatency.P99), fmtCounts(s.Errors), fmtCounts(s.Faults), max(s.Connects, 1)-1)
	}
	if n := len(r.PerDevice) - len(rows); n > 0 {
		fmt.Fprintf(tw, "(%d more devices: see the JSON report)\n", n)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write report table: %w", err)
	}
	return nil
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func fmtCounts(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	s := ""
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf("%s %d", k, m[k])
	}
	return s
}

// fmt formats one of s's quantiles: "-" when nothing was measured, and "<1ms" for a zero taken
// from millisecond timestamps (a device's ts), which cannot tell a sub-millisecond latency from 0.
func (s LatencySummary) fmt(d time.Duration) string {
	switch {
	case s.Count == 0:
		return "-"
	case d == 0:
		return "<1ms"
	}
	return fmtDur(d)
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	default:
		return d.Round(10 * time.Microsecond).String()
	}
}

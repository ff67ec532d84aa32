package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/forward"
)

// demoTally is what the demo's live consumer saw, per device, for the live view. Whether every
// acked reading arrived exactly once is firmware-sim's verifier's call, at the end.
type demoTally struct {
	mu        sync.Mutex
	devices   map[string]*demoDevice
	consumed  int64
	latencies []time.Duration
}

type demoDevice struct {
	last     firmwaresim.Reading
	received int64
}

func (t *demoTally) add(m consume.Message) {
	var r firmwaresim.Reading
	if err := json.Unmarshal(m.Payload(), &r); err != nil || r.Seq == 0 {
		return // not a simulated reading (for example a fault injection)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.devices[m.Key]
	if d == nil {
		d = &demoDevice{}
		t.devices[m.Key] = d
	}
	if r.Seq > d.last.Seq {
		d.last = r
	}
	d.received++
	t.consumed++
	if r.TS > 0 {
		t.latencies = append(t.latencies, time.Since(time.UnixMilli(r.TS)))
	}
}

// demoView draws the demo's live view and its summary.
type demoView struct {
	out     io.Writer
	plain   bool
	start   time.Time
	devices int
	rate    float64
	root    string
	console string // central's web console
	lastN   int64
	lastAt  time.Time
}

func (v *demoView) draw(t *demoTally, edgeLog *storage.Log, lanes []forward.LaneStatus) {
	t.mu.Lock()
	consumed := t.consumed
	type row struct {
		id string
		d  demoDevice
	}
	rows := make([]row, 0, len(t.devices))
	for id, d := range t.devices {
		rows = append(rows, row{id, *d})
	}
	t.mu.Unlock()
	sort.Slice(rows, func(i, j int) bool { return rows[i].id < rows[j].id })

	now := time.Now()
	rate := 0.0
	if !v.lastAt.IsZero() {
		rate = float64(consumed-v.lastN) / now.Sub(v.lastAt).Seconds()
	}
	v.lastN, v.lastAt = consumed, now
	st := edgeLog.Stats()
	var behind, wire, raw int64
	for _, l := range lanes {
		behind += l.Behind
		wire += l.WireBytes
		raw += l.RawBytes
	}
	saved := "-"
	if raw > 0 {
		saved = fmt.Sprintf("%s of %s (%.0f%%)", byteSize(raw-wire), byteSize(raw), 100*float64(raw-wire)/float64(raw))
	}
	elapsed := now.Sub(v.start).Truncate(time.Second)
	if v.plain {
		fmt.Fprintf(v.out, "%s  edge stored %d  consumed at central %d (%.0f/s)  forward lag %d  wire bytes saved %s\n",
			elapsed, st.RecordsAppended, consumed, rate, behind, saved)
		return
	}
	var b strings.Builder
	b.WriteString("\x1b[H\x1b[2J") // home and clear: redraw in place
	fmt.Fprintf(&b, "Tributary demo: %d devices at %.1f readings/s each, running %s   (Ctrl-C stops; data in %s)\n\n", v.devices, v.rate, elapsed, v.root)
	fmt.Fprintf(&b, "  edge: stored %d readings, %d fsyncs (%.1f readings per fsync), %s on disk\n", st.RecordsAppended, st.Fsyncs,
		float64(st.RecordsAppended)/float64(max(st.Fsyncs, 1)), byteSize(st.DiskBytes))
	fmt.Fprintf(&b, "  forward: %d behind, compression saved %s on the wire\n", behind, saved)
	fmt.Fprintf(&b, "  central: consumed %d readings (%.0f/s); web console at %s\n\n", consumed, rate, v.console)
	tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSEQ\tTEMP °C\tHUMIDITY %\tPRESSURE hPa\tVIBRATION\tBATTERY %\tRECEIVED")
	shown := rows
	if len(shown) > 20 {
		shown = shown[:20]
	}
	for _, r := range shown {
		l := r.d.last
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%.3f\t%.0f\t%d\n", r.id, l.Seq, l.Temperature, l.Humidity, l.Pressure, l.Vibration, l.Battery, r.d.received)
	}
	tw.Flush()
	if len(rows) > len(shown) {
		fmt.Fprintf(&b, "  ... and %d more devices\n", len(rows)-len(shown))
	}
	io.WriteString(v.out, b.String())
}

// summary prints the end-of-run check and returns an error when the verifier found an acked
// reading missing, duplicated or out of order.
func (v *demoView) summary(t *demoTally, ver *firmwaresim.Verification, rep *firmwaresim.Report, st storage.Stats, lanes []forward.LaneStatus, elapsed time.Duration) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var wire, raw int64
	for _, l := range lanes {
		wire += l.WireBytes
		raw += l.RawBytes
	}
	sort.Slice(t.latencies, func(i, j int) bool { return t.latencies[i] < t.latencies[j] })
	pct := func(p float64) time.Duration {
		if len(t.latencies) == 0 {
			return 0
		}
		return t.latencies[int(p*float64(len(t.latencies)-1))]
	}
	w := tabwriter.NewWriter(v.out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "\nTributary demo summary after %s\n", elapsed.Truncate(time.Millisecond))
	if rep != nil {
		fmt.Fprintf(w, "  devices published\t%d readings, %d acked by the edge (%.0f/s)\n", rep.Offered, rep.Acked, rep.AckedPerSecond)
		fmt.Fprintf(w, "  ack latency (device)\tp50 %s  p99 %s\n", rep.AckLatency.P50, rep.AckLatency.P99)
	}
	fmt.Fprintf(w, "  edge log\t%d readings stored, %d fsyncs\n", st.RecordsAppended, st.Fsyncs)
	if raw > 0 {
		fmt.Fprintf(w, "  forwarded\t%s raw as %s on the wire (%.1fx smaller)\n", byteSize(raw), byteSize(wire), float64(raw)/float64(max(wire, 1)))
	}
	fmt.Fprintf(w, "  consumed at central\t%d readings from %d devices\n", t.consumed, len(t.devices))
	fmt.Fprintf(w, "  device to consumer\tp50 %s  p99 %s\n", pct(0.50).Truncate(time.Millisecond), pct(0.99).Truncate(time.Millisecond))
	fmt.Fprintf(w, "  acked but lost\t%d\n", ver.Lost)
	fmt.Fprintf(w, "  duplicated or out of order\t%d\n", ver.Duplicated+ver.OutOfOrder)
	w.Flush()
	if err := ver.Err(); err != nil {
		return fmt.Errorf("end-to-end check of central's stream: %w; the logs are in %s", err, v.root)
	}
	fmt.Fprintln(v.out, "  every acked reading arrived exactly once, in order per device")
	return nil
}

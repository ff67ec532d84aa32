package firmwaresim

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
)

// WriteJSON writes the verification as indented JSON.
func (v *Verification) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write verification JSON: %w", err)
	}
	return nil
}

// WriteTable writes the verification for people: the verdict and totals, then up to maxDevices
// device rows (0 means all), devices with problems first.
func (v *Verification) WriteTable(w io.Writer, maxDevices int) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	verdict := "PASS"
	if !v.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(tw, "verdict\t%s\n", verdict)
	fmt.Fprintf(tw, "records\t%d (%d unreadable lines, %d values that are not readings)\n", v.Records, v.BadLines, v.Undecodable)
	fmt.Fprintf(tw, "received\t%d readings from %d devices\n", v.Received, len(v.Devices))
	fmt.Fprintf(tw, "lost\t%d\n", v.Lost)
	fmt.Fprintf(tw, "duplicated\t%d\n", v.Duplicated)
	fmt.Fprintf(tw, "out of order\t%d\n", v.OutOfOrder)
	fmt.Fprintf(tw, "unacked missing\t%d (never acked, so not a broken promise)\n", v.UnackedMissing)
	fmt.Fprintf(tw, "misrouted\t%d\n", v.Misrouted)
	fmt.Fprintf(tw, "faults delivered\t%s\n", fmtCounts(v.FaultsDelivered))
	fmt.Fprintf(tw, "latency (%s - device ts)\tp50 %s  p99 %s  max %s  (%d negative, %d without arrival time)\n",
		v.LatencySource, v.Latency.fmt(v.Latency.P50), v.Latency.fmt(v.Latency.P99), v.Latency.fmt(v.Latency.Max), v.NegativeLatency, v.NoArrivalTime)
	if sp := v.Sparkplug; sp != (SparkplugVerification{}) {
		fmt.Fprintf(tw, "sparkplug	%d births, %d data, %d deaths; %d seq gaps (%d messages missing); %d unresolved aliases\n",
			sp.Births, sp.Data, sp.Deaths, sp.SeqGaps, sp.MissingMessages, sp.UnresolvedAliases)
	}
	fmt.Fprintln(tw)

	rows := slices.Clone(v.Devices)
	bad := func(d *DeviceVerification) uint64 { return d.Lost + d.Duplicated + d.OutOfOrder }
	slices.SortStableFunc(rows, func(a, b *DeviceVerification) int {
		switch x, y := bad(a), bad(b); {
		case x > y:
			return -1
		case x < y:
			return 1
		}
		return 0
	})
	if maxDevices > 0 && len(rows) > maxDevices {
		rows = rows[:maxDevices]
	}
	fmt.Fprintln(tw, "device\treceived\tmax seq\tlost\tduplicated\tout of order\tunacked missing\tp50\tp99\tfirst lost")
	for _, d := range rows {
		first := "-"
		if len(d.LostRanges) > 0 {
			first = fmt.Sprintf("%d..%d", d.LostRanges[0].First, d.LostRanges[0].Last)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", d.Device, d.Received, d.MaxSeq, d.Lost, d.Duplicated,
			d.OutOfOrder, d.UnackedMissing, d.Latency.fmt(d.Latency.P50), d.Latency.fmt(d.Latency.P99), first)
	}
	if n := len(v.Devices) - len(rows); n > 0 {
		fmt.Fprintf(tw, "(%d more devices: see the JSON output)\n", n)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write verification table: %w", err)
	}
	return nil
}

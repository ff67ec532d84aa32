package edge

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/storage"
)

// quotaConfig is an edge with no central, a 48 KiB quota and 4 KiB segments, so a few hundred
// readings fill it and the quota has sealed segments to act on.
func quotaConfig(policy string) Config {
	return Config{QuotaBytes: 48 << 10, QuotaPolicy: policy, SegmentBytes: 4 << 10}
}

// publishUntilRefused publishes QoS 1 readings of 400 random bytes (so sealing cannot compress
// them away) one at a time, from sequence number *seq on, until the agent disconnects the client
// without an ack or max readings were acked. It returns the acked sequence numbers.
func publishUntilRefused(t *testing.T, a *Agent, seq *int, max int) []int {
	t.Helper()
	c, _ := dialRaw(t, a.MQTTAddr(), "filler", 4, "", "")
	defer c.conn.Close()
	var acked []int
	for len(acked) < max {
		*seq++
		noise := make([]byte, 200)
		rand.Read(noise)
		payload := fmt.Appendf(nil, "seq=%d;%x", *seq, noise)
		id := uint16(*seq%60000 + 1)
		c.publish("devices/filler/readings", payload, id, 1, false)
		pk, err := c.read()
		if err != nil {
			return acked // refused: disconnected without a PUBACK
		}
		if pk.FixedHeader.Type != packets.Puback || pk.PacketID != id {
			t.Fatalf("got packet type %d id %d, want PUBACK %d", pk.FixedHeader.Type, pk.PacketID, id)
		}
		acked = append(acked, *seq)
	}
	return acked
}

// logContents reads the readings stream: the sequence numbers stored, the gap markers, and the
// offset ranges missing without a marker.
func logContents(t *testing.T, l *storage.Log) (stored map[int]bool, gaps []storage.Gap, holes []string) {
	t.Helper()
	s, err := l.Stream("readings")
	if err != nil {
		t.Fatal(err)
	}
	stored = map[int]bool{}
	for i := range s.Partitions() {
		p := s.Partition(i)
		rd := p.NewReader(0, nil)
		next := int64(0)
		for {
			e, err := rd.Next(context.Background())
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("read partition %d: %v", i, err)
			}
			if e.Offset != next {
				holes = append(holes, fmt.Sprintf("partition %d offsets %d..%d", i, next, e.Offset-1))
			}
			if e.Gap != nil {
				gaps = append(gaps, *e.Gap)
				next = e.Gap.To
				continue
			}
			next = e.Offset + 1
			var n int
			if _, err := fmt.Sscanf(string(e.Record.Value), "seq=%d;", &n); err != nil {
				t.Fatalf("partition %d offset %d: value %q", i, e.Offset, e.Record.Value)
			}
			stored[n] = true
		}
		if next != p.EndOffset() {
			t.Fatalf("partition %d: read up to %d, end offset %d", i, next, p.EndOffset())
		}
	}
	return stored, gaps, holes
}

// Promise 5 on an edge that forwards nowhere: under the default backpressure policy a full quota
// stops acking and deletes nothing, however long the edge runs full. (Before, the quota took
// every record as forwarded when no forwarder cursor existed and deleted acked readings
// silently: no gap, no counter, no log line.)
func TestQuotaBackpressureWithoutCentralKeepsAckedReadings(t *testing.T) {
	a, _ := startAgent(t, quotaConfig(""))
	seq := 0
	var acked []int
	for round := range 2 {
		got := publishUntilRefused(t, a, &seq, 2000)
		if round == 0 && len(got) == 0 {
			t.Fatal("the first reading was refused")
		}
		if len(got) == 2000 {
			t.Fatalf("round %d: 2000 readings of 400 B acked on a 48 KiB quota", round)
		}
		acked = append(acked, got...)
		t.Logf("round %d: %d readings acked, then refused", round, len(got))
		// Let maintenance (every second) run on the full log before trying again.
		time.Sleep(1500 * time.Millisecond)
	}
	stored, gaps, holes := logContents(t, a.Log())
	if len(holes) > 0 {
		t.Errorf("records gone without a gap marker: %v", holes)
	}
	var lost []int
	for _, n := range acked {
		if !stored[n] {
			lost = append(lost, n)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d acked readings are gone from the log (first %d)", len(lost), len(acked), lost[0])
	}
	if len(gaps) > 0 {
		t.Errorf("backpressure left gaps %+v", gaps)
	}
	s, _ := a.Log().Stream("readings")
	for i := range s.Partitions() {
		if start := s.Partition(i).StartOffset(); start != 0 {
			t.Errorf("partition %d starts at %d: records were deleted", i, start)
		}
	}
	if n := metricSum(t, a.metrics.registry, "tributary_edge_log_dropped_records_total"); n != 0 {
		t.Errorf("dropped records counter %v under backpressure", n)
	}
}

// Under drop-oldest an edge that forwards nowhere drops the oldest readings, and every dropped
// range is a gap marker, counted and logged: nothing disappears silently.
func TestQuotaDropOldestWithoutCentralLeavesGaps(t *testing.T) {
	var logs logBuffer
	a, _ := startAgentLogged(t, quotaConfig("drop-oldest"), logs.logger())
	seq := 0
	acked := publishUntilRefused(t, a, &seq, 600) // 5 times the quota
	if len(acked) != 600 {
		t.Fatalf("drop-oldest refused reading %d", len(acked)+1)
	}
	// Drops go on in the background until the log is back under its quota: wait for the log and
	// the counter to agree (read at different moments they may not), or for the deadline.
	deadline := time.Now().Add(10 * time.Second)
	var stored map[int]bool
	var gaps []storage.Gap
	var holes []string
	for {
		stored, gaps, holes = logContents(t, a.Log())
		var inGaps int64
		for _, g := range gaps {
			inGaps += g.Records
		}
		settled := int64(metricSum(t, a.metrics.registry, "tributary_edge_log_dropped_records_total")) == inGaps &&
			int(inGaps)+len(stored) == len(acked)
		if len(gaps) > 0 && a.Log().Stats().DiskBytes < 48<<10 && settled || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(holes) > 0 {
		t.Errorf("records gone without a gap marker: %v", holes)
	}
	if len(gaps) == 0 {
		t.Fatalf("no gap marker 10 s after filling the quota 5 times (%d of %d readings still stored)", len(stored), len(acked))
	}
	var gapRecords int64
	for _, g := range gaps {
		if g.Reason != storage.GapQuotaDropped || g.Records != g.To-g.From {
			t.Errorf("gap %+v, want reason %s", g, storage.GapQuotaDropped)
		}
		gapRecords += g.Records
	}
	if int(gapRecords)+len(stored) != len(acked) {
		t.Errorf("%d readings stored and %d in gaps, %d acked", len(stored), gapRecords, len(acked))
	}
	if n := metricSum(t, a.metrics.registry, "tributary_edge_log_dropped_records_total"); int64(n) != gapRecords {
		t.Errorf("dropped records counter %v, gaps hold %d records", n, gapRecords)
	}
	lines := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "dropped unforwarded records") &&
			strings.Contains(line, "reason="+storage.GapQuotaDropped) {
			lines++
		}
	}
	if lines == 0 || lines > len(gaps) {
		t.Errorf("%d WARN lines about dropped records for %d gaps; log:\n%s", lines, len(gaps), logs.String())
	}
}

package central_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
	"github.com/tributary-iot/tributary/sync/consume"
)

// Checks shared by the interop tests of Kafka clients written elsewhere (kafka-python, sarama):
// what a client read is compared with what central stored, as its HTTP consume API shows it.

// runClientScript runs a client's script (prog script args...) bounded to 90 s (the scripts give
// up after 60 s) and returns the JSON lines it printed, each decoded as an L, and how it exited;
// a line that is not JSON fails the test. The client's stderr (its warnings about rebalances
// and refused logins) is logged only when the test fails, where it explains the failure.
func runClientScript[L any](t *testing.T, prog, script string, args ...string) ([]L, error) {
	t.Helper()
	name := filepath.Base(script)
	shown := args[:min(len(args), 4)]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, append([]string{script}, args...)...)
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if ctx.Err() != nil {
		t.Fatalf("%s %v still running after 90s\n%s", name, shown, stderr.String())
	}
	var lines []L
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l L
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%s printed %q: %v", name, sc.Text(), err)
		}
		lines = append(lines, l)
	}
	if stderr.Len() > 0 {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s %v stderr:\n%s", name, shown, stderr.String())
			}
		})
	}
	t.Logf("%s %v: %d lines in %v", name, shown, len(lines), time.Since(start).Round(time.Millisecond))
	return lines, err
}

// clientRecord is one record a Kafka client read, as the client reported it.
type clientRecord struct {
	Consumer  string            `json:"c"`
	Partition int               `json:"p"`
	Offset    int64             `json:"o"`
	Key       string            `json:"k"`
	Value     string            `json:"v"`
	Headers   map[string]string `json:"h"`
}

// storedRecords reads central's whole readings stream through the HTTP consume API (cl) and
// returns its records by partition, in offset order.
func storedRecords(t *testing.T, cl *consume.Client) map[int][]consume.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stored := map[int][]consume.Message{}
	err := cl.Consume(ctx, consume.Options{Stream: "readings", FromBeginning: true, Headers: "all"}, func(m consume.Message) error {
		stored[m.Partition] = append(stored[m.Partition], m)
		return nil
	})
	if err != nil {
		t.Fatalf("read central's stream over HTTP: %v", err)
	}
	for p, ms := range stored {
		sort.Slice(ms, func(i, j int) bool { return ms[i].Offset < ms[j].Offset })
		stored[p] = ms
	}
	return stored
}

// verifyClientRead checks records a client read from the beginning against what central stored
// (cl reads it over HTTP) and against the fleet the edge appended: every stored record once, in
// offset order per partition, with the stored key, value and headers, provenance included; and
// firmware-sim's verifier finds every reading once, in order per device, up to each device's
// last seq.
func verifyClientRead(t *testing.T, client string, recs []clientRecord, cl *consume.Client, f *fleet) {
	t.Helper()
	stored := storedRecords(t, cl)
	byPart := map[int][]clientRecord{}
	for _, r := range recs {
		byPart[r.Partition] = append(byPart[r.Partition], r)
	}
	for p := range byPart {
		if _, ok := stored[p]; !ok {
			t.Fatalf("%s read partition %d, which central does not hold", client, p)
		}
	}
	var lines bytes.Buffer
	lastSeq := map[string]int64{}
	for p, want := range stored {
		got := byPart[p]
		if len(got) != len(want) {
			t.Fatalf("%s read %d records of partition %d, central holds %d", client, len(got), p, len(want))
		}
		for i, r := range got {
			m := want[i]
			if r.Offset != m.Offset || r.Key != m.Key || r.Value != string(m.Payload()) {
				t.Fatalf("%s read %d/%d key %q value %q as its record %d there; central holds %d/%d key %q value %q",
					client, p, r.Offset, r.Key, r.Value, i, p, m.Offset, m.Key, m.Payload())
			}
			if r.Headers["edge"] != m.Edge || r.Headers["edge-partition"] != strconv.Itoa(m.EdgePartition) ||
				r.Headers["edge-offset"] != strconv.FormatInt(m.EdgeOffset, 10) {
				t.Fatalf("%s read %d/%d with headers %v; central stored edge %s, edge partition %d, edge offset %d",
					client, p, r.Offset, r.Headers, m.Edge, m.EdgePartition, m.EdgeOffset)
			}
			for k, v := range m.Headers {
				if r.Headers[k] != v {
					t.Fatalf("%s read %d/%d with header %s=%q, central stored %q", client, p, r.Offset, k, r.Headers[k], v)
				}
			}
			rec, _ := json.Marshal(firmwaresim.Record{Stream: "readings", Partition: int64(p), Offset: r.Offset, Key: r.Key,
				Edge: m.Edge, EdgePartition: int64(m.EdgePartition), EdgeOffset: m.EdgeOffset, Value: json.RawMessage(r.Value)})
			lines.Write(append(rec, '\n'))
			lastSeq[r.Key] = seqOf(t, []byte(r.Value))
		}
	}
	v, err := firmwaresim.Verify(&lines, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i, d := range f.devices {
		want += int(f.seq[i])
		if lastSeq[d] != f.seq[i] {
			t.Fatalf("device %s: %s read up to seq %d, the edge appended %d", d, client, lastSeq[d], f.seq[i])
		}
	}
	if err := v.Err(); err != nil || v.Received != uint64(want) || v.Misrouted != 0 {
		t.Fatalf("%s read %d readings, want %d (%d misrouted): %v", client, v.Received, want, v.Misrouted, err)
	}
	t.Logf("%s read all %d stored records once, in order, with central's keys, values and headers", client, len(recs))
}

// partitionEnds lists the end offset of each partition of central's readings stream.
func partitionEnds(t *testing.T, cl *consume.Client) map[int]int64 {
	t.Helper()
	streams, err := cl.Streams(context.Background())
	if err != nil {
		t.Fatalf("list central streams: %v", err)
	}
	ends := map[int]int64{}
	for _, s := range streams {
		if s.Name == "readings" {
			for _, p := range s.Partitions {
				ends[p.Partition] = p.End
			}
		}
	}
	return ends
}

// checkSplit checks that c1 and c2 together hold each of n partitions once, each holding some.
func checkSplit(t *testing.T, client string, c1, c2 []int, n int) {
	t.Helper()
	both := append(append([]int{}, c1...), c2...)
	sort.Ints(both)
	ok := len(c1) > 0 && len(c2) > 0 && len(both) == n
	for i := range both {
		ok = ok && both[i] == i
	}
	if !ok {
		t.Fatalf("%s split c1=%v c2=%v, want the %d partitions shared", client, c1, c2, n)
	}
}

// checkGroupRead checks the records read by a group's members while it split and rebalanced,
// against the offsets the group committed (as central's HTTP API reports them) and the ends of
// the partitions: a partition's records come in offset order and never skip ahead of what was
// read (a member that gets a partition starts where the group committed, so records read but not
// committed may come again, Kafka's at-least-once, but records never read may not be passed);
// every offset below a committed one was read; nothing is committed past the end. It returns
// how many records are left after the committed offsets.
func checkGroupRead(t *testing.T, client string, recs []clientRecord, committed, ends map[int]int64) (left int64) {
	t.Helper()
	read := map[int]map[int64]int{}
	high := map[int]int64{}
	for _, r := range recs {
		if h, ok := high[r.Partition]; (ok && r.Offset > h+1) || (!ok && r.Offset != 0) {
			t.Fatalf("%s %s read offset %d of partition %d, the highest read before was %d", client, r.Consumer, r.Offset, r.Partition, high[r.Partition])
		}
		high[r.Partition] = max(high[r.Partition], r.Offset)
		if read[r.Partition] == nil {
			read[r.Partition] = map[int64]int{}
		}
		read[r.Partition][r.Offset]++
	}
	repeated := 0
	for p, end := range ends {
		c := committed[p]
		if c > end {
			t.Fatalf("partition %d: the %s group committed %d past the end %d", p, client, c, end)
		}
		for o := int64(0); o < c; o++ {
			if read[p][o] == 0 {
				t.Fatalf("partition %d: offset %d below the %s group's committed %d was never read: lost", p, o, client, c)
			}
			repeated += read[p][o] - 1
		}
		left += end - c
	}
	if left == 0 {
		t.Fatalf("the %s group committed every end offset %v: nothing left to resume", client, ends)
	}
	t.Logf("the %s group committed %v, seen by the HTTP API; %d records read twice around the rebalances", client, committed, repeated)
	return left
}

// checkResumed checks that a new member of a group, after the group committed committed, read
// exactly the records from there to ends, once each and in order.
func checkResumed(t *testing.T, client string, recs []clientRecord, committed, ends map[int]int64) {
	t.Helper()
	after := map[int][]int64{}
	for _, r := range recs {
		after[r.Partition] = append(after[r.Partition], r.Offset)
	}
	total := 0
	for p, end := range ends {
		from, offs := committed[p], after[p]
		for i, o := range offs {
			if o != from+int64(i) {
				t.Fatalf("partition %d: the resumed %s consumer read %v.., want offsets %d..%d once in order", p, client, head(offs), from, end-1)
			}
		}
		if int64(len(offs)) != end-from {
			t.Fatalf("partition %d: the resumed %s consumer read %d records, want %d (offsets %d..%d)", p, client, len(offs), end-from, from, end-1)
		}
		total += len(offs)
	}
	t.Logf("a new %s member of the group resumed at the committed offsets and read the %d remaining records once", client, total)
}

package firmwaresim

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// streamLine builds one consume record for device id and seq, arriving lat after the reading.
func streamLine(id string, seq uint64, lat time.Duration) string {
	ts := time.UnixMilli(1_718_000_000_000 + int64(seq)*1000)
	r := NewSignal(1, id, ts).Reading(seq, ts)
	value := r.AppendJSON(nil)
	return fmt.Sprintf(`{"stream":"readings","partition":0,"offset":%d,"key":%q,"timestamp":%d,"edge":"e1","edge_partition":0,"edge_offset":%d,"headers":{"topic":%q},"value":%s}`,
		seq, id, ts.Add(lat).UnixMilli(), seq, ReadingsTopic(id), value)
}

// stream builds JSON lines for the given (device, seq) pairs in order.
func stream(pairs ...any) string {
	var b strings.Builder
	for i := 0; i < len(pairs); i += 2 {
		b.WriteString(streamLine(pairs[i].(string), uint64(pairs[i+1].(int)), 40*time.Millisecond))
		b.WriteByte('\n')
	}
	return b.String()
}

func verify(t *testing.T, in string, opts *VerifyOptions) *Verification {
	t.Helper()
	v, err := Verify(strings.NewReader(in), opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyCleanStreamPasses(t *testing.T) {
	v := verify(t, stream("a", 1, "b", 1, "a", 2, "b", 2, "a", 3), nil)
	if err := v.Err(); err != nil {
		t.Fatalf("clean stream: %v", err)
	}
	if v.Received != 5 || len(v.Devices) != 2 || v.Devices[0].MaxSeq != 3 {
		t.Fatalf("got %+v", v)
	}
	if v.Latency.P50 < 39*time.Millisecond || v.Latency.Max > 42*time.Millisecond {
		t.Errorf("latency %+v, want about 40ms", v.Latency)
	}
}

func TestVerifyReportsFaults(t *testing.T) {
	for _, tc := range []struct {
		name                string
		in                  string
		lost, dup, disorder uint64
		wantFirstLost       SeqRange
	}{
		{name: "gap", in: stream("a", 1, "a", 2, "a", 5, "a", 6), lost: 2, wantFirstLost: SeqRange{3, 4}},
		{name: "missing start", in: stream("a", 3, "a", 4), lost: 2, wantFirstLost: SeqRange{1, 2}},
		{name: "duplicate", in: stream("a", 1, "a", 2, "a", 2, "a", 3), dup: 1},
		{name: "duplicate after later seq", in: stream("a", 1, "a", 2, "a", 3, "a", 1), dup: 1},
		{name: "reordered", in: stream("a", 1, "a", 3, "a", 2, "a", 4), disorder: 1},
		{name: "reordered across gap", in: stream("a", 2, "a", 1), disorder: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := verify(t, tc.in, nil)
			if v.Lost != tc.lost || v.Duplicated != tc.dup || v.OutOfOrder != tc.disorder {
				t.Fatalf("lost %d dup %d disorder %d, want %d %d %d", v.Lost, v.Duplicated, v.OutOfOrder, tc.lost, tc.dup, tc.disorder)
			}
			if !errors.Is(v.Err(), ErrVerificationFailed) {
				t.Fatalf("Err() = %v, want ErrVerificationFailed", v.Err())
			}
			if tc.lost > 0 && v.Devices[0].LostRanges[0] != tc.wantFirstLost {
				t.Errorf("lost ranges %v, want first %v", v.Devices[0].LostRanges, tc.wantFirstLost)
			}
		})
	}
}

func TestVerifyManifestSeparatesUnackedFromLost(t *testing.T) {
	m := &Manifest{Version: ManifestVersion, QoS: 1, Devices: map[string]*DeviceManifest{
		// a published 1..8; 5 and 8 never got a PUBACK (say the link dropped).
		"a": {LastSeq: 8, AckedThrough: 4, Acked: []SeqRange{{1, 4}, {6, 7}}},
		// b published 1..3, all acked, and nothing of it arrived.
		"b": {LastSeq: 3, AckedThrough: 3, Acked: []SeqRange{{1, 3}}},
	}}
	t.Run("unacked missing is not loss", func(t *testing.T) {
		v := verify(t, stream("a", 1, "a", 2, "a", 3, "a", 4, "a", 6, "a", 7, "b", 1, "b", 2, "b", 3), &VerifyOptions{Manifest: m})
		if err := v.Err(); err != nil {
			t.Fatalf("%v (%+v)", err, v)
		}
		if v.UnackedMissing != 2 {
			t.Errorf("unacked missing %d, want 2 (seqs 5 and 8)", v.UnackedMissing)
		}
	})
	t.Run("acked but never received is loss", func(t *testing.T) {
		v := verify(t, stream("a", 1, "a", 2, "a", 4, "a", 5), &VerifyOptions{Manifest: m})
		// a: 3, 6, 7 acked and missing; 8 unacked. b: 1..3 acked, nothing arrived.
		if v.Lost != 6 || v.UnackedMissing != 1 {
			t.Fatalf("lost %d unacked missing %d, want 6 and 1", v.Lost, v.UnackedMissing)
		}
		if v.Err() == nil {
			t.Fatal("acked readings lost, yet verification passed")
		}
	})
	t.Run("without the manifest every gap is lost", func(t *testing.T) {
		v := verify(t, stream("a", 1, "a", 2, "a", 3, "a", 4, "a", 6, "a", 7), nil)
		if v.Lost != 1 || v.Err() == nil {
			t.Fatalf("lost %d, want 1 and a failure", v.Lost)
		}
	})
}

func TestVerifyNonReadingRecords(t *testing.T) {
	malformed := base64.StdEncoding.EncodeToString([]byte(`{"device":"a","se`))
	wrong := Reading{Device: "b", Fault: FaultWrongTopic, TS: 1}
	in := stream("a", 1) +
		`{"stream":"readings","key":"a","timestamp":1,"value_base64":"` + malformed + `"}` + "\n" +
		`{"stream":"readings","key":"a","timestamp":1,"value":` + string(wrong.AppendJSON(nil)) + "}\n" +
		`{"stream":"dead-letter","key":"a","timestamp":1,"value":{"reason":"oversized"}}` + "\n" +
		streamLine("b", 1, 0) + "\n" +
		strings.Replace(streamLine("b", 2, 0), `"key":"b"`, `"key":"a"`, 1) + "\n"
	v := verify(t, in, &VerifyOptions{Stream: "readings"})
	if err := v.Err(); err != nil {
		t.Fatal(err)
	}
	if v.Undecodable != 1 || v.FaultsDelivered[FaultWrongTopic] != 1 || v.Misrouted != 1 || v.Received != 3 || v.Records != 5 {
		t.Fatalf("got %+v", v)
	}
	bad := verify(t, in+"{not json\n", nil)
	if bad.BadLines != 1 || bad.Err() == nil {
		t.Fatalf("a line that is not a record must fail verification: %+v", bad)
	}
}

func TestVerifyLatencySources(t *testing.T) {
	line := `{"stream":"readings","key":"a","timestamp":"2024-06-10T06:13:20.250Z","headers":{"central_received_ms":"1718000000900"},"value":{"device":"a","seq":1,"ts":1718000000000}}`
	v := verify(t, line, nil)
	if v.Latency.Max != 250*time.Millisecond {
		t.Errorf("timestamp latency %v, want 250ms", v.Latency.Max)
	}
	v = verify(t, line, &VerifyOptions{LatencyHeader: "central_received_ms"})
	if v.Latency.Max != 900*time.Millisecond || v.LatencySource != "header:central_received_ms" {
		t.Errorf("header latency %v (%s), want 900ms", v.Latency.Max, v.LatencySource)
	}
	skewed := strings.Replace(line, `"ts":1718000000000`, `"ts":1718000009000`, 1)
	if v := verify(t, skewed, nil); v.NegativeLatency != 1 || v.Latency.Count != 0 {
		t.Errorf("a device clock ahead must count as negative latency: %+v", v)
	}
}

func TestVerifyTableAndJSON(t *testing.T) {
	v := verify(t, stream("a", 1, "a", 3), nil)
	var table, js bytes.Buffer
	if err := v.WriteTable(&table, 0); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "FAIL") || !strings.Contains(table.String(), "2..2") {
		t.Errorf("table lacks the verdict or the lost range:\n%s", table.String())
	}
	if err := v.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Lost    uint64 `json:"lost"`
		Devices []struct {
			LostRanges [][2]uint64 `json:"lost_ranges"`
		} `json:"devices"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Lost != 1 || back.Devices[0].LostRanges[0] != [2]uint64{2, 2} {
		t.Fatalf("JSON %s: %v", js.String(), err)
	}
}

func TestSeqSetMissing(t *testing.T) {
	var s seqSet
	for _, n := range []uint64{1, 2, 3, 7, 9, 10, 4} {
		s.add(n)
	}
	got := s.missing(12)
	want := []SeqRange{{5, 6}, {8, 8}, {11, 12}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("missing = %v, want %v", got, want)
	}
	if got := s.missing(9); fmt.Sprint(got) != fmt.Sprint([]SeqRange{{5, 6}, {8, 8}}) {
		t.Fatalf("missing(9) = %v", got)
	}
	if s.through != 4 || s.len() != 7 || s.max() != 10 {
		t.Fatalf("through %d len %d max %d", s.through, s.len(), s.max())
	}
}

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

	"github.com/tributary-iot/tributary/internal/testprog"
	"github.com/tributary-iot/tributary/sync/forward"
)

type pyLine struct {
	Event     string           `json:"event"`
	C1        []int            `json:"c1"`
	C2        []int            `json:"c2"`
	Offsets   map[string]int64 `json:"offsets"`
	Partition int              `json:"p"`
	Offset    int64            `json:"o"`
	Key       string           `json:"k"`
}

func runPyGroup(t *testing.T, py string, args ...string) []pyLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, py, append([]string{filepath.Join("testdata", "kafka_group.py")}, args...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kafka_group.py %v: %v\n%s", args, err, stderr.String())
	}
	var lines []pyLine
	for sc := bufio.NewScanner(bytes.NewReader(out)); sc.Scan(); {
		var l pyLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("kafka_group.py printed %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	return lines
}

// TestConfluentKafkaGroup runs librdkafka (python3-confluent-kafka) consumers against central's
// Kafka listener: two consumers in one group split the partitions, the survivor takes over when
// the other leaves, and after central is SIGKILLed and restarted the group resumes at exactly
// its committed offsets: nothing lost, and nothing read twice except what was read after the
// last commit.
func TestConfluentKafkaGroup(t *testing.T) {
	py := testprog.Python(t, "python3-confluent-kafka", "confluent_kafka")
	c := &childCentral{t: t, dir: t.TempDir(), listen: freeAddr(t)}
	c.kafka = freeAddr(t)
	token := addEdge(t, c.dir, "gw-1")
	c.start()
	defer c.kill()
	url := "http://" + c.listen
	edge, st := openEdge(t, 4)
	defer edge.Close()
	const total = 12000
	appendAll(t, st, newFleet(100, 3), total)
	_, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token})
	waitCaughtUp(t, url, total, 30*time.Second)
	stopFwd()

	lines := runPyGroup(t, py, "split", c.kafka, "py", "readings", "6000", "4000")
	var committed map[string]int64
	for _, l := range lines {
		switch l.Event {
		case "split":
			if len(l.C1) == 0 || len(l.C2) == 0 || len(l.C1)+len(l.C2) != 8 {
				t.Fatalf("split c1=%v c2=%v, want the 8 partitions shared", l.C1, l.C2)
			}
			t.Logf("two consumers split the partitions: c1=%v c2=%v", l.C1, l.C2)
		case "takeover":
			if len(l.C1) != 8 {
				t.Fatalf("after c2 left, c1 holds %v, want all 8", l.C1)
			}
		case "committed":
			committed = l.Offsets
		}
	}
	if committed == nil {
		t.Fatal("the split run printed no committed offsets")
	}
	// The HTTP API sees the same group.
	httpOffsets, err := getGroupOffsets(url, "py")
	if err != nil {
		t.Fatal(err)
	}
	for p, o := range committed {
		n, _ := strconv.Atoi(p)
		got, ok := httpOffsets.Offsets[n]
		if o < 0 { // librdkafka's OFFSET_INVALID: nothing consumed there since the last rebalance
			if ok {
				t.Fatalf("partition %s: librdkafka has no committed offset, the HTTP API reports %d", p, got)
			}
			committed[p] = 0 // the resumed consumer starts at the beginning (auto.offset.reset)
			continue
		}
		if got != o || !ok {
			t.Fatalf("partition %s: librdkafka committed %d, the HTTP API reports %d", p, o, got)
		}
	}

	c.kill() // SIGKILL
	c.start()
	var ends [8]int64
	for p := 0; p < 8; p++ {
		ends[p] = 0
	}
	streams, err := httpGet(url + "/v1/streams")
	if err != nil {
		t.Fatal(err)
	}
	var infos []struct {
		Partitions []struct{ Partition, End int64 } `json:"partitions"`
	}
	json.Unmarshal(streams, &infos)
	want := 0
	for _, p := range infos[0].Partitions {
		ends[p.Partition] = p.End
		want += int(p.End - committed[strconv.Itoa(int(p.Partition))])
	}
	after := runPyGroup(t, py, "resume", c.kafka, "py", "readings", strconv.Itoa(want))
	byPart := map[int][]int64{}
	for _, l := range after {
		if l.Event == "" {
			byPart[l.Partition] = append(byPart[l.Partition], l.Offset)
		}
	}
	for p := 0; p < 8; p++ {
		offs := byPart[p]
		sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
		from := committed[strconv.Itoa(p)]
		if int64(len(offs)) != ends[p]-from || (len(offs) > 0 && (offs[0] != from || offs[len(offs)-1] != ends[p]-1)) {
			t.Fatalf("partition %d after restart: read %d records (%v..), want offsets %d..%d exactly once",
				p, len(offs), head(offs), from, ends[p]-1)
		}
	}
	t.Logf("after SIGKILL and restart the group resumed at %v and read the %d remaining records once", committed, want)
}

func head(s []int64) []int64 {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

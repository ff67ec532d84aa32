package central_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
	"github.com/tributary-iot/tributary/internal/testprog"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/forward"
)

// runCentralKafka runs central in this process with a Kafka listener on a loopback port.
func runCentralKafka(t testing.TB, cfg central.Config) (url, kafkaAddr string, stop func()) {
	t.Helper()
	cfg.Kafka.Listen = "127.0.0.1:0"
	kready := make(chan string, 1)
	cfg.KafkaReady = func(a string) { kready <- a }
	addr, stop := runCentral(t, cfg)
	return "http://" + addr, <-kready, stop
}

// kcatJSON runs kcat and turns its -J lines into the verifier's records.
func kcatJSON(t *testing.T, args ...string) []byte {
	t.Helper()
	kcat := testprog.Find(t, "kcat", "kcat")
	out := testprog.Output(t, 90*time.Second, kcat, args...)
	var lines bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct {
			Topic     string `json:"topic"`
			Partition int64  `json:"partition"`
			Offset    int64  `json:"offset"`
			Key       string `json:"key"`
			Payload   string `json:"payload"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("kcat printed %q: %v", sc.Text(), err)
		}
		rec, _ := json.Marshal(firmwaresim.Record{Stream: l.Topic, Partition: l.Partition, Offset: l.Offset, Key: l.Key,
			Value: json.RawMessage(l.Payload)})
		lines.Write(append(rec, '\n'))
	}
	return lines.Bytes()
}

func verifyLines(t *testing.T, lines []byte, want uint64) {
	t.Helper()
	v, err := firmwaresim.Verify(bytes.NewReader(lines), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Err(); err != nil || v.Received != want || v.Misrouted != 0 {
		t.Fatalf("kcat read %d readings, want %d (%d misrouted): %v", v.Received, want, v.Misrouted, err)
	}
}

// TestKcatReadsCentral forwards readings from an edge log to central and reads them with
// kcat from central's Kafka listener: every durable reading exactly once, in order per device
// (checked by firmware-sim's verifier); then as a consumer group, whose committed offsets the
// HTTP consume API reports, and which resumes where it stopped.
func TestKcatReadsCentral(t *testing.T) {
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	url, kaddr, stopCentral := runCentralKafka(t, central.Config{DataDir: cdir})
	defer stopCentral()
	edge, st := openEdge(t, 4)
	defer edge.Close()
	f := newFleet(200, 7)
	appendAll(t, st, f, 20000)
	_, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token})
	defer stopFwd()
	waitCaughtUp(t, url, 20000, 30*time.Second)

	verifyLines(t, kcatJSON(t, "-C", "-b", kaddr, "-t", "readings", "-e", "-J", "-q"), 20000)

	// As group g1: everything, then the offsets it committed are the HTTP API's group offsets.
	verifyLines(t, kcatJSON(t, "-b", kaddr, "-G", "g1", "-e", "-J", "-q", "-X", "auto.offset.reset=earliest", "readings"), 20000)
	cl := &consume.Client{BaseURL: url}
	var committed consume.GroupOffsets
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := cl.Streams(context.Background())
		ends := map[int]int64{}
		for _, s := range req {
			for _, p := range s.Partitions {
				ends[p.Partition] = p.End
			}
		}
		b, err := getGroupOffsets(url, "g1")
		if err != nil {
			t.Fatal(err)
		}
		committed = b
		same := len(committed.Offsets) == len(ends)
		for p, end := range ends {
			same = same && committed.Offsets[p] == end
		}
		if same {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group g1 committed %v over Kafka, want the end offsets %v through the HTTP API", committed.Offsets, ends)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("kcat -G g1 committed %v, seen by the HTTP API", committed.Offsets)

	// More readings: the group resumes at its committed offsets and reads only the new ones.
	appendAll(t, st, f, 1000)
	waitCaughtUp(t, url, 21000, 30*time.Second)
	lines := kcatJSON(t, "-b", kaddr, "-G", "g1", "-e", "-J", "-q", "readings")
	n := 0
	for sc := bufio.NewScanner(bytes.NewReader(lines)); sc.Scan(); n++ {
		var r firmwaresim.Record
		json.Unmarshal(sc.Bytes(), &r)
		if r.Offset < committed.Offsets[int(r.Partition)] {
			t.Fatalf("group g1 re-read %d/%d below its committed offset %d", r.Partition, r.Offset, committed.Offsets[int(r.Partition)])
		}
	}
	if n != 1000 {
		t.Fatalf("group g1 resumed with %d readings, want the 1000 new ones", n)
	}
}

func httpGet(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func getGroupOffsets(url, group string) (consume.GroupOffsets, error) {
	var out consume.GroupOffsets
	resp, err := httpGet(url + "/v1/groups/" + group + "/offsets?stream=readings")
	if err != nil {
		return out, err
	}
	err = json.Unmarshal(resp, &out)
	return out, err
}

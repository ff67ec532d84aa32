package central_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/forward"
	"github.com/tributary-iot/tributary/sync/protocol"
)

// hostilePost sends one sync POST with the given headers and body as edge id with token.
func hostilePost(t *testing.T, url, id, token string, hdr map[string]string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+protocol.SyncPath("readings", 0), bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(protocol.HeaderEdge, id)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("hostile request: %v (did central die?)", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAbsurdDeclaredSizes sends central (a child process) sync requests whose headers declare
// 10^12 records or gigabytes of raw data in a one-byte body, as one gateway's token may. Central
// must answer 400 and keep serving: another edge forwards after them, exactly once.
func TestAbsurdDeclaredSizes(t *testing.T) {
	cdir := t.TempDir()
	bad := addEdge(t, cdir, "gw-bad")
	good := addEdge(t, cdir, "gw-good")
	c := &childCentral{t: t, dir: cdir, listen: freeAddr(t)}
	c.start()
	defer c.stop()
	url := "http://" + c.listen
	crc := strconv.FormatUint(uint64(protocol.ChunkCRC([]byte{0})), 10)
	cases := map[string]map[string]string{
		"10^12 records": {protocol.HeaderBase: "0", protocol.HeaderNext: "1000000000000", protocol.HeaderRecords: "1000000000000",
			protocol.HeaderRawBytes: strconv.Itoa(1 << 20), protocol.HeaderCRC: crc},
		"64 MiB raw": {protocol.HeaderBase: "0", protocol.HeaderNext: "1000", protocol.HeaderRecords: "1000",
			protocol.HeaderRawBytes: strconv.Itoa(64 << 20), protocol.HeaderCRC: crc},
		"gap to 10^12": {protocol.HeaderBase: "0", protocol.HeaderNext: "1000000000000", protocol.HeaderGapFrom: "0",
			protocol.HeaderGapTo: "1000000000000", protocol.HeaderGapReason: "quota-dropped", protocol.HeaderEdgeEnd: "5"},
	}
	for name, hdr := range cases {
		body := []byte{0}
		if hdr[protocol.HeaderGapFrom] != "" {
			body = nil
		}
		for i := 0; i < 3; i++ { // again after each answer: a restart loop is what the bug caused
			code, msg := hostilePost(t, url, "gw-bad", bad, hdr, body)
			if code != http.StatusBadRequest {
				t.Fatalf("%s: got %d %s, want 400 with a reason", name, code, msg)
			}
			if i == 0 {
				t.Logf("%s: %d %s", name, code, bytes.TrimSpace([]byte(msg)))
			}
		}
	}
	if c.cmd.ProcessState != nil {
		t.Fatalf("central exited: %v", c.cmd.ProcessState)
	}
	edge, st := openEdge(t, 2)
	defer edge.Close()
	f := newFleet(50, 3)
	appendAll(t, st, f, 2000)
	_, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-good", Token: good})
	defer stopFwd()
	waitCaughtUp(t, url, 2000, 30*time.Second)
	drain(t, url).verify(t, f)
}

func openFiles(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}

// TestBodylessGetsCreateNothing: position requests for 300 made-up streams, from one edge
// token, used to create 300 central streams (2,400 open files). Streams are now created only
// by the first accepted data, and at most max_streams of them.
func TestBodylessGetsCreateNothing(t *testing.T) {
	c, url, token := startChildCentral(t, childCentral{maxStreams: 2})
	before := openFiles(t, c.cmd.Process.Pid)
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < 300; i++ {
		req, _ := http.NewRequest(http.MethodGet, url+protocol.SyncPath(fmt.Sprintf("made-up-%d", i), 0), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set(protocol.HeaderEdge, "gw-1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var pos protocol.Position
		json.NewDecoder(resp.Body).Decode(&pos)
		resp.Body.Close()
		if resp.StatusCode != 200 || pos.Next != 0 {
			t.Fatalf("GET %d: %d %+v", i, resp.StatusCode, pos)
		}
	}
	after := openFiles(t, c.cmd.Process.Pid)
	streams, err := (&consume.Client{BaseURL: url}).Streams(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("300 GETs: %d streams, open files %d -> %d", len(streams), before, after)
	if len(streams) != 0 || after > before+20 {
		t.Fatalf("300 bodyless GETs left %d streams and %d more open files", len(streams), after-before)
	}
	// Data creates streams, up to max_streams (2 here); the third is refused with 507.
	edge, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	for i, name := range []string{"a", "b", "c"} {
		st, err := edge.CreateStream(name, storage.StreamConfig{Partitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Partition(0).Append(t.Context(), storage.Record{Key: []byte("d"), Value: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
		ch, err := st.Partition(0).ReadChunk(0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, url+protocol.SyncPath(name, 0), bytes.NewReader(ch.Data))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set(protocol.HeaderEdge, "gw-1")
		req.Header.Set(protocol.HeaderBase, "0")
		req.Header.Set(protocol.HeaderNext, strconv.FormatInt(ch.Next, 10))
		req.Header.Set(protocol.HeaderRecords, strconv.Itoa(ch.Records))
		req.Header.Set(protocol.HeaderRawBytes, strconv.Itoa(ch.RawBytes))
		req.Header.Set(protocol.HeaderCRC, strconv.FormatUint(uint64(protocol.ChunkCRC(ch.Data)), 10))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := http.StatusOK
		if i == 2 {
			want = http.StatusInsufficientStorage
		}
		if resp.StatusCode != want {
			t.Fatalf("stream %s: %d %s, want %d", name, resp.StatusCode, b, want)
		}
		if i == 2 {
			t.Logf("third stream: %d %s", resp.StatusCode, bytes.TrimSpace(b))
		}
	}
}

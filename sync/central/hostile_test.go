package central_test

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

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

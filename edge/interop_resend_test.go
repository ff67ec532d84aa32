package edge

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testprog"
	"github.com/tributary-iot/tributary/storage"
)

// Real client libraries publish through SIGKILLs of a real edge process: MQTT.js (the client
// inside Node-RED), which resends unacknowledged publishes after a reconnect without the DUP flag,
// and Debian's paho-mqtt for Python, which sets it. Every reading a client saw acked must be in
// the edge log exactly once; the edge log is what the forwarder sends, and central dedupes only
// by edge offset, so a reading stored twice here would reach central twice.
//
// TRIBUTARY_RESEND_RUNS=N repeats the run N times and logs the totals (the figure in README.md).

// resendClient is one client process of a run.
type resendClient struct {
	id    string
	same  bool // identical payloads: only packet ids tell readings apart
	count int
	cmd   func(url, host, port string) *exec.Cmd
}

type resendTotals struct {
	runs, kills, acked       int
	resendsDup, resendsNoDup float64
	storedTwice, missing     int
}

func (r resendTotals) String() string {
	return fmt.Sprintf("%d runs, %d SIGKILLs, %d readings acked, resends recognised: %.0f with DUP, %.0f without; stored twice: %d, acked but missing: %d",
		r.runs, r.kills, r.acked, r.resendsDup, r.resendsNoDup, r.storedTwice, r.missing)
}

func resendRuns(t *testing.T, clients []resendClient) {
	runs := 1
	if n, err := strconv.Atoi(os.Getenv("TRIBUTARY_RESEND_RUNS")); err == nil && n > 0 {
		runs = n
	}
	var total resendTotals
	for range runs {
		r := resendRun(t, clients, 2)
		total.runs++
		total.kills += r.kills
		total.acked += r.acked
		total.resendsDup += r.resendsDup
		total.resendsNoDup += r.resendsNoDup
		total.storedTwice += r.storedTwice
		total.missing += r.missing
		if t.Failed() {
			break
		}
	}
	t.Logf("total: %s", total)
}

func resendRun(t *testing.T, clients []resendClient, kills int) resendTotals {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	host, port, _ := net.SplitHostPort(addr)
	child := startCrashChild(t, dir, addr)
	defer func() {
		if child != nil {
			child.kill(t)
		}
	}()

	type clientRun struct {
		resendClient
		mu    sync.Mutex
		acked map[int]uint16 // seq -> packet id
		done  bool
		err   error
		exit  chan struct{}
	}
	runs := make([]*clientRun, len(clients))
	for i, c := range clients {
		cr := &clientRun{resendClient: c, acked: map[int]uint16{}, exit: make(chan struct{})}
		runs[i] = cr
		cmd := c.cmd("mqtt://"+addr, host, port)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", c.id, err)
		}
		go func() {
			defer close(cr.exit)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				cr.mu.Lock()
				switch {
				case len(f) == 3 && f[0] == "ACK":
					seq, _ := strconv.Atoi(f[1])
					pid, _ := strconv.Atoi(f[2])
					cr.acked[seq] = uint16(pid)
				case len(f) == 1 && f[0] == "DONE":
					cr.done = true
				}
				cr.mu.Unlock()
			}
			cr.err = cmd.Wait()
		}()
		t.Cleanup(func() { cmd.Process.Kill(); <-cr.exit })
	}

	var res resendTotals
	scrape := func() {
		d := scrapeDuplicates(t, child.httpAddr)
		res.resendsDup += d[`dup="true"`]
		res.resendsNoDup += d[`dup="false"`]
	}
	ackedCounts := func() (total, least int) {
		least = -1
		for _, cr := range runs {
			cr.mu.Lock()
			n := len(cr.acked)
			cr.mu.Unlock()
			total += n
			if least < 0 || n < least {
				least = n
			}
		}
		return total, least
	}
	// Kill only once every client publishes: node takes a while to start.
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		if _, least := ackedCounts(); least >= 10 {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatal("clients did not get 10 readings acked each within 30 s")
		}
	}
	for k := range kills {
		time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
		n, _ := ackedCounts()
		scrape()
		t.Logf("SIGKILL %d after %d acked readings", k+1, n)
		child.kill(t)
		res.kills++
		child = startCrashChild(t, dir, addr)
	}
	deadline := time.After(100 * time.Second) // the clients give up after 90 s
	for _, cr := range runs {
		select {
		case <-cr.exit:
		case <-deadline:
			t.Fatalf("%s still running 100 s after the kills", cr.id)
		}
		if cr.err != nil || !cr.done {
			t.Fatalf("%s: exit %v after %d of %d acked (DONE seen: %v)", cr.id, cr.err, len(cr.acked), cr.count, cr.done)
		}
	}
	scrape()
	child.kill(t)
	child = nil

	l, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Per client: how often each seq (or, for identical payloads, each packet id) was stored.
	stored := map[string]map[int]int{}
	byID := map[string]*clientRun{}
	for _, cr := range runs {
		stored[cr.id] = map[int]int{}
		byID[cr.id] = cr
	}
	for _, part := range readStream(t, l, "readings") {
		for _, rec := range part {
			cid := string(rec.HeaderValue(HeaderClientID))
			cr := byID[cid]
			if cr == nil {
				t.Fatalf("reading from unknown client %q", cid)
			}
			key := 0
			if cr.same {
				key, _ = strconv.Atoi(string(rec.HeaderValue(HeaderPacketID)))
			} else {
				var rd reading
				if err := json.Unmarshal(rec.Value, &rd); err != nil {
					t.Fatal(err)
				}
				key = rd.Seq
			}
			stored[cid][key]++
		}
	}
	for _, cr := range runs {
		res.acked += len(cr.acked)
		n := 0
		for seq, pid := range cr.acked {
			key := seq
			if cr.same {
				key = int(pid)
			}
			switch c := stored[cr.id][key]; {
			case c == 0:
				res.missing++
				t.Errorf("%s: reading %d (packet id %d) acked but not stored", cr.id, seq, pid)
			case c > 1:
				res.storedTwice += c - 1
				t.Errorf("%s: reading %d (packet id %d) stored %d times", cr.id, seq, pid, c)
			}
		}
		for _, c := range stored[cr.id] {
			n += c
		}
		if n != cr.count {
			t.Errorf("%s: %d readings stored, sent %d (all acked)", cr.id, n, cr.count)
		}
	}
	res.runs = 1
	t.Logf("run: %s", res)
	return res
}

// scrapeDuplicates reads tributary_edge_duplicates_total by label from an edge's /metrics.
func scrapeDuplicates(t *testing.T, httpAddr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape edge metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, "tributary_edge_duplicates_total{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		out[labels], _ = strconv.ParseFloat(value, 64)
	}
	return out
}

// mqttjs returns node and the folder where npm ci installed MQTT.js (.ci/run does), or skips.
func mqttjs(t *testing.T) (node, dir string) {
	node = testprog.Find(t, "node", "nodejs")
	dir, err := filepath.Abs(filepath.Join("testdata", "mqttjs"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "mqtt", "package.json")); err != nil {
		testprog.Missing(t, "MQTT.js not installed: run npm ci in edge/testdata/mqttjs")
	}
	return node, dir
}

func TestMQTTjsResendsThroughSIGKILL(t *testing.T) {
	node, dir := mqttjs(t)
	js := func(id string, qos, version int, payload string) resendClient {
		const count = 600
		return resendClient{id: id, same: payload == "same", count: count, cmd: func(url, _, _ string) *exec.Cmd {
			return exec.Command(node, filepath.Join(dir, "publish.js"), url, id, strconv.Itoa(count),
				strconv.Itoa(qos), strconv.Itoa(version), "20", "3", payload)
		}}
	}
	resendRuns(t, []resendClient{
		js("js-q1", 1, 4, "seq"),
		js("js-q1-v5", 1, 5, "seq"),
		js("js-q2", 2, 4, "seq"),
		js("js-same", 1, 4, "same"),
	})
}

func TestPahoPythonResendsThroughSIGKILL(t *testing.T) {
	py := testprog.Python(t, "python3-paho-mqtt", "paho.mqtt.client")
	script, err := filepath.Abs(filepath.Join("testdata", "paho_publish.py"))
	if err != nil {
		t.Fatal(err)
	}
	paho := func(id string, qos int) resendClient {
		const count = 600
		return resendClient{id: id, count: count, cmd: func(_, host, port string) *exec.Cmd {
			return exec.Command(py, script, host, port, id, strconv.Itoa(count), strconv.Itoa(qos), "20", "0.003")
		}}
	}
	resendRuns(t, []resendClient{paho("py-q1", 1), paho("py-q2", 2)})
}

package central_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"github.com/tributary-iot/tributary/internal/testpki"
	"github.com/tributary-iot/tributary/internal/testprog"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/forward"
)

// kafkajs returns node and the folder where npm ci installed KafkaJS (.ci/run does), or skips.
// KafkaJS is a Kafka client in pure JavaScript, with its own protocol and consumer-group code:
// no librdkafka, no franz-go.
func kafkajs(t *testing.T) (node, dir string) {
	node = testprog.Find(t, "node", "nodejs")
	dir, err := filepath.Abs(filepath.Join("testdata", "kafkajs"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "kafkajs", "package.json")); err != nil {
		testprog.Missing(t, "KafkaJS not installed: run npm ci in sync/central/testdata/kafkajs")
	}
	return node, dir
}

// jsLine is one line consume.js printed: a record, or an event with the facts of its kind.
type jsLine struct {
	Event     string            `json:"event"`
	Consumer  string            `json:"c"`
	Partition int               `json:"p"`
	Offset    int64             `json:"o"`
	Key       string            `json:"k"`
	Value     string            `json:"v"`
	Headers   map[string]string `json:"h"`
	C1        []int             `json:"c1"`
	C2        []int             `json:"c2"`
	Offsets   map[string]int64  `json:"offsets"`
	Read      int               `json:"read"`
	Name      string            `json:"name"`
	Message   string            `json:"message"`
}

// runKafkaJS runs consume.js with args, bounded to 90 s (the script gives up after 60 s), and
// returns what it printed and how it exited; a line that is not JSON fails the test.
func runKafkaJS(t *testing.T, args ...string) ([]jsLine, error) {
	t.Helper()
	node, dir := kafkajs(t)
	return runClientScript[jsLine](t, node, filepath.Join(dir, "consume.js"), args...)
}

// kafkaJSRead runs consume.js read and fails the test unless it exited cleanly; it returns the
// records read.
func kafkaJSRead(t *testing.T, args ...string) []jsLine {
	t.Helper()
	lines, err := runKafkaJS(t, append([]string{"read"}, args...)...)
	if err != nil {
		t.Fatalf("KafkaJS read %v: %v (last line %+v)", args[:2], err, last(lines))
	}
	return records(lines)
}

func last(lines []jsLine) jsLine {
	if len(lines) == 0 {
		return jsLine{}
	}
	return lines[len(lines)-1]
}

func records(lines []jsLine) []jsLine {
	var recs []jsLine
	for _, l := range lines {
		if l.Event == "" {
			recs = append(recs, l)
		}
	}
	return recs
}

// jsRecords are the records among consume.js's lines, for verifyClientRead.
func jsRecords(lines []jsLine) []clientRecord {
	var recs []clientRecord
	for _, l := range records(lines) {
		recs = append(recs, clientRecord{Consumer: l.Consumer, Partition: l.Partition, Offset: l.Offset, Key: l.Key, Value: l.Value, Headers: l.Headers})
	}
	return recs
}

// forwardFleet appends n readings of a new fleet of devices devices to a 4-partition edge log and
// forwards them to central at url (with caFile, when set, to trust central's certificate); it
// returns once the forwarder is stopped and central's consume API (through cl) holds all n.
func forwardFleet(t *testing.T, url, caFile, token string, cl *consume.Client, devices, n int) *fleet {
	t.Helper()
	edge, st := openEdge(t, 4)
	defer edge.Close()
	f := newFleet(devices, 11)
	appendAll(t, st, f, n)
	_, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token, CAFile: caFile})
	defer stopFwd()
	waitRecords(t, cl, int64(n))
	return f
}

// TestKafkaJSReadsCentral: a KafkaJS consumer reads every reading an edge forwarded, from the
// beginning, once each, in order per device, with key, partition and provenance headers as
// central stored them.
func TestKafkaJSReadsCentral(t *testing.T) {
	kafkajs(t)
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	url, kaddr, stop := runCentralKafka(t, central.Config{DataDir: cdir})
	defer stop()
	cl := &consume.Client{BaseURL: url}
	f := forwardFleet(t, url, "", token, cl, 200, 10000)
	verifyClientRead(t, "KafkaJS", jsRecords(kafkaJSRead(t, kaddr, "readings", "js-read")), cl, f)
}

// TestKafkaJSGroup runs KafkaJS's own consumer-group code against central's coordinator: two
// consumers in one group split the partitions, the one left takes every partition when the
// other disconnects, and a third consumer of the group starts at exactly the offsets KafkaJS
// committed (which the HTTP API reports for the same group) and reads the rest once: nothing
// lost.
func TestKafkaJSGroup(t *testing.T) {
	kafkajs(t)
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	url, kaddr, stop := runCentralKafka(t, central.Config{DataDir: cdir})
	defer stop()
	cl := &consume.Client{BaseURL: url}
	const total = 12000
	forwardFleet(t, url, "", token, cl, 100, total)
	streams, err := cl.Streams(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ends := map[int]int64{}
	for _, s := range streams {
		for _, p := range s.Partitions {
			ends[p.Partition] = p.End
		}
	}

	lines, err := runKafkaJS(t, "split", kaddr, "readings", "js", "6000")
	if err != nil {
		t.Fatalf("KafkaJS split: %v (last line %+v)", err, last(lines))
	}
	for _, l := range lines {
		switch l.Event {
		case "split":
			both := append(append([]int{}, l.C1...), l.C2...)
			sort.Ints(both)
			if len(l.C1) == 0 || len(l.C2) == 0 || len(both) != 8 || both[0] != 0 || both[7] != 7 {
				t.Fatalf("split c1=%v c2=%v, want the 8 partitions shared", l.C1, l.C2)
			}
			t.Logf("two KafkaJS consumers split the partitions: c1=%v c2=%v (%d records read)", l.C1, l.C2, l.Read)
		case "takeover":
			if len(l.C1) != 8 {
				t.Fatalf("after c2 left, c1 holds %v, want all 8", l.C1)
			}
			t.Logf("c2 left, c1 took over %v (%d records read)", l.C1, l.Read)
		}
	}
	// A partition's records come in offset order and never skip ahead of what was read: a
	// consumer that gets a partition starts where the group committed, so records read but not
	// yet committed may come again (Kafka's at-least-once), records never read may not be passed.
	read := map[int]map[int64]int{}
	high := map[int]int64{}
	for _, r := range records(lines) {
		if h, ok := high[r.Partition]; (ok && r.Offset > h+1) || (!ok && r.Offset != 0) {
			t.Fatalf("%s read offset %d of partition %d, the highest read before was %d", r.Consumer, r.Offset, r.Partition, high[r.Partition])
		}
		high[r.Partition] = max(high[r.Partition], r.Offset)
		if read[r.Partition] == nil {
			read[r.Partition] = map[int64]int{}
		}
		read[r.Partition][r.Offset]++
	}
	committed, err := getGroupOffsets(url, "js")
	if err != nil {
		t.Fatal(err)
	}
	repeated, left := 0, int64(0)
	for p := 0; p < 8; p++ {
		c := committed.Offsets[p]
		if c > ends[p] {
			t.Fatalf("partition %d: group js committed %d past the end %d", p, c, ends[p])
		}
		for o := int64(0); o < c; o++ {
			if read[p][o] == 0 {
				t.Fatalf("partition %d: offset %d below the committed %d was never read: lost", p, o, c)
			}
			repeated += read[p][o] - 1
		}
		left += ends[p] - c
	}
	if left == 0 {
		t.Fatalf("the group committed every end offset %v: nothing left for the third consumer", ends)
	}
	t.Logf("group js committed %v over Kafka, seen by the HTTP API; %d records read twice around the rebalances", committed.Offsets, repeated)

	// A third consumer of the group resumes at exactly the committed offsets and reads the rest once.
	lines, err = runKafkaJS(t, "resume", kaddr, "readings", "js")
	if err != nil {
		t.Fatalf("KafkaJS resume: %v (last line %+v)", err, last(lines))
	}
	for _, l := range lines {
		if l.Event != "committed" {
			continue
		}
		for p := 0; p < 8; p++ {
			o, ok := l.Offsets[strconv.Itoa(p)]
			if want := committed.Offsets[p]; !ok || (o != want && !(o == -1 && want == 0)) {
				t.Fatalf("partition %d: KafkaJS's admin sees committed offset %d, the HTTP API %d", p, o, want)
			}
		}
	}
	after := map[int][]int64{}
	for _, r := range records(lines) {
		after[r.Partition] = append(after[r.Partition], r.Offset)
	}
	for p := 0; p < 8; p++ {
		from, offs := committed.Offsets[p], after[p]
		for i, o := range offs {
			if o != from+int64(i) {
				t.Fatalf("partition %d: the third consumer read %v.., want offsets %d..%d once in order", p, head(offs), from, ends[p]-1)
			}
		}
		if int64(len(offs)) != ends[p]-from {
			t.Fatalf("partition %d: the third consumer read %d records, want %d (offsets %d..%d)", p, len(offs), ends[p]-from, from, ends[p]-1)
		}
	}
	t.Logf("a third consumer of group js resumed at the committed offsets and read the %d remaining records once", left)
}

// TestKafkaJSSASLOverTLS: KafkaJS logs in to central's Kafka listener over TLS with SCRAM-SHA-256
// and with PLAIN, password = central's API token (the consume credentials, as deploy/README.md
// tells Kafka clients), and reads every reading; a wrong password is refused with KafkaJS's SASL
// authentication error.
func TestKafkaJSSASLOverTLS(t *testing.T) {
	kafkajs(t)
	// The CA's name differs from the certificate's: OpenSSL, under Node's TLS, takes a certificate
	// whose issuer is its own subject for a self-signed one.
	ca := testpki.New(t, "kafka")
	certFile, keyFile := ca.ServerCert(t, "central")
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	const apiToken = "analytics-s3cret"
	url, kaddr, stop := runCentralKafka(t, central.Config{DataDir: cdir, TLSCert: certFile, TLSKey: keyFile, APIToken: apiToken})
	defer stop()
	url = "https" + url[len("http"):]
	cl := &consume.Client{BaseURL: url, HTTP: tlsClient(ca, nil), Token: apiToken}
	f := forwardFleet(t, url, ca.File, token, cl, 50, 2000)

	login := func(mech, pass string) []string {
		return []string{kaddr, "readings", "js-" + mech, "--sasl=" + mech, "--user=analyst", "--password=" + pass, "--ca=" + ca.File}
	}
	for _, mech := range []string{"scram-sha-256", "plain"} {
		verifyClientRead(t, "KafkaJS "+mech, jsRecords(kafkaJSRead(t, login(mech, apiToken)...)), cl, f)
	}
	for _, mech := range []string{"scram-sha-256", "plain"} {
		lines, err := runKafkaJS(t, append([]string{"read"}, login(mech, "wrong")...)...)
		var exit *exec.ExitError
		l := last(lines)
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || l.Event != "error" || l.Name != "KafkaJSSASLAuthenticationError" || len(records(lines)) != 0 {
			t.Fatalf("KafkaJS %s with a wrong password: %v, last line %+v, %d records; want a KafkaJSSASLAuthenticationError and nothing read",
				mech, err, l, len(records(lines)))
		}
		t.Logf("%s with a wrong password: %s", mech, l.Message)
	}
}

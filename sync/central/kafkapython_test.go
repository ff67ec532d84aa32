package central_test

import (
	"errors"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/internal/testpki"
	"github.com/tributary-iot/tributary/internal/testprog"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/consume"
)

// kafka-python (Debian's python3-kafka) is a Kafka client in pure Python, with its own protocol
// code and a consumer-group coordinator modelled on the Java client's: no librdkafka, no
// franz-go. testdata/kafkapython/consume.py drives it.

// pyClientLine is one line consume.py printed: a record, or an event with the facts of its kind.
type pyClientLine struct {
	clientRecord
	Event   string           `json:"event"`
	C1      []int            `json:"c1"`
	C2      []int            `json:"c2"`
	Offsets map[string]int64 `json:"offsets"`
	Read    int              `json:"read"`
	Name    string           `json:"name"`
	Message string           `json:"message"`
}

// runKafkaPython runs consume.py with args, bounded to 90 s (the script gives up after 60 s),
// and returns what it printed and how it exited; a line that is not JSON fails the test.
func runKafkaPython(t *testing.T, args ...string) ([]pyClientLine, error) {
	t.Helper()
	py := testprog.Python(t, "python3-kafka", "kafka")
	return runClientScript[pyClientLine](t, py, filepath.Join("testdata", "kafkapython", "consume.py"), args...)
}

// kafkaPython runs consume.py and fails the test unless it exited cleanly.
func kafkaPython(t *testing.T, args ...string) []pyClientLine {
	t.Helper()
	lines, err := runKafkaPython(t, args...)
	if err != nil {
		t.Fatalf("kafka-python %v: %v (last line %+v)", args[:3], err, lastPy(lines))
	}
	return lines
}

func lastPy(lines []pyClientLine) pyClientLine {
	if len(lines) == 0 {
		return pyClientLine{}
	}
	return lines[len(lines)-1]
}

func pyRecords(lines []pyClientLine) []clientRecord {
	var recs []clientRecord
	for _, l := range lines {
		if l.Event == "" {
			recs = append(recs, l.clientRecord)
		}
	}
	return recs
}

// TestKafkaPythonReadsCentral: kafka-python reads every reading an edge forwarded, from the
// beginning, once each, in offset order, with the keys, values and headers central stored.
func TestKafkaPythonReadsCentral(t *testing.T) {
	testprog.Python(t, "python3-kafka", "kafka")
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	url, kaddr, stop := runCentralKafka(t, central.Config{DataDir: cdir})
	defer stop()
	cl := &consume.Client{BaseURL: url}
	f := forwardFleet(t, url, "", token, cl, 200, 10000)
	verifyClientRead(t, "kafka-python", pyRecords(kafkaPython(t, "read", kaddr, "readings")), cl, f)
}

// TestKafkaPythonGroup runs kafka-python's consumer-group coordinator against central's: two
// consumers in one group split the partitions, the one left takes every partition when the
// other leaves, the offsets it commits are the group's offsets in the HTTP API, and a new member
// of the group starts at exactly those offsets and reads the rest once.
func TestKafkaPythonGroup(t *testing.T) {
	testprog.Python(t, "python3-kafka", "kafka")
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	url, kaddr, stop := runCentralKafka(t, central.Config{DataDir: cdir})
	defer stop()
	cl := &consume.Client{BaseURL: url}
	forwardFleet(t, url, "", token, cl, 100, 12000)
	ends := partitionEnds(t, cl)

	lines := kafkaPython(t, "split", kaddr, "readings", "py-group", "6000")
	var pyCommitted map[string]int64
	for _, l := range lines {
		switch l.Event {
		case "split":
			checkSplit(t, "kafka-python", l.C1, l.C2, len(ends))
			t.Logf("two kafka-python consumers split the partitions: c1=%v c2=%v (%d records read)", l.C1, l.C2, l.Read)
		case "takeover":
			if len(l.C1) != len(ends) {
				t.Fatalf("after c2 left, c1 holds %v, want all %d", l.C1, len(ends))
			}
			t.Logf("c2 left, c1 took over %v (%d records read)", l.C1, l.Read)
		case "committed":
			pyCommitted = l.Offsets
		}
	}
	committed, err := getGroupOffsets(url, "py-group")
	if err != nil {
		t.Fatal(err)
	}
	for p := range ends {
		if o, ok := pyCommitted[strconv.Itoa(p)]; !ok || o != committed.Offsets[p] {
			t.Fatalf("partition %d: kafka-python reads back committed offset %d (%v), the HTTP API reports %d", p, o, ok, committed.Offsets[p])
		}
	}
	checkGroupRead(t, "kafka-python", pyRecords(lines), committed.Offsets, ends)

	lines = kafkaPython(t, "resume", kaddr, "readings", "py-group")
	for _, l := range lines {
		if l.Event == "committed" {
			for p := range ends {
				if o := l.Offsets[strconv.Itoa(p)]; o != committed.Offsets[p] {
					t.Fatalf("partition %d: the new member sees committed offset %d, the HTTP API %d", p, o, committed.Offsets[p])
				}
			}
		}
	}
	checkResumed(t, "kafka-python", pyRecords(lines), committed.Offsets, ends)
}

// TestKafkaPythonSASLOverTLS: kafka-python logs in to central's Kafka listener over TLS with
// SCRAM-SHA-256 and with PLAIN, password = central's API token (as deploy/README.md tells Kafka
// clients), and reads every reading; with a wrong password it is refused and reads nothing.
// kafka-python 2.0 sends SaslHandshake v0 and then the SASL tokens unframed, so this is the test
// of that path.
func TestKafkaPythonSASLOverTLS(t *testing.T) {
	testprog.Python(t, "python3-kafka", "kafka")
	ca := testpki.New(t, "kafka")
	certFile, keyFile := ca.ServerCert(t, "central")
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	const apiToken = "analytics-s3cret"
	logs := &lockedBuffer{}
	url, kaddr, stop := runCentralKafka(t, central.Config{DataDir: cdir, TLSCert: certFile, TLSKey: keyFile, APIToken: apiToken,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	defer stop()
	url = "https" + url[len("http"):]
	cl := &consume.Client{BaseURL: url, HTTP: tlsClient(ca, nil), Token: apiToken}
	f := forwardFleet(t, url, ca.File, token, cl, 50, 2000)
	// kafka-python checks that the certificate names the host it dialled, 127.0.0.1.
	login := func(mech, pass string) []string {
		return []string{"read", kaddr, "readings", "--sasl=" + mech, "--user=analyst", "--password=" + pass, "--ca=" + ca.File}
	}
	for _, mech := range []string{"SCRAM-SHA-256", "PLAIN"} {
		verifyClientRead(t, "kafka-python "+mech, pyRecords(kafkaPython(t, login(mech, apiToken)...)), cl, f)
	}
	for _, mech := range []string{"SCRAM-SHA-256", "PLAIN"} {
		// After a v0 handshake a refusal can only close the connection, so kafka-python sees
		// no broker; central's log says why.
		refusal := []string{`msg="kafka SASL authentication failed"`, "mechanism=" + mech, "user=analyst", `reason="wrong user or password"`}
		before := countLogLines(logs.String(), refusal...)
		lines, err := runKafkaPython(t, login(mech, "wrong")...)
		var exit *exec.ExitError
		l := lastPy(lines)
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || l.Event != "error" || len(pyRecords(lines)) != 0 {
			t.Fatalf("kafka-python %s with a wrong password: %v, last line %+v, %d records; want an error and nothing read",
				mech, err, l, len(pyRecords(lines)))
		}
		if n := countLogLines(logs.String(), refusal...); n <= before {
			t.Fatalf("kafka-python %s with a wrong password failed with %s (%s), but central logged no refused login:\n%s", mech, l.Name, l.Message, logs.String())
		}
		t.Logf("%s with a wrong password: central refused the login; kafka-python: %s: %s", mech, l.Name, l.Message)
	}
}

// countLogLines counts central's log lines that hold every one of parts.
func countLogLines(logs string, parts ...string) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

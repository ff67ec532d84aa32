package kafkaserve_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testpki"
	"github.com/tributary-iot/tributary/internal/testprog"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/kafkaserve"
)

// kcatLine is one line of `kcat -J`.
type kcatLine struct {
	Topic     string   `json:"topic"`
	Partition int      `json:"partition"`
	Offset    int64    `json:"offset"`
	TS        int64    `json:"ts"`
	Key       string   `json:"key"`
	Payload   string   `json:"payload"`
	Headers   []string `json:"headers"`
}

func runKcat(t *testing.T, args ...string) []kcatLine {
	t.Helper()
	kcat := testprog.Find(t, "kcat", "kcat")
	out := testprog.Output(t, 60*time.Second, kcat, args...)
	var lines []kcatLine
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l kcatLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("kcat printed %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	return lines
}

// TestKcatReadsStream: `kcat -C -e -J` prints every record once in order per device, with plain
// and zstd batches, and `-o s@TS` starts each partition at the first record at or after TS.
func TestKcatReadsStream(t *testing.T) {
	for _, compression := range []string{"none", "zstd"} {
		t.Run(compression, func(t *testing.T) {
			log := openLog(t)
			start := time.UnixMilli(1_700_000_000_000)
			st := fillLog(t, log, 4, 40, 8000, start)
			addr := serve(t, kafkaserve.Config{Log: log, Compression: compression})
			lines := runKcat(t, "-C", "-b", addr, "-t", "readings", "-e", "-J", "-q")
			c := newOrderChecker()
			for _, l := range lines {
				c.add(l.Key, []byte(l.Payload))
			}
			c.check(t, 8000)

			// Readings from round 150 on: 40 devices × 50 rounds.
			at := start.Add(150 * time.Millisecond).UnixMilli()
			lines = runKcat(t, "-C", "-b", addr, "-t", "readings", "-e", "-J", "-q", "-o", "s@"+strconv.FormatInt(at, 10))
			if len(lines) != 40*50 {
				t.Fatalf("-o s@%d printed %d records, want %d", at, len(lines), 40*50)
			}
			first := map[int]int64{}
			for _, l := range lines {
				if l.TS < at {
					t.Fatalf("record %d/%d at %d is before %d", l.Partition, l.Offset, l.TS, at)
				}
				if _, ok := first[l.Partition]; !ok {
					first[l.Partition] = l.Offset
				}
			}
			for p, off := range first {
				want := firstAtOrAfter(t, st.Partition(p), at)
				if off != want {
					t.Fatalf("partition %d starts at %d, want %d", p, off, want)
				}
			}
		})
	}
}

// firstAtOrAfter scans a partition for the first record stamped at or after ts.
func firstAtOrAfter(t *testing.T, p *storage.Partition, ts int64) int64 {
	r := p.NewReader(0, nil)
	for {
		e, err := r.Next(context.Background())
		if err == io.EOF {
			return p.EndOffset()
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Timestamp.UnixMilli() >= ts {
			return e.Offset
		}
	}
}

// TestKcatSASLSSL: librdkafka logs in with SCRAM-SHA-256 and PLAIN over TLS, as deploy/README.md
// shows; a wrong password makes kcat fail.
func TestKcatSASLSSL(t *testing.T) {
	log := openLog(t)
	fillLog(t, log, 2, 10, 500, time.UnixMilli(1_700_000_000_000))
	ca := testpki.New(t, "kafka")
	certFile, keyFile := ca.ServerCert(t, "central")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, kafkaserve.Config{Log: log, Users: users{"analytics": "tok-123"},
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	args := func(mech, pass string) []string {
		return []string{"-C", "-b", addr, "-t", "readings", "-e", "-J", "-q",
			"-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=" + mech,
			"-X", "sasl.username=analytics", "-X", "sasl.password=" + pass, "-X", "ssl.ca.location=" + ca.File}
	}
	for _, mech := range []string{"SCRAM-SHA-256", "PLAIN"} {
		if lines := runKcat(t, args(mech, "tok-123")...); len(lines) != 500 {
			t.Fatalf("%s: kcat printed %d records, want 500", mech, len(lines))
		}
	}
	kcat := testprog.Find(t, "kcat", "kcat")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, append(args("SCRAM-SHA-256", "wrong"), "-m", "5")...).Output()
	if err == nil || ctx.Err() != nil || len(out) > 0 {
		t.Fatalf("kcat with a wrong password: %v (%v), printed %q", err, ctx.Err(), out)
	}
}

// TestKcatEmptyPartitions: partitions without records answer with an empty record set, which
// librdkafka needs to reach the end of them (it refuses a null one and retries for ever).
func TestKcatEmptyPartitions(t *testing.T) {
	log := openLog(t)
	fillLog(t, log, 8, 1, 10, time.UnixMilli(1_700_000_000_000))
	addr := serve(t, kafkaserve.Config{Log: log})
	if lines := runKcat(t, "-C", "-b", addr, "-t", "readings", "-e", "-J", "-q"); len(lines) != 10 {
		t.Fatalf("kcat printed %d records, want 10", len(lines))
	}
}

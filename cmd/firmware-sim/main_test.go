package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func startBroker(t *testing.T) string {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t1", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return "tcp://" + tcp.Address()
}

// consumeLines subscribes to all readings and renders what arrives as consume JSON lines, standing
// in for central until `tributary consume` exists.
type consumeLines struct {
	mu    sync.Mutex
	lines []string
}

func subscribeAsConsumer(t *testing.T, broker string) *consumeLines {
	t.Helper()
	c := &consumeLines{}
	client := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("consumer").SetOrderMatters(true))
	if tok := client.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect consumer: %v", tok.Error())
	}
	tok := client.Subscribe("devices/+/readings", 1, func(_ paho.Client, m paho.Message) {
		c.mu.Lock()
		defer c.mu.Unlock()
		key := strings.Split(m.Topic(), "/")[1]
		c.lines = append(c.lines, fmt.Sprintf(`{"stream":"readings","partition":0,"offset":%d,"key":%q,"timestamp":%d,"edge":"e1","edge_partition":0,"edge_offset":%d,"headers":{},"value":%s}`,
			len(c.lines), key, time.Now().UnixMilli(), len(c.lines), m.Payload()))
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { client.Disconnect(100) })
	return c
}

func (c *consumeLines) snapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

func TestRunThenVerify(t *testing.T) {
	broker := startBroker(t)
	consumer := subscribeAsConsumer(t, broker)
	dir := t.TempDir()
	manifest, report := filepath.Join(dir, "run.manifest.json"), filepath.Join(dir, "run.report.json")

	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--broker", broker, "--devices", "3", "--rate", "200", "--qos", "1",
		"--count", "50", "--duration", "10s", "--password-template", "secret-{id}",
		"--manifest", manifest, "--report-json", report}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("run exited %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "acked        150 readings") {
		t.Errorf("table report lacks the acked count:\n%s", out.String())
	}
	var rep struct {
		Acked     uint64 `json:"acked"`
		PerDevice []struct {
			Device string `json:"device"`
		} `json:"per_device"`
	}
	data, err := os.ReadFile(report)
	if err != nil || json.Unmarshal(data, &rep) != nil || rep.Acked != 150 || len(rep.PerDevice) != 3 {
		t.Fatalf("JSON report %s: %v", data, err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for len(consumer.snapshot()) < 150 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	lines := consumer.snapshot()
	if len(lines) != 150 {
		t.Fatalf("consumer got %d readings, want 150", len(lines))
	}
	verify := func(lines []string, format string) (int, string) {
		in := filepath.Join(t.TempDir(), "stream.jsonl")
		if err := os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"verify", "--input", in, "--manifest", manifest, "--format", format}, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	if code, out := verify(lines, "table"); code != exitOK || !strings.Contains(out, "PASS") {
		t.Fatalf("clean stream: exit %d\n%s", code, out)
	}
	lossy := append(append([]string(nil), lines[:70]...), lines[71:]...)
	if code, out := verify(lossy, "json"); code != exitFailed || !strings.Contains(out, `"lost": 1`) {
		t.Fatalf("stream missing an acked reading: exit %d\n%s", code, out)
	}
	reordered := append([]string(nil), lines...)
	reordered[10], reordered[40] = reordered[40], reordered[10]
	if code, out := verify(reordered, "table"); code != exitFailed || !strings.Contains(out, "FAIL") {
		t.Fatalf("reordered stream: exit %d\n%s", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--qos", "2", "--count", "1"},
		{"--duration", "0"},
		{"--broker", "http://x", "--count", "1"},
		{"verify"},
		{"verify", "--input", filepath.Join(t.TempDir(), "missing.jsonl")},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != exitTrouble || errOut.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q; want %d and a message", args, code, errOut.String(), exitTrouble)
		}
	}
}

func TestHelpNamesTheContractFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &out, &errOut); code != exitOK {
		t.Fatalf("--help exited %d", code)
	}
	for _, flag := range []string{"--broker", "--devices", "--rate", "--qos", "--duration", "--manifest", "--reconnect-every"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("--help does not mention %s", flag)
		}
	}
}

// TestProgressLines: a run that is not on a terminal prints a plain progress line per interval on
// stderr, with counts that grow, so a long run in a log or CI is never silent.
func TestProgressLines(t *testing.T) {
	broker := startBroker(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--broker", broker, "--devices", "3", "--rate", "100", "--qos", "1",
		"--duration", "1200ms", "--progress", "250ms"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var lines []string
	for _, l := range strings.Split(errOut.String(), "\n") {
		if strings.HasPrefix(l, "progress ") {
			lines = append(lines, l)
		}
	}
	if len(lines) < 3 {
		t.Fatalf("%d progress lines in a 1.2s run at 250ms, want at least 3; stderr:\n%s", len(lines), errOut.String())
	}
	var last uint64
	for _, l := range lines {
		var acked uint64
		i := strings.Index(l, "acked ")
		if i < 0 || !strings.Contains(l, "of 1.2s") {
			t.Fatalf("progress line lacks acked count or planned duration: %q", l)
		}
		fmt.Sscanf(l[i:], "acked %d", &acked)
		if acked < last {
			t.Errorf("acked went down from %d: %q", last, l)
		}
		last = acked
	}
	if last == 0 {
		t.Errorf("no progress line counted an ack: %q", lines)
	}
	if code := run(context.Background(), []string{"--broker", broker, "--progress", "soon"}, &out, &errOut); code != exitTrouble {
		t.Errorf("--progress soon: exit %d, want %d", code, exitTrouble)
	}
}

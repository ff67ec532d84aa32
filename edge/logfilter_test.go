package edge

import (
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/internal/testprog"
)

// linesWith returns the log lines containing every one of subs.
func linesWith(log string, subs ...string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		ok := l != ""
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// A refused publish is one log line with the reason and the device: not mochi's packet struct
// at WARN, and no line without a message. mosquitto_pub speaks MQTT 3.1.1, where a refused QoS 1
// publish closes the connection.
func TestRefusedPublishLogsOneLine(t *testing.T) {
	pub := testprog.Find(t, "mosquitto_pub", "mosquitto-clients")
	var logs logBuffer
	a, _ := startAgentLogged(t, Config{}, logs.logger())
	_, port, _ := netSplit(a.MQTTAddr())
	out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", port, "-i", "sensor-7", "-q", "1",
		"-t", "devices/sensor-8/readings", "-m", `{"t":21.5}`).CombinedOutput()
	if err == nil {
		t.Fatalf("mosquitto_pub to another device's topic succeeded: %s", out)
	}
	// The connection has ended on both sides once mosquitto_pub exits; give the agent's
	// goroutines a moment to write whatever they log about it.
	for deadline := time.Now().Add(5 * time.Second); metricSum(t, a.metrics.registry, "tributary_edge_connected_devices") > 0; {
		if time.Now().After(deadline) {
			t.Fatal("the refused client is still connected after 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	log := logs.String()
	about := linesWith(log, "sensor-7")
	if len(about) != 1 {
		t.Fatalf("%d lines about the refused publish, want 1:\n%s", len(about), log)
	}
	for _, want := range []string{"publish refused", "device=sensor-7", "reason=not_authorized", "topic=devices/sensor-8/readings"} {
		if !strings.Contains(about[0], want) {
			t.Errorf("the line lacks %q: %s", want, about[0])
		}
	}
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "pk=") || strings.Contains(l, `msg=""`) || len(l) > 400 {
			t.Errorf("unwanted line (%d bytes): %.300s", len(l), l)
		}
	}
}

// One device publishing where it may not cannot flood the log: past its budget its lines are
// counted, not written, while another device's refusal is still logged.
func TestLogLinesPerClientAreBounded(t *testing.T) {
	var logs logBuffer
	a, _ := startAgentLogged(t, Config{}, logs.logger())
	const flood = 300
	c, _ := dialRaw(t, a.MQTTAddr(), "noisy", 5, "", "")
	for i := range flood {
		id := uint16(i + 1)
		c.publish("devices/someone-else/readings", []byte(`{"t":1}`), id, 1, false)
		pk, err := c.read()
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if pk.FixedHeader.Type != packets.Puback || pk.PacketID != id || pk.ReasonCode != packets.ErrNotAuthorized.Code {
			t.Fatalf("publish %d: packet type %d id %d reason %#x, want PUBACK not authorized", i, pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
		}
	}
	other, _ := dialRaw(t, a.MQTTAddr(), "quiet", 5, "", "")
	other.publish("devices/someone-else/readings", []byte(`{"t":1}`), 1, 1, false)
	if _, err := other.read(); err != nil {
		t.Fatal(err)
	}
	log := logs.String()
	noisy := linesWith(log, "client=noisy")
	if len(noisy) == 0 || len(noisy) > logLinesPerClient {
		t.Errorf("%d lines about client noisy after %d refused publishes, want 1..%d:\n%s", len(noisy), flood, logLinesPerClient, strings.Join(noisy, "\n"))
	}
	if q := linesWith(log, "client=quiet", "publish refused", "device=quiet"); len(q) != 1 {
		t.Errorf("the other client's refusal: %d lines, want 1:\n%s", len(q), log)
	}
	if got := metricSum(t, a.metrics.registry, "tributary_edge_log_lines_suppressed_total"); int(got) != flood-len(noisy) {
		t.Errorf("suppressed lines counter %v, want %d", got, flood-len(noisy))
	}
}

// The budget renews each window, and the first line after a suppressed stretch says how many
// lines it replaces; fresh client ids share a cap per window and, beyond the table's bound, one
// budget.
func TestLineLimiterWindowsAndOverflow(t *testing.T) {
	m := newMetrics()
	l := newLineLimiter(m.logSuppressed)
	t0 := time.Now()
	for i := range logLinesPerClient {
		if ok, held := l.allow("c", t0); !ok || held != 0 {
			t.Fatalf("line %d: allowed %v held %d", i, ok, held)
		}
	}
	for range 7 {
		if ok, _ := l.allow("c", t0.Add(time.Second)); ok {
			t.Fatal("a line past the budget was allowed")
		}
	}
	if ok, held := l.allow("c", t0.Add(logWindow)); !ok || held != 7 {
		t.Fatalf("next window: allowed %v, suppressed_before %d, want 7", ok, held)
	}
	allowed := 1 // c's line above, in this window
	for i := range maxLogClients + 50 {
		if ok, _ := l.allow(fmt.Sprintf("fresh-%d", i), t0.Add(logWindow)); ok {
			allowed++
		}
	}
	if n := len(l.budgets); n > maxLogClients+1 {
		t.Fatalf("%d budgets for %d client ids, want at most %d", n, maxLogClients+50, maxLogClients+1)
	}
	if allowed != logLinesAllClients {
		t.Fatalf("%d lines of %d fresh client ids in one window, want the shared cap %d", allowed, maxLogClients+50, logLinesAllClients)
	}
}

// mochi's listeners log a connection's end as a WARN with an empty message; it becomes a debug
// line with a message.
func TestMochiEmptyMessageBecomesDebug(t *testing.T) {
	var logs logBuffer
	log := slog.New(mochiLines{logs.logger().Handler()})
	log.Warn("", "error", errors.New("read connection: EOF"))
	if s := logs.String(); s != "" {
		t.Fatalf("at info level: %q", s)
	}
	debug := slog.New(mochiLines{slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})})
	debug.Warn("", "error", errors.New("read connection: EOF"))
	if s := logs.String(); !strings.Contains(s, "level=DEBUG") || !strings.Contains(s, `msg="MQTT connection ended"`) {
		t.Fatalf("at debug level: %q", s)
	}
}

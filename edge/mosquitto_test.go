package edge

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testprog"
)

// program finds a Debian program of the mosquitto packages for interop tests.
func program(t *testing.T, name string, dirs ...string) string {
	t.Helper()
	return testprog.Find(t, name, "mosquitto mosquitto-clients", dirs...)
}

func TestMosquittoPubWithAndWithoutCredentials(t *testing.T) {
	pub := program(t, "mosquitto_pub", "/usr/bin")
	dir := t.TempDir()
	addDevice(t, dir, "mp-1", "pw-1")
	a, _ := startAgent(t, Config{DataDir: dir})
	host, port, _ := net.SplitHostPort(a.MQTTAddr())
	run := func(args ...string) error {
		args = append([]string{"-h", host, "-p", port, "-q", "1"}, args...)
		out, err := exec.Command(pub, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := run("-i", "mp-1", "-u", "mp-1", "-P", "pw-1", "-t", "devices/mp-1/readings", "-m", `{"v":1}`); err != nil {
		t.Fatalf("with credentials: %v", err)
	}
	if err := run("-V", "mqttv5", "-i", "mp-1", "-u", "mp-1", "-P", "pw-1", "-t", "devices/mp-1/readings", "-m", `{"v":2}`); err != nil {
		t.Fatalf("MQTT 5 with credentials: %v", err)
	}
	if err := run("-i", "anon-7", "-t", "devices/anon-7/readings", "-m", `{"v":3}`); err != nil {
		t.Fatalf("anonymous on loopback: %v", err)
	}
	if err := run("-i", "mp-1", "-u", "mp-1", "-P", "wrong", "-t", "devices/mp-1/readings", "-m", `{"v":4}`); err == nil {
		t.Fatal("wrong password accepted")
	}
	if err := run("-i", "x", "-u", "nobody", "-P", "pw", "-t", "devices/nobody/readings", "-m", `{"v":5}`); err == nil {
		t.Fatal("unknown device accepted")
	}
	if n := countStream(t, a.Log(), "readings"); n != 3 {
		t.Fatalf("%d readings stored, want 3", n)
	}
}

// startMosquitto runs Debian's mosquitto on a free loopback port with a generated config.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin := program(t, "mosquitto", "/usr/sbin")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	writeFile(t, conf, "listener "+port+" 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n")
	cmd := exec.Command(bin, "-c", conf)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Error") {
				t.Log("mosquitto:", sc.Text())
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto not listening on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The external-broker source reads from Debian's mosquitto with a persistent session: readings
// published while the agent is down are delivered when it comes back, each stored once, in order.
func TestSourceFromMosquitto(t *testing.T) {
	broker := startMosquitto(t)
	dir := t.TempDir()
	cfg := Config{DataDir: dir, MQTT: MQTTConfig{Listen: "-"}, Source: &SourceConfig{Broker: "tcp://" + broker, ClientID: "edge-src-test"}}
	a, stop := startAgent(t, cfg)
	pub := pahoClient(t, broker, "field-bridge", "", "")
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			for _, d := range []string{"s-1", "s-2", "s-3"} {
				p, _ := json.Marshal(reading{Device: d, Seq: i})
				tok := pub.Publish("devices/"+d+"/readings", 1, false, p)
				if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Fatalf("publish to mosquitto: %v", tok.Error())
				}
			}
		}
	}
	waitCount := func(l func() int, want int) {
		deadline := time.Now().Add(15 * time.Second)
		for {
			n := l()
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d readings in the log, want %d", n, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The subscription must exist before the first publish, or mosquitto has no session to queue in.
	waitFor(t, func() bool { return a.sourceSubscribed() })
	publish(0, 100)
	waitCount(func() int { return countStream(t, a.Log(), "readings") }, 300)
	stop()
	publish(100, 200) // queued by mosquitto for the persistent session
	a, _ = startAgent(t, cfg)
	waitCount(func() int { return countStream(t, a.Log(), "readings") }, 600)
	next := map[string]int{}
	for _, part := range readStream(t, a.Log(), "readings") {
		for _, r := range part {
			var rd reading
			json.Unmarshal(r.Value, &rd)
			if rd.Seq != next[rd.Device] {
				t.Fatalf("%s: seq %d, want %d", rd.Device, rd.Seq, next[rd.Device])
			}
			next[rd.Device]++
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

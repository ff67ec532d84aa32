package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/internal/testpki"
)

// fdChildEnv makes the test binary an agent process with a lowered open-file limit (see
// TestMain), so the parent can exhaust its descriptors without touching its own.
const fdChildEnv = "TRIBUTARY_EDGE_FD_CHILD"

type fdChildConfig struct {
	Dir    string `json:"dir"`
	NoFile uint64 `json:"nofile"` // RLIMIT_NOFILE, soft and hard
	Hold   int    `json:"hold"`   // descriptors the child opens and keeps, to leave less room than its connection cap
}

func runFdChild(spec string) {
	var c fdChildConfig
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	// The Go runtime raised the soft limit to the hard one at start; lower both.
	if err := setFileLimit(c.NoFile); err != nil {
		fmt.Println("ERROR setrlimit:", err)
		os.Exit(2)
	}
	a, err := New(Config{DataDir: c.Dir, MQTT: MQTTConfig{Listen: "127.0.0.1:0"}, HTTPListen: "127.0.0.1:0"})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	var held []*os.File
	for range c.Hold {
		f, err := os.Open(os.DevNull)
		if err != nil {
			fmt.Println("ERROR hold:", err)
			os.Exit(2)
		}
		held = append(held, f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin) // the parent closes stdin, or dies: stop
		cancel()
	}()
	go func() {
		for !a.Ready() {
			time.Sleep(time.Millisecond)
		}
		fmt.Println("READY", a.MQTTAddr(), a.HTTPAddr())
	}()
	err = a.Run(ctx)
	for _, f := range held {
		f.Close()
	}
	if err != nil {
		os.Exit(3)
	}
}

// startFdChild starts the agent child and returns its MQTT and HTTP addresses and its PID.
func startFdChild(t *testing.T, c fdChildConfig) (mqttAddr, httpAddr string, pid int) {
	t.Helper()
	spec, _ := json.Marshal(c)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fdChildEnv+"="+string(spec))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("agent child %d did not stop within 15s of its stdin closing", cmd.Process.Pid)
			cmd.Process.Kill()
			<-done
		}
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case line <- sc.Text():
			default:
			}
		}
	}()
	select {
	case l := <-line:
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "READY" {
			t.Fatalf("agent child: %s", l)
		}
		return f[1], f[2], cmd.Process.Pid
	case <-time.After(10 * time.Second):
		t.Fatal("agent child not ready after 10s")
	}
	return "", "", 0
}

// openFiles tells what process pid has open, by kind (sockets, /dev/null, segment files, ...),
// for a test that fails because descriptors ran out.
func openFiles(pid int) string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	kinds := map[string]int{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if i := strings.IndexByte(target, '['); i > 0 {
			target = target[:i] // socket:[123] -> socket:
		} else if strings.HasPrefix(target, "/") && target != os.DevNull {
			target = filepath.Ext(target) + " file"
		}
		kinds[target]++
	}
	return fmt.Sprintf("%d open: %v", len(ents), kinds)
}

// readyz asks /readyz over the client's kept-alive connection and returns the status code and
// body. The connection is opened before the descriptors run out: a new one could not be accepted.
func readyz(t *testing.T, hc *http.Client, httpAddr string) (int, string) {
	t.Helper()
	resp, err := hc.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// openIdle opens n TCP connections to addr that never send a byte.
func openIdle(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var conns []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial idle connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	return conns
}

// publishOnce connects a fresh anonymous device, publishes one QoS 1 reading and waits for its
// PUBACK: what a device does after the flood.
func publishOnce(t *testing.T, addr, device string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c, ack := connectRaw(t, conn, device, 4, "", "", true)
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %+v", ack)
	}
	c.publish("devices/"+device+"/readings", []byte(`{"v":1}`), 1, 1, false)
	c.expectAck(1)
}

// More idle connections than the process has descriptors: the listener keeps its connections
// below the limit, so it never fails an accept, and once the idle ones close a device connects
// and publishes. Mochi's own listener stopped accepting for good at the first EMFILE.
func TestMQTTListenerSurvivesIdleConnectionsAboveFdLimit(t *testing.T) {
	mqttAddr, httpAddr, _ := startFdChild(t, fdChildConfig{Dir: t.TempDir(), NoFile: 256})
	hc := &http.Client{Timeout: 5 * time.Second}
	if code, body := readyz(t, hc, httpAddr); code != http.StatusOK {
		t.Fatalf("/readyz before the flood: %d %s", code, body)
	}
	idle := openIdle(t, mqttAddr, 300)
	time.Sleep(300 * time.Millisecond) // let the child accept what it will
	if code, body := readyz(t, hc, httpAddr); code != http.StatusOK {
		t.Errorf("/readyz while the listener holds its cap of connections: %d %s, want 200", code, body)
	}
	for _, c := range idle {
		c.Close()
	}
	publishOnce(t, mqttAddr, "after-flood")
}

// When accepts do fail (here the child holds most of its descriptors, leaving fewer than its
// connection cap), the listener retries them and /readyz says so until they work again; then a
// device connects and publishes.
func TestMQTTListenerRetriesFailedAcceptsAndReadyzReportsThem(t *testing.T) {
	mqttAddr, httpAddr, pid := startFdChild(t, fdChildConfig{Dir: t.TempDir(), NoFile: 256, Hold: 200})
	hc := &http.Client{Timeout: 5 * time.Second}
	if code, body := readyz(t, hc, httpAddr); code != http.StatusOK {
		t.Fatalf("/readyz before the flood: %d %s", code, body)
	}
	idle := openIdle(t, mqttAddr, 300)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := readyz(t, hc, httpAddr)
		if code == http.StatusServiceUnavailable && strings.Contains(body, "too many open files") {
			t.Logf("/readyz during the flood: %d %s", code, body)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz while accepts fail with EMFILE: %d %q, want 503 naming the error", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range idle {
		c.Close()
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		code, body := readyz(t, hc, httpAddr)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz 15s after the idle connections closed: %d %s\nthe agent's descriptors: %s", code, body, openFiles(pid))
		}
		time.Sleep(50 * time.Millisecond)
	}
	publishOnce(t, mqttAddr, "after-emfile")
}

// A listener closed underneath the agent (not by shutdown) accepts nothing again: /readyz fails
// and names it.
func TestReadyzFailsWhenMQTTListenerStops(t *testing.T) {
	a, _ := startAgent(t, Config{HTTPListen: "127.0.0.1:0"})
	if code, body := readyz(t, http.DefaultClient, a.HTTPAddr()); code != http.StatusOK {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	if len(a.mqttListeners) != 1 {
		t.Fatalf("%d MQTT listeners, want the TCP one", len(a.mqttListeners))
	}
	a.mqttListeners[0].ln.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := readyz(t, http.DefaultClient, a.HTTPAddr())
		if code == http.StatusServiceUnavailable && strings.Contains(body, "listener tcp") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after the TCP listener closed: %d %s, want 503 naming it", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expectClosedBy reads from conn until the server closes it, failing if that takes longer than
// within.
func expectClosedBy(t *testing.T, conn net.Conn, what string, within time.Duration) {
	t.Helper()
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, conn)
	if isTimeout(err) {
		t.Fatalf("%s: still open after %s", what, within)
	}
	t.Logf("%s: closed after %s (%v)", what, time.Since(start).Round(time.Millisecond), err)
}

// A connection that sends nothing, a TLS connection that never completes its handshake, and one
// that trickles its CONNECT are all closed connect_timeout after they were accepted; a device
// that connects normally and then idles within its keepalive stays.
func TestConnectTimeoutClosesConnectionsWithoutCONNECT(t *testing.T) {
	ca := testpki.New(t, "edge-ca")
	certFile, keyFile := ca.ServerCert(t, "edge")
	a, _ := startAgent(t, Config{MQTT: MQTTConfig{
		TLSListen: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile, ConnectTimeout: 500 * time.Millisecond,
	}})

	silent, err := net.Dial("tcp", a.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	tlsSilent, err := net.Dial("tcp", a.TLSAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer tlsSilent.Close()
	trickle, err := net.Dial("tcp", a.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer trickle.Close()
	var connect bytes.Buffer
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "slow"}}
	if err := pk.ConnectEncode(&connect); err != nil {
		t.Fatal(err)
	}
	go func() {
		for _, b := range connect.Bytes()[:connect.Len()-1] {
			if _, err := trickle.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	good, _ := dialRaw(t, a.MQTTAddr(), "good", 4, "", "")

	expectClosedBy(t, silent, "connection that sent nothing", 5*time.Second)
	expectClosedBy(t, tlsSilent, "TLS connection without a handshake", 5*time.Second)
	expectClosedBy(t, trickle, "connection trickling its CONNECT", 5*time.Second)
	good.publish("devices/good/readings", []byte("1"), 1, 1, false)
	good.expectAck(1)
}

package edge

import (
	"crypto/tls"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testpki"
)

// tlsSerial handshakes with addr and returns the serial of the certificate served.
func tlsSerial(t *testing.T, addr string, tc *tls.Config) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tc)
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

// waitTLS handshakes with addr until done says so, for at most 10s (the agent looks at its
// files at most once a second).
func waitTLS(t *testing.T, addr string, tc *tls.Config, what string, done func(serial string) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := tlsSerial(t, addr, tc)
		if done(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10s (serving serial %s)", what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The MQTT TLS listener takes renewed certificate files without a restart: new connections get
// the new certificate, a device connected before keeps publishing on its connection, and a bad
// replacement keeps the certificate in service and is logged once, naming the key to fix.
func TestMQTTTLSCertificateRotation(t *testing.T) {
	dir := t.TempDir()
	addDevice(t, dir, "boiler-1", "s3cret")
	ca := testpki.New(t, "edge")
	live := t.TempDir()
	certFile, keyFile := filepath.Join(live, "edge.crt"), filepath.Join(live, "edge.key")
	c1, k1 := ca.ServerCert(t, "edge-1")
	testpki.Install(t, certFile, c1)
	testpki.Install(t, keyFile, k1)
	logs := &logBuffer{}
	a, _ := startAgentLogged(t, Config{DataDir: dir, MQTT: MQTTConfig{
		Listen: "-", TLSListen: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile,
	}}, logs.logger())
	client := &tls.Config{RootCAs: ca.Pool}
	broker := "ssl://" + a.TLSAddr()

	before, err := connectPaho(t, broker, "b1", "boiler-1", "s3cret", client)
	if err != nil {
		t.Fatal(err)
	}
	publishQoS1(t, before, "devices/boiler-1/readings", `{"t":1}`)
	if got, want := tlsSerial(t, a.TLSAddr(), client), testpki.Serial(t, c1, k1); got != want {
		t.Fatalf("serving serial %s, want the configured %s", got, want)
	}

	c2, k2 := ca.ServerCert(t, "edge-2")
	testpki.Install(t, keyFile, k2)
	testpki.Install(t, certFile, c2)
	renewed := testpki.Serial(t, c2, k2)
	waitTLS(t, a.TLSAddr(), client, "renewed certificate served", func(s string) bool { return s == renewed })

	publishQoS1(t, before, "devices/boiler-1/readings", `{"t":2}`) // the connection from before still works
	after, err := connectPaho(t, broker, "b2", "boiler-1", "s3cret", client)
	if err != nil {
		t.Fatalf("connect after the rotation: %v", err)
	}
	publishQoS1(t, after, "devices/boiler-1/readings", `{"t":3}`)
	if got := storedReadings(t, a); len(got) != 3 {
		t.Fatalf("stored %q, want 3 readings", got)
	}
	if got := logs.String(); !strings.Contains(got, `msg="TLS certificate reloaded" listener=mqtt_tls`) || !strings.Contains(got, "serial="+renewed) {
		t.Fatalf("log has no reload line naming serial %s:\n%s", renewed, got)
	}

	// A key that is not the certificate's: refused, the renewed certificate stays in service.
	_, otherKey := ca.ServerCert(t, "other")
	testpki.Install(t, keyFile, otherKey)
	waitTLS(t, a.TLSAddr(), client, "bad key logged", func(s string) bool {
		if s != renewed {
			t.Fatalf("serving serial %s after a bad key, want %s", s, renewed)
		}
		return strings.Contains(logs.String(), "TLS files changed but cannot be used")
	})
	var errs []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=ERROR") {
			errs = append(errs, l)
		}
	}
	if len(errs) != 1 || !strings.Contains(errs[0], "mqtt.tls_key") || !strings.Contains(errs[0], "private key does not match public key") ||
		!strings.Contains(errs[0], "serving_serial="+renewed) {
		t.Fatalf("error lines %q, want one naming mqtt.tls_key, the mismatch and the serial still served", errs)
	}
	publishQoS1(t, after, "devices/boiler-1/readings", `{"t":4}`)
}

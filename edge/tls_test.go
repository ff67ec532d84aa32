package edge

import (
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/internal/testpki"
)

// tlsAgent starts an agent whose only MQTT listener is TLS on 127.0.0.1, with a server
// certificate from ca; clientCA, when set, is mqtt.tls_client_ca.
func tlsAgent(t *testing.T, dir string, ca *testpki.CA, clientCA string) *Agent {
	t.Helper()
	certFile, keyFile := ca.ServerCert(t, "edge")
	a, _ := startAgent(t, Config{DataDir: dir, MQTT: MQTTConfig{
		Listen: "-", TLSListen: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile, TLSClientCA: clientCA,
	}})
	if a.MQTTAddr() != "" || a.TLSAddr() == "" {
		t.Fatalf("listeners: tcp %q tls %q, want only TLS", a.MQTTAddr(), a.TLSAddr())
	}
	return a
}

// connectPaho connects a paho client to broker (a URL) and returns it, or the connect error.
func connectPaho(t *testing.T, broker, clientID, user, pass string, tc *tls.Config) (paho.Client, error) {
	t.Helper()
	// Version 4 fixed: paho otherwise retries a refused CONNECT as MQTT 3.1, and each refusal
	// would be counted twice.
	o := paho.NewClientOptions().AddBroker(broker).SetProtocolVersion(4).SetClientID(clientID).SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).SetTLSConfig(tc)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("connect %s to %s: no answer in 10s", clientID, broker)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

// publishQoS1 publishes and waits for the PUBACK, which the agent sends only once the reading is
// durable.
func publishQoS1(t *testing.T, c paho.Client, topic, payload string) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish to %s: no PUBACK (%v)", topic, tok.Error())
	}
}

// storedReadings returns "key=value" for every record of the readings stream.
func storedReadings(t *testing.T, a *Agent) []string {
	t.Helper()
	var out []string
	for _, part := range readStream(t, a.Log(), "readings") {
		for _, r := range part {
			out = append(out, string(r.Key)+"="+string(r.Value))
		}
	}
	return out
}

// refusals sums tributary_edge_connect_refused_total by reason.
// refusals returns the non-zero refusal counts by reason (every reason is exported from zero).
func refusals(t *testing.T, a *Agent) map[string]float64 {
	t.Helper()
	mfs, err := a.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "tributary_edge_connect_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && m.GetCounter().GetValue() != 0 {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func addCertDevice(t *testing.T, dataDir, id string) {
	t.Helper()
	reg := devices.NewRegistry(filepath.Join(dataDir, "devices.db"), &devices.RegistryOptions{BcryptCost: 4})
	if err := reg.Add(devices.Device{ID: id, CertIdentity: true}, ""); err != nil {
		t.Fatal(err)
	}
}

// A device with a registry password publishes over the TLS listener; a client that does not
// trust the edge's CA cannot connect at all.
func TestMQTTOverTLSWithPassword(t *testing.T) {
	dir := t.TempDir()
	addDevice(t, dir, "boiler-1", "s3cret")
	ca := testpki.New(t, "edge")
	a := tlsAgent(t, dir, ca, "")
	broker := "ssl://" + a.TLSAddr()

	c, err := connectPaho(t, broker, "b1", "boiler-1", "s3cret", &tls.Config{RootCAs: ca.Pool})
	if err != nil {
		t.Fatalf("trusted client with credentials: %v", err)
	}
	publishQoS1(t, c, "devices/boiler-1/readings", `{"t":21.5}`)
	if got := storedReadings(t, a); len(got) != 1 || got[0] != `boiler-1={"t":21.5}` {
		t.Fatalf("stored %q, want the one reading", got)
	}

	// Same credentials, but the client trusts another CA: the handshake fails on its side.
	other := testpki.New(t, "other")
	_, err = connectPaho(t, broker, "b1-untrusting", "boiler-1", "s3cret", &tls.Config{RootCAs: other.Pool})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client not trusting the edge's CA: connect error %v, want a certificate error", err)
	}
	// And a wrong password over TLS is still refused by the registry.
	if _, err := connectPaho(t, broker, "b1-bad", "boiler-1", "wrong", &tls.Config{RootCAs: ca.Pool}); err == nil {
		t.Fatal("wrong password accepted over TLS")
	}
	if n := refusals(t, a)["bad_password"]; n != 1 {
		t.Errorf("bad_password refusals %v, want 1", n)
	}
	if got := storedReadings(t, a); len(got) != 1 {
		t.Fatalf("stored %d readings, want 1", len(got))
	}
}

// With mqtt.tls_client_ca, a verified certificate's CN is the device id: a certificate-only device
// publishes under its own topics; unknown CNs, password-only devices and certificates from another
// CA are refused; the certificate's identity cannot publish as another device.
func TestClientCertificateIdentity(t *testing.T) {
	dir := t.TempDir()
	addCertDevice(t, dir, "cam-1")
	addCertDevice(t, dir, "cam-2")
	addDevice(t, dir, "boiler-1", "s3cret")
	serverCA := testpki.New(t, "edge")
	deviceCA := testpki.New(t, "devices")
	rogueCA := testpki.New(t, "rogue")
	a := tlsAgent(t, dir, serverCA, deviceCA.File)
	broker := "ssl://" + a.TLSAddr()
	// The certificate is sent whatever CAs the server names, as embedded TLS stacks do; Go's client
	// would otherwise silently omit a certificate from another CA and connect without one.
	withCert := func(c tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: serverCA.Pool, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &c, nil
		}}
	}

	cam1 := deviceCA.ClientCert(t, "cam-1")
	c, err := connectPaho(t, broker, "cam-1-client", "", "", withCert(cam1))
	if err != nil {
		t.Fatalf("certificate-identified device refused: %v", err)
	}
	publishQoS1(t, c, "devices/cam-1/readings", `{"frame":1}`)
	if got := storedReadings(t, a); len(got) != 1 || got[0] != `cam-1={"frame":1}` {
		t.Fatalf("stored %q, want cam-1's reading", got)
	}

	// A valid certificate for a CN the registry does not know.
	if _, err := connectPaho(t, broker, "ghost", "", "", withCert(deviceCA.ClientCert(t, "ghost-9"))); err == nil {
		t.Fatal("certificate with an unknown device id as CN accepted")
	}
	// A registered device without certificate identity may not use a certificate, even a valid one.
	if _, err := connectPaho(t, broker, "b1", "", "", withCert(deviceCA.ClientCert(t, "boiler-1"))); err == nil {
		t.Fatal("certificate accepted for a password-only device")
	}
	want := map[string]float64{"unknown_device": 1, "wrong_credential_type": 1}
	if got := refusals(t, a); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("refusals by reason %v, want %v", got, want)
	}

	// cam-1's CN signed by another CA fails in the handshake, before any CONNECT is read, so no
	// registry refusal is counted.
	if _, err := connectPaho(t, broker, "cam-1-rogue", "", "", withCert(rogueCA.ClientCert(t, "cam-1"))); err == nil ||
		!strings.Contains(err.Error(), "certificate") {
		t.Fatalf("certificate from an untrusted CA: connect error %v, want the server's bad certificate alert", err)
	}
	if got := refusals(t, a); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("refusals by reason %v after the rogue handshake, want still %v", got, want)
	}

	// The certificate decides the identity: a username and password of another device change
	// nothing, and publishing under another device's topic disconnects the MQTT 3 client.
	rc, ack := dialRawTLS(t, a.TLSAddr(), withCert(cam1), "cam-1-raw", 4, "boiler-1", "wrong")
	if ack.ReasonCode != 0 {
		t.Fatalf("cam-1 with a stray username refused: code %d", ack.ReasonCode)
	}
	rc.publish("devices/cam-1/readings", []byte(`{"frame":2}`), 1, 1, false)
	rc.expectAck(1)
	for i, topic := range []string{"devices/cam-2/readings", "devices/boiler-1/readings"} {
		rc, _ := dialRawTLS(t, a.TLSAddr(), withCert(cam1), fmt.Sprintf("cam-1-raw-%d", i), 4, "", "")
		rc.publish(topic, []byte(`{"frame":3}`), 2, 1, false)
		if pk, err := rc.read(); err == nil && pk.FixedHeader.Type != packets.Disconnect {
			t.Fatalf("cam-1 publishing to %s: answered with packet type %d, want a disconnect", topic, pk.FixedHeader.Type)
		}
	}
	got := storedReadings(t, a)
	if len(got) != 2 || got[0] != `cam-1={"frame":1}` || got[1] != `cam-1={"frame":2}` {
		t.Fatalf("stored %q, want only cam-1's two readings", got)
	}
}

// The WebSocket listener carries MQTT: paho over ws:// publishes QoS 1 and every acked reading is
// stored in order.
func TestMQTTOverWebSocket(t *testing.T) {
	// Mochi's WebSocket listener binds inside Serve, so the address of a port-0 listener cannot be
	// read back: take a free port and hand it over.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wsAddr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	addDevice(t, dir, "meter-1", "pw")
	a, _ := startAgent(t, Config{DataDir: dir, MQTT: MQTTConfig{Listen: "-", WSListen: wsAddr}})
	// Ready is set before the WebSocket server has necessarily bound; wait until it accepts.
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", wsAddr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("WebSocket listener on %s not accepting after 5s: %v", wsAddr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	c, err := connectPaho(t, "ws://"+wsAddr, "meter-1", "meter-1", "pw", nil)
	if err != nil {
		t.Fatalf("connect over WebSocket: %v", err)
	}
	const n = 50
	for i := range n {
		publishQoS1(t, c, "devices/meter-1/readings", fmt.Sprintf(`{"seq":%d}`, i))
	}
	got := storedReadings(t, a)
	if len(got) != n {
		t.Fatalf("stored %d readings, want %d", len(got), n)
	}
	for i, r := range got {
		if want := fmt.Sprintf(`meter-1={"seq":%d}`, i); r != want {
			t.Fatalf("reading %d is %q, want %q", i, r, want)
		}
	}
	if _, err := connectPaho(t, "ws://"+wsAddr, "meter-1b", "meter-1", "wrong", nil); err == nil {
		t.Fatal("wrong password accepted over WebSocket")
	}
}

// dialRawTLS is dialRaw over a TLS connection, for the packets paho hides (a disconnect after a
// refused QoS 1 publish).
func dialRawTLS(t *testing.T, addr string, tc *tls.Config, clientID string, version byte, user, pass string) (*rawClient, packets.Packet) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tc)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	return connectRaw(t, conn, clientID, version, user, pass, true)
}

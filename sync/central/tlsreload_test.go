package central_test

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testpki"
	"github.com/tributary-iot/tributary/sync/central"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// healthz GETs /healthz with tr and returns the served certificate's serial and whether the
// request went on a connection opened before.
func healthz(t *testing.T, tr *http.Transport, url string) (serial string, reused bool, err error) {
	t.Helper()
	req, err := http.NewRequest("GET", url+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
	}))
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %s", resp.Status)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.Text(16), reused, nil
}

// kafkaSerial handshakes with the Kafka listener, without a client certificate.
func kafkaSerial(t *testing.T, addr string, tc *tls.Config) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tc)
	if err != nil {
		t.Fatalf("TLS handshake with the Kafka listener: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

// Central takes a renewed certificate and a replaced client CA without a restart: new HTTPS
// connections get the new certificate and are checked against the new CA, a connection opened
// before keeps serving requests, the Kafka listener serves the new certificate (and still asks
// for no client certificate), and a half-written certificate keeps the renewed one in service
// and is logged once, naming tls_cert.
func TestCentralTLSRotation(t *testing.T) {
	serverCA := testpki.New(t, "central")
	edgesOld, edgesNew := testpki.New(t, "edges-2025"), testpki.New(t, "edges-2026")
	live := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(live, "central.crt"), filepath.Join(live, "central.key"), filepath.Join(live, "edges-ca.crt")
	c1, k1 := serverCA.ServerCert(t, "central-1")
	testpki.Install(t, certFile, c1)
	testpki.Install(t, keyFile, k1)
	testpki.Install(t, caFile, edgesOld.File)

	logs := &lockedBuffer{}
	kafkaAddr := make(chan string, 1)
	addr, stop := runCentral(t, central.Config{DataDir: t.TempDir(), TLSCert: certFile, TLSKey: keyFile, ClientCA: caFile,
		Kafka: central.KafkaListener{Listen: "127.0.0.1:0"}, KafkaReady: func(a string) { kafkaAddr <- a },
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	defer stop()
	url, kafka := "https://"+addr, <-kafkaAddr
	transport := func(clientCA *testpki.CA) *http.Transport {
		cert := clientCA.ClientCert(t, "gw-1")
		return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverCA.Pool, Certificates: []tls.Certificate{cert}}}
	}
	noClientCert := &tls.Config{RootCAs: serverCA.Pool}

	before := transport(edgesOld)
	defer before.CloseIdleConnections()
	first := testpki.Serial(t, c1, k1)
	if s, _, err := healthz(t, before, url); err != nil || s != first {
		t.Fatalf("before the rotation: serial %s, %v; want %s", s, err, first)
	}
	if s := kafkaSerial(t, kafka, noClientCert); s != first {
		t.Fatalf("Kafka listener serves serial %s, want %s", s, first)
	}

	c2, k2 := serverCA.ServerCert(t, "central-2")
	renewed := testpki.Serial(t, c2, k2)
	testpki.Install(t, keyFile, k2)
	testpki.Install(t, certFile, c2)
	testpki.Install(t, caFile, edgesNew.File)
	deadline := time.Now().Add(10 * time.Second)
	for {
		tr := transport(edgesNew)
		s, _, err := healthz(t, tr, url)
		tr.CloseIdleConnections()
		if err == nil && s == renewed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after the rotation: serial %s, %v; want %s", s, err, renewed)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if s, reused, err := healthz(t, before, url); err != nil || !reused || s != first {
		t.Fatalf("connection from before the rotation: serial %s, reused %v, %v; want the old serial %s on the same connection", s, reused, err, first)
	}
	stale := transport(edgesOld)
	if _, _, err := healthz(t, stale, url); err == nil {
		t.Fatal("a new connection with a certificate of the replaced client CA was accepted")
	}
	stale.CloseIdleConnections()
	if s := kafkaSerial(t, kafka, noClientCert); s != renewed {
		t.Fatalf("Kafka listener serves serial %s after the rotation, want %s", s, renewed)
	}
	if got := logs.String(); !strings.Contains(got, `msg="TLS certificate reloaded" listener=central`) ||
		!strings.Contains(got, "serial="+renewed) || !strings.Contains(got, "client_ca_changed=true") {
		t.Fatalf("no reload line naming serial %s and the client CA change:\n%s", renewed, got)
	}

	// A certificate cut off mid-write: refused, the renewed one stays in service.
	pem := readFile(t, c1)
	testpki.InstallBytes(t, certFile, pem[:len(pem)/2])
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "TLS files changed but cannot be used") {
		if time.Now().After(deadline) {
			t.Fatalf("no error logged 10s after a half-written certificate:\n%s", logs.String())
		}
		tr := transport(edgesNew)
		s, _, err := healthz(t, tr, url)
		tr.CloseIdleConnections()
		if err != nil || s != renewed {
			t.Fatalf("with a half-written certificate: serial %s, %v; want the renewed %s", s, err, renewed)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var errs []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=ERROR") {
			errs = append(errs, l)
		}
	}
	if len(errs) != 1 || !strings.Contains(errs[0], "listener=central") || !strings.Contains(errs[0], "tls_cert "+certFile) ||
		!strings.Contains(errs[0], "serving_serial="+renewed) {
		t.Fatalf("error lines %q, want one naming tls_cert and the serial still served", errs)
	}
}

package edgenode

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testpki"
)

// The HTTP listener takes a renewed http_tls_cert and a replaced http_client_ca without a
// restart: the next connections get the new certificate and are checked against the new CA.
func TestHTTPSCertificateAndClientCARotation(t *testing.T) {
	ca := testpki.New(t, "edge http CA")
	opsOld, opsNew := testpki.New(t, "operators 2025"), testpki.New(t, "operators 2026")
	live := t.TempDir()
	cfg := Config{Config: edgeConfig("gw-rotate")}
	cfg.HTTPTLSCert, cfg.HTTPTLSKey, cfg.HTTPClientCA = filepath.Join(live, "edge.crt"), filepath.Join(live, "edge.key"), filepath.Join(live, "ops-ca.crt")
	c1, k1 := ca.ServerCert(t, "edge-1")
	testpki.Install(t, cfg.HTTPTLSCert, c1)
	testpki.Install(t, cfg.HTTPTLSKey, k1)
	testpki.Install(t, cfg.HTTPClientCA, opsOld.File)
	n := startHTTPSNode(t, ca, cfg)
	oldClient, newClient := httpsClient(ca, opsOld.ClientCert(t, "prometheus")), httpsClient(ca, opsNew.ClientCert(t, "prometheus"))
	serial := func(c *http.Client) (string, error) {
		resp, err := c.Get(n.base + "/healthz")
		if err != nil {
			return "", err
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.Text(16), nil
	}
	if _, err := serial(oldClient); err != nil {
		t.Fatalf("client of the configured CA: %v", err)
	}

	c2, k2 := ca.ServerCert(t, "edge-2")
	testpki.Install(t, cfg.HTTPTLSKey, k2)
	testpki.Install(t, cfg.HTTPTLSCert, c2)
	testpki.Install(t, cfg.HTTPClientCA, opsNew.File)
	want := readSerial(t, c2, k2)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := serial(newClient)
		if err == nil && s == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after the rotation: serial %s, %v; want %s", s, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := serial(oldClient); err == nil {
		t.Fatal("a certificate of the replaced http_client_ca was accepted")
	}
}

func readSerial(t *testing.T, certFile, keyFile string) string {
	t.Helper()
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.Text(16)
}

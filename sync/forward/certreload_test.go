package forward

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testpki"
)

// TestClientCertificateRenewed has the forwarder's HTTP client talk to a server that requires a
// client certificate, renews the edge's certificate files under it, and checks that the next
// connection offers the new certificate: an edge whose certificate is renewed keeps forwarding
// without a restart.
func TestClientCertificateRenewed(t *testing.T) {
	ca := testpki.New(t, "site")
	srvCert, srvKey := ca.ServerCert(t, "central")
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.TLS.PeerCertificates[0].SerialNumber.Text(16))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: ca.Pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "edge.pem"), filepath.Join(dir, "edge-key.pem")
	install := func(cert, key string) {
		testpki.Install(t, keyFile, key) // a renewal writes the key first
		testpki.Install(t, certFile, cert)
	}
	oldCert, oldKey := ca.ClientCertFiles(t, "gw-1")
	newCert, newKey := ca.ClientCertFiles(t, "gw-1-renewed")
	install(oldCert, oldKey)

	client, err := Config{CAFile: ca.File, CertFile: certFile, KeyFile: keyFile}.client()
	if err != nil {
		t.Fatal(err)
	}
	offered := func() string {
		client.CloseIdleConnections() // a new connection, a new handshake
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatalf("GET with the client certificate: %v", err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got, want := offered(), testpki.Serial(t, oldCert, oldKey); got != want {
		t.Fatalf("the server saw client certificate %s, want %s", got, want)
	}
	install(newCert, newKey)
	want := testpki.Serial(t, newCert, newKey)
	deadline := time.Now().Add(5 * time.Second) // the files are looked at once a second at most
	for got := offered(); got != want; got = offered() {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the renewal the server still saw client certificate %s, want %s", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

package central_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testpki"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/forward"
)

// tlsClient is an HTTPS client for the consume API; cert, when set, is sent whatever CAs the
// server names.
func tlsClient(ca *testpki.CA, cert *tls.Certificate) *http.Client {
	tc := &tls.Config{RootCAs: ca.Pool}
	if cert != nil {
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
}

// centralRecords is how many records central's readings stream holds.
func centralRecords(t *testing.T, cl *consume.Client) int64 {
	t.Helper()
	streams, err := cl.Streams(context.Background())
	if err != nil {
		t.Fatalf("list central streams: %v", err)
	}
	return readingsEnd(streams)
}

// waitRecords waits until central holds want records.
func waitRecords(t *testing.T, cl *consume.Client, want int64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		n := centralRecords(t, cl)
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("central holds %d records after 15s, want %d", n, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// verifyExactlyOnce consumes central's whole stream and checks it against the fleet.
func verifyExactlyOnce(t *testing.T, cl *consume.Client, f *fleet) {
	t.Helper()
	c := newChecker()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.Consume(ctx, consume.Options{Stream: "readings", FromBeginning: true}, c.add); err != nil {
		t.Fatal(err)
	}
	c.verify(t, f)
}

// refusedForwarder runs a forwarder that central's TLS must refuse and checks that it keeps
// retrying with a certificate error on every lane, without returning, and forwards nothing.
func refusedForwarder(t *testing.T, log *storage.Log, cfg forward.Config, cl *consume.Client) {
	t.Helper()
	cfg.BackoffMin, cfg.BackoffMax = 20*time.Millisecond, 100*time.Millisecond
	fwd, err := forward.New(log, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fwd.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("forwarder: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("forwarder did not stop 10s after cancel")
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("forwarder returned while central refused it: %v", err)
		default:
		}
		lanes := fwd.Status()
		retrying := len(lanes) > 0
		for _, ln := range lanes {
			if ln.Retries < 3 || !strings.Contains(ln.LastError, "certificate") {
				retrying = false
			}
			if ln.Acked != 0 || ln.Connected {
				t.Fatalf("lane %s/%d got through central's TLS: %+v", ln.Stream, ln.Partition, ln)
			}
		}
		if retrying {
			t.Logf("refused as expected: %s", lanes[0].LastError)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5s, want every lane retrying with a certificate error: %+v", lanes)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := centralRecords(t, cl); n != 0 {
		t.Fatalf("central holds %d records from a refused forwarder", n)
	}
}

// Central serves HTTPS with its own certificate: a forwarder trusting central's CA forwards every
// reading exactly once; one that does not gets certificate errors, keeps retrying and forwards
// nothing.
func TestForwardOverTLS(t *testing.T) {
	ca := testpki.New(t, "central")
	certFile, keyFile := ca.ServerCert(t, "central")
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	addr, stop := runCentral(t, central.Config{DataDir: cdir, TLSCert: certFile, TLSKey: keyFile})
	defer stop()
	url := "https://" + addr
	cl := &consume.Client{BaseURL: url, HTTP: tlsClient(ca, nil)}

	edge, st := openEdge(t, 2)
	defer edge.Close()
	f := newFleet(50, 7)
	appendAll(t, st, f, 2000)

	// No CA file: the system roots do not know central's CA.
	refusedForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token}, cl)

	_, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token, CAFile: ca.File})
	defer stopFwd()
	appendAll(t, st, f, 1000) // live readings after the forwarder caught up with the backlog
	waitRecords(t, cl, 3000)
	verifyExactlyOnce(t, cl, f)

	// Central's certificate also names localhost.
	lcl := &consume.Client{BaseURL: "https://localhost:" + addr[strings.LastIndex(addr, ":")+1:], HTTP: tlsClient(ca, nil)}
	if n := centralRecords(t, lcl); n != 3000 {
		t.Fatalf("via localhost: %d records, want 3000", n)
	}
}

// Central with a client CA requires a client certificate signed by it (mTLS): a forwarder with one
// forwards; without one, or with one from another CA, the handshake fails and nothing arrives.
func TestForwardOverMutualTLS(t *testing.T) {
	serverCA := testpki.New(t, "central")
	clientCA := testpki.New(t, "edges")
	rogueCA := testpki.New(t, "rogue")
	certFile, keyFile := serverCA.ServerCert(t, "central")
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	addr, stop := runCentral(t, central.Config{DataDir: cdir, TLSCert: certFile, TLSKey: keyFile, ClientCA: clientCA.File})
	defer stop()
	url := "https://" + addr
	consumerCert := clientCA.ClientCert(t, "consumer")
	cl := &consume.Client{BaseURL: url, HTTP: tlsClient(serverCA, &consumerCert)}

	edge, st := openEdge(t, 2)
	defer edge.Close()
	f := newFleet(50, 8)
	appendAll(t, st, f, 2000)

	// The consume API sits behind the same handshake.
	if _, err := (&consume.Client{BaseURL: url, HTTP: tlsClient(serverCA, nil)}).Streams(context.Background()); err == nil {
		t.Fatal("consume API answered a client without a certificate")
	}
	base := forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token, CAFile: serverCA.File}
	refusedForwarder(t, edge, base, cl)
	rogue := rogueCA.ClientCert(t, "gw-1")
	withRogue := base
	withRogue.TLS = &tls.Config{RootCAs: serverCA.Pool, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &rogue, nil
	}}
	refusedForwarder(t, edge, withRogue, cl)

	// A valid certificate of another edge does not go with gw-1's token.
	otherCert, otherKey := clientCA.ClientCertFiles(t, "gw-2")
	withOther := base
	withOther.CertFile, withOther.KeyFile = otherCert, otherKey
	refusedForwarder(t, edge, withOther, cl)

	edgeCert, edgeKey := clientCA.ClientCertFiles(t, "gw-1")
	withCert := base
	withCert.CertFile, withCert.KeyFile = edgeCert, edgeKey
	_, stopFwd := runForwarder(t, edge, withCert)
	defer stopFwd()
	waitRecords(t, cl, 2000)
	verifyExactlyOnce(t, cl, f)
}

// Central refuses plain HTTP on a non-loopback address before it opens its log or binds, so the
// refusal never serves a byte; --insecure lifts only that check.
func TestPlainHTTPRefusedOffLoopback(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", "[::]:0", "192.0.2.1:0", ":0"} {
		dir := t.TempDir()
		err := central.Run(context.Background(), central.Config{DataDir: dir, Listen: listen})
		if err == nil || !strings.Contains(err.Error(), "refusing plain HTTP") || !strings.Contains(err.Error(), "--tls-cert") {
			t.Fatalf("listen %s without TLS: %v, want a refusal that names --tls-cert", listen, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("listen %s: refusal left %d entries in the data directory; the check must come before the log opens", listen, len(entries))
		}
	}
	dir := t.TempDir()
	err := central.Run(context.Background(), central.Config{DataDir: dir, Listen: "127.0.0.1:0", ClientCA: "edges-ca.pem"})
	if err == nil || !strings.Contains(err.Error(), "--client-ca needs --tls-cert") {
		t.Fatalf("client CA without TLS: %v, want a refusal", err)
	}

	// Insecure passes the check and reaches the bind; 192.0.2.1 (TEST-NET-1, RFC 5737) is on no
	// interface, so the bind fails instead of serving off loopback.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = central.Run(ctx, central.Config{DataDir: t.TempDir(), Listen: "192.0.2.1:0", Insecure: true, APIToken: "t",
		Ready: func(a string) { t.Errorf("central served on %s", a) }})
	if err == nil || strings.Contains(err.Error(), "refusing") || !strings.Contains(err.Error(), "listen on 192.0.2.1:0") {
		t.Fatalf("insecure on 192.0.2.1: %v, want the bind error past the TLS check", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("insecure central ran until the deadline")
	}
}

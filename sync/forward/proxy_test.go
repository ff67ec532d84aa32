package forward

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/consume"
)

// proxyChildEnv makes the test binary run runProxyChild: net/http reads the proxy variables
// once per process, so the forwarder that must see HTTPS_PROXY runs in a fresh one.
const proxyChildEnv = "TRIBUTARY_TEST_PROXY_CHILD"

const proxyChildRecords = 500

// runProxyChild forwards proxyChildRecords readings to CENTRAL_URL with the environment's
// proxy settings and exits 0 once central has acknowledged them all.
func runProxyChild() int {
	log, err := storage.Open(os.Getenv("EDGE_DIR"), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer log.Close()
	st, err := log.CreateStream("readings", storage.StreamConfig{Partitions: 2})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := 0; i < proxyChildRecords; i++ {
		rec := storage.Record{Key: fmt.Appendf(nil, "d%d", i%7), Value: fmt.Appendf(nil, `{"seq":%d}`, i), Timestamp: time.Now()}
		if _, _, err := st.Append(context.Background(), rec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	f, err := New(log, Config{CentralURL: os.Getenv("CENTRAL_URL"), EdgeID: "gw-1", Token: os.Getenv("EDGE_TOKEN"),
		CAFile: os.Getenv("CA_FILE"), BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var acked int64
		for _, s := range f.Status() {
			acked += s.Acked
		}
		if acked == proxyChildRecords {
			return 0
		}
	}
	for _, s := range f.Status() {
		fmt.Fprintf(os.Stderr, "lane %d: acked %d of %d, last error %q\n", s.Partition, s.Acked, s.End, s.LastError)
	}
	return 1
}

// connectProxy is a minimal HTTP CONNECT proxy on 127.0.0.1 that sends every tunnel to target,
// whatever host the client asked for, and remembers what was asked.
type connectProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	asked  []string
	wg     sync.WaitGroup
}

func startConnectProxy(t *testing.T, target string) *connectProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *connectProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.asked = append(p.asked, req.Method+" "+req.Host)
	p.mu.Unlock()
	if req.Method != http.MethodConnect {
		io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer s.Close()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{}, 2)
	go func() { io.Copy(s, br); s.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, s); done <- struct{}{} }()
	<-done
	<-done
}

func (p *connectProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.asked...)
}

// TestHTTPSProxyFromEnvironment runs central over TLS under a name that resolves nowhere
// (central.invalid) and a forwarder in a child process with HTTPS_PROXY pointing at a CONNECT
// proxy: the readings can only arrive through the proxy, so their arrival proves the forwarder
// honours the variable, and the proxy saw the tunnel asked for central's name.
func TestHTTPSProxyFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir, "central.invalid")
	url, token := testCentral(t, central.Config{DataDir: t.TempDir(), TLSCert: certFile, TLSKey: keyFile})
	addr := strings.TrimPrefix(url, "https://")
	_, port, _ := net.SplitHostPort(addr)
	proxy := startConnectProxy(t, addr)

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), proxyChildEnv+"=1", "EDGE_DIR="+t.TempDir(), "EDGE_TOKEN="+token, "CA_FILE="+certFile,
		"CENTRAL_URL=https://central.invalid:"+port, "HTTPS_PROXY=http://"+proxy.ln.Addr().String(),
		"https_proxy=", "NO_PROXY=", "no_proxy=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("forwarder child: %v\n%s", err, out)
	}
	asked := proxy.requests()
	if len(asked) == 0 || !strings.HasPrefix(asked[0], "CONNECT central.invalid:"+port) {
		t.Fatalf("proxy saw %q, want CONNECT central.invalid:%s", asked, port)
	}
	cl := &consume.Client{BaseURL: url, HTTP: tlsClient(t, certFile)}
	streams, err := cl.Streams(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, s := range streams {
		for _, p := range s.Partitions {
			n += p.End
		}
	}
	if n != proxyChildRecords {
		t.Fatalf("central holds %d readings, want %d", n, proxyChildRecords)
	}
	t.Logf("%d readings through %d proxy tunnel(s): %q", n, len(asked), asked)
}

// selfSigned writes a self-signed certificate for name (and 127.0.0.1) and its key.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func tlsClient(t *testing.T, caFile string) *http.Client {
	c, err := Config{CAFile: caFile}.client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

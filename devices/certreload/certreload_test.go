package certreload_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/devices/certreload"
	"github.com/tributary-iot/tributary/internal/testpki"
)

// check is the tests' CheckEvery: short, so a rotation is seen within a few handshakes.
const check = 10 * time.Millisecond

// logBuffer collects log lines from handshake goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines are the logged lines holding s.
func (b *logBuffer) lines(s string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// install puts src's content at dst the way a careful renewal does: a temporary file renamed
// over the old one.
func install(t *testing.T, dst, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, dst, b)
}

func writeAtomic(t *testing.T, dst string, b []byte) {
	t.Helper()
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// liveFiles copies a server certificate of ca into a directory of their own, the paths the
// listener is configured with.
func liveFiles(t *testing.T, ca *testpki.CA, name string) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	c, k := ca.ServerCert(t, name)
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	install(t, certFile, c)
	install(t, keyFile, k)
	return certFile, keyFile
}

// serve runs an echo server on loopback with cfg; connections the handshake refuses are closed.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if c.(*tls.Conn).Handshake() != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// dial opens a connection and proves it carries data (a refused client certificate shows only
// at the first read in TLS 1.3).
func dial(t *testing.T, addr string, tc *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tc)
	if err != nil {
		return nil, err
	}
	if err := echo(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func echo(c *tls.Conn) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != "ping" {
		return errors.New("echo: got " + string(b))
	}
	return nil
}

func servedSerial(c *tls.Conn) string {
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

func fileSerial(t *testing.T, certFile string) string {
	t.Helper()
	c, err := tls.LoadX509KeyPair(certFile, strings.TrimSuffix(certFile, ".pem")+"-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.Text(16)
}

// waitSerial dials until the served certificate's serial is want, for at most 5s.
func waitSerial(t *testing.T, addr string, tc *tls.Config, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dial(t, addr, tc)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		got := servedSerial(c)
		c.Close()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("served serial %s after 5s, want %s", got, want)
		}
		time.Sleep(check)
	}
}

// waitLog handshakes until a log line holds s, for at most 5s.
func waitLog(t *testing.T, logs *logBuffer, addr string, tc *tls.Config, s string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(logs.lines(s)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q after 5s", s)
		}
		if c, err := dial(t, addr, tc); err == nil {
			c.Close()
		}
		time.Sleep(check)
	}
}

// A renewed certificate renamed into place is served to new connections; a connection opened
// before keeps working on the old one. The reload is logged once with the new serial.
func TestRotateServesNewCertificate(t *testing.T) {
	ca := testpki.New(t, "site")
	certFile, keyFile := liveFiles(t, ca, "gw")
	logs := &logBuffer{}
	r, err := certreload.New(certreload.Options{CertFile: certFile, KeyFile: keyFile, Listener: "test", Logger: logs.logger(), CheckEvery: check})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r.ServerConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
	client := &tls.Config{RootCAs: ca.Pool}
	old, err := dial(t, addr, client)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldSerial := servedSerial(old)

	// In order: key then certificate, each renamed, as a renewal client writes them.
	newCert, newKey := ca.ServerCert(t, "gw-renewed")
	install(t, keyFile, newKey)
	install(t, certFile, newCert)
	want := fileSerial(t, newCert)
	waitSerial(t, addr, client, want)

	if err := echo(old); err != nil {
		t.Fatalf("connection opened before the rotation: %v", err)
	}
	if got := servedSerial(old); got != oldSerial {
		t.Fatalf("old connection's certificate serial %s, want %s", got, oldSerial)
	}
	if got := r.Certificate().Leaf.SerialNumber.Text(16); got != want {
		t.Fatalf("Certificate serial %s, want %s", got, want)
	}
	if got := logs.lines("TLS certificate reloaded"); len(got) != 1 || !strings.Contains(got[0], "serial="+want) ||
		!strings.Contains(got[0], `subject="CN=gw-renewed"`) || !strings.Contains(got[0], "not_after=") {
		t.Fatalf("reload log lines %q, want one naming serial %s and subject CN=gw-renewed", got, want)
	}
}

// A look between the renewal's writes of the key and of the certificate sees a mismatched pair:
// it keeps the old certificate and, the files having changed again by the next look, logs no
// error, only the new certificate taken.
func TestLookBetweenKeyAndCertificateIsQuiet(t *testing.T) {
	ca := testpki.New(t, "site")
	certFile, keyFile := liveFiles(t, ca, "gw")
	logs := &logBuffer{}
	r, err := certreload.New(certreload.Options{CertFile: certFile, KeyFile: keyFile, Logger: logs.logger(), CheckEvery: check})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r.ServerConfig(nil))
	client := &tls.Config{RootCAs: ca.Pool}
	oldSerial := r.Certificate().Leaf.SerialNumber.Text(16)
	newCert, newKey := ca.ServerCert(t, "gw-2")
	install(t, keyFile, newKey)
	time.Sleep(2 * check)
	c, err := dial(t, addr, client) // this handshake looks at the mismatched pair
	if err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(c); got != oldSerial {
		t.Fatalf("serial %s with only the key replaced, want the old %s", got, oldSerial)
	}
	c.Close()
	install(t, certFile, newCert)
	waitSerial(t, addr, client, fileSerial(t, newCert))
	if errs := logs.lines("level=ERROR"); len(errs) != 0 {
		t.Fatalf("error lines for a renewal caught between its two writes: %q", errs)
	}
	if got := logs.lines("TLS certificate reloaded"); len(got) != 1 {
		t.Fatalf("reload lines %q, want one", got)
	}
}

// Files rewritten in place (same inode, truncate then write) are taken too.
func TestRewriteInPlace(t *testing.T) {
	ca := testpki.New(t, "site")
	certFile, keyFile := liveFiles(t, ca, "gw")
	r, err := certreload.New(certreload.Options{CertFile: certFile, KeyFile: keyFile, CheckEvery: check})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r.ServerConfig(nil))
	newCert, newKey := ca.ServerCert(t, "gw-2")
	for dst, src := range map[string]string{keyFile: newKey, certFile: newCert} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	waitSerial(t, addr, &tls.Config{RootCAs: ca.Pool}, fileSerial(t, newCert))
}

// A bad replacement keeps the old certificate in service and is logged once, however many
// handshakes follow; fixed files are then taken.
func TestBadReplacementKeepsOldCertificate(t *testing.T) {
	ca := testpki.New(t, "site")
	other, otherKey := ca.ServerCert(t, "other")
	otherPEM, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		damage  func(t *testing.T, certFile, keyFile string)
		wantErr string
	}{
		{"key of another certificate", func(t *testing.T, _, keyFile string) { install(t, keyFile, otherKey) },
			"private key does not match public key"},
		{"certificate half-written", func(t *testing.T, certFile, _ string) { writeAtomic(t, certFile, otherPEM[:len(otherPEM)/2]) },
			"failed to find any PEM data in certificate input"},
		{"certificate removed", func(t *testing.T, certFile, _ string) {
			if err := os.Remove(certFile); err != nil {
				t.Fatal(err)
			}
		}, "no such file or directory"},
		{"key unreadable", func(t *testing.T, _, keyFile string) {
			if os.Getuid() == 0 {
				t.Skip("root reads any file")
			}
			if err := os.Chmod(keyFile, 0); err != nil {
				t.Fatal(err)
			}
		}, "permission denied"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			certFile, keyFile := liveFiles(t, ca, "gw")
			logs := &logBuffer{}
			r, err := certreload.New(certreload.Options{CertFile: certFile, KeyFile: keyFile, CertName: "tls_cert", KeyName: "tls_key",
				Listener: "test", Logger: logs.logger(), CheckEvery: check})
			if err != nil {
				t.Fatal(err)
			}
			addr := serve(t, r.ServerConfig(nil))
			client := &tls.Config{RootCAs: ca.Pool}
			first, err := dial(t, addr, client)
			if err != nil {
				t.Fatal(err)
			}
			oldSerial := servedSerial(first)
			first.Close()

			tc.damage(t, certFile, keyFile)
			waitLog(t, logs, addr, client, "level=ERROR")
			// More handshakes, each past CheckEvery: still the old certificate, still one line.
			for range 5 {
				time.Sleep(2 * check)
				c, err := dial(t, addr, client)
				if err != nil {
					t.Fatalf("dial with bad files in place: %v", err)
				}
				if got := servedSerial(c); got != oldSerial {
					t.Fatalf("serial %s with bad files, want the old %s", got, oldSerial)
				}
				c.Close()
			}
			errs := logs.lines("level=ERROR")
			if len(errs) != 1 || !strings.Contains(errs[0], tc.wantErr) || !strings.Contains(errs[0], "still serving the previous certificate") ||
				!strings.Contains(errs[0], "serving_serial="+oldSerial) {
				t.Fatalf("error lines %q, want one with %q, the old serial %s and what to do", errs, tc.wantErr, oldSerial)
			}
			if len(logs.lines("TLS certificate reloaded")) != 0 {
				t.Fatalf("bad files logged as reloaded: %q", logs.lines("TLS certificate reloaded"))
			}

			// Fixed: a good pair in place is taken.
			_ = os.Chmod(keyFile, 0o600)
			fixed, fixedKey := ca.ServerCert(t, "gw-fixed")
			install(t, keyFile, fixedKey)
			install(t, certFile, fixed)
			waitSerial(t, addr, client, fileSerial(t, fixed))
		})
	}
}

// Files touched or rewritten with the same content change nothing and log nothing.
func TestSameContentIsQuiet(t *testing.T) {
	ca := testpki.New(t, "site")
	certFile, keyFile := liveFiles(t, ca, "gw")
	logs := &logBuffer{}
	r, err := certreload.New(certreload.Options{CertFile: certFile, KeyFile: keyFile, Logger: logs.logger(), CheckEvery: check})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r.ServerConfig(nil))
	client := &tls.Config{RootCAs: ca.Pool}
	later := time.Now().Add(time.Minute)
	for _, f := range []string{certFile, keyFile} {
		install(t, f, f) // new inode, same bytes
		if err := os.Chtimes(f, later, later); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		time.Sleep(2 * check)
		c, err := dial(t, addr, client)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if s := logs.lines("level="); len(s) != 0 {
		t.Fatalf("log lines for unchanged content: %q", s)
	}
}

// With a client CA, a replaced CA file decides which client certificates the next handshakes
// accept; a connection accepted before stays up.
func TestRotateClientCA(t *testing.T) {
	site := testpki.New(t, "site")
	devicesOld, devicesNew := testpki.New(t, "devices-2025"), testpki.New(t, "devices-2026")
	certFile, keyFile := liveFiles(t, site, "gw")
	caFile := filepath.Join(filepath.Dir(certFile), "clients.pem")
	install(t, caFile, devicesOld.File)
	logs := &logBuffer{}
	r, err := certreload.New(certreload.Options{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile, Listener: "test",
		Logger: logs.logger(), CheckEvery: check})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r.ServerConfig(&tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}))
	client := func(ca *testpki.CA) *tls.Config {
		cert := ca.ClientCert(t, "sensor-1")
		return &tls.Config{RootCAs: site.Pool, Certificates: []tls.Certificate{cert}}
	}
	oldClient, newClient := client(devicesOld), client(devicesNew)
	// The old client keeps session tickets: resuming must not get around the new pool.
	oldClient.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	kept, err := dial(t, addr, oldClient)
	if err != nil {
		t.Fatalf("client of the configured CA: %v", err)
	}
	defer kept.Close()
	if again, err := dial(t, addr, oldClient); err != nil || !again.ConnectionState().DidResume {
		t.Fatalf("second connection of the old client: %v, want a resumed session", err)
	} else {
		again.Close()
	}
	if _, err := dial(t, addr, newClient); err == nil {
		t.Fatal("client of a CA not yet configured was accepted")
	}

	install(t, caFile, devicesNew.File)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dial(t, addr, newClient)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client of the new CA still refused after 5s: %v", err)
		}
		time.Sleep(check)
	}
	if c, err := dial(t, addr, oldClient); err == nil {
		t.Fatalf("client of the replaced CA still accepted (resumed %v)", c.ConnectionState().DidResume)
	}
	if err := echo(kept); err != nil {
		t.Fatalf("connection accepted before the CA changed: %v", err)
	}
	if got := logs.lines("TLS certificate reloaded"); len(got) != 1 || !strings.Contains(got[0], "client_ca_changed=true") {
		t.Fatalf("reload lines %q, want one saying the client CA changed", got)
	}
	if !r.ClientCAs().Equal(devicesNew.Pool) {
		t.Fatal("ClientCAs is not the new CA's pool")
	}
}

// Bad files at start are an error naming the file, as before reloading existed.
func TestNewRefusesBadFiles(t *testing.T) {
	ca := testpki.New(t, "site")
	cert, key := ca.ServerCert(t, "gw")
	_, otherKey := ca.ServerCert(t, "other")
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name          string
		cert, key, ca string
		want          string
	}{
		{"missing certificate", filepath.Join(t.TempDir(), "none.pem"), key, "", "read TLS mqtt.tls_cert"},
		{"key of another certificate", cert, otherKey, "", "load TLS certificate (mqtt.tls_cert " + cert + ", mqtt.tls_key " + otherKey + "): tls: private key does not match public key"},
		{"client CA not PEM", cert, key, notPEM, "mqtt.tls_client_ca " + notPEM + " holds no PEM certificate"},
		{"client CA missing", cert, key, filepath.Join(t.TempDir(), "none.pem"), "read mqtt.tls_client_ca"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := certreload.New(certreload.Options{CertFile: tc.cert, KeyFile: tc.key, ClientCAFile: tc.ca,
				CertName: "mqtt.tls_cert", KeyName: "mqtt.tls_key", ClientCAName: "mqtt.tls_client_ca"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// Handshakes racing a rotation each get a whole pair, old or new (run with -race).
func TestConcurrentHandshakesDuringRotation(t *testing.T) {
	ca := testpki.New(t, "site")
	certFile, keyFile := liveFiles(t, ca, "gw")
	r, err := certreload.New(certreload.Options{CertFile: certFile, KeyFile: keyFile, ClientCAFile: ca.File, CheckEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r.ServerConfig(&tls.Config{ClientAuth: tls.VerifyClientCertIfGiven}))
	client := &tls.Config{RootCAs: ca.Pool}
	pairs := make([][2]string, 3)
	for i := range pairs {
		c, k := ca.ServerCert(t, "gw-"+string(rune('a'+i)))
		pairs[i] = [2]string{c, k}
	}
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 200; n++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, client)
				if err != nil {
					errc <- err
					return
				}
				c.Close()
			}
		}()
	}
	for _, p := range pairs {
		// Certificate and key renamed together as one directory swap would be too fast to
		// observe a mismatch; renaming them one by one may show one, which must be refused.
		install(t, keyFile, p[1])
		install(t, certFile, p[0])
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("handshake during rotation: %v", err)
	}
	waitSerial(t, addr, client, fileSerial(t, pairs[len(pairs)-1][0]))
}

// An expired certificate put in place is taken (it is what the operator installed) and warned
// about.
func TestExpiredReplacementIsWarned(t *testing.T) {
	ca := testpki.New(t, "site")
	certFile, keyFile := liveFiles(t, ca, "gw")
	logs := &logBuffer{}
	r, err := certreload.New(certreload.Options{CertFile: certFile, KeyFile: keyFile, Logger: logs.logger(), CheckEvery: check})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r.ServerConfig(nil))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "expired"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	writeAtomic(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	waitLog(t, logs, addr, &tls.Config{InsecureSkipVerify: true}, "level=WARN")
	if w := logs.lines("level=WARN"); len(w) != 1 || !strings.Contains(w[0], "has expired") {
		t.Fatalf("warnings %q, want one saying the certificate has expired", w)
	}
	if got := r.Certificate().Leaf.SerialNumber.Text(16); got != "7" {
		t.Fatalf("serving serial %s, want the expired replacement's 7", got)
	}
}

package edgenode

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/edge"
	"github.com/tributary-iot/tributary/internal/testpki"
)

const testToken = "0123456789abcdef0123456789abcdef"

// httpsNode is an edge node serving its HTTP listener over TLS with a certificate of ca, on a
// free loopback port, until the test ends.
type httpsNode struct {
	node *Node
	base string // https://127.0.0.1:PORT
}

// startHTTPSNode runs cfg (data dir, listeners and certificate filled in) and waits until it is
// ready; the test's cleanup stops it and waits for Run to return.
func startHTTPSNode(t *testing.T, ca *testpki.CA, cfg Config) *httpsNode {
	t.Helper()
	cfg.DataDir = t.TempDir()
	cfg.MQTT.Listen = "127.0.0.1:0"
	cfg.HTTPListen = "127.0.0.1:0"
	if cfg.HTTPTLSCert == "" {
		cfg.HTTPTLSCert, cfg.HTTPTLSKey = ca.ServerCert(t, "edge")
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); !n.Agent().Ready(); {
		if time.Now().After(deadline) {
			t.Fatal("edge node not ready after 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return &httpsNode{node: n, base: "https://" + n.Agent().HTTPAddr()}
}

func statusTokenFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "edge-status.token")
	if err := os.WriteFile(p, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// httpsClient trusts ca and presents certs, without following redirects (so a login's cookie
// is seen on its own answer).
func httpsClient(ca *testpki.CA, certs ...tls.Certificate) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, Certificates: certs},
			DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func get(t *testing.T, c *http.Client, u, token string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// Over HTTPS the listener serves /metrics and the health checks as before, and the status page
// behind its token; a browser's login sets a Secure session cookie.
func TestHTTPSServesMetricsAndStatusPage(t *testing.T) {
	ca := testpki.New(t, "edge http CA")
	n := startHTTPSNode(t, ca, Config{HTTPTokenFile: statusTokenFile(t), Config: edgeConfig("gw-tls")})
	c := httpsClient(ca)

	resp, body := get(t, c, n.base+"/metrics", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "tributary_edge_readings_received_total") {
		t.Fatalf("GET /metrics over HTTPS: %d, %d bytes without the edge's metrics", resp.StatusCode, len(body))
	}
	if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("GET /metrics: TLS state %+v, want TLS 1.2 or newer", resp.TLS)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, body := get(t, c, n.base+path, ""); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s over HTTPS: %d %q", path, resp.StatusCode, body)
		}
	}

	if resp, _ := get(t, c, n.base+"/status/api", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /status/api without the token: %d, want 401", resp.StatusCode)
	}
	resp, body = get(t, c, n.base+"/status/api", testToken)
	var snap struct {
		EdgeID        string `json:"edge_id"`
		LoginRequired bool   `json:"login_required"`
	}
	if err := json.Unmarshal([]byte(body), &snap); resp.StatusCode != http.StatusOK || err != nil || snap.EdgeID != "gw-tls" || !snap.LoginRequired {
		t.Fatalf("GET /status/api with the token: %d %v %+v", resp.StatusCode, err, snap)
	}
	if resp, body := get(t, c, n.base+"/", testToken); resp.StatusCode != http.StatusOK || !strings.Contains(body, "<html") {
		t.Errorf("GET / with the token: %d, %d bytes", resp.StatusCode, len(body))
	}

	login, err := c.PostForm(n.base+"/login", url.Values{"token": {testToken}})
	if err != nil {
		t.Fatal(err)
	}
	login.Body.Close()
	var session *http.Cookie
	for _, ck := range login.Cookies() {
		if ck.Name == "tributary_edge_session" {
			session = ck
		}
	}
	if login.StatusCode != http.StatusSeeOther || session == nil || !session.Secure || !session.HttpOnly {
		t.Fatalf("POST /login over HTTPS: %d, session cookie %+v, want a Secure HttpOnly one", login.StatusCode, session)
	}
	req, _ := http.NewRequest(http.MethodGet, n.base+"/status/api", nil)
	req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET /status/api with the session cookie: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// A plain HTTP request to the TLS port gets a plain answer saying so (net/http's 400), never a
// page; the listener goes on serving HTTPS.
func TestPlainHTTPToTLSPortIsRefused(t *testing.T) {
	ca := testpki.New(t, "edge http CA")
	n := startHTTPSNode(t, ca, Config{HTTPTokenFile: statusTokenFile(t), Config: edgeConfig("gw-tls")})
	plain := &http.Client{Timeout: 10 * time.Second}
	addr := strings.TrimPrefix(n.base, "https://")
	for _, path := range []string{"/metrics", "/status/api"} {
		resp, body := get(t, plain, "http://"+addr+path, testToken)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "HTTP request to an HTTPS server") {
			t.Errorf("plain GET %s on the TLS port: %d %q, want 400 saying the server speaks HTTPS", path, resp.StatusCode, body)
		}
	}
	if resp, _ := get(t, httpsClient(ca), n.base+"/metrics", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /metrics over HTTPS after the plain requests: %d", resp.StatusCode)
	}
}

// With http_client_ca the handshake needs a certificate signed by that CA: none, or one of
// another CA, is refused before any request is read; a good one reaches /metrics, and (no
// token being set) the status page too.
func TestHTTPClientCertificates(t *testing.T) {
	ca := testpki.New(t, "edge http CA")
	clients := testpki.New(t, "operators CA")
	other := testpki.New(t, "someone else's CA")
	cfg := Config{Config: edgeConfig("gw-mtls")}
	cfg.HTTPClientCA = clients.File
	n := startHTTPSNode(t, ca, cfg)

	refused := map[string]*http.Client{
		"no client certificate":              httpsClient(ca),
		"a certificate of another authority": httpsClient(ca, other.ClientCert(t, "prometheus")),
	}
	for name, c := range refused {
		t.Run(name, func(t *testing.T) {
			resp, err := c.Get(n.base + "/metrics")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("GET /metrics: %d, want the handshake refused", resp.StatusCode)
			}
			if !strings.Contains(err.Error(), "certificate") {
				t.Errorf("GET /metrics: %v, want a TLS alert about the certificate", err)
			}
		})
	}
	good := httpsClient(ca, clients.ClientCert(t, "prometheus"))
	if resp, body := get(t, good, n.base+"/metrics", ""); resp.StatusCode != http.StatusOK || !strings.Contains(body, "tributary_edge_") {
		t.Errorf("GET /metrics with a good client certificate: %d", resp.StatusCode)
	}
	if resp, body := get(t, good, n.base+"/status/api", ""); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"gw-mtls"`) {
		t.Errorf("GET /status/api with a good client certificate and no token set: %d %q", resp.StatusCode, body)
	}
}

// The config errors an operator sees, from New and from --check-config (Check), each naming
// the key to change; none of them opens the log.
func TestHTTPTLSConfigErrors(t *testing.T) {
	ca := testpki.New(t, "edge http CA")
	cert, key := ca.ServerCert(t, "edge")
	otherCert, _ := ca.ServerCert(t, "another")
	missing := filepath.Join(t.TempDir(), "nope.pem")
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name                   string
		listen, cert, key, cca string
		want                   string
	}{
		{"cert without key", "127.0.0.1:0", cert, "", "", "http_tls_cert and http_tls_key go together"},
		{"key without cert", "127.0.0.1:0", "", key, "", "http_tls_cert and http_tls_key go together"},
		{"client CA without TLS", "127.0.0.1:0", "", "", ca.File, "http_client_ca needs http_tls_cert and http_tls_key"},
		{"TLS with the listener off", "off", cert, key, "", "the HTTP listener is off"},
		{"missing certificate", "127.0.0.1:0", missing, key, "", "http_tls_cert: stat"},
		{"missing client CA", "127.0.0.1:0", cert, key, missing, "http_client_ca: stat"},
		{"key of another certificate", "127.0.0.1:0", otherCert, key, "", "private key does not match public key"},
		{"client CA not PEM", "127.0.0.1:0", cert, key, notPEM, "holds no PEM certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Config: edgeConfig("gw-1")}
			cfg.DataDir, cfg.HTTPListen = t.TempDir(), tc.listen
			cfg.HTTPTLSCert, cfg.HTTPTLSKey, cfg.HTTPClientCA = tc.cert, tc.key, tc.cca
			if err := cfg.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check: %v, want an error saying %q", err, tc.want)
			}
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error saying %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(cfg.DataDir, "meta.db")); err == nil {
				t.Error("New opened the log although the HTTP listener's TLS is wrong")
			}
		})
	}
	good := Config{Config: edgeConfig("gw-1")}
	good.DataDir, good.HTTPListen, good.HTTPTLSCert, good.HTTPTLSKey, good.HTTPClientCA = t.TempDir(), "127.0.0.1:0", cert, key, ca.File
	if err := good.Check(); err != nil {
		t.Errorf("Check of a good TLS config: %v", err)
	}
}

// What the start logs about a listener off loopback: nothing once TLS carries the token, a
// warning when the token would travel in clear, another when the page has no credentials.
func TestHTTPExposureWarnings(t *testing.T) {
	cases := []struct {
		name   string
		listen string
		token  string
		tls    bool
		cca    string
		want   string // "" means no warning
	}{
		{"loopback plain with token", "127.0.0.1:9464", testToken, false, "", ""},
		{"LAN plain with token", "0.0.0.0:9464", testToken, false, "", "token and session cookie travel in clear"},
		{"LAN HTTPS with token", "0.0.0.0:9464", testToken, true, "", ""},
		{"LAN HTTPS with client CA", "0.0.0.0:9464", "", true, "ca.pem", ""},
		{"LAN without credentials", "0.0.0.0:9464", "", false, "", "served to this machine only"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			cfg := Config{HTTPClientCA: tc.cca}
			cfg.HTTPListen = tc.listen
			if tc.tls {
				cfg.HTTPTLS = &tls.Config{}
			}
			warnExposure(cfg, tc.token, slog.New(slog.NewTextHandler(&logs, nil)))
			switch {
			case tc.want == "" && logs.Len() > 0:
				t.Errorf("logged %q, want nothing", logs.String())
			case tc.want != "" && !strings.Contains(logs.String(), tc.want):
				t.Errorf("logged %q, want a warning saying %q", logs.String(), tc.want)
			case tc.want != "" && !strings.Contains(logs.String(), "level=WARN"):
				t.Errorf("logged %q, want it at WARN", logs.String())
			}
		})
	}
}

// curl, a client written elsewhere, reads /metrics and the status API over HTTPS trusting only
// the test CA (--cacert), and with client certificates (--cert, --key) when they are required.
func TestCurlOverHTTPS(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is not installed; .ci/run must provide it")
		}
		t.Skip("curl is not installed")
	}
	ca := testpki.New(t, "edge http CA")
	clients := testpki.New(t, "operators CA")
	cfg := Config{HTTPTokenFile: statusTokenFile(t), Config: edgeConfig("gw-curl")}
	cfg.HTTPClientCA = clients.File
	n := startHTTPSNode(t, ca, cfg)
	certFile, keyFile := clients.ClientCertFiles(t, "prometheus")

	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, curl, append([]string{"-sS", "--fail", "--cacert", ca.File}, args...)...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			err = errors.New(err.Error() + ": " + strings.TrimSpace(stderr.String()))
		}
		return string(out), err
	}
	out, err := run("--cert", certFile, "--key", keyFile, n.base+"/metrics")
	if err != nil || !strings.Contains(out, "tributary_edge_readings_received_total") {
		t.Fatalf("curl /metrics: %v, %d bytes", err, len(out))
	}
	out, err = run("--cert", certFile, "--key", keyFile, "-H", "Authorization: Bearer "+testToken, n.base+"/status/api")
	if err != nil || !strings.Contains(out, `"edge_id":"gw-curl"`) {
		t.Fatalf("curl /status/api with the token: %v, %q", err, out)
	}
	if _, err := run("--cert", certFile, "--key", keyFile, n.base+"/status/api"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("curl /status/api without the token: %v, want 401", err)
	}
	if _, err := run(n.base + "/metrics"); err == nil {
		t.Error("curl without a client certificate got /metrics; want the handshake refused")
	}
	if _, err := run("http://" + strings.TrimPrefix(n.base, "https://") + "/metrics"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("curl over plain HTTP to the TLS port: %v, want 400", err)
	}
}

func edgeConfig(id string) (c edge.Config) {
	c.EdgeID = id
	return c
}

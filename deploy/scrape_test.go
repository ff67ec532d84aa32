package deploy_test

import (
	"context"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	// Prometheus builds each scrape job's HTTP client from its tls_config with this package's
	// NewClientFromConfig; the test uses it so scrape.yml is read as Prometheus reads it. Its
	// expfmt parses the scraped text as Prometheus's text format.
	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/tributary-iot/tributary/internal/testpki"
	"github.com/tributary-iot/tributary/sync/edgenode"
)

// scrapeJob is the part of a Prometheus scrape_config the test needs: scheme and the HTTP
// client settings Prometheus inlines in it (tls_config, authorization, ...).
type scrapeJob struct {
	JobName string                      `yaml:"job_name"`
	Scheme  string                      `yaml:"scheme"`
	HTTP    promconfig.HTTPClientConfig `yaml:",inline"`
}

// TestEdgeHTTPSScrapeConfig scrapes an edge that serves HTTPS and asks for client
// certificates (http_tls_cert, http_tls_key, http_client_ca) with the tributary-edge-https job
// of prometheus/scrape.yml, its cert_file and key_file uncommented and its files swapped for
// test ones, through the client Prometheus would build from it.
func TestEdgeHTTPSScrapeConfig(t *testing.T) {
	b, err := os.ReadFile("prometheus/scrape.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		ScrapeConfigs []scrapeJob `yaml:"scrape_configs"`
	}
	// The shipped job keeps cert_file and key_file commented, for edges without http_client_ca.
	b = regexp.MustCompile(`(?m)^(\s*)# ((?:cert|key)_file:)`).ReplaceAll(b, []byte("$1$2"))
	if err := yaml.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	var job *scrapeJob
	for i := range file.ScrapeConfigs {
		if file.ScrapeConfigs[i].JobName == "tributary-edge-https" {
			job = &file.ScrapeConfigs[i]
		}
	}
	if job == nil {
		t.Fatal("scrape.yml has no tributary-edge-https job")
	}
	tc := &job.HTTP.TLSConfig
	if job.Scheme != "https" || tc.CAFile == "" || tc.CertFile == "" || tc.KeyFile == "" {
		t.Fatalf("the shipped job changed: scheme %q, tls_config %+v", job.Scheme, tc)
	}

	ca := testpki.New(t, "edge http CA")
	clients := testpki.New(t, "prometheus CA")
	tc.CAFile = ca.File
	tc.CertFile, tc.KeyFile = clients.ClientCertFiles(t, "prometheus")
	if err := job.HTTP.Validate(); err != nil {
		t.Fatalf("tls_config: %v", err)
	}
	scraper, err := promconfig.NewClientFromConfig(job.HTTP, job.JobName)
	if err != nil {
		t.Fatal(err)
	}

	var cfg edgenode.Config
	cfg.DataDir, cfg.MQTT.Listen, cfg.HTTPListen = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	cfg.HTTPTLSCert, cfg.HTTPTLSKey = ca.ServerCert(t, "gw-17")
	cfg.HTTPClientCA = clients.File
	n, err := edgenode.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge Run: %v", err)
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); !n.Agent().Ready(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("edge not ready after 10s")
		}
	}
	target := job.Scheme + "://" + n.Agent().HTTPAddr() + "/metrics"

	req, _ := http.NewRequest(http.MethodGet, target, nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := scraper.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", target, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", target, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	if _, ok := families["tributary_edge_readings_received_total"]; !ok {
		t.Errorf("scrape has %d metric families, not tributary_edge_readings_received_total", len(families))
	}

	// The same job without its client certificate is refused in the handshake.
	bare := job.HTTP
	bare.TLSConfig.CertFile, bare.TLSConfig.KeyFile = "", ""
	noCert, err := promconfig.NewClientFromConfig(bare, job.JobName)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := noCert.Get(target); err == nil {
		resp.Body.Close()
		t.Errorf("scrape without cert_file and key_file: %s, want the handshake refused", resp.Status)
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("scrape without a client certificate: %v, want a TLS alert about it", err)
	}
}

// Package deploy_test keeps the example configs in deploy/ loadable by the code that reads them,
// including every option that is shipped commented out.
package deploy_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/edgenode"
)

// commentedOption matches a commented-out YAML line ("# key: value", "#   - pattern: ...") and not
// prose, which has spaces before its first colon.
var commentedOption = regexp.MustCompile(`(?m)^(\s*)# (\s*(?:[a-z][a-z0-9_-]*:(?:\s|$)|- [a-z][a-z0-9_-]*:\s))`)

func uncomment(b []byte) []byte { return commentedOption.ReplaceAll(b, []byte("$1$2")) }

func TestEdgeConfig(t *testing.T) {
	b, err := os.ReadFile("edge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"as shipped": b, "every option uncommented": uncomment(b)} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "edge.yaml")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := edgenode.LoadConfig(path)
			if err != nil {
				t.Fatalf("%v\n%s", err, content)
			}
			if cfg.DataDir != "/var/lib/tributary/edge" || cfg.MQTT.Listen == "" {
				t.Errorf("unexpected config: %+v", cfg)
			}
		})
	}
	if u := uncomment(b); !bytes.Contains(u, []byte("\nsource:\n  broker:")) || !bytes.Contains(u, []byte("\n  tls_listen:")) {
		t.Error("uncommenting missed options; check the commentedOption pattern")
	}
}

// centralFile is central's config file.
type centralFile = central.Config

func TestCentralConfig(t *testing.T) {
	b, err := os.ReadFile("central.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"as shipped": b, "every option uncommented": uncomment(b)} {
		t.Run(name, func(t *testing.T) {
			var cfg centralFile
			dec := yaml.NewDecoder(bytes.NewReader(content))
			dec.KnownFields(true)
			if err := dec.Decode(&cfg); err != nil {
				t.Fatalf("%v\n%s", err, content)
			}
			if cfg.DataDir == "" || cfg.Listen == "" {
				t.Errorf("unexpected config: %+v", cfg)
			}
		})
	}
	var cfg centralFile
	if err := yaml.Unmarshal(uncomment(b), &cfg); err != nil {
		t.Fatal(err)
	}
	if c := cfg.Console; c.Step != 10*time.Second || c.Window != time.Hour || c.MaxDevices != 10000 || c.MaxEdges != 1000 {
		t.Errorf("console not documented with its defaults: %+v", c)
	}
	if k := cfg.Sinks.Kafka; k == nil || k.Topic == "" || k.SASL == nil || k.TLS == nil {
		t.Errorf("sinks.kafka not fully documented: %+v", k)
	}
}

func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Build struct {
				Context    string `yaml:"context"`
				Dockerfile string `yaml:"dockerfile"`
			} `yaml:"build"`
			Command []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"central", "edge", "fleet"} {
		svc, ok := compose.Services[name]
		if !ok {
			t.Errorf("compose.yaml has no %s service", name)
			continue
		}
		if svc.Build.Dockerfile != "" {
			if _, err := os.Stat(filepath.Join(svc.Build.Context, svc.Build.Dockerfile)); err != nil {
				t.Errorf("service %s: %v", name, err)
			}
		}
	}
}

func TestPrometheusFiles(t *testing.T) {
	b, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("group %s: incomplete rule %+v", g.Name, r)
			}
		}
	}
	if n < 4 {
		t.Errorf("%d rules", n)
	}
	var scrape map[string]any
	b, err = os.ReadFile("prometheus/scrape.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &scrape); err != nil || scrape["scrape_configs"] == nil {
		t.Fatalf("scrape.yml: %v", err)
	}
}

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// dashboardQueries returns every PromQL expression of a Grafana dashboard: the panels' targets
// (rows nest panels) and the query variables.
func dashboardQueries(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []string
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				walk(c, k)
			}
		case []any:
			for _, c := range v {
				walk(c, key)
			}
		case string:
			if key == "expr" || (key == "query" && strings.Contains(v, "(")) {
				out = append(out, v)
			}
		}
	}
	walk(doc, "")
	return out
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`\$?[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
		"group_right": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true, "inf": true, "nan": true}
)

// promqlMetricNames lexes a PromQL expression (or a Grafana label_values() query) far enough to
// name its metrics: strings, label matchers, ranges and grouping clauses are removed, then every
// identifier that is not a function call, a keyword or a Grafana $variable is a metric name.
func promqlMetricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, `""`)
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRange.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	var names []string
	for _, m := range promIdent.FindAllStringSubmatchIndex(s, -1) {
		tok := s[m[0]:m[1]]
		if m[2] >= 0 || strings.HasPrefix(tok, "$") || promKeywords[strings.ToLower(tok)] {
			continue
		}
		// A label name as label_values()'s second argument, or a number's exponent, is no metric.
		if before := strings.TrimRight(s[:m[0]], " "); strings.HasSuffix(before, ",") || (m[0] > 0 && s[m[0]-1] >= '0' && s[m[0]-1] <= '9') {
			continue
		}
		if !slices.Contains(names, tok) {
			names = append(names, tok)
		}
	}
	return names
}

func TestPromQLMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (edge) (rate(tributary_forwarder_records_sent_total{job=~"$edge_job", x="a{b}"}[$__rate_interval]))`: {"tributary_forwarder_records_sent_total"},
		`histogram_quantile(0.99, sum by (le, instance) (rate(a_seconds_bucket[5m])))`:                               {"a_seconds_bucket"},
		`a / (b > 0) and on (instance) c offset 5m`:                                                                  {"a", "b", "c"},
		`label_values(tributary_edge_connected_devices{job=~"$edge_job"}, instance)`:                                 {"tributary_edge_connected_devices"},
		`1e3 * x`: {"x"},
	} {
		if got := promqlMetricNames(expr); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", expr, got, want)
		}
	}
}

// TestGrafanaDashboardMetricsExist runs a real central (with a Kafka sink whose broker is down)
// and a real edge forwarding to it, stores one reading, and checks that every metric the
// dashboard's queries name is in their /metrics: a renamed metric fails here, not as an empty
// panel in an operator's Grafana.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	queries := dashboardQueries(t, "../../deploy/grafana/tributary.json")
	seen := map[string]bool{}
	for _, q := range queries {
		for _, n := range promqlMetricNames(q) {
			seen[n] = true
		}
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(queries) < 20 || len(names) < 20 {
		t.Fatalf("found %d queries naming %d metrics in the dashboard: %v", len(queries), len(names), names)
	}

	tributary, _ := buildBinaries(t)
	dir := t.TempDir()
	centralAddr, mqttAddr, edgeHTTP := freePort(t), freePort(t), freePort(t)
	centralURL := "http://" + centralAddr
	conf := filepath.Join(dir, "central.yaml")
	writeFile(t, conf, "sinks:\n  kafka:\n    brokers: [\""+freePort(t)+"\"]\n    topic: readings\n")
	startProc(t, tributary, "central", "--config", conf, "--data-dir", filepath.Join(dir, "central"), "--listen", centralAddr)
	waitHTTP(t, centralURL+"/healthz")
	tokenFile := filepath.Join(dir, "edge.token")
	addEdgeToken(t, tributary, filepath.Join(dir, "central"), tokenFile)
	edgeConf := filepath.Join(dir, "edge.yaml")
	writeFile(t, edgeConf, "quota_bytes: 1073741824\n")
	startProc(t, tributary, "edge", "--config", edgeConf, "--data-dir", filepath.Join(dir, "edge"), "--mqtt-listen", mqttAddr,
		"--http-listen", edgeHTTP, "--central", centralURL, "--edge-id", "gw-1", "--central-token-file", tokenFile)
	waitHTTP(t, "http://"+edgeHTTP+"/readyz")
	dev := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID("pump-1").SetAutoReconnect(false))
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer dev.Disconnect(0)
	if tok := dev.Publish("devices/pump-1/readings", 1, false, `{"temp":20}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}

	var missing []string
	for deadline := time.Now().Add(20 * time.Second); ; {
		// Central's per-edge counters appear with the edge's first records.
		exported := scrape(t, "http://"+edgeHTTP+"/metrics") + scrape(t, centralURL+"/metrics")
		missing = missing[:0]
		for _, n := range names {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(n) + `(_bucket|_sum|_count)?[{ ]`).MatchString(exported) {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(missing) > 0 {
		t.Errorf("metrics the Grafana dashboard queries that a running edge and central do not export: %s", strings.Join(missing, ", "))
	}
	t.Logf("%d dashboard queries name %d metrics, all exported", len(queries), len(names))
}

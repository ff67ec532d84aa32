package edge

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testprog"
)

// browserWSPage opens MQTT over WebSocket from a page and puts the outcome in its title.
const browserWSPage = `<!doctype html><title>pending</title><script>
const ws = new WebSocket("ws://%s/", "mqtt");
ws.binaryType = "arraybuffer";
// MQTT 3.1.1 CONNECT, clean session, keepalive 30, client id "web".
ws.onopen = () => ws.send(new Uint8Array([0x10,15,0,4,77,81,84,84,4,2,0,30,0,3,119,101,98]));
ws.onmessage = (e) => { document.title = "connack-" + new Uint8Array(e.data)[0]; };
ws.onerror = () => { document.title = "refused"; };
</script>`

// pageListener is where the test page is served; its origin is known before the agent starts.
func pageListener(t *testing.T) (net.Listener, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln, "http://" + ln.Addr().String()
}

// browserTitle serves the page on ln and returns the title headless Chromium shows after running it.
func browserTitle(t *testing.T, chromium string, ln net.Listener, wsAddr string) string {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, browserWSPage, wsAddr)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	// "pending" means the page had no outcome yet when Chromium dumped it (a loaded machine);
	// only "refused" or a CONNACK is an answer, so try again a few times.
	var title string
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
			"--user-data-dir="+t.TempDir(), "--virtual-time-budget=10000", "--dump-dom", "http://"+ln.Addr().String()+"/").Output()
		cancel()
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		m := regexp.MustCompile(`<title>([^<]*)</title>`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("no title in Chromium's DOM:\n%s", out)
		}
		if title = string(m[1]); title != "pending" {
			break
		}
	}
	return title
}

// TestWebSocketOriginInBrowser: a real browser sends the page's Origin. A page from another
// origin (another port is another origin) is refused by default, and connects once its origin
// is listed in ws_allowed_origins.
func TestWebSocketOriginInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	chromium := testprog.Find(t, "chromium", "chromium")
	ln, origin := pageListener(t)
	a, _ := startAgent(t, Config{MQTT: MQTTConfig{WSListen: "127.0.0.1:0"}})
	if title := browserTitle(t, chromium, ln, a.WSAddr()); title != "refused" {
		t.Errorf("page from %s with no origins allowed: title %q, want refused", origin, title)
	}
	if got := metricSum(t, a.metrics.registry, "tributary_edge_connect_refused_total"); got < 1 {
		t.Errorf("connect_refused_total %v after the browser's attempt, want it counted", got)
	}

	ln, origin = pageListener(t)
	b, _ := startAgent(t, Config{MQTT: MQTTConfig{WSListen: "127.0.0.1:0", WSAllowedOrigins: []string{origin}}})
	if title := browserTitle(t, chromium, ln, b.WSAddr()); title != "connack-32" {
		t.Errorf("page from %s with that origin allowed: title %q, want connack-32", origin, title)
	}
}

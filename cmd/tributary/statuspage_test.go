package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	// chromedp drives a real browser (Debian's chromium) over the DevTools protocol, so the
	// status page is tested as an operator sees it: its scripts run, its plots draw.
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/internal/testprog"
)

var edgeScreenshot = flag.Bool("edge-screenshot", false, "write docs/edge-status.png from TestEdgeStatusPageInBrowser")

// browser starts headless chromium for one test and collects the page's console errors and
// uncaught exceptions.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	chromium := testprog.Find(t, "chromium", "chromium", "/usr/bin")
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 900))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // chromium's sandbox refuses to run as root
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	var mu sync.Mutex
	var problems []string
	err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+fmt.Sprintf("%s %s:%d", e.ExceptionDetails.Text, e.ExceptionDetails.URL, e.ExceptionDetails.LineNumber))
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				problems = append(problems, fmt.Sprintf("console.error: %v", e.Args))
			}
		case *log.EventEntryAdded:
			if e.Entry.Level == log.EntryLevelError {
				problems = append(problems, "log: "+e.Entry.Text+" "+e.Entry.URL)
			}
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), problems...)
	}
}

// within runs one browser action with a time limit.
func within[T any](t *testing.T, ctx context.Context, d time.Duration, what string, a chromedp.Action[T]) T {
	t.Helper()
	actx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := chromedp.Run(actx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// TestEdgeStatusPageInBrowser runs a real central, a real edge forwarding to it with a status
// token set, and three firmware-sim devices publishing over MQTT, and opens the status page in
// chromium: without the token the page redirects to the login form and its data answers 401;
// after logging in it shows the devices, a plot with points drawn from their readings, the
// forwarding state, a dead letter with its reason, updates within seconds without a reload,
// raises no console error, and fits a phone-width screen.
func TestEdgeStatusPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries and starts a browser")
	}
	ctx, problems := browser(t)
	tributary, sim := buildBinaries(t)
	dir := t.TempDir()
	centralAddr, mqttAddr, edgeHTTP := freePort(t), freePort(t), freePort(t)
	centralURL, page := "http://"+centralAddr, "http://"+edgeHTTP
	startProc(t, tributary, "central", "--data-dir", filepath.Join(dir, "central"), "--listen", centralAddr)
	waitHTTP(t, centralURL+"/healthz")
	tokenFile, statusToken := filepath.Join(dir, "edge.token"), filepath.Join(dir, "status.token")
	addEdgeToken(t, tributary, filepath.Join(dir, "central"), tokenFile)
	const token = "status-token-for-the-browser-test"
	conf := filepath.Join(dir, "edge.yaml")
	writeFile(t, statusToken, token+"\n")
	writeFile(t, conf, "status_resolution: 1s\nquota_bytes: 1073741824\nquota_policy: drop-oldest\n")
	startProc(t, tributary, "edge", "--config", conf, "--data-dir", filepath.Join(dir, "edge"), "--mqtt-listen", mqttAddr,
		"--http-listen", edgeHTTP, "--http-token-file", statusToken, "--central", centralURL, "--edge-id", "gw-1",
		"--central-token-file", tokenFile)
	waitHTTP(t, page+"/readyz")

	// Without credentials: the page sends to the login form, its data is refused.
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for path, want := range map[string]int{"/": http.StatusSeeOther, "/status/api": http.StatusUnauthorized, "/status/plot.svg?chart=rates": http.StatusUnauthorized} {
		resp, err := noRedirect.Get(page + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s without the token: %d, want %d", path, resp.StatusCode, want)
		}
	}

	// Three devices publishing 20 readings/s each, for longer than the test needs; and one
	// device whose empty payload becomes a dead letter.
	fleet := exec.Command(sim, "--broker", "tcp://"+mqttAddr, "--devices", "3", "--id-prefix", "pump-", "--rate", "20",
		"--duration", "120s", "--progress", "off")
	if err := fleet.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fleet.Process.Kill(); fleet.Wait() })
	bad := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID("broken-1").SetAutoReconnect(false))
	if tok := bad.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect broken-1: %v", tok.Error())
	}
	if tok := bad.Publish("devices/broken-1/readings", 1, false, ""); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish the empty payload: %v", tok.Error())
	}

	// In the browser: / leads to the login form; the token logs in.
	within(t, ctx, 30*time.Second, "open the page", chromedp.Steps(chromedp.Navigate(page+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token"))))
	if u := within(t, ctx, 10*time.Second, "location", chromedp.Location()); !strings.HasSuffix(u, "/login") {
		t.Errorf("without a session the page went to %s, want the login form", u)
	}
	within(t, ctx, 30*time.Second, "log in", chromedp.Steps(chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Submit(chromedp.CSS("#token")), chromedp.WaitVisible(chromedp.CSS("#devices-count"))))

	// Four devices connected (three of the fleet and broken-1), by name.
	within(t, ctx, 30*time.Second, "devices count", chromedp.Poll[chromedp.Void](
		`document.getElementById("devices-count").textContent === "4" && document.getElementById("clients").textContent.includes("pump-0001")`))
	// The rates plot has drawn points from the devices' readings: a readings line of several
	// points, some above the zero line (y grows downward; the zero line is the lowest grid line).
	points := within(t, ctx, 30*time.Second, "plot points", chromedp.Poll[int](`(() => {
		const line = document.querySelector('#plot-rates polyline[data-series="readings"]');
		if (!line) return 0;
		const ys = line.getAttribute("points").trim().split(/\s+/).filter(Boolean).map((p) => Number(p.split(",")[1]));
		const zero = Math.max(...[...document.querySelectorAll("#plot-rates line")].map((l) => Number(l.getAttribute("y1"))));
		return ys.length >= 3 && ys.some((y) => y < zero - 5) ? ys.length : 0;
	})()`))
	t.Logf("rates plot: %d points", points)
	within(t, ctx, 30*time.Second, "forwarding state", chromedp.Poll[chromedp.Void](
		`["forwarding", "behind"].includes(document.getElementById("fwd-state").textContent)`))
	within(t, ctx, 30*time.Second, "dead letter", chromedp.Poll[chromedp.Void](
		`document.getElementById("dead").textContent.includes("broken-1") && document.getElementById("dead").textContent.includes("empty")`))

	// Live: the stored count grows without a reload within a few seconds.
	before := within(t, ctx, 10*time.Second, "readings total", chromedp.Evaluate[string](`document.getElementById("readings-total").textContent`))
	start := time.Now()
	within(t, ctx, 10*time.Second, "live update", chromedp.Poll[chromedp.Void](
		`document.getElementById("readings-total").textContent !== `+jsString(before)))
	t.Logf("the page updated %v after reading %s stored", time.Since(start).Round(100*time.Millisecond), before)

	if *edgeScreenshot {
		time.Sleep(40 * time.Second) // a longer plot for the picture
		png := within(t, ctx, 30*time.Second, "screenshot", chromedp.FullScreenshot(100))
		if err := os.WriteFile("../../docs/edge-status.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Phone width: nothing wider than the screen (tables scroll inside their box).
	within(t, ctx, 10*time.Second, "phone width", chromedp.EmulateViewport(390, 800))
	within(t, ctx, 10*time.Second, "wait a poll", chromedp.Poll[chromedp.Void](`document.getElementById("readings-total").textContent !== ""`))
	if w := within(t, ctx, 10*time.Second, "scroll width", chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 390 {
		t.Errorf("at 390 px wide the page is %d px wide: it scrolls sideways on a phone", w)
	}

	if p := problems(); len(p) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(p, "\n"))
	}

	// Logged out, the data is refused again.
	within(t, ctx, 20*time.Second, "log out", chromedp.Steps(chromedp.Click(chromedp.CSS("#logout button")),
		chromedp.WaitVisible(chromedp.CSS("#token"))))
	status := within(t, ctx, 10*time.Second, "API after logout", chromedp.Evaluate[int](
		`fetch("/status/api").then((r) => r.status)`, chromedp.EvalAwaitPromise))
	if status != http.StatusUnauthorized {
		t.Errorf("/status/api after logging out: %d, want 401", status)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

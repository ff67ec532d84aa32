package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	// chromedp drives Debian's chromium over the DevTools protocol, for the console's browser test.
	"github.com/chromedp/chromedp"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/edge"
	firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
	"github.com/tributary-iot/tributary/internal/testprog"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/edgenode"
)

var consoleScreenshots = flag.Bool("console.screenshots", false, "write the console browser test's screenshots into docs/ (else a temporary folder)")

// consoleFleet is central with the console, two edges with their embedded brokers and a simulated
// fleet publishing to each over MQTT: the setup of the demo, with an API token.
type consoleFleet struct {
	url, centralDir string
	stop            func()
}

func startConsoleFleet(t *testing.T, token string) *consoleFleet {
	t.Helper()
	root := t.TempDir()
	centralDir := filepath.Join(root, "central")
	logger := slog.New(slog.DiscardHandler)
	// Device ids differ between the edges: a key is a device wherever it sends from.
	edges := []struct {
		id, prefix string
		devices    int
	}{{"plant-gw-1", "dev-", 12}, {"yard-gw-2", "yard-", 4}}
	tokens := map[string]string{}
	for _, e := range edges {
		tok, err := demoRegisterEdge(centralDir, e.id)
		if err != nil {
			t.Fatal(err)
		}
		tokens[e.id] = tok
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ready := make(chan string, 1)
	centralErr := make(chan error, 1)
	go func() {
		centralErr <- central.Run(ctx, central.Config{DataDir: centralDir, Listen: "127.0.0.1:0", APIToken: token, Logger: logger,
			Console: central.ConsoleOptions{Step: time.Second, Window: 2 * time.Minute}, Ready: func(a string) { ready <- a }})
	}()
	var url string
	select {
	case a := <-ready:
		url = "http://" + a
	case err := <-centralErr:
		cancel()
		t.Fatalf("central: %v", err)
	}
	edgeErrs := make(chan error, 2*len(edges))
	for i, e := range edges {
		dir := filepath.Join(root, e.id)
		reg := devices.NewRegistry(filepath.Join(dir, "devices.db"), &devices.RegistryOptions{BcryptCost: 4})
		for n := 1; n <= e.devices; n++ {
			id := firmwaresim.DeviceID(e.prefix, n)
			if err := reg.Add(devices.Device{ID: id}, firmwaresim.PasswordTemplate(demoPassword)(id)); err != nil {
				t.Fatal(err)
			}
		}
		node, err := edgenode.New(edgenode.Config{Central: url, Forward: edgenode.ForwardConfig{Token: tokens[e.id]},
			Version: "v0.9.0-test", Config: edge.Config{DataDir: dir, EdgeID: e.id, MQTT: edge.MQTTConfig{Listen: "127.0.0.1:0"}, Logger: logger}})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := node.Run(ctx); err != nil {
				edgeErrs <- fmt.Errorf("edge %s: %w", e.id, err)
			}
		}()
		fleet, err := firmwaresim.NewFleet(firmwaresim.Config{Broker: "tcp://" + node.Agent().MQTTAddr(), Devices: e.devices, Rate: 5, QoS: 1,
			IDPrefix: e.prefix, Passwords: firmwaresim.PasswordTemplate(demoPassword), Seed: int64(i + 1), Logger: logger, Duration: 5 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := fleet.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				edgeErrs <- fmt.Errorf("fleet of %s: %w", e.id, err)
			}
		}()
	}
	return &consoleFleet{url: url, centralDir: centralDir, stop: func() {
		cancel()
		wg.Wait()
		if err := <-centralErr; err != nil {
			t.Errorf("central: %v", err)
		}
		close(edgeErrs)
		for err := range edgeErrs {
			t.Error(err)
		}
	}}
}

// TestConsoleInBrowser drives the console in Debian's chromium against central, two edges and
// their simulated fleets: the login, then each page with its names, plots drawn from real data,
// live updates without a reload, a revoked edge shown as refused, no JavaScript errors, every page
// under 300 KB and readable at phone width. With -console.screenshots it writes docs/console-*.png.
func TestConsoleInBrowser(t *testing.T) {
	chromium := testprog.Find(t, "chromium", "chromium")
	const token = "browser-test-token-7c1f0e5a2b"
	f := startConsoleFleet(t, token)
	defer f.stop()

	// Without the token, data endpoints answer 401 and pages send the browser to the login.
	for _, p := range []string{"/console/api/fleet", "/console/api/devices?prefix=dev-", "/console/api/tail/readings"} {
		resp, err := http.Get(f.url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET %s without a login: %s, want 401", p, resp.Status)
		}
	}

	shots := t.TempDir()
	if *consoleScreenshots {
		shots = filepath.Join("..", "..", "docs")
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 860))...)
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(alloc)
	defer cancelTab()
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var jsErrors []string
	consoleDone := make(chan struct{})
	msgs := chromedp.Console(ctx)
	go func() {
		defer close(consoleDone)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				jsErrors = append(jsErrors, m.String()+" at "+m.URL)
				mu.Unlock()
			}
		}
	}()
	deadline, cancelDeadline := context.WithTimeout(ctx, 60*time.Second)
	defer cancelDeadline()
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(deadline, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	began := time.Now()
	waitJS := func(what, expr string) {
		t.Helper()
		defer func() { t.Logf("%5.1fs %s", time.Since(began).Seconds(), what) }()
		if _, err := chromedp.Run(deadline, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
			t.Fatalf("%s: %v (waited for %s)", what, err, expr)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(deadline, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(deadline, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Every page loads under 300 KB: the document and what it loaded, at their full (uncompressed) size.
	weight := func(page string) {
		t.Helper()
		n := eval(`String(performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource").filter(e => e.initiatorType !== "fetch" && e.initiatorType !== "other")).reduce((s, e) => s + e.decodedBodySize, 0))`)
		var b int
		fmt.Sscan(n, &b)
		if b <= 0 || b >= 300<<10 {
			t.Errorf("%s page weighs %d bytes, want under 300 KB", page, b)
		}
		t.Logf("%s page: %d bytes", page, b)
	}

	// The login: the fleet page without a cookie lands on the form; the token gets in.
	step("open the console", chromedp.Navigate(f.url+"/"), chromedp.WaitVisible("#token"))
	if loc, _ := chromedp.Run(deadline, chromedp.Location()); !strings.Contains(loc, "/console/login?next=%2F") {
		t.Fatalf("without a login the console is at %s, want the login form", loc)
	}
	step("log in", chromedp.SendKeys("#token", token), chromedp.Submit("#token"), chromedp.WaitVisible(`tr[data-edge="plant-gw-1"]`))

	// Central stops accepting the second edge: its token is revoked.
	admin, ok := central.AdminClient(f.centralDir)
	if !ok {
		t.Fatal("central's admin socket is not there")
	}
	var out map[string]string
	if err := central.AdminDo(admin, "DELETE", "/edges/yard-gw-2", &out); err != nil {
		t.Fatal(err)
	}

	// Fleet: both edges by name; the working one forwarding with a drawn rate plot, the revoked one refused.
	waitJS("plant-gw-1 forwards with points in its plot", `(() => {
		const tr = document.querySelector('tr[data-edge="plant-gw-1"]'), u = tributary.charts["fleet:plant-gw-1"];
		return tr && tr.className === "state-forwarding" && tr.textContent.includes("v0.9.0-test") && u && u.data[1].filter(v => v > 0).length >= 2; })()`)
	waitJS("yard-gw-2 is shown refused", `(() => { const tr = document.querySelector('tr[data-edge="yard-gw-2"]');
		return tr && tr.className === "state-refused" && tr.textContent.includes("refused"); })()`)
	if txt := eval(`document.querySelector("#edges").textContent`); !strings.Contains(txt, "plant-gw-1") || !strings.Contains(txt, "yard-gw-2") {
		t.Fatalf("fleet table lacks the edges: %q", txt)
	}
	// Live: the page updates in place (the marker survives: no reload).
	eval(`window.marker = "same page"; window.before = tributary.updates; ""`)
	waitJS("the fleet page updates live", `window.marker === "same page" && tributary.updates >= window.before + 2`)
	// Sortable: by edge id, descending puts yard-gw-2 first.
	step("sort by edge", chromedp.Click(`th[data-key="id"]`), chromedp.Click(`th[data-key="id"]`))
	waitJS("sorted descending", `document.querySelector("#edges tbody tr").dataset.edge === "yard-gw-2"`)
	step("sort by state", chromedp.Click(`th[data-key="state"]`))
	weight("fleet")
	shot("console-fleet.png")

	// Edge: lanes and a throughput plot from real data.
	step("open the edge page", chromedp.Navigate(f.url+"/console/edges/plant-gw-1"), chromedp.WaitVisible("#lanes tbody tr"))
	waitJS("the edge plot has throughput points", `tributary.charts.edge && tributary.charts.edge.data[1].filter(v => v > 0).length >= 3`)
	if txt := eval(`document.querySelector("main").textContent`); !strings.Contains(txt, "plant-gw-1") || !strings.Contains(txt, "readings") {
		t.Fatalf("edge page lacks its name or lanes: %q", txt)
	}
	eval(`window.marker = "same page"; window.before = tributary.charts.edge.data[0][tributary.charts.edge.data[0].length - 1]; ""`)
	waitJS("the edge plot moves on", `window.marker === "same page" && tributary.charts.edge.data[0][tributary.charts.edge.data[0].length - 1] > window.before`)
	weight("edge")
	shot("console-edge.png")

	// Devices: a prefix search lists the fleet's devices; one device's reading and a live chart of a field.
	step("open the devices page", chromedp.Navigate(f.url+"/console/devices"), chromedp.WaitVisible(`#devices tbody tr`))
	step("search by prefix", chromedp.SendKeys("#prefix", "dev-000"))
	waitJS("the prefix search narrows the list", `(() => { const rows = [...document.querySelectorAll("#devices tbody tr")];
		return rows.length === 9 && rows.every(r => r.dataset.device.startsWith("dev-000")); })()`)
	step("pick a device", chromedp.Click(`tr[data-device="dev-0003"] a`), chromedp.WaitVisible("#last"))
	waitJS("the device's last reading and chart", `document.querySelector("#last").textContent.includes('"device": "dev-0003"') &&
		tributary.charts.device && tributary.charts.device.data[1].filter(v => v !== null).length >= 3`)
	eval(`window.marker = "same page"; window.before = tributary.charts.device.data[0].length; ""`)
	waitJS("the device chart grows live", `window.marker === "same page" && tributary.charts.device.data[0].length > window.before`)
	// Another field of the reading can be plotted.
	fields := eval(`[...document.querySelectorAll("#field option")].map(o => o.value).join(",")`)
	if !strings.Contains(fields, "humidity") {
		t.Fatalf("numeric fields offered: %s", fields)
	}
	step("pick another field", chromedp.SetValue("#field", "humidity"), chromedp.Evaluate[chromedp.Void](`document.querySelector("#field").dispatchEvent(new Event("change"))`))
	waitJS("the chart shows the new field", `tributary.charts.device.series[1].label === "humidity" && tributary.charts.device.data[1].filter(v => v !== null).length >= 3`)
	weight("devices")
	shot("console-devices.png")

	// Stream: a live tail, filtered by key, pausable.
	step("open the stream page", chromedp.Navigate(f.url+"/console/stream"), chromedp.WaitVisible(`#tail tbody tr`))
	step("filter by key", chromedp.SendKeys("#key", "dev-0005"))
	waitJS("only dev-0005 rows", `(() => { const rows = [...document.querySelectorAll("#tail tbody tr")];
		return rows.length >= 2 && rows.every(r => r.dataset.key === "dev-0005"); })()`)
	step("pause", chromedp.Click("#pause"))
	// The count line shows "paused" from the first redraw after the click, which also redrew the rows.
	waitJS("paused", `document.querySelector("#counts").textContent.includes("paused")`)
	eval(`window.rows = document.querySelector("#tail tbody").textContent; window.before = tributary.updates; ""`)
	waitJS("paused: messages arrive but the rows stay", `tributary.updates > window.before + 5 && document.querySelector("#tail tbody").textContent === window.rows`)
	step("resume", chromedp.Click("#pause"))
	waitJS("resumed: new rows", `document.querySelector("#tail tbody").textContent !== window.rows`)
	weight("stream")
	shot("console-stream.png")

	// Phone width: the fleet page does not overflow sideways (tables scroll in their box).
	step("phone width", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(f.url+"/"),
		chromedp.WaitVisible(`tr[data-edge="plant-gw-1"]`))
	waitJS("fleet rows at phone width", `tributary.updates >= 1 && document.documentElement.scrollWidth <= window.innerWidth + 1`)
	shot("console-phone.png")

	cancelDeadline()
	cancelTab()
	<-consoleDone
	mu.Lock()
	defer mu.Unlock()
	if len(jsErrors) > 0 {
		t.Fatalf("JavaScript console errors:\n%s", strings.Join(jsErrors, "\n"))
	}
}

package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/central/console"
	"github.com/tributary-iot/tributary/sync/forward"
	"github.com/tributary-iot/tributary/sync/receive"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

const apiToken = "console-test-token-0123456789abcdef"

// rig is a central with the console, one edge log forwarding to it and devices writing to that log.
type rig struct {
	url     string
	dir     string
	edge    *storage.Log
	stop    func()
	devices int
	// startForwarder starts the edge's forwarder and returns its stop.
	startForwarder func() func()
	stopForwarder  func()
}

func startRig(t *testing.T, devices int) *rig {
	t.Helper()
	cdir := t.TempDir()
	log, err := storage.Open(cdir, nil)
	if err != nil {
		t.Fatal(err)
	}
	edgeToken, _, err := receive.AddEdge(log, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	log.Close()

	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	centralDone := make(chan error, 1)
	go func() {
		centralDone <- central.Run(ctx, central.Config{DataDir: cdir, Listen: "127.0.0.1:0", APIToken: apiToken,
			Console: central.ConsoleOptions{Step: time.Second, Window: time.Minute}, Ready: func(a string) { addr <- a }})
	}()
	var url string
	select {
	case a := <-addr:
		url = "http://" + a
	case err := <-centralDone:
		cancel()
		t.Fatalf("central: %v", err)
	}

	edge, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := edge.CreateStream("readings", storage.StreamConfig{Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{url: url, dir: cdir, edge: edge, devices: devices}
	// startForwarder runs the edge's forwarder until the returned func stops it (an outage).
	r.startForwarder = func() func() {
		fwd, err := forward.New(edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: edgeToken, Version: "v1.2.3-test",
			BackoffMin: 50 * time.Millisecond, BackoffMax: 300 * time.Millisecond, CursorInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		fctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := fwd.Run(fctx); err != nil {
				t.Errorf("forwarder: %v", err)
			}
		}()
		return func() { stop(); <-done }
	}
	r.stopForwarder = r.startForwarder()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // devices: one reading each every 100 ms
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		seq := 0
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				seq++
				for d := range devices {
					id := fmt.Sprintf("sensor-%04d", d)
					v := fmt.Sprintf(`{"device":%q,"seq":%d,"temperature_c":%.2f,"battery":{"pct":%d}}`, id, seq, 20+float64(seq%50)/10, 100-seq%100)
					st.AppendAsync(storage.Record{Key: []byte(id), Value: []byte(v), Timestamp: now}, func(int, int64, error) {})
				}
			}
		}
	}()
	r.stop = func() {
		cancel()
		wg.Wait()
		r.stopForwarder()
		if err := <-centralDone; err != nil {
			t.Errorf("central: %v", err)
		}
		edge.Close()
	}
	return r
}

// noRedirect is a client that shows redirects instead of following them.
func noRedirect(jar http.CookieJar) *http.Client {
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func getJSON(t *testing.T, c *http.Client, u string, out any) int {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("GET %s: %v in %s", u, err, b)
		}
	}
	return resp.StatusCode
}

// login signs in through the form and returns a client holding the session cookie.
func login(t *testing.T, base string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := noRedirect(jar)
	resp, err := c.PostForm(base+"/console/login", url.Values{"token": {apiToken}, "next": {"/console/devices"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/devices" {
		t.Fatalf("login: %s to %q, want 303 to /console/devices", resp.Status, resp.Header.Get("Location"))
	}
	ck := resp.Cookies()
	if len(ck) != 1 || ck[0].Name != console.CookieName || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode || ck[0].Secure {
		t.Fatalf("login cookie %+v: want one HttpOnly SameSite=Strict cookie, not Secure over plain http", ck)
	}
	return c
}

// waitFor polls cond every 100 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s; last seen: %s", d, what, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestConsoleAPI drives the console's data endpoints with a real HTTP client against a running
// central fed by a forwarding edge: the login rule, the fleet, edge and device views from live
// data, the readings from the log, the tail over server-sent events and a revoked edge as refused.
func TestConsoleAPI(t *testing.T) {
	r := startRig(t, 20)
	defer r.stop()
	anon := noRedirect(nil)

	t.Run("without a login", func(t *testing.T) {
		for _, p := range []string{"/console/api/fleet", "/console/api/edges/gw-1", "/console/api/devices", "/console/api/devices/sensor-0001",
			"/console/api/devices/sensor-0001/readings", "/console/api/streams", "/console/api/tail/readings", "/console/api/nope"} {
			if code := getJSON(t, anon, r.url+p, nil); code != http.StatusUnauthorized {
				t.Errorf("GET %s without a login: %d, want 401", p, code)
			}
		}
		for _, p := range []string{"/", "/console/edges/gw-1", "/console/devices", "/console/stream"} {
			resp, err := anon.Get(r.url + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/login?next=") {
				t.Errorf("GET %s without a login: %s to %q, want 303 to the login", p, resp.Status, loc)
			}
		}
		resp, err := anon.PostForm(r.url+"/console/login", url.Values{"token": {"wrong"}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 || !strings.Contains(string(b), "not central's API token") {
			t.Errorf("wrong token: %s, cookies %v, body %q", resp.Status, resp.Cookies(), b)
		}
		// A forged or expired cookie is no login.
		req, _ := http.NewRequest("GET", r.url+"/console/api/fleet", nil)
		req.AddCookie(&http.Cookie{Name: console.CookieName, Value: "99999999999.00"})
		resp, err = anon.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("forged cookie: %s, want 401", resp.Status)
		}
		// The login page and assets need no login.
		for _, p := range []string{"/console/login", "/console/assets/app.js", "/console/assets/vendor/uplot/uPlot.iife.min.js"} {
			if code := getJSON(t, anon, r.url+p, nil); code != http.StatusOK {
				t.Errorf("GET %s: %d, want 200", p, code)
			}
		}
	})

	c := login(t, r.url)
	bearer := func(p string, out any) int {
		req, _ := http.NewRequest("GET", r.url+p, nil)
		req.Header.Set("Authorization", "Bearer "+apiToken)
		resp, err := anon.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode
	}

	t.Run("fleet", func(t *testing.T) {
		var fv console.FleetView
		if code := bearer("/console/api/fleet", &fv); code != http.StatusOK {
			t.Fatalf("fleet with the bearer token: %d", code)
		}
		waitFor(t, 20*time.Second, "gw-1 forwarding with a rate, 20 devices and a rate history", func() (bool, string) {
			fv = console.FleetView{}
			getJSON(t, c, r.url+"/console/api/fleet", &fv)
			if len(fv.Edges) != 1 {
				return false, fmt.Sprintf("%+v", fv.Edges)
			}
			e := fv.Edges[0]
			nonzero := 0
			if e.RateHistory != nil {
				for _, v := range e.RateHistory.Values {
					if v > 0 {
						nonzero++
					}
				}
			}
			return e.ID == "gw-1" && e.State == console.StateForwarding && e.Rate > 50 && e.Devices == r.devices && nonzero >= 2 && e.Lanes == 4 && e.Version == "v1.2.3-test",
				fmt.Sprintf("%+v (%d points above 0)", e, nonzero)
		})
		if fv.History.BoundBytes <= 0 || fv.History.StepS != 1 || fv.History.Devices != r.devices {
			t.Errorf("history info %+v", fv.History)
		}
	})

	t.Run("edge", func(t *testing.T) {
		var ev console.EdgeView
		if code := getJSON(t, c, r.url+"/console/api/edges/gw-1", &ev); code != http.StatusOK {
			t.Fatalf("edge: %d", code)
		}
		if len(ev.LaneList) != 4 || ev.Throughput.StepS != 1 || len(ev.Throughput.Values) != 60 || len(ev.Backlog.Values) != 60 {
			t.Fatalf("edge view: %d lanes, throughput %+v", len(ev.LaneList), ev.Throughput)
		}
		var sum float64
		for _, v := range ev.Throughput.Values {
			sum += v
		}
		if sum == 0 {
			t.Errorf("throughput is all zero while the edge forwards")
		}
		if code := getJSON(t, c, r.url+"/console/api/edges/no-such-edge", nil); code != http.StatusNotFound {
			t.Errorf("unknown edge: %d, want 404", code)
		}
	})

	t.Run("devices", func(t *testing.T) {
		var dv console.DevicesView
		getJSON(t, c, r.url+"/console/api/devices?prefix=sensor-001", &dv)
		if dv.Total != 10 || len(dv.Devices) != 10 || dv.Devices[0].ID != "sensor-0010" || dv.Devices[0].Edge != "gw-1" {
			t.Fatalf("prefix sensor-001: %+v", dv)
		}
		getJSON(t, c, r.url+"/console/api/devices?limit=3", &dv)
		if dv.Total != r.devices || len(dv.Devices) != 3 {
			t.Errorf("limit 3: total %d, %d shown", dv.Total, len(dv.Devices))
		}
		if code := getJSON(t, c, r.url+"/console/api/devices?limit=x", nil); code != http.StatusBadRequest {
			t.Errorf("bad limit: %d, want 400", code)
		}
		var d console.DeviceView
		getJSON(t, c, r.url+"/console/api/devices/sensor-0003", &d)
		var last struct {
			Device string  `json:"device"`
			Seq    int     `json:"seq"`
			Temp   float64 `json:"temperature_c"`
		}
		if err := json.Unmarshal(d.LastValue, &last); err != nil || last.Device != "sensor-0003" || last.Seq == 0 || d.Edge != "gw-1" || d.Rate < 6 || d.Rate > 14 {
			t.Fatalf("device: %+v (want a rate near its 10/s), last value %s (%v)", d.DeviceInfo, d.LastValue, err)
		}
		if code := getJSON(t, c, r.url+"/console/api/devices/nobody", nil); code != http.StatusNotFound {
			t.Errorf("unknown device: %d, want 404", code)
		}

		var rv console.ReadingsView
		getJSON(t, c, r.url+"/console/api/devices/sensor-0003/readings?window=1m", &rv)
		if len(rv.Readings) < 5 {
			t.Fatalf("readings: %d, want several", len(rv.Readings))
		}
		prevSeq := 0
		for _, rd := range rv.Readings {
			var v struct {
				Device string `json:"device"`
				Seq    int    `json:"seq"`
			}
			json.Unmarshal(rd.Value, &v)
			if v.Device != "sensor-0003" || v.Seq <= prevSeq {
				t.Fatalf("reading %s after seq %d: another device's or out of order", rd.Value, prevSeq)
			}
			prevSeq = v.Seq
		}
		// Polling from Next gets only newer readings.
		waitFor(t, 10*time.Second, "newer readings from next", func() (bool, string) {
			var more console.ReadingsView
			getJSON(t, c, fmt.Sprintf("%s/console/api/devices/sensor-0003/readings?from=%d", r.url, rv.Next), &more)
			if len(more.Readings) == 0 {
				return false, "none"
			}
			return more.Readings[0].Offset > rv.Readings[len(rv.Readings)-1].Offset, fmt.Sprint(more.Readings[0].Offset)
		})
	})

	t.Run("streams and tail", func(t *testing.T) {
		var sv []console.StreamView
		getJSON(t, c, r.url+"/console/api/streams", &sv)
		if len(sv) != 1 || sv[0].Name != "readings" || sv[0].Records == 0 {
			t.Fatalf("streams: %+v", sv)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", r.url+"/console/api/tail/readings", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("tail: %s %s", resp.Status, resp.Header.Get("Content-Type"))
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var m struct {
					Key  string `json:"key"`
					Edge string `json:"edge"`
				}
				if err := json.Unmarshal([]byte(data), &m); err != nil || !strings.HasPrefix(m.Key, "sensor-") || m.Edge != "gw-1" {
					t.Fatalf("tail event %s: %v", data, err)
				}
				return
			}
		}
		t.Fatalf("tail ended without an event: %v", sc.Err())
	})

	t.Run("revoked edge shows refused", func(t *testing.T) {
		admin, ok := central.AdminClient(r.dir)
		if !ok {
			t.Fatal("no admin socket")
		}
		var out map[string]string
		if err := central.AdminDo(admin, "DELETE", "/edges/gw-1", &out); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 15*time.Second, "gw-1 refused", func() (bool, string) {
			var fv console.FleetView
			getJSON(t, c, r.url+"/console/api/fleet", &fv)
			if len(fv.Edges) != 1 {
				return false, fmt.Sprint(fv.Edges)
			}
			e := fv.Edges[0]
			return e.State == console.StateRefused && e.Refusal != nil && e.Refusal.Reason == "revoked", fmt.Sprintf("%+v", e)
		})
	})

	t.Run("logout", func(t *testing.T) {
		resp, err := c.Post(r.url+"/console/logout", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if code := getJSON(t, c, r.url+"/console/api/fleet", nil); code != http.StatusUnauthorized {
			t.Errorf("after logout: %d, want 401", code)
		}
	})

	t.Run("guessing is throttled", func(t *testing.T) {
		// Guessing is cut short: past 20 failures a minute from one address, even the right token waits.
		for i := 0; i < 25; i++ {
			resp, err := anon.PostForm(r.url+"/console/login", url.Values{"token": {fmt.Sprintf("guess-%d", i)}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := http.StatusUnauthorized // the subtest "without a login" failed once already
			if i >= 19 {
				want = http.StatusTooManyRequests
			}
			if resp.StatusCode != want {
				t.Fatalf("failed login %d: %s, want %d", i+1, resp.Status, want)
			}
		}
		resp, err := anon.PostForm(r.url+"/console/login", url.Values{"token": {apiToken}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || len(resp.Cookies()) != 0 {
			t.Fatalf("right token after 25 failures: %s, cookies %v; want 429 and none", resp.Status, resp.Cookies())
		}
	})
}

// TestConsoleEdgeOutage stops the edge's forwarder for a few seconds while its devices go on
// writing: the edge's throughput series shows the outage as steps at zero, then the catch-up as a
// step well above the steady rate, and the backlog falls back to zero.
func TestConsoleEdgeOutage(t *testing.T) {
	r := startRig(t, 20)
	defer r.stop()
	c := login(t, r.url)
	edgeView := func() console.EdgeView {
		var ev console.EdgeView
		getJSON(t, c, r.url+"/console/api/edges/gw-1", &ev)
		return ev
	}
	// Steady state: three full steps near the devices' 200 readings/s.
	waitFor(t, 20*time.Second, "steady forwarding", func() (bool, string) {
		v := edgeView().Throughput.Values
		n := len(v)
		return v[n-2] > 100 && v[n-3] > 100 && v[n-4] > 100, fmt.Sprint(v[n-6:])
	})
	r.stopForwarder()
	outage := time.Now()
	waitFor(t, 20*time.Second, "the outage: two steps at zero", func() (bool, string) {
		v := edgeView().Throughput.Values
		n := len(v)
		return time.Since(outage) > 4*time.Second && v[n-2] == 0 && v[n-3] == 0, fmt.Sprint(v[n-6:])
	})
	r.stopForwarder = r.startForwarder()
	waitFor(t, 20*time.Second, "the catch-up: a burst above the steady rate after the zeros, then caught up", func() (bool, string) {
		ev := edgeView()
		v := ev.Throughput.Values
		zeros, burst := 0, 0.0
		for i := len(v) - 1; i >= 0; i-- {
			if v[i] == 0 && burst > 0 {
				zeros++
			}
			if zeros == 0 && v[i] > burst {
				burst = v[i]
			}
			if zeros > 0 && v[i] > 0 {
				break
			}
		}
		return zeros >= 2 && burst > 400 && ev.Behind < 1000 && ev.State == console.StateForwarding,
			fmt.Sprintf("%d zero steps, burst %.0f/s, %d behind, %s: %v", zeros, burst, ev.Behind, ev.State, v[len(v)-20:])
	})
}

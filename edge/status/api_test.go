package status

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"
)

func snapshot(t *testing.T, base string) Snapshot {
	t.Helper()
	resp := get(t, base+"/status/api?history=1", nil)
	var s Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /status/api: %d %v", resp.StatusCode, err)
	}
	return s
}

// TestAPIShowsRealDevices: real MQTT clients publish to a real edge; the data endpoint counts
// them, the readings they stored, and the dead letter a bad publish became, with its reason; the
// history gains samples and the plot draws them.
func TestAPIShowsRealDevices(t *testing.T) {
	a, _ := edgeWithPage(t, Config{Resolution: time.Second, Window: time.Minute, QuotaBytes: 1 << 30, QuotaPolicy: "drop-oldest"})
	base := "http://" + a.HTTPAddr()
	var clients = map[string]bool{}
	for _, id := range []string{"pump-1", "pump-2", "valve-1"} {
		c := device(t, a, id)
		publish(t, c, "devices/"+id+"/readings", `{"temp":21.5}`)
		clients[id] = true
	}
	bad := device(t, a, "broken-1")
	publish(t, bad, "devices/broken-1/readings", "")

	deadline := time.Now().Add(15 * time.Second)
	var s Snapshot
	for {
		s = snapshot(t, base)
		if s.Devices.Connected == 4 && s.Readings.Total >= 4 && len(s.DeadLetters.Recent) == 1 && len(s.History.Samples) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15s: %+v", s)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if s.EdgeID != "gw-test" || s.LoginRequired {
		t.Errorf("edge id %q, login required %v", s.EdgeID, s.LoginRequired)
	}
	for _, c := range s.Devices.Clients {
		if c.Device == "" || c.Remote == "" {
			t.Errorf("client without device or remote: %+v", c)
		}
	}
	if dl := s.DeadLetters.Recent[0]; dl.Device != "broken-1" || dl.Reason != "empty" || dl.Topic != "devices/broken-1/readings" || s.DeadLetters.Total != 1 {
		t.Errorf("dead letter %+v (total %d), want broken-1's empty payload", dl, s.DeadLetters.Total)
	}
	if s.Disk.QuotaBytes != 1<<30 || s.Disk.Policy != "drop-oldest" || s.Disk.UsedBytes <= 0 || s.Disk.UsedRatio == nil {
		t.Errorf("disk %+v", s.Disk)
	}
	if s.Forwarding.State != "off" || s.Forwarding.Enabled {
		t.Errorf("forwarding without a central: %+v", s.Forwarding)
	}
	if s.History.Bytes != NewHistory(60).Bytes() || s.History.Capacity != 60 {
		t.Errorf("history %d samples in %d bytes", s.History.Capacity, s.History.Bytes)
	}
	var total float32
	for _, sm := range s.History.Samples {
		total += sm.Readings
	}
	if total <= 0 {
		t.Errorf("history samples show no readings: %+v", s.History.Samples)
	}

	resp := get(t, base+"/status/plot.svg?chart=rates", nil)
	body, _ := io.ReadAll(resp.Body)
	var svg struct {
		Lines []struct {
			Series string `xml:"data-series,attr"`
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
	}
	if err := xml.Unmarshal(body, &svg); err != nil || len(svg.Lines) != 2 {
		t.Fatalf("plot: %v, %d lines\n%s", err, len(svg.Lines), body)
	}
	if pts := strings.Fields(svg.Lines[0].Points); svg.Lines[0].Series != "readings" || len(pts) < 2 {
		t.Errorf("readings line %q: want at least 2 points", svg.Lines[0].Points)
	}
}

// TestPageWeight: everything the page loads is embedded and well under 300 KB.
func TestPageWeight(t *testing.T) {
	var total int64
	fs.WalkDir(assets, ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			info, _ := d.Info()
			total += info.Size()
		}
		return err
	})
	if total > 300<<10 || total == 0 {
		t.Errorf("page assets: %d bytes, want under 300 KB", total)
	}
	t.Logf("page assets: %d bytes", total)
}

func TestNiceCeil(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, 0.3: 1, 3: 5, 12: 20, 99: 100, 101: 200, 4000: 5000} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}

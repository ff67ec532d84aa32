package forward

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestNewReturnsRegistrationError: a second forwarder on the same registry is refused by New
// with the registry's error, as receive.New does, instead of a log line and a half-wired forwarder.
func TestNewReturnsRegistrationError(t *testing.T) {
	log, _ := openLog(t, t.TempDir(), 1)
	defer log.Close()
	reg := prometheus.NewRegistry()
	cfg := Config{CentralURL: "http://127.0.0.1:1", EdgeID: "gw-1", Token: "trb_x", Registerer: reg}
	if _, err := New(log, cfg); err != nil {
		t.Fatalf("first forwarder: %v", err)
	}
	f, err := New(log, cfg)
	if err == nil || f != nil || !strings.Contains(err.Error(), "register forwarder metrics") {
		t.Fatalf("second forwarder on one registry: %v, %v; want nil and the registration error", f, err)
	}
}

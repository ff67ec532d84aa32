package devices

import "testing"

func TestAnonymousAllowed(t *testing.T) {
	tests := []struct {
		name  string
		addrs []string
		allow bool
		want  bool
	}{
		{"ipv4 loopback", []string{"127.0.0.1:1883"}, false, true},
		{"other 127 address", []string{"127.1.2.3:1883"}, false, true},
		{"ipv6 loopback", []string{"[::1]:1883"}, false, true},
		{"bare ipv6 loopback", []string{"::1"}, false, true},
		{"bare ipv4 loopback", []string{"127.0.0.1"}, false, true},
		{"ipv4-mapped loopback", []string{"[::ffff:127.0.0.1]:1883"}, false, true},
		{"localhost", []string{"localhost:1883"}, false, true},
		{"localhost upper case", []string{"LOCALHOST:1883"}, false, true},
		{"unix socket path", []string{"/run/tributary/mqtt.sock"}, false, true},
		{"unix scheme", []string{"unix:///run/mqtt.sock"}, false, true},
		{"unix prefix", []string{"unix:mqtt.sock"}, false, true},
		{"tcp url loopback", []string{"tcp://127.0.0.1:1883"}, false, true},
		{"ws url loopback with path", []string{"ws://localhost:8080/mqtt"}, false, true},
		{"several loopback", []string{"127.0.0.1:1883", "[::1]:1883", "/tmp/s"}, false, true},
		{"empty host is every interface", []string{":1883"}, false, false},
		{"wildcard ipv4", []string{"0.0.0.0:1883"}, false, false},
		{"wildcard ipv6", []string{"[::]:1883"}, false, false},
		{"lan address", []string{"192.168.1.10:1883"}, false, false},
		{"hostname", []string{"gateway.local:1883"}, false, false},
		{"localhost lookalike", []string{"localhost.example.com:1883"}, false, false},
		{"tcp url wildcard", []string{"tcp://0.0.0.0:1883"}, false, false},
		{"one public listener spoils it", []string{"127.0.0.1:1883", "0.0.0.0:8883"}, false, false},
		{"link-local with zone", []string{"[fe80::1%eth0]:1883"}, false, false},
		{"empty string", []string{""}, false, false},
		{"no listeners", nil, false, false},
		{"operator allows", []string{"0.0.0.0:1883"}, true, true},
		{"operator allows, no listeners", nil, true, true},
	}
	for _, tt := range tests {
		if got := AnonymousAllowed(tt.addrs, tt.allow); got != tt.want {
			t.Errorf("%s: AnonymousAllowed(%q, %v) = %v, want %v", tt.name, tt.addrs, tt.allow, got, tt.want)
		}
	}
}

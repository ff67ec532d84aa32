package status

import "testing"

// TestForwardingState: the state the page shows for each shape of the forwarder's lanes.
func TestForwardingState(t *testing.T) {
	live := Lane{Stream: "readings", End: 10, Acked: 10, Connected: true}
	for _, c := range []struct {
		name string
		f    Forwarding
		want string
	}{
		{"no lanes yet", Forwarding{}, "connecting"},
		{"up to date", Forwarding{Lanes: []Lane{live}}, "forwarding"},
		{"idle lanes, nothing behind", Forwarding{Lanes: []Lane{{Stream: "readings", End: 5, Acked: 5}}}, "forwarding"},
		{"behind", Forwarding{Lanes: []Lane{{Stream: "readings", End: 5000, Acked: 10, Connected: true}}}, "behind"},
		{"stalled", Forwarding{Lanes: []Lane{live, {Stream: "readings", Partition: 1, End: 50, Acked: 10, Connected: true, Stalled: true}}}, "stalled"},
		{"central down", Forwarding{Lanes: []Lane{{Stream: "readings", End: 50, Acked: 10, LastError: "connection refused"}}}, "disconnected"},
		{"token refused", Forwarding{TokenRefused: true, Lanes: []Lane{{Stream: "readings", End: 50, LastError: "401"}}}, "refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, p := edgeWithPage(t, Config{Central: "http://central.invalid", Forwarding: func() Forwarding { return c.f }})
			fs := p.Snapshot(false).Forwarding
			if fs.State != c.want || !fs.Enabled {
				t.Errorf("state %q (enabled %v), want %q", fs.State, fs.Enabled, c.want)
			}
		})
	}
}

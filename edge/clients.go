package edge

import "net/http"

// ConnectedClient is one MQTT client connected now.
type ConnectedClient struct {
	Device   string `json:"device"` // the device it authenticated as
	ClientID string `json:"client_id"`
	Remote   string `json:"remote"`
}

// ConnectedClients lists the MQTT clients connected now, for the status page.
func (a *Agent) ConnectedClients() []ConnectedClient {
	if a.hook == nil {
		return nil
	}
	a.hook.mu.RLock()
	defer a.hook.mu.RUnlock()
	out := make([]ConnectedClient, 0, len(a.hook.sessions))
	for cl, s := range a.hook.sessions {
		out = append(out, ConnectedClient{Device: s.device, ClientID: cl.ID, Remote: cl.Net.Remote})
	}
	return out
}

// HandleHTTP adds a route to the HTTP listener beside /metrics, /healthz and /readyz (the
// status page mounts at "/"). Call it before [Agent.Run].
func (a *Agent) HandleHTTP(pattern string, h http.Handler) {
	a.extraRoutes = append(a.extraRoutes, route{pattern, h})
}

type route struct {
	pattern string
	handler http.Handler
}

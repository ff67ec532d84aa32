// Package status is the edge's status page: served at / of the edge's HTTP listener (beside
// /metrics), it shows the connected devices, readings/s with a plot of the last hour, the disk
// quota used and its policy, the forwarding state and lag, and the recent dead letters with
// their reasons. The page polls its data every 2 s; nothing is fetched from elsewhere.
//
// The wiring builds a [Page] from small interfaces ([Clients], [Log], and a func for the
// forwarder's state, since edge/ knows nothing of sync), mounts it with
// [github.com/tributary-iot/tributary/edge.Agent.HandleHTTP] and runs [Page.Run] beside the agent.
//
// Endpoints:
//
//	GET  /                       the page (HTML; its files under /status/static/)
//	GET  /status/api             a [Snapshot] as JSON; ?history=1 adds the plotted samples
//	GET  /status/plot.svg        a plot drawn on the server: ?chart=rates (readings in and
//	                             forwarded per second) or ?chart=backlog (records behind)
//	GET  /login, POST /login     the login form (field "token"), when a token is set
//	POST /logout                 ends the browser's session
//
// Login rule, as central's API: with a token ([LoadToken]: http_token_file or [TokenEnv]) every
// request to the page or its data needs it, as the session cookie the login form sets (HttpOnly,
// SameSite=Strict, Secure over TLS) or as "Authorization: Bearer TOKEN"; without one, only
// loopback clients and clients whose certificate the listener verified (http_client_ca) are
// served, others get 403 with what to do. The page redirects to /login, the data endpoints
// answer 401.
//
// The plotted history is a [History]: Window/Resolution samples of [SampleBytes] in a ring
// allocated once (one hour at 10 s: 360 samples, at most 9,528 bytes), so it never grows.
package status

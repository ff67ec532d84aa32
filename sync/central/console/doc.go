// Package console is central's web console: Fleet, Edge, Devices and Stream pages at / on
// central's listener, their JSON data endpoints under /console/api/, and the bounded in-memory
// history behind the plots.
//
// Everything the browser loads is embedded (go:embed): plain HTML, CSS and JavaScript, and uPlot
// vendored under assets/vendor/uplot. Pages poll their endpoint every 2 s; the Stream page reads
// the consume API's server-sent events through /console/api/tail/{stream}.
//
// Access follows central's API token: the login form takes the token and sets an HttpOnly,
// SameSite=Strict session cookie (Secure when served over TLS) signed with a key derived from
// the token; API clients may send the token as a bearer token instead. Without a token, central
// serves only on loopback (or to client certificates), and so does the console.
//
// The history holds, per edge, records/s applied and records behind, and per device, readings
// per step and its last reading; [History.Bound] states its size in bytes. It is fed from the
// receiver's apply path ([Feed]), not by reading central's log again: each applied chunk's
// decoded records are counted by the console's own goroutine, and a chunk that finds the feed
// full is not counted (records_skipped) rather than slowing the receiver down.
package console

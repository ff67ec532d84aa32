// Package devices decides who a device is and where its readings go: device identity and
// credentials, the publish ACL, the mapping from MQTT topics to (stream, key) routes, and the
// validation of reading payloads. It knows nothing of storage, sync or MQTT libraries; the edge
// agent calls it from its broker hook, once per CONNECT and once per PUBLISH.
//
// # Topics
//
// A [Mapper] turns a publish topic into a [Route]: the stream, and the key (the device id) that
// picks the partition and keeps one device's readings in order. The default scheme is
// [DefaultPattern], "devices/{device}/{stream}/#":
//
//	devices/boiler-7/temperature        -> stream "temperature", key "boiler-7"
//	devices/boiler-7/temperature/probe2 -> stream "temperature", key "boiler-7"
//
// Other schemes are ordered [Rule] lists; see [Rule] for the pattern syntax. Device ids follow
// [ValidDeviceID] and stream names [ValidStream]; [DeadLetterStream] is reserved for the edge.
//
// # Per-message path
//
// For each PUBLISH the edge calls [Cache.Authorize] (or [Mapper.Authorize] for anonymous clients),
// which maps the topic and checks that it is the device's own, then [Validate] with the stream's
// [Policy]. Both allocate nothing on success. A non-empty [Reason] sends the payload to the
// dead-letter stream with the reason as a header; [ReasonOf] gives refused publishes a label
// from the same set.
//
// # Registry
//
// Devices live in a bbolt file, conventionally <data-dir>/devices.db, one JSON record per device in
// the "devices" bucket (fields v, id, password_hash, cert_identity, extra_topics, created, disabled;
// v is 1). Passwords are stored only as bcrypt hashes. [Registry] writes it, opening the file for
// one transaction at a time. The edge never keeps it open, because bbolt's write lock is exclusive
// and the operator runs "tributary devices add" while the agent runs: [Cache] loads a snapshot
// read-only and [Cache.Watch] reloads it when the file changes. [Cache.Authenticate] remembers
// successful password checks so reconnect storms do not pay bcrypt for every device again.
//
// # Anonymous clients
//
// [AnonymousAllowed] applies Mosquitto 2's default: no credentials needed only when every listener
// is on loopback, unless the operator explicitly allows anonymous clients.
package devices

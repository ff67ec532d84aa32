// Package firmwaresim simulates fleets of sensor devices that publish readings over MQTT, and
// verifies what reached the central node's merged stream.
//
// The folder is firmware-sim but the package is firmwaresim: a hyphen is not allowed in a Go
// identifier, so the package name drops it. Import it as
//
//	import firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
//
// # Simulating
//
// A [Fleet] runs N devices, each its own MQTT 3.1.1 client (paho) with its own client id, username
// (the device id) and password (see [PasswordTemplate], [ReadPasswordFile]). Each device publishes
// on devices/<id>/readings a JSON [Reading] of about 120 bytes whose seq starts at 1 and grows by
// one per reading for the whole run, across reconnects. Signal values come from [Signal]: daily
// cycles, noise, drift, rare spikes and a draining battery, reproducible from a seed.
//
// The simulator speaks MQTT only and never resends: a reading whose PUBACK does not arrive is
// counted as unacked and the device moves on, so any duplicate found later was made downstream.
//
// [Faults] inject misbehaviour on demand: reconnect storms, flaky links, clock skew, malformed
// and oversized payloads, and publishes on another device's topic. Faulty publishes take no seq.
//
// [Fleet.Run] returns a [Report]: offered and acked readings per second, PUBACK latency
// percentiles, errors and per-device counts, as a table or JSON, plus a [Manifest] of the seqs
// each device had acked.
//
// # Verifying
//
// [Verify] reads the merged stream as JSON lines of [Record] (the output of
// `tributary consume --format jsonl`) from any io.Reader; [Source] is the seam for other
// origins such as the consume API. Per device it reports readings received, lost (a gap in the
// seqs, or, with the run's manifest, an acked seq that never arrived), duplicated, out of order,
// and latency. Missing readings the manifest shows were never acked are "unacked missing", not
// loss: the device was never told they were safe.
//
// Latency is the record's arrival time minus the device time in the payload ("ts"). The arrival
// time is the record's "timestamp" field unless [VerifyOptions].LatencyHeader names a header to
// use instead. Simulated clock skew shifts it by the device's offset; readings that seem to arrive
// before they were taken are counted apart as negative latency.
package firmwaresim

// Package edge is the edge agent: an embedded MQTT broker whose only job is to put every reading
// a device publishes into a durable, partitioned log (package storage) before acknowledging it.
// [New] opens the log, the device registry and the listeners from a [Config]; [Agent.Run] serves
// until its context ends. Forwarding the log to central is not this package's business: the edge
// node (sync/edgenode) runs the agent beside a forwarder on the same log.
//
// A reading takes three steps, one file each.
//
// # Hook (hook.go)
//
// The broker is mochi-mqtt, touched in one place: a single hook that authenticates CONNECTs
// against the device registry, checks each topic against the device's identity (a device
// publishes only under its own topics), and handles every PUBLISH in OnPublish, on the client's
// read goroutine. The topic is mapped to a device and a stream (devices.Mapper). A QoS 1 or 2
// publish is first looked up in the client's dedupe memory (dedupe.go): a resend of a reading
// already stored, or still in its group commit, gets the original's ack and is not stored again.
// The hook then hands the packet back to mochi as an ignored QoS 0 one (ackedByEdge in hook.go),
// so that mochi does not write its own PUBACK, relay or retain it: the ack waits for the disk.
//
// # Ingest (ingest.go)
//
// The payload is validated against its stream's policy (size, JSON, device time); a payload that
// fails goes to the dead-letter stream with the reason, never silently away. The record carries
// the device as its key, so one device's readings stay in one partition and in order, and headers
// (topic, device and receive time, client id, packet id, payload hash) that let a restarted agent
// rebuild its dedupe memory from the log's tail. It is appended with storage's AppendAsync, which
// joins the partition's next group commit: one write and one fsync for many readings.
//
// # Acks (acks.go)
//
// When the group commit is durable, its callback completes the reading's result, and the client's
// ack writer sends PUBACK (QoS 1) or PUBREC (QoS 2) in the order the client published. So an ack
// always means "on disk": a power cut after it loses nothing, and a reading whose append failed is
// never acked, so the device resends it. MaxPendingPerClient bounds a client's readings waiting
// for their commit; above it the client's read goroutine blocks, which paces the device. At
// shutdown the agent stops taking publishes, drains the acks still owed (DrainTimeout), closes the
// broker and closes the log last.
//
// QoS 0 readings are appended the same way, with nothing to acknowledge.
package edge

// Package kafkasink produces central's merged stream to an Apache Kafka topic, for when one
// central node is not enough for the teams consuming it.
//
// A [Sink] reads every partition of one central stream from its own cursor in the central log
// (marked required, so retention keeps what Kafka has not acknowledged) and produces each record
// with the same key (the device id) and value, every central header as a Kafka header
// (provenance: edge, edge partition, edge offset, topic, ...), the gateway receive time as the
// record timestamp, and four headers of its own: central-log, central-stream, central-partition
// and central-offset. Kafka's default partitioner (murmur2 of the key) is the one storage uses,
// so with as many Kafka partitions as central partitions each device keeps its partition number,
// and per-device order is kept because one device's records go, in order, through one idempotent
// producer partition.
//
// # Exactly once: idempotent writes keyed on central offsets, not transactions
//
// The sink's cursor lives in central's bbolt, Kafka's data lives in Kafka, and no transaction
// spans both. With Kafka transactions the crash window stays open: the sink can die after the
// transaction commits and before the cursor is stored, and the restart would produce the batch
// again in a new, equally committed transaction. Storing the cursor in Kafka instead (sendOffsets
// to a consumer group) would tie the sink to a group coordinator and still leave retention in
// central reading a second copy. Transactions would also force consumers to read_committed to
// avoid seeing aborted records.
//
// So Kafka itself is the source of truth. Every record names its central position in headers;
// the producer is idempotent (kgo's default: retries within a producer session never duplicate
// and never reorder within a partition, and a record that fails fails every later record of its
// partition). When the sink starts, and after any produce error, it lists the topic's end offsets
// and reads each partition from where its last checkpoint says the sink's unacknowledged records
// can begin, up to that end, and resumes each central partition right after the records found
// there. The bbolt cursor is only a lower bound that keeps the scan short; losing the crash race
// costs a longer scan, never a duplicate. The checkpoint (every CheckpointInterval, after
// waiting for Kafka to acknowledge everything sent) stores the cursor first and the Kafka offsets
// second, so a crash between them only lengthens the next scan.
//
// When the topic has a different partition count than the stream, one central partition spreads
// over several Kafka partitions that can fail independently; the scan then remembers which
// offsets above the resume point already landed and skips them, so nothing is written twice.
//
// Limits: the sink assumes it is the only writer of its records (another process replaying them
// with the same headers would be taken for the sink's own). A produce request still in flight on
// the network when a session is torn down could, in principle, land after the next session's
// scan; the next session only starts after the old client is closed and a backoff, which makes
// that window as small as Kafka's own request timeout handling allows. A record Kafka refuses
// for good (larger than the topic's max.message.bytes) stops the sink at that record, with
// produce errors rising, rather than skipping it silently.
//
// # Metrics
//
// A Sink is a [prometheus.Collector]: register it on central's registry. It exports
// tributary_kafka_sink_records_behind{stream,partition}, _records_produced_total,
// _produce_errors_total, _recoveries_total, _gap_records_total, _up and
// _last_ack_timestamp_seconds, each labelled with the topic.
package kafkasink

// Package kafkaserve is central's Kafka protocol listener: any Kafka consumer (kcat, librdkafka
// and its bindings, Java clients, franz-go) reads central's merged stream with no Kafka cluster.
//
// It is one broker (node 1) that is leader of every partition. Topics are central's streams,
// partitions and offsets are central's, a record's key is the device id, its value the payload,
// its headers the provenance, its timestamp the gateway receive time. Requests and responses are
// encoded with franz-go's kmsg at the versions in [versions]; record batches are encoded here
// (magic 2, optionally zstd), one Kafka batch per run of stored records, so a consumer that asks
// for an offset inside a batch gets the whole batch and skips ahead, as with a Kafka broker.
//
// What it leaves out, on purpose: writes (Produce and the admin writes answer POLICY_VIOLATION
// with a message), transactions, Fetch v13+ (topic IDs only), incremental fetch sessions
// (KIP-227: clients fall back to full fetches), leader epochs (-1 everywhere), and the KIP-848
// group protocol. Group membership lives in memory, as Kafka rebuilds it when a coordinator
// moves; committed offsets are the HTTP consume API's group cursors in central's metadata.
//
// Connections are served one request at a time, in order, as Kafka brokers do. A request larger
// than [Config.MaxRequestBytes], an unknown API key or version, a body that does not decode, or
// anything but ApiVersions and SASL before authentication closes the connection.
package kafkaserve

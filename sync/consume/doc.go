// Package consume is how central's merged streams are read over HTTP: the [Server] that serves
// central's log to consumers, and the [Client] that `tributary consume` and Go programs use.
//
// # Where records come from
//
// Central's receiver (sync/receive) appends each edge record to a central stream, partitioned by
// key (the device id), with provenance headers naming where it came from: the edge, the edge
// partition (the lane), the record's offset there and the lane's incarnation (see
// protocol.Provenance). A consumer reads central partitions in offset order; per partition the
// order is the devices' order, and the provenance fields name each reading uniquely.
//
// # The API
//
// [Server] answers [Patterns] (Go method-and-path routes, mounted by sync/central):
//
//	GET  /v1/streams                          streams with partition start and end offsets
//	GET  /v1/consume/{stream}                 a JSON page (Batch), or JSON lines with format=jsonl
//	GET  /v1/tail/{stream}                    server-sent events, one Message per event
//	GET  /v1/groups/{group}/offsets?stream=S  a consumer group's committed offsets
//	POST /v1/groups/{group}/offsets?stream=S  commit them
//
// The JSON lines answer (stream.go) is the fast path: partition workers read the log and encode
// each record straight into its line (encode.go), with no [Message] in between; the line's shape
// is Message's, so a line decodes into one. The paged answer (fetch) and the tail build Messages
// with [NewMessage]. Where a read starts (offsets, group, since, from) is decided in one place,
// Server.start; waiting for new records parks on storage.Partition.Wait.
//
// # The client
//
// [Client.Lines] reads JSON lines and hands each line to a callback as bytes, for programs that
// copy or filter them (tributary consume writes them to stdout as they come); [Client.Consume]
// decodes them into Messages. With Options.Follow both reconnect with backoff when central goes
// away and resume after the last line the callback accepted; with Options.Group they commit the
// group's offsets as they go, so a restarted consumer resumes where the last one stopped.
//
// Errors of the API are JSON bodies {"error": "..."}; the client returns them as [*StatusError].
package consume

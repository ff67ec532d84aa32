// Package storage is Tributary's log: named streams of key/value records, each split into a fixed
// number of partitions by key, every record with a dense offset in its partition. It is the log
// behind the edge agent (readings waiting to be forwarded) and behind central (the merged stream).
//
// The model is Apache Kafka's: the key is the device id, and [PartitionFor] is Kafka's default
// partitioner, so a device keeps its partition here, at central and in a Kafka topic with the same
// partition count. Storage gives values no meaning; the devices package owns the reading codec.
//
// # Writing
//
// [Partition.Append] and [Stream.Append] return once the record is durable (under the default
// [FsyncGroup] policy): every append queued while one fdatasync runs is written as one batch and
// shares the next fdatasync, so a thousand concurrent writers cost one flush per round, not a
// thousand. [Partition.AppendAsync] lets one writer keep many appends in flight and be called back
// in offset order, which is how the edge acknowledges MQTT publishes only after they are durable.
//
// # Segments
//
// Each partition is a directory of segment files. The active segment is plain and appended to;
// when it reaches [Options.SegmentBytes] or [Options.SegmentAge] it is rolled and, in the
// background, sealed: compressed with zstd into independently decodable frames plus an offset
// index, written to a temporary file, fsynced and renamed into place. Readers never see a gap or
// an error while that happens. storage/FORMAT.md documents every byte.
//
// # Reading
//
// [Partition.NewReader] reads from any offset across sealed and active segments, and in follow
// mode waits for new durable records. Records lost to the quota policy or to a damaged segment
// surface as [Gap] entries in order, so a consumer always knows what is missing and why.
// [Partition.ReadChunk] returns records in transfer form (a zstd frame) for forwarding.
//
// # Recovery
//
// [Open] never refuses to start because of damaged data: a torn tail of the active segment is cut
// back to the last whole batch; a sealed segment whose frames fail their checksum keeps its good
// frames (as segments of their own) and the bad ones become gaps, or, when nothing can be saved,
// it is moved to quarantine/ and becomes a gap whole. Damage is logged and reported by
// [Log.Damage] as a [*CorruptionError]; the damaged file stays in quarantine/ as evidence.
//
// # Metadata
//
// Stream configs, cursors (for example the forwarder's position, marked required with
// [Log.RequireCursor] so retention never deletes what was not forwarded), gap records and small
// key/values live in a bbolt file beside the segments, written a few times per second at most.
package storage

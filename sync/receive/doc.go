// Package receive is central's side of sync: it authenticates edges, verifies each chunk,
// applies it exactly once into central's log, re-partitioned by device key with provenance
// headers, and answers with the lane's position (package protocol).
//
// # Lanes and the apply rule
//
// A lane is (edge, stream, edge partition). Its records arrive as chunks [base, next) in edge
// offset order. Applies of one lane are serial (one mutex per lane, held for the whole apply);
// different lanes apply concurrently. For each lane central keeps
//
//	expected    every edge offset below it is durably stored in central
//	applied[c]  per central partition c, the highest edge offset of this lane durably stored in c
//
// A chunk with next <= expected is a repeat: acknowledged, nothing applied. A chunk with
// base > expected waits briefly for its predecessor, then gets 409 with expected: harmless. Else
// each record with offset >= expected goes to the central partition c of its key, unless its
// offset <= applied[c]. Central appends the records, waits until all are durable (group fsync),
// raises applied[c], and only then advances expected to next. A failed apply (disk full, write
// error) leaves expected where it was and raises applied[c] only over the prefix that was stored.
//
// # Why this is exactly once, through kill -9 at any moment
//
// The records of one chunk land in several central partitions, and these appends are not atomic
// together: a crash can leave some of them durable and others not. Two facts make that safe.
//
// Prefix: within one central partition c, the lane's records are appended in edge offset order
// (applies are serial, and a partition's appends are durable in offset order: group commit writes
// groups in order and recovery cuts a torn tail back to the last whole batch). So after any crash,
// the lane's records present in c are exactly those routed to c with edge offset <= applied[c],
// where applied[c] is the highest present. An apply that fails stops appending at its first
// failure, which keeps the prefix for the in-memory state too.
//
// Resume: if central resumes a lane at any E no higher than its first missing offset, re-applying
// from E with the skip rule stores every missing record once (it is above applied[c] of its
// partition, by the prefix fact) and skips every present one (at or below applied[c]). E need not
// be exact; it must only not be too high.
//
// State: every CheckpointInterval central writes, per stream, one bbolt record (Meta namespace
// "central.dedupe") holding each central partition's end offset P[c], read first, and then each
// lane's expected and applied[], snapshot under the lane's lock. Every record below P[c] was
// durable before P[c] was read, so its apply had finished by the time its lane was snapshot (the
// snapshot waits for the lane lock): the snapshot covers it. At startup central loads the
// checkpoint and scans each central partition from P[c] to its end, raising applied[c] from the
// provenance headers (edge, edge-partition, edge-offset). That restores applied[] exactly, and
// expected = the checkpointed expected, which is below the first missing offset because it was
// true when written and nothing is ever deleted from central by sync. The scan is short: at most
// one checkpoint interval of records.
//
// Committed: the checkpointed expected is sent to edges as Position.Committed, and it is the only
// offset an edge may let retention delete below (the forwarder stores it as the required cursor
// "forwarder"). Position.Next may run ahead of it by one interval; after a crash central asks from
// Committed again and the edge still has those records. Had edges trimmed at Next, a crash would
// ask for records the edge no longer holds.
//
// Gaps: a gap chunk (records the edge lost to its quota policy or a damaged segment) is stored
// durably in the Meta namespace "central.gaps" before expected advances past it; a resent gap
// overwrites itself. Gaps are listed by Lanes, Gaps and `tributary edges`.
//
// Known limit: a write error inside storage that fails one group but lets a later group of the
// same partition succeed would break the prefix fact; storage stops a partition after a failed
// fsync, and disk-full under the backpressure quota fails before anything is written, so the
// remaining case is a failed write(2) of one group followed by a successful one.
//
// # Answers
//
// 401 unknown, revoked or wrong token; 400 malformed headers, bad checksum, undecodable or
// inconsistent chunk (nothing applied); 413 over MaxBodyBytes; 409 out of order, with the
// position; 503 with Retry-After when central's disk quota is full or storage failed: edges keep
// buffering and retry.
package receive

// Package receive is central's side of sync: it authenticates edges, verifies each chunk,
// applies it exactly once into central's log, re-partitioned by device key with provenance
// headers, and answers with the lane's position (package protocol).
//
// # Lanes and the apply rule
//
// A lane is (edge, stream, edge partition). Its records arrive as chunks [base, next) in edge
// offset order. Applies of one lane are queued in order (one mutex per lane, held while a chunk's
// records are handed to storage), but a lane does not wait for one chunk to be durable before
// queuing the next: chunk N+1 goes into central's partitions while chunk N's group commit is in
// flight. Different lanes apply concurrently. For each lane central keeps
//
//	expected    every edge offset below it is durably stored in central
//	applied[c]  per central partition c, the highest edge offset of this lane durably stored in c
//	queued      every edge offset below it is queued into central (durable or on its way)
//	queued[c]   per central partition c, the highest edge offset of this lane queued into c
//
// A chunk with next <= expected is a repeat: acknowledged, nothing applied; one with
// next <= queued is answered once expected reaches next. A chunk with base > queued waits
// briefly for its predecessor, then gets 409 with expected: harmless. Else each record with
// offset >= queued goes to the central partition c of its key, unless its offset <= queued[c].
// Storage calls back in offset order per partition once a record is durable; applied[c] rises to
// the highest durable offset. An apply retires when all its records are durable, strictly in
// queue order, and only then does expected advance to its next. A failed apply (disk full, write
// error) retires with its error, and so does every apply queued after it; expected stays where
// it was, and once every queued apply has retired the queued state is reset to the durable one
// (queued = expected, queued[c] = applied[c]) before anything else is queued.
//
// # Why this is exactly once, through kill -9 at any moment
//
// The records of one chunk land in several central partitions, and these appends are not atomic
// together: a crash can leave some of them durable and others not. Two facts make that safe.
//
// Prefix: within one central partition c, the lane's records are appended in edge offset order
// (queuing is serial per lane, and a partition's appends are durable in offset order: group
// commit writes groups in order, a failed write stops the partition, and recovery cuts a torn
// tail back to the last whole batch). So after any crash, the lane's records present in c are
// exactly those routed to c with edge offset <= applied[c], where applied[c] is the highest
// present. Queuing stops at the first failure it sees (a full
// quota is reported at once, before the record is queued), and nothing is queued again until
// every earlier callback has run, which keeps the prefix for the in-memory state too.
//
// Resume: if central resumes a lane at any E no higher than its first missing offset, re-applying
// from E with the skip rule stores every missing record once (it is above applied[c] of its
// partition, by the prefix fact) and skips every present one (at or below applied[c]). E need not
// be exact; it must only not be too high.
//
// State: every CheckpointInterval central writes, per stream, one bbolt record (Meta namespace
// "central.dedupe") holding each central partition's end offset P[c], read first, and then each
// lane's expected and applied[]. Every record below P[c] was
// durable before P[c] was read, so its apply had been queued by then; the lane's snapshot waits
// until every apply queued before it was taken has retired (all its callbacks have run, so
// applied[c] covers the record): the snapshot covers it. At startup central loads the
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
// Epochs: a lane's offsets only mean something within one edge log. Each log has an
// incarnation id (created with it, in its metadata), sent on every request; central keeps the
// lane's current one in a durable lane record (Meta namespace "central.lanes") written before
// the first record of an epoch is accepted, stores it on every record as the provenance header
// edge-incarnation, and the dedupe key is (edge, incarnation, stream, edge partition, edge
// offset): the startup scan counts only records of the lane's current incarnation, and a
// checkpointed lane state of an earlier incarnation is ignored. A request with another
// incarnation starts a new epoch: the lane waits for its queued applies, records what the old
// log reported past central's position as a gap (edge-log-replaced, or edge-log-went-back when
// the new incarnation keeps a prefix), and restarts at min(incarnation base, expected) with
// applied[] empty. Incarnations a lane moved on from are refused with 410 (an old copy of the
// data dir still running). Compatibility: a lane fed by an edge that sends no incarnation works
// as before; the first incarnation to call on it adopts it where it is (its stored records
// without the header count as its own), after which requests without one get 400. The
// forwarder makes adoption safe: central past the log's end at open means the log went back,
// and the forwarder then moves the lane to an incarnation of its own.
//
// Storage's part of the bargain: a partition stops at its first failed write, roll or fsync
// (later appends fail too until a reopen recovers), and a full quota fails an append before it is
// queued. A storage that let a later group succeed after a failed one would break the prefix fact.
//
// # Answers
//
// 401 unknown, revoked or wrong token; 400 malformed headers, bad checksum, undecodable or
// inconsistent chunk, a declared size the body cannot hold, a gap past the edge's reported end,
// a missing incarnation on a lane that has one (nothing applied); 410 an incarnation the lane
// moved on from; 413 over MaxBodyBytes; 409 out of order, with the position; 507 a new stream
// past MaxStreams; 503 with Retry-After when central's disk quota is full or storage failed: edges keep
// buffering and retry.
package receive

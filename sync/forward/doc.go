// Package forward is the edge side of sync: it forwards every partition of the edge log to
// central, in offset order, through outages, and resumes where central says.
//
// Each edge partition is a lane with its own goroutine. A lane asks central for its position
// (GET), then reads chunks from the log (storage.Partition.ReadChunk: sealed segments as their
// stored zstd frames, the open tail compressed on the fly) and keeps up to Config.InFlight of them
// in flight. Answers are taken in send order; any failure (network error, 409, 5xx) cancels the
// window, and the lane asks for its position again after an exponential backoff with jitter.
// Because central applies strictly in order and acknowledges repeats without applying them, a
// lost, repeated or overtaken request is harmless.
//
// Central's Position.Committed, the offset its dedupe state is durable to, is stored every
// Config.CursorInterval as the edge log's required cursor "forwarder": retention frees forwarded
// segments only below it, so an edge never deletes what a restarted central may ask for again.
//
// Wiring in the edge agent:
//
//	fwd, err := forward.New(log, forward.Config{CentralURL: url, EdgeID: id, Token: token, Logger: logger, Registerer: reg})
//	go func() { done <- fwd.Run(ctx) }()
//	// ... on shutdown: cancel ctx, <-done, then close the log.
package forward

package storage

// Changed returns a channel that is closed the next time the partition's end offset advances, or
// when the log closes. Take it before reading EndOffset, then wait on it: a record that lands in
// between closes the channel already taken, so no wake-up is lost. Long-polling servers use it to
// wait for many partitions at once without a reader per partition.
func (p *Partition) Changed() <-chan struct{} { return p.waitChan() }

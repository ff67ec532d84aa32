//go:build !unix

package kafkaserve

func cpuTime() int64 { return 0 }

package storage_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tributary-iot/tributary/storage"
)

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "tributary-example")
	defer os.RemoveAll(dir)

	log, err := storage.Open(dir, nil) // nil options: group commit, 16 MiB segments
	if err != nil {
		panic(err)
	}
	defer log.Close()
	readings, err := log.CreateStream("readings", storage.StreamConfig{Partitions: 8})
	if err != nil {
		panic(err)
	}

	// Append returns once the reading is on disk: this is when an edge may acknowledge it.
	for seq := 1; seq <= 3; seq++ {
		_, _, err := readings.Append(context.Background(), storage.Record{
			Key:       []byte("thermo-7"),
			Value:     fmt.Appendf(nil, `{"seq":%d,"temperature":21.%d}`, seq, seq),
			Timestamp: time.UnixMilli(1_700_000_000_000),
		})
		if err != nil {
			panic(err)
		}
	}

	// Every reading of one device is in one partition, in order.
	p := readings.Partition(readings.PartitionFor([]byte("thermo-7")))
	r := p.NewReader(0, nil)
	for {
		e, err := r.Next(context.Background())
		if err == io.EOF {
			break
		}
		fmt.Printf("partition %d offset %d: %s\n", p.ID(), e.Offset, e.Value)
	}
	// Output:
	// partition 0 offset 0: {"seq":1,"temperature":21.1}
	// partition 0 offset 1: {"seq":2,"temperature":21.2}
	// partition 0 offset 2: {"seq":3,"temperature":21.3}
}

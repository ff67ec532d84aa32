package storage

import (
	"fmt"
	"testing"

	// kgo is used only here, as an independent implementation of Kafka's default partitioner.
	"github.com/twmb/franz-go/pkg/kgo"
)

// Vectors from Kafka's own UtilsTest.testMurmur2.
func TestMurmur2KafkaVectors(t *testing.T) {
	cases := []struct {
		in   []byte
		want int32
	}{
		{[]byte("21"), -973932308},
		{[]byte("foobar"), -790332482},
		{[]byte("a-little-bit-long-string"), -985981536},
		{[]byte("a-little-bit-longer-string"), -1486304829},
		{[]byte("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971},
		{[]byte{'a', 'b', 'c'}, 479470107},
	}
	for _, c := range cases {
		if got := Murmur2(c.in); got != c.want {
			t.Errorf("Murmur2(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

// TestPartitionForMatchesKafkaClient compares against franz-go's Kafka-compatible key partitioner,
// on ASCII and non-ASCII keys of every tail length.
func TestPartitionForMatchesKafkaClient(t *testing.T) {
	keys := []string{"", "a", "ab", "abc", "abcd", "dev-0001", "dev-0002", "sensor/7", "température-α",
		"装置-東京-01", "ümlaut", "🌡️-probe", "\x00\xff\x80", "gw-01/plc-3/temp-12"}
	for i := 0; i < 200; i++ {
		keys = append(keys, fmt.Sprintf("device-%05d", i))
	}
	part := kgo.StickyKeyPartitioner(nil).ForTopic("readings")
	for _, n := range []int{1, 2, 3, 8, 12, 16, 100} {
		for _, k := range keys {
			if k == "" {
				continue // Kafka treats an empty key as no key (sticky), not a hash
			}
			want := part.Partition(&kgo.Record{Key: []byte(k)}, n)
			if got := PartitionFor([]byte(k), n); got != want {
				t.Fatalf("PartitionFor(%q, %d) = %d, Kafka client says %d", k, n, got, want)
			}
		}
	}
}

func BenchmarkPartitionFor(b *testing.B) {
	key := []byte("device-00042")
	for b.Loop() {
		PartitionFor(key, 16)
	}
}

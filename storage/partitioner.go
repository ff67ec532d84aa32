package storage

// PartitionFor returns the partition of key among n partitions exactly as Apache Kafka's default
// partitioner does (murmur2(key) & 0x7fffffff % n), so a device lands on the same partition number
// here, at central and in a Kafka topic with the same partition count.
func PartitionFor(key []byte, n int) int {
	if n <= 1 {
		return 0
	}
	return int(uint32(Murmur2(key))&0x7fffffff) % n
}

// Murmur2 is the 32-bit murmur2 hash as implemented by Kafka's org.apache.kafka.common.utils.Utils.murmur2,
// including its seed and its handling of the trailing bytes.
func Murmur2(data []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	length := len(data)
	h := seed ^ uint32(length)
	n4 := length / 4
	for i := 0; i < n4; i++ {
		i4 := i * 4
		k := uint32(data[i4]) | uint32(data[i4+1])<<8 | uint32(data[i4+2])<<16 | uint32(data[i4+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := length &^ 3
	switch length % 4 {
	case 3:
		h ^= uint32(data[tail+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[tail+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[tail])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

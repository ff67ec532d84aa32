package storage

import (
	"context"
	"testing"
)

// TestTinyChunkDecodes covers a live partition with one small record: the on-the-fly frame must
// state its content size like every other, or DecodeChunk refuses it.
func TestTinyChunkDecodes(t *testing.T) {
	l := openTest(t, t.TempDir(), nil)
	defer l.Close()
	s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
	p := s.Partition(0)
	if _, err := p.Append(context.Background(), Record{Key: []byte("d"), Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	ch, err := p.ReadChunk(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if ch.RawBytes >= 256 {
		t.Fatalf("chunk of %d raw bytes is not the tiny case", ch.RawBytes)
	}
	var got []string
	if err := DecodeChunk(ch.Data, 0, func(off int64, rec Record) error {
		got = append(got, string(rec.Key)+"="+string(rec.Value))
		return nil
	}); err != nil {
		t.Fatalf("decode tiny chunk: %v", err)
	}
	if len(got) != 1 || got[0] != "d=1" {
		t.Fatalf("decoded %v", got)
	}
}

package forward

import (
	"fmt"
	"sync"

	// klauspost/compress (already storage's zstd) re-encodes the rare frame that lacks a content
	// size; see ensureContentSize.
	"github.com/klauspost/compress/zstd"
)

var (
	frameDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<20))
		return d
	})
	frameEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(true))
		return e
	})
)

// ensureContentSize works around a storage behaviour: ReadChunk compresses chunks of the open
// segment with EncodeAll, which omits the frame content size for inputs under 256 bytes (a
// one-record chunk), and storage.DecodeChunk at central refuses frames without it. Such chunks
// are tiny, so re-encoding them as single-segment frames (which always carry the size) is cheap.
func ensureContentSize(data []byte) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(data); err != nil {
		return nil, fmt.Errorf("read chunk frame header: %w", err)
	}
	if h.HasFCS {
		return data, nil
	}
	raw, err := frameDecoder().DecodeAll(data, nil)
	if err != nil {
		return nil, fmt.Errorf("re-encode chunk: %w", err)
	}
	return frameEncoder().EncodeAll(raw, nil), nil
}

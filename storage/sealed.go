package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"

	// zstd from klauspost/compress: pure Go (static, cross-compiled gateway binaries), fast, and its
	// EncodeAll/DecodeAll are safe for concurrent use, so one encoder and one decoder serve the process.
	"github.com/klauspost/compress/zstd"
)

// A sealed segment file (.zst) is a sequence of frames. Each frame is a zstd skippable frame carrying
// the frame descriptor, followed by one zstd frame holding whole raw batches. Standard zstd tools skip
// the descriptors, so `zstd -d` turns a sealed segment back into the plain segment it came from.
const (
	skippableMagic   = 0x184D2A5B // one of the 16 magic numbers zstd reserves for skippable frames
	descriptorSize   = 36
	descriptorFrame  = 8 + descriptorSize
	indexMagic       = "TIDX"
	indexVersion     = 1
	indexHeaderSize  = 32
	indexEntrySize   = 40
	indexTrailerSize = 4
	// maxFrameRaw bounds the raw bytes of one frame (FrameBytes plus at most one batch); a
	// descriptor or index entry above it is damage, and no decode ever allocates more.
	maxFrameRaw  = 2 * maxBatchSize
	maxFrameComp = maxFrameRaw + maxFrameRaw/128 + 1024 // zstd's worst-case expansion is far below this
)

// plausible rejects frame descriptions no writer produces, so damaged metadata that happens to
// pass a checksum cannot make a reader allocate gigabytes or loop.
func (f frameInfo) plausible() bool {
	return f.base >= 0 && f.count > 0 && f.rawLen >= batchHeaderSize && f.rawLen <= maxFrameRaw &&
		f.compLen > 0 && f.compLen <= maxFrameComp && int64(f.count) <= int64(f.rawLen)/4 &&
		f.base <= 1<<62
}

// frameInfo describes one compressed frame of a sealed segment.
type frameInfo struct {
	base    int64  // offset of its first record
	count   uint32 // records
	rawLen  uint32 // bytes of raw batches
	compLen uint32 // bytes of the zstd frame
	crc     uint32 // CRC32-C of the zstd frame bytes
	maxTS   int64
	pos     int64 // file position of the zstd frame (after its descriptor)
}

func (f frameInfo) next() int64 { return f.base + int64(f.count) }

func putDescriptor(b []byte, fi frameInfo) {
	binary.LittleEndian.PutUint32(b[0:], skippableMagic)
	binary.LittleEndian.PutUint32(b[4:], descriptorSize)
	d := b[8:]
	binary.LittleEndian.PutUint64(d[0:], uint64(fi.base))
	binary.LittleEndian.PutUint32(d[8:], fi.count)
	binary.LittleEndian.PutUint32(d[12:], fi.rawLen)
	binary.LittleEndian.PutUint32(d[16:], fi.compLen)
	binary.LittleEndian.PutUint32(d[20:], fi.crc)
	binary.LittleEndian.PutUint64(d[24:], uint64(fi.maxTS))
	binary.LittleEndian.PutUint32(d[32:], crc32.Checksum(d[:32], castagnoli))
}

var errDescriptor = errors.New("bad frame descriptor")

func parseDescriptor(b []byte) (frameInfo, error) {
	if len(b) < descriptorFrame || binary.LittleEndian.Uint32(b[0:]) != skippableMagic ||
		binary.LittleEndian.Uint32(b[4:]) != descriptorSize {
		return frameInfo{}, errDescriptor
	}
	d := b[8:]
	if crc32.Checksum(d[:32], castagnoli) != binary.LittleEndian.Uint32(d[32:]) {
		return frameInfo{}, errDescriptor
	}
	fi := frameInfo{
		base:    int64(binary.LittleEndian.Uint64(d[0:])),
		count:   binary.LittleEndian.Uint32(d[8:]),
		rawLen:  binary.LittleEndian.Uint32(d[12:]),
		compLen: binary.LittleEndian.Uint32(d[16:]),
		crc:     binary.LittleEndian.Uint32(d[20:]),
		maxTS:   int64(binary.LittleEndian.Uint64(d[24:])),
	}
	if !fi.plausible() {
		return frameInfo{}, errDescriptor
	}
	return fi, nil
}

var (
	encoderOnce = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault),
			// One encoder, with its smaller tables: each encoder that has run keeps its history
			// and match tables, 3.6 MiB with a 1 MiB window at SpeedDefault, so GOMAXPROCS of them
			// cost a 2-core gateway 7.2 MiB and a 4-core one twice that, for seals that run in
			// the background anyway. Concurrent calls take turns, one 256 KiB frame at a time.
			// With WithLowerEncoderMem and a 512 KiB window it keeps 2.2 MiB; a 256 KiB frame
			// of readings compressed to the same bytes at the same speed (measured both ways).
			zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true),
			zstd.WithEncoderCRC(false), zstd.WithZeroFrames(true),
			// Frames are 256 KiB by default and chunks a few hundred KiB: matches reach back at
			// most 512 KiB, where the default 8 MiB window gave each encoder a 16 MiB history.
			zstd.WithWindowSize(512<<10),
			// Single-segment frames always state their content size, which DecodeChunk needs to
			// bound memory before decoding; without it zstd omits the size of inputs under 256 bytes.
			zstd.WithSingleSegment(true))
		if err != nil {
			panic(err) // only bad options fail here
		}
		return e
	})
	decoderOnce = sync.OnceValue(func() *zstd.Decoder {
		// DecodeAll never writes past cap(dst): callers size dst from a checked length, so a
		// damaged or hostile frame cannot grow memory beyond what was asked for.
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithDecoderMaxMemory(maxFrameRaw), zstd.IgnoreChecksum(true), zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic(err)
		}
		return d
	})
)

// compressFrame compresses raw batches into one zstd frame.
func compressFrame(raw []byte) []byte { return encoderOnce().EncodeAll(raw, nil) }

// decompressFrame decodes one zstd frame of raw batches, refusing output larger than rawLen.
func decompressFrame(comp []byte, rawLen int) ([]byte, error) {
	return decompressInto(comp, make([]byte, 0, rawLen))
}

// decompressInto decodes into dst[:0], refusing output larger than cap(dst).
func decompressInto(comp, dst []byte) ([]byte, error) {
	out, err := decoderOnce().DecodeAll(comp, dst[:0])
	if err != nil {
		return nil, err
	}
	return out, nil
}

// sealedSegment is a read-only compressed segment with its frame index in memory.
type sealedSegment struct {
	refs
	base   int64
	next   int64
	file   string
	f      *os.File
	frames []frameInfo
	size   int64
	raw    int64
	maxTS  int64
}

func (s *sealedSegment) baseOffset() int64   { return s.base }
func (s *sealedSegment) nextOffset() int64   { return s.next }
func (s *sealedSegment) storedBytes() int64  { return s.size }
func (s *sealedSegment) rawBytes() int64     { return s.raw }
func (s *sealedSegment) maxTimestamp() int64 { return s.maxTS }
func (s *sealedSegment) sealed() bool        { return true }
func (s *sealedSegment) path() string        { return s.file }

func (s *sealedSegment) frameFor(offset int64) int {
	lo, hi := 0, len(s.frames)
	for lo < hi {
		m := (lo + hi) / 2
		if s.frames[m].next() <= offset {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// readFrame returns the compressed bytes of frame i after checking its CRC.
func (s *sealedSegment) readFrame(i int) ([]byte, error) { return s.readFrameInto(i, nil) }

func (s *sealedSegment) readBatches(offset int64, maxBytes int) ([]byte, error) {
	i := s.frameFor(offset)
	if i >= len(s.frames) {
		return nil, io.EOF
	}
	comp, err := s.readFrame(i)
	if err != nil {
		return nil, err
	}
	raw, err := decompressFrame(comp, int(s.frames[i].rawLen))
	if err != nil || len(raw) != int(s.frames[i].rawLen) {
		return nil, &CorruptionError{Segment: s.base, Offset: s.frames[i].base, Reason: "frame does not decompress", Err: err}
	}
	return raw, nil
}

// sealFile compresses the raw batches of a plain segment, read in order from src, into dst
// (frames of about frameBytes raw bytes each), fsyncs it, and returns the frame index. It holds
// one frame at a time, not the whole segment (16 MiB by default).
func sealFile(src io.Reader, dst *os.File, frameBytes int) ([]frameInfo, error) {
	var (
		frames []frameInfo
		fi     frameInfo
		pos    int64  // in dst
		at     int64  // in the plain segment, for errors
		frame  []byte // the raw batches of the frame being built
		w      []byte // descriptor and compressed frame
	)
	flush := func() error {
		comp := compressFrame(frame)
		fi.rawLen = uint32(len(frame))
		fi.compLen = uint32(len(comp))
		fi.crc = crc32.Checksum(comp, castagnoli)
		fi.pos = pos + descriptorFrame
		w = append(w[:0], make([]byte, descriptorFrame)...)
		putDescriptor(w, fi)
		w = append(w, comp...)
		if _, err := dst.Write(w); err != nil {
			return err
		}
		pos += int64(len(w))
		frames = append(frames, fi)
		fi, frame = frameInfo{}, frame[:0]
		return nil
	}
	var hdr [batchHeaderSize]byte
	for {
		if _, err := io.ReadFull(src, hdr[:]); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("batch at byte %d: %w", at, readErr(err))
		}
		h, err := parseBatchHeader(hdr[:])
		if err != nil {
			return nil, fmt.Errorf("batch at byte %d: %w", at, err)
		}
		start := len(frame)
		frame = append(frame, hdr[:]...)
		frame = slices.Grow(frame, int(h.Length)-batchHeaderSize)[:start+int(h.Length)]
		if _, err := io.ReadFull(src, frame[start+batchHeaderSize:]); err != nil {
			return nil, fmt.Errorf("batch at byte %d: %w", at, readErr(err))
		}
		if _, err := checkBatch(frame[start:]); err != nil {
			return nil, fmt.Errorf("batch at byte %d: %w", at, err)
		}
		if start == 0 {
			fi.base = h.BaseOffset
		}
		fi.count += h.Count
		fi.maxTS = max(fi.maxTS, h.MaxTimestamp)
		at += int64(h.Length)
		// A frame takes whole batches until it holds at least frameBytes.
		if len(frame) >= frameBytes {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if len(frame) > 0 {
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if err := dst.Sync(); err != nil {
		return nil, err
	}
	return frames, nil
}

// readErr maps a segment that ends inside a batch to errTruncated.
func readErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errTruncated
	}
	return err
}

// encodeIndex serialises the frame index of a sealed segment; FORMAT.md shows the layout.
func encodeIndex(base, next int64, frames []frameInfo) []byte {
	b := make([]byte, indexHeaderSize+len(frames)*indexEntrySize+indexTrailerSize)
	copy(b, indexMagic)
	b[4] = indexVersion
	binary.LittleEndian.PutUint64(b[8:], uint64(base))
	binary.LittleEndian.PutUint64(b[16:], uint64(next))
	binary.LittleEndian.PutUint32(b[24:], uint32(len(frames)))
	p := b[indexHeaderSize:]
	for _, fi := range frames {
		binary.LittleEndian.PutUint64(p[0:], uint64(fi.base))
		binary.LittleEndian.PutUint32(p[8:], fi.count)
		binary.LittleEndian.PutUint32(p[12:], fi.rawLen)
		binary.LittleEndian.PutUint32(p[16:], fi.compLen)
		binary.LittleEndian.PutUint32(p[20:], fi.crc)
		binary.LittleEndian.PutUint64(p[24:], uint64(fi.pos))
		binary.LittleEndian.PutUint64(p[32:], uint64(fi.maxTS))
		p = p[indexEntrySize:]
	}
	binary.LittleEndian.PutUint32(p, crc32.Checksum(b[:len(b)-indexTrailerSize], castagnoli))
	return b
}

var errIndex = errors.New("bad index file")

func decodeIndex(b []byte) (base, next int64, frames []frameInfo, err error) {
	if len(b) < indexHeaderSize+indexTrailerSize || string(b[:4]) != indexMagic || b[4] != indexVersion {
		return 0, 0, nil, errIndex
	}
	body := b[:len(b)-indexTrailerSize]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[len(body):]) {
		return 0, 0, nil, fmt.Errorf("%w: checksum mismatch", errIndex)
	}
	base = int64(binary.LittleEndian.Uint64(b[8:]))
	next = int64(binary.LittleEndian.Uint64(b[16:]))
	n := int(binary.LittleEndian.Uint32(b[24:]))
	if len(body) != indexHeaderSize+n*indexEntrySize {
		return 0, 0, nil, fmt.Errorf("%w: length", errIndex)
	}
	if n == 0 {
		return 0, 0, nil, fmt.Errorf("%w: no frames", errIndex)
	}
	p := body[indexHeaderSize:]
	frames = make([]frameInfo, n)
	for i := range frames {
		frames[i] = frameInfo{
			base:    int64(binary.LittleEndian.Uint64(p[0:])),
			count:   binary.LittleEndian.Uint32(p[8:]),
			rawLen:  binary.LittleEndian.Uint32(p[12:]),
			compLen: binary.LittleEndian.Uint32(p[16:]),
			crc:     binary.LittleEndian.Uint32(p[20:]),
			pos:     int64(binary.LittleEndian.Uint64(p[24:])),
			maxTS:   int64(binary.LittleEndian.Uint64(p[32:])),
		}
		if !frames[i].plausible() {
			return 0, 0, nil, fmt.Errorf("%w: frame %d out of range", errIndex, i)
		}
		p = p[indexEntrySize:]
	}
	return base, next, frames, nil
}

// rebuildIndex walks the frame descriptors of a sealed file, without decompressing, to recreate a
// missing or damaged index.
func rebuildIndex(f *os.File, size int64) ([]frameInfo, error) {
	var frames []frameInfo
	var desc [descriptorFrame]byte
	pos := int64(0)
	for pos < size {
		if _, err := f.ReadAt(desc[:], pos); err != nil {
			return frames, fmt.Errorf("read descriptor at %d: %w", pos, err)
		}
		fi, err := parseDescriptor(desc[:])
		if err != nil {
			return frames, fmt.Errorf("at byte %d: %w", pos, err)
		}
		fi.pos = pos + descriptorFrame
		if fi.pos+int64(fi.compLen) > size {
			return frames, fmt.Errorf("frame at byte %d: %w", pos, errTruncated)
		}
		if n := len(frames); n > 0 && frames[n-1].next() != fi.base {
			return frames, fmt.Errorf("frame at byte %d starts at offset %d, want %d", pos, fi.base, frames[n-1].next())
		}
		frames = append(frames, fi)
		pos = fi.pos + int64(fi.compLen)
	}
	return frames, nil
}

// verifyFrames checks every frame's CRC and every descriptor against the index. It returns the
// first frame whose descriptor disagrees (or -1), and for a frame that fails its CRC its number and
// an error.
func verifyFrames(f *os.File, frames []frameInfo) (badDesc, bad int, err error) {
	badDesc = -1
	var buf []byte
	for i, fi := range frames {
		n := descriptorFrame + int(fi.compLen)
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		b := buf[:n]
		if _, err := f.ReadAt(b, fi.pos-descriptorFrame); err != nil {
			return badDesc, i, fmt.Errorf("read frame %d: %w", i, err)
		}
		if crc32.Checksum(b[descriptorFrame:], castagnoli) != fi.crc {
			return badDesc, i, fmt.Errorf("frame %d (offset %d): checksum mismatch", i, fi.base)
		}
		if d, err := parseDescriptor(b); badDesc < 0 && (err != nil || d.withPos(fi.pos) != fi) {
			badDesc = i
		}
	}
	return badDesc, -1, nil
}

func (f frameInfo) withPos(pos int64) frameInfo { f.pos = pos; return f }

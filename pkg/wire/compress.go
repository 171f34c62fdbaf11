package wire

import (
	"fmt"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Compression names a DATA payload compression algorithm.
type Compression string

// Compression algorithms, negotiated in HELLO/HELLO_ACK.
const (
	CompressionNone Compression = ""
	CompressionZstd Compression = "zstd"
	CompressionS2   Compression = "s2"
)

func (c Compression) feature() Features {
	switch c {
	case CompressionZstd:
		return FeatureZstd
	case CompressionS2:
		return FeatureS2
	}
	return 0
}

func compressionOf(f Features) Compression {
	switch {
	case f&FeatureZstd != 0:
		return CompressionZstd
	case f&FeatureS2 != 0:
		return CompressionS2
	}
	return CompressionNone
}

// minCompressSize is the smallest DATA payload worth compressing.
const minCompressSize = 512

var (
	zstdEncOnce sync.Once
	zstdEnc     *zstd.Encoder
	zstdDecs    sync.Map // max decoded size -> *zstd.Decoder
)

func zstdEncoder() *zstd.Encoder {
	zstdEncOnce.Do(func() {
		// Options are constants; NewWriter cannot fail with them.
		zstdEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2))
	})
	return zstdEnc
}

func zstdDecoder(max int) (*zstd.Decoder, error) {
	if d, ok := zstdDecs.Load(max); ok {
		return d.(*zstd.Decoder), nil
	}
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(2),
		zstd.WithDecoderMaxMemory(uint64(max)),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, err
	}
	actual, _ := zstdDecs.LoadOrStore(max, d)
	return actual.(*zstd.Decoder), nil
}

// compress encodes src with alg into dst (reusing its capacity) and reports
// whether the result is smaller than src.
func compress(alg Compression, dst, src []byte) ([]byte, bool) {
	switch alg {
	case CompressionS2:
		if n := s2.MaxEncodedLen(len(src)); n < 0 || cap(dst) < n {
			return dst, false
		}
		dst = s2.Encode(dst[:cap(dst)], src)
	case CompressionZstd:
		dst = zstdEncoder().EncodeAll(src, dst[:0])
	default:
		return dst, false
	}
	return dst, len(dst) < len(src)
}

// decompress decodes src with alg into dst, which has capacity max; it
// fails rather than produce more than max bytes.
func decompress(alg Compression, dst, src []byte, max int) ([]byte, error) {
	switch alg {
	case CompressionS2:
		n, err := s2.DecodedLen(src)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		if n > max || n > cap(dst) {
			return nil, fmt.Errorf("s2: decoded length %d over limit %d", n, max)
		}
		return s2.Decode(dst[:n], src)
	case CompressionZstd:
		d, err := zstdDecoder(max)
		if err != nil {
			return nil, err
		}
		return d.DecodeAll(src, dst[:0])
	}
	return nil, fmt.Errorf("no compression negotiated")
}

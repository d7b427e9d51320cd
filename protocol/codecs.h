// Compression as Kafka producers write it: the codec ids of the record batch attributes
// (low 3 bits), gzip with the gzip wrapper, snappy raw or in the xerial framing the Java
// client writes, lz4 frames, zstd frames. Errors are values. Every decompression is bounded
// by a caller limit so a small hostile batch cannot make the proxy allocate gigabytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace kpp::protocol {

enum class codec : uint8_t { none = 0, gzip = 1, snappy = 2, lz4 = 3, zstd = 4 };

enum class codec_error : uint8_t {
    none = 0,
    unknown_codec,     // attribute bits 5..7, or a codec this build does not know
    corrupt,           // the library refused the input
    truncated,         // the input ended inside the compressed stream
    output_too_large,  // more than the caller's limit would be produced
    compress_failed,
};

const char* to_string(codec_error error);
const char* to_string(codec kind);

struct codec_result {
    std::vector<std::byte> bytes;
    codec_error error = codec_error::none;
    // decompress_prefix: false when decoding stopped before the end of the stream.
    bool complete = true;
    bool ok() const { return error == codec_error::none; }
};

// Whole stream; refused with output_too_large when it would exceed `output_bytes_max`.
codec_result decompress(codec kind, std::span<const std::byte> input, size_t output_bytes_max);

// Decodes only until at least `wanted_bytes` are produced (fewer when the stream is shorter;
// then `complete` is true). gzip, lz4 and zstd stop mid-stream; xerial snappy decodes whole
// chunks (the Java client writes 32 KiB chunks); raw snappy decodes the whole block.
// `output_bytes_max` still bounds what one chunk or block may expand to.
codec_result decompress_prefix(codec kind, std::span<const std::byte> input, size_t wanted_bytes,
                               size_t output_bytes_max = size_t(64) << 20);

// gzip: level 6 with a gzip header; snappy: xerial framing, 32 KiB chunks; lz4: frame with
// 64 KiB independent blocks and no checksums (what the Java client writes); zstd: level 3.
codec_result compress(codec kind, std::span<const std::byte> input);

// Raw snappy without the xerial framing (tests, and peers that send it).
codec_result compress_snappy_raw(std::span<const std::byte> input);

}  // namespace kpp::protocol

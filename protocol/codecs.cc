#include "protocol/codecs.h"

#include <lz4frame.h>
#include <snappy.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <limits>

namespace kpp::protocol {

const char* to_string(codec_error error) {
    switch (error) {
        case codec_error::none: return "ok";
        case codec_error::unknown_codec: return "unknown compression codec";
        case codec_error::corrupt: return "corrupt compressed data";
        case codec_error::truncated: return "compressed data truncated";
        case codec_error::output_too_large: return "decompressed size over the limit";
        case codec_error::compress_failed: return "compression failed";
    }
    return "unknown codec error";
}

const char* to_string(codec kind) {
    switch (kind) {
        case codec::none: return "none";
        case codec::gzip: return "gzip";
        case codec::snappy: return "snappy";
        case codec::lz4: return "lz4";
        case codec::zstd: return "zstd";
    }
    return "unknown";
}

namespace {

// Where decoded bytes go. Streaming decoders fill it up to `target`: one byte past the hard
// limit (so "more than the limit" is seen without decoding further) or the prefix wanted.
// Whole-block decoders (snappy) ask for a block's size up front and are refused past the
// limit.
class output_buffer {
public:
    output_buffer(size_t limit_bytes, size_t stop_bytes, size_t size_hint_bytes)
        : limit_bytes_(limit_bytes),
          stop_bytes_(stop_bytes),
          target_bytes_(std::min(stop_bytes, limit_bytes == SIZE_MAX ? SIZE_MAX : limit_bytes + 1)),
          first_allocation_bytes_(std::clamp<size_t>(size_hint_bytes, 256, target_bytes_)) {}

    size_t produced() const { return produced_; }
    bool reached_stop() const { return produced_ >= stop_bytes_; }
    bool over_limit() const { return produced_ > limit_bytes_; }
    std::byte* free_space() { return bytes_.data() + produced_; }
    size_t free_bytes() const { return bytes_.size() - produced_; }
    void advance(size_t count) { produced_ += count; }

    // Grows geometrically; false once the target is reached.
    bool make_room() {
        if (produced_ < bytes_.size()) return true;
        if (bytes_.size() >= target_bytes_) return false;
        size_t grown = bytes_.empty() ? first_allocation_bytes_ : bytes_.size() * 2;
        bytes_.resize(std::min(grown, target_bytes_));
        return true;
    }
    // Room for a whole block of `count` bytes at `at`; false when it would pass the limit.
    bool append_block(size_t count, std::byte*& at) {
        if (count > limit_bytes_ - produced_) return false;
        bytes_.resize(produced_ + count);
        at = bytes_.data() + produced_;
        produced_ += count;
        return true;
    }
    std::vector<std::byte> finish() {
        bytes_.resize(produced_);
        return std::move(bytes_);
    }

private:
    std::vector<std::byte> bytes_;
    size_t produced_ = 0;
    size_t limit_bytes_;
    size_t stop_bytes_;
    size_t target_bytes_;
    size_t first_allocation_bytes_;
};

// A decoder reports an error, or none with `ended` telling whether the stream was finished
// (false: it stopped because the output reached its target).
struct decode_status {
    codec_error error = codec_error::none;
    bool ended = false;
};

constexpr decode_status decode_failed(codec_error error) { return {error, false}; }
constexpr decode_status decode_ended() { return {codec_error::none, true}; }
constexpr decode_status decode_stopped() { return {codec_error::none, false}; }

// ---- gzip ---------------------------------------------------------------------------------

// One inflater and one deflater per thread (the reactor is one thread per core): set-up
// costs more than a small batch's decode.
struct zlib_streams {
    z_stream inflater{};
    z_stream deflater{};
    bool inflater_ready = false;
    bool deflater_ready = false;
    ~zlib_streams() {
        if (inflater_ready) inflateEnd(&inflater);
        if (deflater_ready) deflateEnd(&deflater);
    }
};
thread_local zlib_streams zlib_cache;

constexpr int gzip_level = 6;  // Java's Deflater default
constexpr int gzip_window_bits = 15 + 16;  // 16: gzip wrapper
constexpr int any_wrapper_window_bits = 15 + 32;  // 32: detect gzip or zlib wrapper

z_stream* acquire_inflater() {
    if (!zlib_cache.inflater_ready) {
        if (inflateInit2(&zlib_cache.inflater, any_wrapper_window_bits) != Z_OK) return nullptr;
        zlib_cache.inflater_ready = true;
    } else if (inflateReset(&zlib_cache.inflater) != Z_OK) {
        return nullptr;
    }
    return &zlib_cache.inflater;
}

bool starts_gzip_member(const z_stream& stream) {
    return stream.avail_in >= 2 && stream.next_in[0] == 0x1f && stream.next_in[1] == 0x8b;
}

decode_status gzip_decode(std::span<const std::byte> input, output_buffer& out) {
    if (input.size() > UINT_MAX) return decode_failed(codec_error::output_too_large);
    z_stream* stream = acquire_inflater();
    if (!stream) return decode_failed(codec_error::corrupt);
    stream->next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(input.data()));
    stream->avail_in = uInt(input.size());
    for (;;) {
        if (!out.make_room()) return decode_stopped();
        size_t room = std::min<size_t>(out.free_bytes(), UINT_MAX);
        stream->next_out = reinterpret_cast<Bytef*>(out.free_space());
        stream->avail_out = uInt(room);
        int rc = inflate(stream, Z_NO_FLUSH);
        out.advance(room - stream->avail_out);
        if (rc == Z_STREAM_END) {
            // Concatenated members decode as one stream, as Java's GZIPInputStream does;
            // other trailing bytes are ignored like it ignores them.
            if (!starts_gzip_member(*stream)) return decode_ended();
            if (inflateReset(stream) != Z_OK) return decode_failed(codec_error::corrupt);
            continue;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) return decode_failed(codec_error::corrupt);
        // Output room left yet no end: the input ran out.
        if (stream->avail_out != 0 && stream->avail_in == 0) return decode_failed(codec_error::truncated);
    }
}

codec_result gzip_encode(std::span<const std::byte> input) {
    codec_result result;
    if (input.size() > UINT_MAX / 2) return {{}, codec_error::compress_failed};
    z_stream& stream = zlib_cache.deflater;
    if (!zlib_cache.deflater_ready) {
        if (deflateInit2(&stream, gzip_level, Z_DEFLATED, gzip_window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            return {{}, codec_error::compress_failed};
        zlib_cache.deflater_ready = true;
    } else if (deflateReset(&stream) != Z_OK) {
        return {{}, codec_error::compress_failed};
    }
    result.bytes.resize(deflateBound(&stream, uLong(input.size())));
    stream.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(input.data()));
    stream.avail_in = uInt(input.size());
    stream.next_out = reinterpret_cast<Bytef*>(result.bytes.data());
    stream.avail_out = uInt(result.bytes.size());
    if (deflate(&stream, Z_FINISH) != Z_STREAM_END) return {{}, codec_error::compress_failed};
    result.bytes.resize(result.bytes.size() - stream.avail_out);
    return result;
}

// ---- snappy -------------------------------------------------------------------------------

// The xerial framing the Java client writes: magic, version 1, compatible version 1, then
// [int32 compressed length][raw snappy block] per chunk.
constexpr std::array<uint8_t, 8> xerial_magic = {0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0};
constexpr size_t xerial_header_bytes = 16;
constexpr size_t xerial_chunk_bytes = 32 * 1024;  // snappy-java's default block size

bool is_xerial(std::span<const std::byte> input) {
    return input.size() >= xerial_header_bytes && std::memcmp(input.data(), xerial_magic.data(), 8) == 0;
}

uint32_t load_u32_be(const std::byte* at) {
    return (uint32_t(at[0]) << 24) | (uint32_t(at[1]) << 16) | (uint32_t(at[2]) << 8) | uint32_t(at[3]);
}

void store_u32_be(std::byte* at, uint32_t value) {
    at[0] = std::byte(value >> 24);
    at[1] = std::byte(value >> 16);
    at[2] = std::byte(value >> 8);
    at[3] = std::byte(value);
}

codec_error snappy_block_decode(std::span<const std::byte> block, output_buffer& out) {
    const char* compressed = reinterpret_cast<const char*>(block.data());
    size_t length = 0;
    if (!snappy::GetUncompressedLength(compressed, block.size(), &length)) return codec_error::corrupt;
    std::byte* target = nullptr;
    if (!out.append_block(length, target)) return codec_error::output_too_large;
    if (!snappy::RawUncompress(compressed, block.size(), reinterpret_cast<char*>(target)))
        return codec_error::corrupt;
    return codec_error::none;
}

decode_status xerial_decode(std::span<const std::byte> input, output_buffer& out) {
    size_t position = xerial_header_bytes;
    while (position < input.size()) {
        if (out.reached_stop()) return decode_stopped();
        if (input.size() - position < 4) return decode_failed(codec_error::truncated);
        uint32_t chunk_bytes = load_u32_be(input.data() + position);
        position += 4;
        if (chunk_bytes > INT32_MAX) return decode_failed(codec_error::corrupt);
        if (chunk_bytes > input.size() - position) return decode_failed(codec_error::truncated);
        codec_error error = snappy_block_decode(input.subspan(position, chunk_bytes), out);
        if (error != codec_error::none) return decode_failed(error);
        position += chunk_bytes;
    }
    return decode_ended();
}

decode_status snappy_decode(std::span<const std::byte> input, output_buffer& out) {
    if (is_xerial(input)) return xerial_decode(input, out);
    codec_error error = snappy_block_decode(input, out);
    return error == codec_error::none ? decode_ended() : decode_failed(error);
}

void snappy_block_encode(std::span<const std::byte> input, std::vector<std::byte>& out) {
    size_t start = out.size();
    out.resize(start + snappy::MaxCompressedLength(input.size()));
    size_t written = 0;
    snappy::RawCompress(reinterpret_cast<const char*>(input.data()), input.size(),
                        reinterpret_cast<char*>(out.data() + start), &written);
    out.resize(start + written);
}

codec_result xerial_encode(std::span<const std::byte> input) {
    codec_result result;
    auto& out = result.bytes;
    out.reserve(xerial_header_bytes + snappy::MaxCompressedLength(input.size()) +
                4 * (input.size() / xerial_chunk_bytes + 1));
    out.resize(xerial_header_bytes);
    std::memcpy(out.data(), xerial_magic.data(), xerial_magic.size());
    store_u32_be(out.data() + 8, 1);   // version
    store_u32_be(out.data() + 12, 1);  // compatible version
    for (size_t position = 0; position < input.size(); position += xerial_chunk_bytes) {
        size_t length_at = out.size();
        out.resize(length_at + 4);
        snappy_block_encode(input.subspan(position, std::min(xerial_chunk_bytes, input.size() - position)), out);
        store_u32_be(out.data() + length_at, uint32_t(out.size() - length_at - 4));
    }
    return result;
}

// ---- lz4 ----------------------------------------------------------------------------------

struct lz4_context {
    LZ4F_dctx* decoder = nullptr;
    ~lz4_context() {
        if (decoder) LZ4F_freeDecompressionContext(decoder);
    }
};
thread_local lz4_context lz4_cache;

LZ4F_dctx* acquire_lz4_decoder() {
    if (!lz4_cache.decoder) {
        if (LZ4F_isError(LZ4F_createDecompressionContext(&lz4_cache.decoder, LZ4F_VERSION))) {
            lz4_cache.decoder = nullptr;
            return nullptr;
        }
    } else {
        LZ4F_resetDecompressionContext(lz4_cache.decoder);
    }
    return lz4_cache.decoder;
}

// xxHash32 for inputs shorter than 16 bytes: all a frame header checksum ever covers.
uint32_t xxhash32_short(const uint8_t* input, size_t length) {
    constexpr uint32_t prime1 = 2654435761u, prime2 = 2246822519u, prime3 = 3266489917u;
    constexpr uint32_t prime4 = 668265263u, prime5 = 374761393u;
    auto rotate_left = [](uint32_t value, int bits) { return (value << bits) | (value >> (32 - bits)); };
    uint32_t hash = prime5 + uint32_t(length);
    size_t position = 0;
    for (; position + 4 <= length; position += 4) {
        uint32_t word = uint32_t(input[position]) | (uint32_t(input[position + 1]) << 8) |
                        (uint32_t(input[position + 2]) << 16) | (uint32_t(input[position + 3]) << 24);
        hash = rotate_left(hash + word * prime3, 17) * prime4;
    }
    for (; position < length; ++position) hash = rotate_left(hash + input[position] * prime5, 11) * prime1;
    hash ^= hash >> 15;
    hash *= prime2;
    hash ^= hash >> 13;
    hash *= prime3;
    hash ^= hash >> 16;
    return hash;
}

constexpr size_t lz4_header_bytes_max = 4 + 2 + 8 + 4 + 1;  // magic, FLG BD, size, dict id, HC

// Kafka before 0.10 (KAFKA-3160) computed the frame header checksum over the magic number
// too. When the first frame carries that checksum, returns a corrected copy of the header
// (its size in `header_bytes`), which is fed to the decoder in place of the original.
std::array<std::byte, lz4_header_bytes_max> repair_kafka_lz4_header(std::span<const std::byte> input,
                                                                    size_t& header_bytes) {
    std::array<std::byte, lz4_header_bytes_max> header{};
    header_bytes = 0;
    const auto* bytes = reinterpret_cast<const uint8_t*>(input.data());
    if (input.size() < 7 || bytes[0] != 0x04 || bytes[1] != 0x22 || bytes[2] != 0x4d || bytes[3] != 0x18)
        return header;
    uint8_t flags = bytes[4];
    size_t descriptor_bytes = 2 + ((flags & 0x08) ? 8 : 0) + ((flags & 0x01) ? 4 : 0);
    size_t checksum_at = 4 + descriptor_bytes;
    if (input.size() <= checksum_at) return header;
    uint8_t correct = uint8_t(xxhash32_short(bytes + 4, descriptor_bytes) >> 8);
    uint8_t kafka_broken = uint8_t(xxhash32_short(bytes, checksum_at) >> 8);
    if (bytes[checksum_at] == correct || bytes[checksum_at] != kafka_broken) return header;
    std::memcpy(header.data(), input.data(), checksum_at);
    header[checksum_at] = std::byte(correct);
    header_bytes = checksum_at + 1;
    return header;
}

decode_status lz4_decode(std::span<const std::byte> input, output_buffer& out) {
    LZ4F_dctx* decoder = acquire_lz4_decoder();
    if (!decoder) return decode_failed(codec_error::corrupt);
    size_t header_bytes = 0;
    auto repaired = repair_kafka_lz4_header(input, header_bytes);
    std::span<const std::byte> pieces[2] = {std::span<const std::byte>(repaired.data(), header_bytes),
                                            input.subspan(header_bytes)};
    size_t piece = pieces[0].empty() ? 1 : 0;
    bool frame_done = false;
    bool output_filled = false;  // the decoder may still hold output for a full buffer
    for (;;) {
        while (piece < 2 && pieces[piece].empty()) ++piece;
        if (piece == 2 && !output_filled) {
            if (!frame_done) return decode_failed(codec_error::truncated);
            return decode_ended();
        }
        if (!out.make_room()) return decode_stopped();
        std::span<const std::byte> source = piece < 2 ? pieces[piece] : std::span<const std::byte>();
        size_t room = out.free_bytes();
        size_t written = room;
        size_t consumed = source.size();
        size_t hint = LZ4F_decompress(decoder, out.free_space(), &written, source.data(), &consumed, nullptr);
        if (LZ4F_isError(hint)) return decode_failed(codec_error::corrupt);
        out.advance(written);
        if (piece < 2) pieces[piece] = source.subspan(consumed);
        frame_done = hint == 0;  // the decoder is then ready for a following frame
        output_filled = written == room;
        if (written == 0 && consumed == 0 && !frame_done) return decode_failed(codec_error::truncated);
    }
}

codec_result lz4_encode(std::span<const std::byte> input) {
    LZ4F_preferences_t preferences{};
    preferences.frameInfo.blockSizeID = LZ4F_max64KB;
    preferences.frameInfo.blockMode = LZ4F_blockIndependent;
    preferences.frameInfo.contentChecksumFlag = LZ4F_noContentChecksum;
    preferences.frameInfo.blockChecksumFlag = LZ4F_noBlockChecksum;
    codec_result result;
    result.bytes.resize(LZ4F_compressFrameBound(input.size(), &preferences));
    size_t written = LZ4F_compressFrame(result.bytes.data(), result.bytes.size(), input.data(), input.size(),
                                        &preferences);
    if (LZ4F_isError(written)) return {{}, codec_error::compress_failed};
    result.bytes.resize(written);
    return result;
}

// ---- zstd ---------------------------------------------------------------------------------

// zstd allocates the window a frame declares before producing anything; without a cap a
// 20-byte frame can claim 2 GiB. 2^23 covers every level up to 19 on any input; larger
// limits raise it up to zstd's own default cap.
constexpr int zstd_window_log_floor = 23;
constexpr int zstd_window_log_ceiling = 27;
constexpr int zstd_level = 3;  // zstd's and the Java client's default

struct zstd_contexts {
    ZSTD_DCtx* decoder = nullptr;
    ZSTD_CCtx* encoder = nullptr;
    ~zstd_contexts() {
        ZSTD_freeDCtx(decoder);
        ZSTD_freeCCtx(encoder);
    }
};
thread_local zstd_contexts zstd_cache;

int zstd_window_log_max(size_t limit_bytes) {
    int log = zstd_window_log_floor;
    while (log < zstd_window_log_ceiling && (size_t(1) << log) < limit_bytes) ++log;
    return log;
}

ZSTD_DCtx* acquire_zstd_decoder(size_t limit_bytes) {
    if (!zstd_cache.decoder) zstd_cache.decoder = ZSTD_createDCtx();
    if (!zstd_cache.decoder) return nullptr;
    ZSTD_DCtx_reset(zstd_cache.decoder, ZSTD_reset_session_only);
    ZSTD_DCtx_setParameter(zstd_cache.decoder, ZSTD_d_windowLogMax, zstd_window_log_max(limit_bytes));
    return zstd_cache.decoder;
}

decode_status zstd_decode(std::span<const std::byte> input, output_buffer& out, size_t limit_bytes) {
    ZSTD_DCtx* decoder = acquire_zstd_decoder(limit_bytes);
    if (!decoder) return decode_failed(codec_error::corrupt);
    ZSTD_inBuffer source{input.data(), input.size(), 0};
    size_t hint = 1;  // 0 once a frame is complete and flushed
    for (;;) {
        if (source.pos == source.size && hint == 0) return decode_ended();
        if (!out.make_room()) return decode_stopped();
        ZSTD_outBuffer target{out.free_space(), out.free_bytes(), 0};
        hint = ZSTD_decompressStream(decoder, &target, &source);
        if (ZSTD_isError(hint)) {
            bool window = ZSTD_getErrorCode(hint) == ZSTD_error_frameParameter_windowTooLarge;
            return decode_failed(window ? codec_error::output_too_large : codec_error::corrupt);
        }
        out.advance(target.pos);
        if (hint != 0 && source.pos == source.size && target.pos < target.size)
            return decode_failed(codec_error::truncated);
    }
}

codec_result zstd_encode(std::span<const std::byte> input) {
    if (!zstd_cache.encoder) zstd_cache.encoder = ZSTD_createCCtx();
    if (!zstd_cache.encoder) return {{}, codec_error::compress_failed};
    codec_result result;
    result.bytes.resize(ZSTD_compressBound(input.size()));
    size_t written = ZSTD_compressCCtx(zstd_cache.encoder, result.bytes.data(), result.bytes.size(), input.data(),
                                       input.size(), zstd_level);
    if (ZSTD_isError(written)) return {{}, codec_error::compress_failed};
    result.bytes.resize(written);
    return result;
}

// ---- dispatch -----------------------------------------------------------------------------

decode_status decode_any(codec kind, std::span<const std::byte> input, output_buffer& out, size_t limit_bytes) {
    switch (kind) {
        case codec::none: {
            std::byte* target = nullptr;
            if (!out.append_block(input.size(), target)) return decode_failed(codec_error::output_too_large);
            if (!input.empty()) std::memcpy(target, input.data(), input.size());
            return decode_ended();
        }
        case codec::gzip: return gzip_decode(input, out);
        case codec::snappy: return snappy_decode(input, out);
        case codec::lz4: return lz4_decode(input, out);
        case codec::zstd: return zstd_decode(input, out, limit_bytes);
    }
    return decode_failed(codec_error::unknown_codec);
}

codec_result run_decode(codec kind, std::span<const std::byte> input, size_t limit_bytes, size_t stop_bytes) {
    // Kafka batches compress 2-5x; start near that, grow by doubling.
    output_buffer out(limit_bytes, stop_bytes, input.size() * 4);
    decode_status status = decode_any(kind, input, out, limit_bytes);
    if (status.error != codec_error::none) return {{}, status.error};
    if (out.over_limit()) return {{}, codec_error::output_too_large};
    if (!status.ended && !out.reached_stop()) return {{}, codec_error::output_too_large};
    return {out.finish(), codec_error::none, status.ended};
}

}  // namespace

codec_result decompress(codec kind, std::span<const std::byte> input, size_t output_bytes_max) {
    return run_decode(kind, input, output_bytes_max, SIZE_MAX);
}

codec_result decompress_prefix(codec kind, std::span<const std::byte> input, size_t wanted_bytes,
                               size_t output_bytes_max) {
    return run_decode(kind, input, output_bytes_max, std::max<size_t>(wanted_bytes, 1));
}

codec_result compress(codec kind, std::span<const std::byte> input) {
    switch (kind) {
        case codec::none: return {std::vector<std::byte>(input.begin(), input.end())};
        case codec::gzip: return gzip_encode(input);
        case codec::snappy: return xerial_encode(input);
        case codec::lz4: return lz4_encode(input);
        case codec::zstd: return zstd_encode(input);
    }
    return {{}, codec_error::unknown_codec};
}

codec_result compress_snappy_raw(std::span<const std::byte> input) {
    codec_result result;
    snappy_block_encode(input, result.bytes);
    return result;
}

}  // namespace kpp::protocol

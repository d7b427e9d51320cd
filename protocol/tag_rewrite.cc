#include "protocol/tag_rewrite.h"

#include <cassert>
#include <climits>
#include <cstring>

#include "protocol/crc32c.h"
#include "protocol/wire.h"

namespace kpp::protocol {

size_t tag_header_bytes(std::string_view tag_key) {
    return encoded_varint_size(int32_t(tag_key.size())) + tag_key.size() +
           encoded_varint_size(int32_t(tag_value_bytes)) + tag_value_bytes;
}

size_t encode_tag_header(std::string_view tag_key, int32_t virtual_partition, std::byte* out) {
    size_t at = encode_varint(int32_t(tag_key.size()), out);
    std::memcpy(out + at, tag_key.data(), tag_key.size());
    at += tag_key.size();
    at += encode_varint(int32_t(tag_value_bytes), out + at);
    store_int32_be(out + at, virtual_partition);
    return at + tag_value_bytes;
}

namespace {

// Copies a few bytes without a call: the length and count varints and the tag header are a
// handful of bytes each, and a call to memcpy costs more than the copy (overlapping
// fixed-size moves cover every size up to 16).
inline void copy_few(std::byte* to, const std::byte* from, size_t size) {
    if (size >= 8) {
        if (size > 16) {
            std::memcpy(to, from, size);
            return;
        }
        std::memcpy(to, from, 8);
        std::memcpy(to + size - 8, from + size - 8, 8);
    } else if (size >= 4) {
        std::memcpy(to, from, 4);
        std::memcpy(to + size - 4, from + size - 4, 4);
    } else if (size > 0) {
        to[0] = from[0];
        to[size / 2] = from[size / 2];
        to[size - 1] = from[size - 1];
    }
}

// Output as slices: new bytes are written to one arena block per batch; original bytes are
// referenced. Adjacent pieces merge, so a record costs about four iovecs when its bytes are
// referenced, and a batch whose runs are all copied comes out as one piece.
class slice_sink {
public:
    slice_sink(const byte_slice& input, shared_bytes arena, uint32_t reference_bytes_min, size_t pieces_expected)
        : input_(input), arena_(std::move(arena)), arena_data_(arena_.data()), arena_size_(arena_.size()),
          reference_bytes_min_(reference_bytes_min) {
        pieces_.reserve(pieces_expected);
    }

    // New bytes; returns where they went so the batch header can be patched later.
    [[gnu::always_inline]] std::byte* fresh(std::span<const std::byte> bytes) {
        std::byte* at = claim(bytes.size());
        copy_few(at, bytes.data(), bytes.size());
        return at;
    }
    // A new varint, encoded in place.
    [[gnu::always_inline]] void varint(int32_t value) { claim(encode_varint(value, arena_data_ + cursor_)); }
    // Bytes [offset, offset + length) of the input batch.
    [[gnu::always_inline]] void original(size_t offset, size_t length) {
        if (length == 0) return;
        if (length < reference_bytes_min_) {
            fresh(input_.span().subspan(offset, length));
            return;
        }
        size_t at = input_.offset + offset;
        if (last_ == last_piece::input && input_end_ == at) {
            pieces_.back().length += uint32_t(length);
        } else {
            pieces_.push_back(byte_slice{input_.owner, uint32_t(at), uint32_t(length)});
            last_ = last_piece::input;
        }
        input_end_ = at + length;
    }
    std::vector<byte_slice>& pieces() {
        assert(cursor_ <= arena_size_);
        return pieces_;
    }

private:
    enum class last_piece { none, fresh, input };

    // The next `size` bytes of the arena join the output.
    // The arena is sized for the worst case (rewrite_uncompressed); pieces() checks it held.
    [[gnu::always_inline]] std::byte* claim(size_t size) {
        std::byte* at = arena_data_ + cursor_;
        if (size == 0) return at;
        if (last_ == last_piece::fresh) {
            pieces_.back().length += uint32_t(size);
        } else {
            pieces_.push_back(byte_slice{arena_, uint32_t(cursor_), uint32_t(size)});
            last_ = last_piece::fresh;
        }
        cursor_ += size;
        return at;
    }

    const byte_slice& input_;
    shared_bytes arena_;
    std::byte* arena_data_;
    size_t arena_size_;
    uint32_t reference_bytes_min_;
    size_t cursor_ = 0;
    last_piece last_ = last_piece::none;
    size_t input_end_ = 0;  // where the last input piece ends, when last_ is input
    std::vector<byte_slice> pieces_;
};

// Output as one contiguous block: the records to recompress.
class vector_sink {
public:
    vector_sink(std::span<const std::byte> input, std::vector<std::byte>& out) : input_(input), out_(out) {}
    void fresh(std::span<const std::byte> bytes) { out_.insert(out_.end(), bytes.begin(), bytes.end()); }
    void varint(int32_t value) {
        std::byte encoded[varint_bytes_max];
        out_.insert(out_.end(), encoded, encoded + encode_varint(value, encoded));
    }
    void original(size_t offset, size_t length) {
        auto run = input_.subspan(offset, length);
        out_.insert(out_.end(), run.begin(), run.end());
    }

private:
    std::span<const std::byte> input_;
    std::vector<std::byte>& out_;
};

struct tag_bytes {
    std::byte encoded[tag_key_bytes_max + 2 * varint_bytes_max + tag_value_bytes];
    size_t size = 0;
};

// Existing tag headers of one record: how many and how many bytes, to be dropped.
struct existing_tags {
    int32_t count = 0;
    size_t bytes = 0;
};

existing_tags find_existing_tags(const record_layout& record, std::string_view tag_key) {
    existing_tags found;
    // Almost no record carries the key already: a byte search rules it out without parsing.
    std::span<const std::byte> headers = record.headers();
    std::string_view header_text(reinterpret_cast<const char*>(headers.data()), headers.size());
    if (header_text.find(tag_key) == std::string_view::npos) return found;
    header_reader reader(record);
    record_header_view header;
    while (reader.next(header))
        if (header.key == tag_key) {
            ++found.count;
            found.bytes += header.bytes.size();
        }
    return found;
}

// Emits the headers of `record` except those with the tag key, as runs of original bytes.
// `record_at` is where the record starts in the sink's input.
template <typename sink_type>
void emit_headers_without_tag(const record_layout& record, size_t record_at, std::string_view tag_key,
                              sink_type& sink) {
    size_t run_start = record.headers_at;
    header_reader reader(record);
    record_header_view header;
    while (reader.next(header)) {
        if (header.key != tag_key) continue;
        size_t header_at = size_t(header.bytes.data() - record.bytes.data());
        sink.original(record_at + run_start, header_at - run_start);
        run_start = header_at + header.bytes.size();
    }
    sink.original(record_at + run_start, record.bytes.size() - run_start);
}

// One record with the tag: new length, original body up to the headers count, new count,
// original headers (without old tags), then the tag.
template <typename sink_type>
void emit_tagged_record(const record_layout& record, size_t record_at, std::string_view tag_key, const tag_bytes& tag,
                        sink_type& sink) {
    existing_tags old_tags = record.headers_count == 0 ? existing_tags{} : find_existing_tags(record, tag_key);
    int32_t headers_count = record.headers_count - old_tags.count + 1;
    size_t old_count_bytes = record.headers_at - record.headers_count_at;
    size_t new_count_bytes = encoded_varint_size(headers_count);
    size_t body_bytes = record.bytes.size() - record.body_at - old_count_bytes - old_tags.bytes + new_count_bytes +
                        tag.size;
    sink.varint(int32_t(body_bytes));
    sink.original(record_at + record.body_at, record.headers_count_at - record.body_at);
    sink.varint(headers_count);
    if (old_tags.count == 0)
        sink.original(record_at + record.headers_at, record.bytes.size() - record.headers_at);
    else
        emit_headers_without_tag(record, record_at, tag_key, sink);
    sink.fresh({tag.encoded, tag.size});
}

// Every record of `section`; `section_at` is where the section starts in the sink's input.
template <typename sink_type>
batch_error emit_tagged_records(std::span<const std::byte> section, size_t section_at, int32_t records_count,
                                std::string_view tag_key, const tag_bytes& tag, sink_type& sink) {
    record_reader reader(section, records_count);
    record_layout record;
    while (reader.next(record)) {
        size_t record_at = section_at + size_t(record.bytes.data() - section.data());
        emit_tagged_record(record, record_at, tag_key, tag, sink);
    }
    return reader.error();
}

uint32_t crc_of_pieces(const std::vector<byte_slice>& pieces, size_t skip_bytes) {
    uint32_t crc = 0;
    for (const byte_slice& piece : pieces) {
        std::span<const std::byte> bytes = piece.span();
        if (skip_bytes >= bytes.size()) {
            skip_bytes -= bytes.size();
            continue;
        }
        crc = crc32c_extend(crc, bytes.subspan(skip_bytes));
        skip_bytes = 0;
    }
    return crc;
}

tag_rewrite_result failed(batch_error error, codec_error detail = codec_error::none) {
    tag_rewrite_result result;
    result.error = error;
    result.codec_detail = detail;
    return result;
}

// Patches batch_length and CRC into a header whose batch ends `size_bytes` after it.
batch_error finish_header(std::byte* header, size_t size_bytes, uint32_t crc) {
    if (size_bytes - batch_layout::log_overhead_bytes > size_t(INT32_MAX)) return batch_error::invalid_length;
    store_int32_be(header + batch_layout::batch_length_at, int32_t(size_bytes - batch_layout::log_overhead_bytes));
    store_int32_be(header + batch_layout::crc_at, int32_t(crc));
    return batch_error::none;
}

void apply_producer_patch(std::byte* header, const tag_rewrite_options& options) {
    if (!options.producer) return;
    store_int64_be(header + batch_layout::producer_id_at, options.producer->producer_id);
    store_int16_be(header + batch_layout::producer_epoch_at, options.producer->producer_epoch);
    if (options.producer->base_sequence)
        store_int32_be(header + batch_layout::base_sequence_at, *options.producer->base_sequence);
}

tag_rewrite_result rewrite_uncompressed(const byte_slice& batch, const tag_bytes& tag,
                                        const tag_rewrite_options& options) {
    record_batch_view view(batch.span());
    size_t records_count = size_t(view.records_count());  // validated: at most section / 7
    size_t arena_bytes = batch_layout::header_bytes + records_count * (2 * varint_bytes_max + tag.size);
    if (options.reference_bytes_min > 0) arena_bytes += view.records_section().size();
    // Per record: new length, body, new count, headers (the tag merges with the next length),
    // when every run is referenced; when short runs are copied, most batches come out whole.
    size_t pieces_expected = options.reference_bytes_min > 0 ? 4 : 4 * records_count + 2;
    slice_sink sink(batch, shared_bytes::allocate(arena_bytes), options.reference_bytes_min, pieces_expected);
    std::byte* header = sink.fresh(batch.span().first(batch_layout::header_bytes));
    apply_producer_patch(header, options);
    batch_error error = emit_tagged_records(view.records_section(), batch_layout::records_at, view.records_count(),
                                            options.tag_key, tag, sink);
    if (error != batch_error::none) return failed(error);
    tag_rewrite_result result;
    result.pieces = std::move(sink.pieces());
    for (const byte_slice& piece : result.pieces) result.size_bytes += piece.length;
    // The CRC field lies before the covered range, so patching it does not change the sum.
    uint32_t crc = crc_of_pieces(result.pieces, batch_layout::crc_covered_from);
    if (batch_error finish = finish_header(header, result.size_bytes, crc); finish != batch_error::none)
        return failed(finish);
    return result;
}

tag_rewrite_result rewrite_compressed(const byte_slice& batch, const tag_bytes& tag,
                                      const tag_rewrite_options& options) {
    record_batch_view view(batch.span());
    codec kind = view.compression();
    codec_result records = decompress(kind, view.records_section(), options.records_bytes_max);
    if (records.error == codec_error::output_too_large) return failed(batch_error::records_too_large, records.error);
    if (!records.ok()) return failed(batch_error::decompress_failed, records.error);
    if (size_t(view.records_count()) > records.bytes.size() / batch_layout::record_bytes_min)
        return failed(batch_error::record_count_mismatch);
    std::vector<std::byte> tagged;
    tagged.reserve(records.bytes.size() + size_t(view.records_count()) * (2 * varint_bytes_max + tag.size));
    vector_sink sink(records.bytes, tagged);
    batch_error error = emit_tagged_records(records.bytes, 0, view.records_count(), options.tag_key, tag, sink);
    if (error != batch_error::none) return failed(error);
    codec_result packed = compress(kind, tagged);
    if (!packed.ok()) return failed(batch_error::compress_failed, packed.error);

    size_t size_bytes = batch_layout::header_bytes + packed.bytes.size();
    shared_bytes block = shared_bytes::allocate(size_bytes);
    std::memcpy(block.data(), batch.data(), batch_layout::header_bytes);
    apply_producer_patch(block.data(), options);
    std::memcpy(block.data() + batch_layout::header_bytes, packed.bytes.data(), packed.bytes.size());
    uint32_t crc = crc32c(std::span<const std::byte>(block.data(), size_bytes).subspan(batch_layout::crc_covered_from));
    if (batch_error finish = finish_header(block.data(), size_bytes, crc); finish != batch_error::none)
        return failed(finish);
    tag_rewrite_result result;
    result.pieces.push_back(byte_slice{std::move(block), 0, uint32_t(size_bytes)});
    result.size_bytes = size_bytes;
    return result;
}

}  // namespace

tag_rewrite_result rewrite_batch_tag(const byte_slice& batch, int32_t virtual_partition,
                                     const tag_rewrite_options& options) {
    if (options.tag_key.empty() || options.tag_key.size() > tag_key_bytes_max) return failed(batch_error::invalid_tag_key);
    std::span<const std::byte> bytes = batch.span();
    batch_error error = options.verify_input_crc ? validate_batch(bytes) : validate_batch_header(bytes);
    if (error != batch_error::none) return failed(error);
    record_batch_view view(bytes);
    if (view.is_control()) {
        tag_rewrite_result unchanged;
        unchanged.pieces.push_back(batch);
        unchanged.size_bytes = batch.length;
        return unchanged;
    }
    tag_bytes tag;
    tag.size = encode_tag_header(options.tag_key, virtual_partition, tag.encoded);
    if (view.compression() == codec::none) return rewrite_uncompressed(batch, tag, options);
    return rewrite_compressed(batch, tag, options);
}

namespace {

void read_tag(const std::optional<record_header_view>& tag, batch_classification& result) {
    if (!tag) return;
    if (!tag->value || tag->value->size() != tag_value_bytes) {
        result.tag_malformed = true;
        return;
    }
    result.has_tag = true;
    result.virtual_partition = load_int32_be(tag->value->data());
}

// The first record of a compressed section: decode a small prefix, and once the record's
// length is known, exactly as much as it needs.
batch_error first_compressed_record(codec kind, std::span<const std::byte> section, std::string_view tag_key,
                                    size_t records_bytes_max, batch_classification& result) {
    constexpr size_t first_guess_bytes = 512;
    size_t wanted = first_guess_bytes;
    for (int attempt = 0; attempt < 2; ++attempt) {
        codec_result prefix = decompress_prefix(kind, section, wanted, records_bytes_max);
        if (prefix.error == codec_error::output_too_large) return batch_error::records_too_large;
        if (!prefix.ok()) return batch_error::decompress_failed;
        record_view record;
        size_t consumed = 0;
        std::optional<record_header_view> tag;
        batch_error error = parse_record(prefix.bytes, record, consumed, tag_key, tag);
        if (error == batch_error::none) {
            read_tag(tag, result);
            return batch_error::none;
        }
        if (error != batch_error::truncated || prefix.complete) return error;
        size_t needed = 0;
        if (record_size(prefix.bytes, needed) != batch_error::none) return batch_error::truncated;
        if (needed > records_bytes_max) return batch_error::records_too_large;
        wanted = needed;
    }
    return batch_error::truncated;
}

}  // namespace

batch_classification classify_batch(std::span<const std::byte> batch, std::string_view tag_key,
                                    size_t records_bytes_max) {
    batch_classification result;
    result.error = validate_batch_header(batch);
    if (result.error != batch_error::none) return result;
    record_batch_view view(batch);
    result.is_control = view.is_control();
    result.records_count = view.records_count();
    result.base_offset = view.base_offset();
    result.last_offset = view.last_offset();
    if (result.is_control || result.records_count == 0) return result;
    if (view.compression() != codec::none) {
        result.error = first_compressed_record(view.compression(), view.records_section(), tag_key,
                                               records_bytes_max, result);
        return result;
    }
    record_view record;
    size_t consumed = 0;
    std::optional<record_header_view> tag;
    result.error = parse_record(view.records_section(), record, consumed, tag_key, tag);
    if (result.error == batch_error::none) read_tag(tag, result);
    return result;
}

}  // namespace kpp::protocol

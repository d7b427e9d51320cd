// Fuzz target: the tag rewrite. The first byte picks the virtual partition; the rest is a
// record batch (CRC checking off, so mutated batches reach the record parser). A rewrite
// that succeeds must forward the batch as it came (control batches) or produce a valid
// batch whose first record carries exactly that tag.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "protocol/record_batch.h"
#include "protocol/tag_rewrite.h"

using namespace kpp::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    int32_t virtual_partition = data[0];
    auto input = shared_bytes::copy_of(std::span(reinterpret_cast<const std::byte*>(data + 1), size - 1));
    tag_rewrite_options options;
    options.verify_input_crc = false;
    options.records_bytes_max = 1 << 20;
    tag_rewrite_result result = rewrite_batch_tag(byte_slice{input, 0, uint32_t(size - 1)}, virtual_partition, options);
    if (!result.ok()) return 0;
    std::vector<std::byte> output;
    output.reserve(result.size_bytes);
    for (const byte_slice& piece : result.pieces) output.insert(output.end(), piece.data(), piece.data() + piece.length);
    if (output.size() != result.size_bytes) std::abort();
    bool passed_through = output.size() == size - 1 && std::memcmp(output.data(), data + 1, size - 1) == 0;
    if (passed_through) return 0;  // control batches are forwarded as they came
    if (validate_batch(output) != batch_error::none) std::abort();
    batch_classification classified = classify_batch(output, default_tag_key, 1 << 22);
    if (classified.error != batch_error::none) std::abort();
    if (!classified.is_control && classified.records_count > 0 &&
        (!classified.has_tag || classified.virtual_partition != virtual_partition))
        std::abort();
    return 0;
}

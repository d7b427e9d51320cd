// Fuzz target: the record batch view. The input is a records field (a Fetch response's):
// batches are iterated, validated, classified and their records and headers read. Nothing
// may read outside the input, and what the view reports must stay inside it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "protocol/codecs.h"
#include "protocol/record_batch.h"
#include "protocol/tag_rewrite.h"

using namespace kpp::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::span<const std::byte> field(reinterpret_cast<const std::byte*>(data), size);
    batch_iterator batches(field);
    batch_entry entry;
    size_t seen_bytes = 0;
    while (batches.next(entry)) {
        if (entry.offset_in_field + entry.bytes.size() > size) std::abort();
        seen_bytes += entry.bytes.size();
        (void)classify_batch(entry.bytes, default_tag_key, 1 << 20);
        if (validate_batch_header(entry.bytes) != batch_error::none) continue;
        record_batch_view view(entry.bytes);
        if (view.compression() != codec::none) continue;
        record_reader records(view.records_section(), view.records_count());
        record_view record;
        while (records.next(record)) {
            header_reader headers(record);
            record_header_view header;
            while (headers.next(header)) {
            }
            (void)find_last_header(record, default_tag_key);
        }
    }
    if (seen_bytes > size || batches.complete_bytes() > size) std::abort();
    return 0;
}

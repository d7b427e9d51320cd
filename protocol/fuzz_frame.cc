// Fuzz target: Kafka framing. The input is split into chunks at points it chooses itself;
// the frames assembled must be exactly the frames a one-pass parse of the whole input
// finds, with or without copying partial frames.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "protocol/frame.h"
#include "protocol/wire.h"

using namespace kpp::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    uint32_t frame_bytes_max = 1u + data[0] * 64u;
    bool copy_partial = data[1] & 1;
    std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data + 2), size - 2);

    // Reference: walk the whole input at once.
    std::vector<std::vector<std::byte>> expected;
    frame_status expected_status = frame_status::ok;
    for (size_t offset = 0; offset + 4 <= input.size();) {
        int32_t declared = load_int32_be(input.data() + offset);
        if (declared < 0) { expected_status = frame_status::negative_size; break; }
        if (uint32_t(declared) > frame_bytes_max) { expected_status = frame_status::too_large; break; }
        if (offset + 4 + size_t(declared) > input.size()) break;
        expected.emplace_back(input.begin() + long(offset + 4), input.begin() + long(offset + 4 + size_t(declared)));
        offset += 4 + size_t(declared);
    }

    frame_assembler assembler(frame_bytes_max);
    std::vector<std::vector<std::byte>> seen;
    frame_status status = frame_status::ok;
    size_t offset = 0;
    size_t step = 1 + (data[1] >> 1);
    while (offset < input.size() && status == frame_status::ok) {
        size_t length = std::min(step, input.size() - offset);
        auto chunk = shared_bytes::copy_of(input.subspan(offset, length));
        status = assembler.feed(byte_slice{chunk, 0, uint32_t(length)}, copy_partial, [&](frame&& done) {
            std::vector<std::byte> body(done.size_bytes);
            if (done.copy_out(0, body) != done.size_bytes) std::abort();
            seen.push_back(std::move(body));
        });
        offset += length;
        step = step * 3 % 61 + 1;
    }
    if (status != expected_status) std::abort();
    if (seen != expected) std::abort();
    return 0;
}

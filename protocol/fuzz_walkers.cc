// Fuzz target: every generated walker. The first bytes pick a message and a version; the
// rest is walked as contiguous bytes and as pieces. Both walks must agree on the outcome,
// the position and every field reported, and neither may read outside the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "protocol/kpp_messages.h"
#include "protocol/segmented_reader.h"

using namespace kpp::protocol;
using namespace kpp::protocol::messages;

namespace {

struct recorder : walk_visitor {
    std::vector<std::string> log;
    void on_field(const field_event& event) override {
        log.push_back(std::to_string(int(event.role)) + "@" + std::to_string(event.offset) + "+" +
                      std::to_string(event.size_bytes) + "=" + std::to_string(event.value) + ":" + event.text);
    }
    void on_element_begin(std::string_view name, int32_t index) override {
        log.push_back("[" + std::string(name) + std::to_string(index));
    }
    void on_element_end() override { log.push_back("]"); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto table = all_messages();
    if (size < 3 || table.empty()) return 0;
    const message_info& info = table[data[0] % table.size()];
    int16_t version = int16_t(info.min_version + data[1] % (info.max_version - info.min_version + 1));
    size_t piece_bytes = 1 + data[2] % 17;
    std::vector<std::byte> body;
    if (data[2] & 0x80) {
        // Start from a valid message and let the input mutate it: (position, value) pairs.
        body = info.encode_sample(version);
        for (size_t index = 3; index + 1 < size && !body.empty(); index += 2)
            body[data[index] * 251u % body.size()] = std::byte(data[index + 1]);
    } else {
        body.assign(reinterpret_cast<const std::byte*>(data + 3), reinterpret_cast<const std::byte*>(data + size));
    }

    recorder whole;
    wire_reader contiguous(body);
    wire_error whole_error = info.walk_contiguous(contiguous, version, whole);

    std::vector<std::span<const std::byte>> pieces;
    for (size_t offset = 0; offset < body.size(); offset += piece_bytes)
        pieces.push_back(std::span<const std::byte>(body).subspan(offset, std::min(piece_bytes, body.size() - offset)));
    recorder split;
    segmented_reader segmented(pieces);
    wire_error split_error = info.walk_segmented(segmented, version, split);

    if (whole_error != split_error) std::abort();
    if (whole_error == wire_error::none && contiguous.position() != segmented.position()) std::abort();
    if (whole_error == wire_error::none && whole.log != split.log) std::abort();
    if (contiguous.position() > body.size()) std::abort();
    return 0;
}

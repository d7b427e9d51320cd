// Topic layout records (DESIGN.md section 7, "Reload"): the offset store remembers, per
// mapped topic, the virtual and physical partition counts the proxy has served it with, so
// that no later configuration (a reload, or a restart with an edited file) can lower V or
// change P and strand the records of the partitions it would remove.
//
// Key:   int16 kind (2) | string topic
// Value: int16 format (0) | int32 virtual partitions | int32 physical partitions |
//        int64 recorded (ms since the epoch)
// All layout records go to store partition 0. The offset store's own keys start with int16 0
// and producer aliases with 1, so each reader skips the others' records.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kpp {

inline constexpr int16_t layout_key_kind = 2;
inline constexpr int32_t layout_store_partition = 0;

struct topic_layout {
    int32_t virtual_partitions = 0, physical_partitions = 0;
    int64_t recorded_ms = 0;
    bool operator==(const topic_layout&) const = default;
};
using topic_layouts = std::map<std::string, topic_layout, std::less<>>;

std::vector<std::byte> encode_layout_key(std::string_view topic);
std::vector<std::byte> encode_layout_value(const topic_layout& layout);
bool is_layout_key(std::span<const std::byte> key);
// nullopt for bytes this format does not describe.
std::optional<std::string> decode_layout_key(std::span<const std::byte> bytes);
std::optional<topic_layout> decode_layout_value(std::span<const std::byte> bytes);

// Why serving `topic` with `next` (V, P; V <= P or 0 means "not remapped") after it was
// served with `before` would strand records: empty when the change is safe (V raised or
// equal, same P). `key` names the configuration entry for the message.
std::string layout_change_refusal(std::string_view topic, const topic_layout& before, const topic_layout& next,
                                  std::string_view key);

}  // namespace kpp

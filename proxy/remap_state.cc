#include "proxy/remap_state.h"

#include <cstring>
#include <mutex>

namespace kpp {

size_t topic_names::uuid_hash::operator()(const topic_uuid& id) const {
    uint64_t high = 0, low = 0;
    std::memcpy(&high, id.data(), 8);
    std::memcpy(&low, id.data() + 8, 8);
    return size_t(high ^ (low * 0x9e3779b97f4a7c15ull));
}

void topic_names::learn(const topic_uuid& id, std::string_view name) {
    if (name.empty()) return;
    {
        std::shared_lock reading(lock_);
        auto found = names_.find(id);
        if (found != names_.end() && found->second == name) return;
    }
    std::unique_lock writing(lock_);
    if (names_.size() >= entries_max) names_.clear();  // refills from the next Metadata answers
    names_[id] = std::string(name);
}

std::optional<std::string> topic_names::find(const topic_uuid& id) const {
    std::shared_lock reading(lock_);
    auto found = names_.find(id);
    if (found == names_.end()) return std::nullopt;
    return found->second;
}

namespace {
std::string end_key(std::string_view topic, int32_t physical_partition, int32_t virtual_partition) {
    // Fetch v13+ keys hints by name and topic id; the name alone is what ListOffsets knows.
    topic = topic.substr(0, topic.find('\0'));
    std::string key(topic);
    key += '\0';
    key += std::to_string(physical_partition);
    key += '\0';
    key += std::to_string(virtual_partition);
    return key;
}
}  // namespace

void virtual_ends::learn(std::string_view topic, int32_t physical_partition, int32_t virtual_partition, int64_t end,
                         int64_t physical_end) {
    std::string key = end_key(topic, physical_partition, virtual_partition);
    std::unique_lock writing(lock_);
    auto found = ends_.find(key);
    if (found != ends_.end()) {
        if (found->second.physical_end <= physical_end) found->second = {end, physical_end};
        return;
    }
    if (ends_.size() >= entries_max) ends_.clear();  // soft state: relearnt by the next fetches
    ends_.emplace(std::move(key), known{end, physical_end});
}

std::optional<int64_t> virtual_ends::find(std::string_view topic, int32_t physical_partition, int32_t virtual_partition,
                                          int64_t physical_end) const {
    std::string key = end_key(topic, physical_partition, virtual_partition);
    std::shared_lock reading(lock_);
    auto found = ends_.find(key);
    if (found == ends_.end() || found->second.physical_end != physical_end) return std::nullopt;
    return found->second.end;
}

}  // namespace kpp

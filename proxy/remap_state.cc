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

}  // namespace kpp

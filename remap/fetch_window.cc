#include "remap/fetch_window.h"

#include <algorithm>

namespace kpp {

void fetch_window::set_bytes_max(size_t bytes_max) {
    bytes_max_ = bytes_max;
    while (bytes_ > bytes_max_ && !order_.empty()) evict_oldest();
    if (!enabled()) readers_.clear();
}

const window_entry* fetch_window::find(const window_key& key, int64_t offset, size_t bytes_max) const {
    auto stored = entries_.find(key);
    if (stored == entries_.end()) return nullptr;
    auto after = stored->second.upper_bound(offset);  // first entry fetched past `offset`
    if (after == stored->second.begin()) return nullptr;
    const window_entry& entry = std::prev(after)->second;
    if (offset >= entry.to_offset || entry.bytes > bytes_max) return nullptr;
    return &entry;
}

void fetch_window::store(const window_key& key, window_entry entry) {
    if (!enabled() || entry.to_offset <= entry.from_offset || entry.held_bytes > bytes_max_) return;
    auto& stored = entries_[key];
    if (!stored.empty()) {
        // Behind everything kept (a slow consumer: it reads alone), or overlapping what is.
        auto after = stored.lower_bound(entry.from_offset);
        bool behind = entry.to_offset <= stored.begin()->second.from_offset;
        bool overlaps_next = after != stored.end() && after->second.from_offset < entry.to_offset;
        bool overlaps_previous = after != stored.begin() && std::prev(after)->second.to_offset > entry.from_offset;
        if (behind || overlaps_next || overlaps_previous) {
            ++counters_.not_kept;
            return;
        }
    }
    int64_t from = entry.from_offset;
    bytes_ += entry.held_bytes;
    ++counters_.stored;
    counters_.stored_bytes += entry.held_bytes;
    stored.emplace(from, std::move(entry));
    order_.push_back(stored_key{key, from});
    while (bytes_ > bytes_max_ && !order_.empty()) evict_oldest();
}

void fetch_window::evict_oldest() {
    stored_key oldest = std::move(order_.front());
    order_.pop_front();
    auto stored = entries_.find(oldest.key);
    if (stored == entries_.end()) return;
    auto entry = stored->second.find(oldest.from_offset);
    if (entry == stored->second.end()) return;  // already replaced
    bytes_ -= entry->second.held_bytes;
    counters_.evicted_bytes += entry->second.held_bytes;
    stored->second.erase(entry);
    if (stored->second.empty()) entries_.erase(stored);
}

void fetch_window::note_reader(const window_key& key, uintptr_t reader, uint64_t now_ns) {
    if (!enabled()) return;
    if (readers_.size() >= readers_max) {
        // Bounded: partitions nobody read within the horizon are forgotten.
        std::erase_if(readers_, [&](const auto& item) { return item.second.at_ns[0] + sharing_horizon_ns < now_ns; });
        if (readers_.size() >= readers_max) readers_.clear();
    }
    recent_readers& recent = readers_[key];
    if (recent.reader[0] != reader) {
        recent.reader[1] = recent.reader[0];
        recent.at_ns[1] = recent.at_ns[0];
        recent.reader[0] = reader;
    }
    recent.at_ns[0] = now_ns;
}

bool fetch_window::shared(const window_key& key, uintptr_t reader, uint64_t now_ns) const {
    auto found = readers_.find(key);
    if (found == readers_.end()) return false;
    const recent_readers& recent = found->second;
    for (int index = 0; index < 2; ++index)
        if (recent.reader[index] != 0 && recent.reader[index] != reader &&
            recent.at_ns[index] + sharing_horizon_ns >= now_ns)
            return true;
    return false;
}

size_t fetch_window::fetches_in_flight() const {
    size_t count = 0;
    for (const auto& [key, fetches] : in_flight_) count += fetches.size();
    return count;
}

void fetch_window::forget_overdue(std::vector<in_flight>& fetches, uint64_t now_ns) {
    std::erase_if(fetches, [&](const in_flight& fetch) { return fetch.due_ns < now_ns; });
}

uint64_t fetch_window::begin_fetch(const window_key& key, int64_t offset, int32_t min_bytes, uint64_t now_ns,
                                   uint64_t due_ns) {
    uint64_t id = next_id_++;
    auto& fetches = in_flight_[key];
    forget_overdue(fetches, now_ns);
    fetches.push_back(in_flight{id, offset, min_bytes, due_ns, {}});
    return id;
}

std::vector<fetch_window::wake> fetch_window::end_fetch(uint64_t id) {
    for (auto by_key = in_flight_.begin(); by_key != in_flight_.end(); ++by_key) {
        auto& fetches = by_key->second;
        auto found = std::find_if(fetches.begin(), fetches.end(), [&](const in_flight& f) { return f.id == id; });
        if (found == fetches.end()) continue;
        std::vector<wake> waiters = std::move(found->waiters);
        fetches.erase(found);
        if (fetches.empty()) in_flight_.erase(by_key);
        return waiters;
    }
    return {};
}

bool fetch_window::join(const window_key& key, int64_t offset, int32_t min_bytes, uint64_t now_ns, wake on_done) {
    if (!enabled()) return false;
    auto by_key = in_flight_.find(key);
    if (by_key == in_flight_.end()) return false;
    for (in_flight& fetch : by_key->second) {
        if (fetch.offset > offset || fetch.min_bytes > min_bytes || fetch.due_ns < now_ns) continue;
        fetch.waiters.push_back(std::move(on_done));
        return true;
    }
    return false;
}

}  // namespace kpp

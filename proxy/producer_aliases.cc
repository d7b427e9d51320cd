#include "proxy/producer_aliases.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "proxy/offset_store.h"
#include "proxy/shard_server.h"

namespace kpp {
namespace {

// How often one core looks for aliases to tombstone in one store partition.
constexpr int64_t expiry_pass_interval_ms = 60 * 1000;
// A resolved record is rewritten with its last use at most this often (a quarter of the
// idle time, so an alias in use is never near its expiry in the store).
int64_t touch_after_ms(const proxy_config& config) { return int64_t(config.producers.alias_idle_ms / 4); }

}  // namespace

std::optional<alias_registry::found> alias_registry::find(const alias_key& key, int64_t now_ms,
                                                          int64_t touch_after_ms) {
    std::lock_guard guard(lock_);
    auto held = entries_.find(key);
    if (held == entries_.end()) return std::nullopt;
    held->second.used_ms = now_ms;
    found result{held->second.record, false};
    if (now_ms - held->second.record.used_ms >= touch_after_ms) {
        // One caller records the use; the others see it done.
        held->second.record.used_ms = now_ms;
        result.touch_due = true;
        result.record.used_ms = now_ms;
    }
    return result;
}

void alias_registry::remember(const alias_key& key, const alias_record_value& record, int64_t now_ms) {
    std::lock_guard guard(lock_);
    entries_[key] = entry{record, now_ms};
    owners_[record.alias.producer_id] = key;
    if (entries_.size() > entries_max_) evict_locked();
}

void alias_registry::evict_locked() {
    // Drops the least recently used eighth at once, so eviction is rare and amortised.
    std::vector<std::pair<int64_t, alias_key>> by_use;
    by_use.reserve(entries_.size());
    for (const auto& [key, held] : entries_) by_use.emplace_back(held.used_ms, key);
    size_t drop = std::max<size_t>(1, entries_.size() / 8);
    std::nth_element(by_use.begin(), by_use.begin() + ptrdiff_t(drop - 1), by_use.end());
    for (size_t index = 0; index < drop; ++index) {
        auto held = entries_.find(by_use[index].second);
        owners_.erase(held->second.record.alias.producer_id);
        entries_.erase(held);
    }
}

bool alias_registry::used_since(const alias_key& key, int64_t since_ms) const {
    std::lock_guard guard(lock_);
    auto held = entries_.find(key);
    return held != entries_.end() && held->second.used_ms >= since_ms;
}

std::optional<alias_key> alias_registry::owner_of(int64_t alias_producer_id) const {
    std::lock_guard guard(lock_);
    auto found = owners_.find(alias_producer_id);
    if (found == owners_.end()) return std::nullopt;
    return found->second;
}

size_t alias_registry::size() const {
    std::lock_guard guard(lock_);
    return entries_.size();
}

alias_resolver::alias_resolver(shard_server& server, alias_registry& registry, std::string writer)
    : server_(server), registry_(registry), writer_(std::move(writer)) {}

std::optional<alias_producer> alias_resolver::lookup(const alias_key& key) {
    int64_t now_ms = offset_store::wall_clock_ms();
    auto found = registry_.find(key, now_ms, touch_after_ms(server_.config()));
    if (!found) return std::nullopt;
    if (found->touch_due) touch(key, found->record);
    return found->record.alias;
}

void alias_resolver::defer(std::function<void()> task) { server_.store().post(std::move(task)); }

void alias_resolver::resolve(const alias_key& key, alias_done done) {
    auto [waiting, fresh] = pending_.try_emplace(key);
    waiting->second.waiters.push_back(std::move(done));
    if (!fresh) return;
    offset_store& store = server_.store();
    if (!store.available()) {
        defer([this, key] { finish(key, offset_store::unavailable_error, {}); });
        return;
    }
    waiting->second.partition = alias_store_partition(key.producer_id, server_.store().partitions());
    store.sync(waiting->second.partition, [this, key](int16_t error) { on_first_sync(key, error); });
}

void alias_resolver::on_first_sync(const alias_key& key, int16_t error) {
    if (error != 0) {
        finish(key, error, {});
        return;
    }
    int32_t partition = pending_[key].partition;
    if (auto known = server_.store().aliases(partition).resolve(key)) {
        bump(server_.metrics().producer_aliases_from_store);
        registry_.remember(key, *known, offset_store::wall_clock_ms());
        finish(key, 0, known->alias);
        return;
    }
    server_.store().init_producer_id(
        [this, key](int16_t init_error, alias_producer created) { on_producer_id(key, init_error, created); });
}

void alias_resolver::on_producer_id(const alias_key& key, int16_t error, alias_producer created) {
    if (error != 0) {
        spdlog::warn("producer alias for producer {} epoch {} group {}: InitProducerId failed with error {}",
                     key.producer_id, key.producer_epoch, key.group, error);
        finish(key, error, {});
        return;
    }
    int32_t partition = pending_[key].partition;
    int64_t now_ms = offset_store::wall_clock_ms();
    store_record candidate;
    candidate.alias = alias_record_key{key, writer_};
    candidate.alias_value = alias_record_value{created, now_ms, now_ms};
    server_.store().write(partition, {std::move(candidate)}, [this, key, created, partition](int16_t write_error) {
        if (write_error != 0) {
            finish(key, write_error, {});
            return;
        }
        // Read to the end once more: a candidate another instance wrote first wins.
        server_.store().sync(partition,
                             [this, key, created](int16_t sync_error) { on_second_sync(key, created, sync_error); });
    });
}

void alias_resolver::on_second_sync(const alias_key& key, alias_producer created, int16_t error) {
    if (error != 0) {
        finish(key, error, {});
        return;
    }
    int32_t partition = pending_[key].partition;
    std::optional<alias_record_value> winner = server_.store().aliases(partition).resolve(key);
    if (!winner) {
        // Our own candidate was acknowledged: a tombstone racing it hides it, or a client
        // transaction open on the store partition (TxnOffsetCommit) keeps it past the last
        // stable offset until that transaction ends. The client retries either way.
        finish(key, offset_store::unavailable_error, {});
        return;
    }
    bump(winner->alias == created ? server_.metrics().producer_aliases_created
                                  : server_.metrics().producer_aliases_from_store);
    int64_t now_ms = offset_store::wall_clock_ms();
    winner->used_ms = now_ms;
    registry_.remember(key, *winner, now_ms);
    touch(key, *winner);
    finish(key, 0, winner->alias);
    expire(partition);
}

void alias_resolver::finish(const alias_key& key, int16_t error, alias_producer alias) {
    auto found = pending_.find(key);
    if (found == pending_.end()) return;
    std::vector<alias_done> waiters = std::move(found->second.waiters);
    pending_.erase(found);
    if (error != 0) bump(server_.metrics().producer_alias_failures);
    for (auto& waiter : waiters) waiter(error, alias);
}

void alias_resolver::touch(const alias_key& key, const alias_record_value& record) {
    store_record resolved;
    resolved.alias = alias_record_key{key, {}};
    resolved.alias_value = record;
    int32_t partition = alias_store_partition(key.producer_id, server_.store().partitions());
    server_.store().write(partition, {std::move(resolved)}, [](int16_t) {});
}

void alias_resolver::expire(int32_t partition) {
    int64_t now_ms = offset_store::wall_clock_ms();
    int64_t& last = expired_at_ms_[partition];
    if (now_ms - last < expiry_pass_interval_ms) return;
    last = now_ms;
    int64_t idle_before_ms = now_ms - int64_t(server_.config().producers.alias_idle_ms);
    const alias_index& index = server_.store().aliases(partition);
    std::vector<store_record> tombstones;
    for (const auto& [key, superseded] : index.expired(idle_before_ms)) {
        // Idle by the store's account but used here lately: its next touch records the use.
        if (!superseded && registry_.used_since(key, idle_before_ms)) continue;
        for (alias_record_key& record : index.records_of(key)) {
            store_record tombstone;
            tombstone.alias = std::move(record);
            tombstones.push_back(std::move(tombstone));
        }
        bump(server_.metrics().producer_aliases_tombstoned);
    }
    if (!tombstones.empty()) server_.store().write(partition, std::move(tombstones), [](int16_t) {});
}

}  // namespace kpp

// Mapping registry: which (virtual, physical) partition counts apply to a topic.
//
// Lookup order, fixed by the design: a rule whose key is literally the topic name,
// then regex rules in file order, then the global default. Names starting with "__"
// (Kafka's internal topics and the proxy's offset store) are never mapped.
//
// Threading: lookups memoise results in a mutable cache without locking. Each reactor
// thread owns its own registry instance, so never share one across threads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "remap/std_regex.h"

#include "proxy/config.h"

namespace kpp {

struct topic_mapping {
  int32_t virtual_partitions = 0, physical_partitions = 0;
  enum class source { none, exact, regex, global_default } from = source::none;
  bool remapped() const { return virtual_partitions > physical_partitions && physical_partitions > 0; }
};

bool is_internal_topic(std::string_view topic);

class mapping_registry {
 public:
  // Bounds the memo of lookups; a client can name arbitrarily many topics.
  static constexpr std::size_t cache_entries_max = 10000;

  // Compiles the regex rules now so lookups never fail; throws config_error for a
  // bad pattern (load_config_* has already rejected those).
  explicit mapping_registry(const mapping_settings& settings);

  topic_mapping lookup(std::string_view topic) const;

  // As lookup(), plus the slot of the caller's per-topic counters for a remapped topic.
  // `assign_slot(topic)` runs the first time this registry's memo meets the topic (again
  // after the memo was cleared, or in a registry built by a reload: slots must therefore be
  // stable per name) and its answer is kept beside the mapping, so a data path indexes its
  // counters with no second lookup. Topics that are not remapped get no_slot.
  static constexpr uint32_t no_slot = UINT32_MAX;
  struct counted_mapping {
    topic_mapping mapping;
    uint32_t slot = no_slot;
  };
  template <class AssignSlot>
  counted_mapping lookup_counted(std::string_view topic, AssignSlot&& assign_slot) const {
    memo_entry& entry = memo(topic);
    if (entry.slot == no_slot && entry.mapping.remapped()) entry.slot = assign_slot(topic);
    return {entry.mapping, entry.slot};
  }

  // False when no rule and no default has V > P: every topic passes through untouched, and
  // the data path need not look inside requests at all.
  bool remaps_anything() const { return remaps_anything_; }

  // Start-up summary, one line per default and rule, joined by '\n'.
  std::string describe() const;

 private:
  struct rule {
    std::string pattern;
    bool is_regex = false;
    std::regex compiled;  // only for is_regex
    topic_mapping mapping;
  };

  // Lets the cache be probed with a string_view without building a std::string.
  struct string_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
  };
  using topic_map = std::unordered_map<std::string, topic_mapping, string_hash, std::equal_to<>>;

  struct memo_entry {
    topic_mapping mapping;
    uint32_t slot = no_slot;
  };
  using memo_map = std::unordered_map<std::string, memo_entry, string_hash, std::equal_to<>>;

  topic_mapping resolve(std::string_view topic) const;
  memo_entry& memo(std::string_view topic) const;

  std::vector<rule> rules_;       // file order, for regex precedence and describe()
  topic_map literal_rules_;       // every rule key, regex or not, matched as a literal name
  topic_mapping default_mapping_;
  bool remaps_anything_ = false;
  mutable memo_map cache_;
};

}  // namespace kpp

#include "remap/mapping.h"

namespace kpp {
namespace {

std::string ratio_text(const topic_mapping& mapping) {
  if (mapping.physical_partitions <= 0) return "pass-through";
  return std::to_string(mapping.virtual_partitions / mapping.physical_partitions) + ":1";
}

}  // namespace

bool is_internal_topic(std::string_view topic) { return topic.starts_with("__"); }

mapping_registry::mapping_registry(const mapping_settings& settings) {
  if (settings.physical_partitions > 0) {
    default_mapping_ = {settings.virtual_partitions, settings.physical_partitions,
                        topic_mapping::source::global_default};
  }
  for (const topic_mapping_rule& setting : settings.topics) {
    rule entry;
    entry.pattern = setting.pattern;
    entry.is_regex = setting.is_regex;
    entry.mapping = {setting.virtual_partitions, setting.physical_partitions,
                     setting.is_regex ? topic_mapping::source::regex : topic_mapping::source::exact};
    if (setting.is_regex) {
      try {
        entry.compiled = std::regex(setting.pattern, std::regex::ECMAScript | std::regex::optimize);
      } catch (const std::regex_error& error) {
        throw config_error("mapping.topics." + setting.pattern + ": invalid regular expression: " + error.what());
      }
    }
    // Topic names may contain '.', which makes a key a regex; a topic spelled exactly
    // like the key still counts as an exact hit, ahead of every other regex.
    topic_mapping literal = entry.mapping;
    literal.from = topic_mapping::source::exact;
    literal_rules_.emplace(setting.pattern, literal);
    remaps_anything_ = remaps_anything_ || entry.mapping.remapped();
    rules_.push_back(std::move(entry));
  }
  remaps_anything_ = remaps_anything_ || default_mapping_.remapped();
}

topic_mapping mapping_registry::resolve(std::string_view topic) const {
  if (is_internal_topic(topic)) return {};
  if (auto literal = literal_rules_.find(topic); literal != literal_rules_.end()) return literal->second;
  for (const rule& entry : rules_) {
    if (entry.is_regex && std::regex_match(topic.begin(), topic.end(), entry.compiled)) return entry.mapping;
  }
  return default_mapping_;
}

mapping_registry::memo_entry& mapping_registry::memo(std::string_view topic) const {
  if (auto cached = cache_.find(topic); cached != cache_.end()) return cached->second;
  topic_mapping mapping = resolve(topic);
  // Clearing wholesale is crude but keeps memory bounded with no bookkeeping; the
  // working set of topic names refills it quickly.
  if (cache_.size() >= cache_entries_max) cache_.clear();
  return cache_.emplace(std::string(topic), memo_entry{mapping, no_slot}).first->second;
}

topic_mapping mapping_registry::lookup(std::string_view topic) const { return memo(topic).mapping; }

std::string mapping_registry::describe() const {
  std::string text;
  if (default_mapping_.physical_partitions > 0) {
    text = "Mapping: " + std::to_string(default_mapping_.virtual_partitions) + " virtual -> " +
           std::to_string(default_mapping_.physical_partitions) + " physical partitions (" +
           ratio_text(default_mapping_) + ")";
  } else {
    text = "Mapping: no default (unmapped topics pass through)";
  }
  for (const rule& entry : rules_) {
    text += "\nMapping for '" + entry.pattern + "' (" + (entry.is_regex ? "regex" : "exact") +
            "): " + std::to_string(entry.mapping.virtual_partitions) + " virtual -> " +
            std::to_string(entry.mapping.physical_partitions) + " physical (" + ratio_text(entry.mapping) + ")";
  }
  return text;
}

}  // namespace kpp

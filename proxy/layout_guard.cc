#include "proxy/layout_guard.h"

#include <regex>

#include "remap/mapping.h"

namespace kpp {

std::string mapping_rule_key(const mapping_settings& settings, const std::string& topic) {
    if (is_internal_topic(topic)) return {};
    for (const topic_mapping_rule& rule : settings.topics)
        if (rule.pattern == topic) return "mapping.topics." + rule.pattern;
    for (const topic_mapping_rule& rule : settings.topics) {
        if (!rule.is_regex) continue;
        try {
            if (std::regex_match(topic, std::regex(rule.pattern))) return "mapping.topics." + rule.pattern;
        } catch (const std::regex_error&) {
        }
    }
    return settings.physical_partitions > 0 ? "mapping (default)" : "";
}

layout_check check_topic_layouts(const mapping_settings& next, const mapping_settings* running,
                                 const layout_snapshot& snapshot, int64_t now_ms) {
    layout_check result;
    mapping_registry next_registry(next);
    std::optional<mapping_registry> running_registry;
    if (running) running_registry.emplace(*running);
    for (const auto& [topic, physical_seen] : snapshot.cluster_topics) {
        topic_mapping mapping = next_registry.lookup(topic);
        topic_layout wanted{mapping.virtual_partitions, mapping.physical_partitions, now_ms};
        std::optional<topic_layout> before;
        if (auto found = snapshot.recorded.find(topic); found != snapshot.recorded.end()) before = found->second;
        if (running_registry) {
            topic_mapping served = running_registry->lookup(topic);
            if (served.remapped() && (!before || served.virtual_partitions > before->virtual_partitions ||
                                      served.physical_partitions != before->physical_partitions))
                before = topic_layout{served.virtual_partitions, served.physical_partitions, now_ms};
        }
        if (!mapping.remapped() && !before) continue;
        std::string key = mapping_rule_key(next, topic);
        if (before) {
            std::string refusal = layout_change_refusal(topic, *before, wanted, key.empty() ? "mapping" : key);
            if (!refusal.empty()) result.refusals.push_back(std::move(refusal));
        }
        if (mapping.remapped()) {
            auto recorded = snapshot.recorded.find(topic);
            if (recorded == snapshot.recorded.end() ||
                recorded->second.virtual_partitions != wanted.virtual_partitions ||
                recorded->second.physical_partitions != wanted.physical_partitions)
                result.to_record[topic] = wanted;
        }
        topic_view view;
        view.topic = topic;
        view.rule = key;
        view.virtual_partitions = mapping.virtual_partitions;
        view.physical_partitions = mapping.physical_partitions;
        view.physical_seen = physical_seen;
        if (auto recorded = snapshot.recorded.find(topic); recorded != snapshot.recorded.end())
            view.recorded = recorded->second;
        result.topics.push_back(std::move(view));
    }
    return result;
}

}  // namespace kpp

#include "remap/produce_plan.h"

#include <map>
#include <utility>

namespace kpp {

produce_plan plan_produce(std::span<const produce_entry> entries, const mapping_lookup& lookup) {
    produce_plan plan;
    // How many entries already aim at each (topic, physical partition): the next one goes
    // to the round after.
    std::map<std::pair<std::string_view, int32_t>, size_t> uses;
    for (size_t index = 0; index < entries.size(); ++index) {
        const produce_entry& entry = entries[index];
        topic_mapping mapping = lookup(entry.topic);
        planned_entry planned{index, entry.partition, false};
        if (mapping.remapped()) {
            if (entry.partition < 0 || entry.partition >= mapping.virtual_partitions) {
                plan.rejected.push_back(index);
                continue;
            }
            planned.physical_partition = entry.partition % mapping.physical_partitions;
            planned.tag = true;
        }
        size_t round = uses[{entry.topic, planned.physical_partition}]++;
        if (round == plan.rounds.size()) plan.rounds.emplace_back();
        plan.rounds[round].push_back(planned);
    }
    return plan;
}

}  // namespace kpp

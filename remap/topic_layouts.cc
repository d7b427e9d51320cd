#include "remap/topic_layouts.h"

#include "protocol/wire.h"

namespace kpp {
namespace {

constexpr int16_t value_format = 0;

}  // namespace

std::vector<std::byte> encode_layout_key(std::string_view topic) {
    protocol::wire_writer writer;
    writer.write_int16(layout_key_kind);
    writer.write_string(topic, false);
    return std::move(writer.bytes());
}

std::vector<std::byte> encode_layout_value(const topic_layout& layout) {
    protocol::wire_writer writer;
    writer.write_int16(value_format);
    writer.write_int32(layout.virtual_partitions);
    writer.write_int32(layout.physical_partitions);
    writer.write_int64(layout.recorded_ms);
    return std::move(writer.bytes());
}

bool is_layout_key(std::span<const std::byte> key) {
    return key.size() >= 2 && protocol::load_int16_be(key.data()) == layout_key_kind;
}

std::optional<std::string> decode_layout_key(std::span<const std::byte> bytes) {
    protocol::wire_reader reader(bytes);
    if (reader.read_int16() != layout_key_kind || !reader.ok()) return std::nullopt;
    auto topic = reader.read_string(false, false);
    if (!reader.ok() || reader.remaining() != 0 || !topic || topic->empty()) return std::nullopt;
    return std::string(*topic);
}

std::optional<topic_layout> decode_layout_value(std::span<const std::byte> bytes) {
    protocol::wire_reader reader(bytes);
    if (reader.read_int16() != value_format || !reader.ok()) return std::nullopt;
    topic_layout layout;
    layout.virtual_partitions = reader.read_int32();
    layout.physical_partitions = reader.read_int32();
    layout.recorded_ms = reader.read_int64();
    if (!reader.ok() || reader.remaining() != 0 || layout.physical_partitions <= 0 ||
        layout.virtual_partitions <= layout.physical_partitions)
        return std::nullopt;
    return layout;
}

std::string layout_change_refusal(std::string_view topic, const topic_layout& before, const topic_layout& next,
                                  std::string_view key) {
    std::string name = "topic '" + std::string(topic) + "'";
    std::string was = " (served with V = " + std::to_string(before.virtual_partitions) +
                      ", P = " + std::to_string(before.physical_partitions) + ")";
    bool still_mapped = next.physical_partitions > 0 && next.virtual_partitions > next.physical_partitions;
    if (!still_mapped)
        return std::string(key) + ": " + name + was + " would no longer be remapped; the records of its virtual " +
               "partitions " + std::to_string(before.physical_partitions) + ".." +
               std::to_string(before.virtual_partitions - 1) + " would be stranded";
    if (next.physical_partitions != before.physical_partitions)
        return std::string(key) + ": " + name + was + " cannot change P to " +
               std::to_string(next.physical_partitions) + ": every virtual partition would move to another physical one";
    if (next.virtual_partitions < before.virtual_partitions)
        return std::string(key) + ": " + name + was + " cannot lower V to " + std::to_string(next.virtual_partitions) +
               ": the records of virtual partitions " + std::to_string(next.virtual_partitions) + ".." +
               std::to_string(before.virtual_partitions - 1) + " would be stranded";
    return {};
}

}  // namespace kpp

#include "proxy/exchange.h"

#include <algorithm>
#include <array>

#include "protocol/api.h"
#include "proxy/upstream_link.h"

namespace kpp {

namespace handlers {
exchange_start start_produce(exchange_env& env, const client_request& request);
bool produce_names_mapped_topic(const remap_state& remap, const protocol::frame& request);
exchange_start start_fetch(exchange_env& env, const client_request& request);
exchange_start start_list_offsets(exchange_env& env, const client_request& request);
exchange_start start_offset_for_leader_epoch(exchange_env& env, const client_request& request);
exchange_start start_describe_producers(exchange_env& env, const client_request& request);
exchange_start start_add_partitions_to_txn(exchange_env& env, const client_request& request);
exchange_start start_delete_records(exchange_env& env, const client_request& request);
exchange_start start_create_topics(exchange_env& env, const client_request& request);
exchange_start start_create_partitions(exchange_env& env, const client_request& request);
exchange_start start_offset_commit(exchange_env& env, const client_request& request);
exchange_start start_txn_offset_commit(exchange_env& env, const client_request& request);
exchange_start start_offset_fetch(exchange_env& env, const client_request& request);
exchange_start start_offset_delete(exchange_env& env, const client_request& request);
exchange_start start_delete_groups(exchange_env& env, const client_request& request);
}  // namespace handlers

namespace {

struct starter_registration {
    int16_t api_key;
    exchange_starter start;
};

constexpr std::array starters{
    starter_registration{0, &handlers::start_produce},
    starter_registration{1, &handlers::start_fetch},
    starter_registration{2, &handlers::start_list_offsets},
    starter_registration{8, &handlers::start_offset_commit},
    starter_registration{9, &handlers::start_offset_fetch},
    starter_registration{19, &handlers::start_create_topics},
    starter_registration{21, &handlers::start_delete_records},
    starter_registration{23, &handlers::start_offset_for_leader_epoch},
    starter_registration{24, &handlers::start_add_partitions_to_txn},
    starter_registration{28, &handlers::start_txn_offset_commit},
    starter_registration{37, &handlers::start_create_partitions},
    starter_registration{42, &handlers::start_delete_groups},
    starter_registration{47, &handlers::start_offset_delete},
    starter_registration{61, &handlers::start_describe_producers},
};

}  // namespace

exchange_starter find_exchange_starter(const remap_state& remap, int16_t api_key, const protocol::frame& request) {
    if (!remap.mappings.remaps_anything()) return nullptr;
    for (const auto& entry : starters) {
        if (entry.api_key != api_key) continue;
        if (api_key == protocol::api_key::produce && !handlers::produce_names_mapped_topic(remap, request))
            return nullptr;
        return entry.start;
    }
    return nullptr;
}

void send_upstream(exchange_env& env, int16_t api_key, int16_t api_version, const reactor::byte_slice& header_tail,
                   std::vector<reactor::byte_slice>&& body, bool expects_response) {
    send_upstream_on(env.upstream, env, api_key, api_version, header_tail, std::move(body), expects_response);
}

void send_upstream_on(upstream_link& link, exchange_env& env, int16_t api_key, int16_t api_version,
                      const reactor::byte_slice& header_tail, std::vector<reactor::byte_slice>&& body,
                      bool expects_response) {
    std::vector<reactor::byte_slice> pieces;
    pieces.reserve(body.size() + 1);
    pieces.push_back(header_tail);
    for (auto& piece : body) pieces.push_back(std::move(piece));
    link.send_built(api_key, api_version, std::move(pieces), env.sequence, expects_response);
}

void piece_builder::flush() {
    if (writer_.size() == 0) return;
    reactor::shared_bytes bytes = reactor::shared_bytes::copy_of(writer_.bytes());
    uint32_t length = uint32_t(writer_.size());
    out_.push_back(reactor::byte_slice{std::move(bytes), 0, length});
    size_ += length;
    writer_.bytes().clear();
}

void piece_builder::append(const reactor::byte_slice& slice) {
    if (slice.length == 0) return;
    flush();
    out_.push_back(slice);
    size_ += slice.length;
}

void piece_builder::append(const std::vector<reactor::byte_slice>& slices) {
    for (const auto& slice : slices) append(slice);
}

std::vector<reactor::byte_slice> piece_builder::finish() {
    flush();
    size_ = 0;
    return std::move(out_);
}

namespace exchange_util {

std::vector<reactor::byte_slice> response_pieces(int16_t api_key, int16_t version, std::vector<std::byte>&& body) {
    std::vector<reactor::byte_slice> pieces;
    if (protocol::response_header_is_flexible(api_key, version)) {
        reactor::shared_bytes tagged = reactor::shared_bytes::allocate(1);
        tagged.data()[0] = std::byte{0};
        pieces.push_back(reactor::byte_slice{std::move(tagged), 0, 1});
    }
    uint32_t length = uint32_t(body.size());
    pieces.push_back(reactor::byte_slice{reactor::shared_bytes::copy_of(body), 0, length});
    return pieces;
}

std::optional<reactor::byte_slice> response_body(const protocol::frame& response, int16_t api_key, int16_t version) {
    reactor::byte_slice whole = response.contiguous();
    auto offset = protocol::response_body_offset(whole.span(), api_key, version);
    if (!offset) return std::nullopt;
    return reactor::byte_slice{whole.owner, whole.offset + *offset, whole.length - *offset};
}

void slices_of(const protocol::frame& frame, size_t offset, size_t length, std::vector<reactor::byte_slice>& out) {
    slices_of(std::span<const reactor::byte_slice>(frame.pieces), offset, length, out);
}

void slices_of(std::span<const reactor::byte_slice> pieces, size_t offset, size_t length,
               std::vector<reactor::byte_slice>& out) {
    size_t piece_start = 0;
    for (const auto& piece : pieces) {
        if (length == 0) return;
        size_t piece_end = piece_start + piece.length;
        if (offset < piece_end) {
            size_t within = offset - piece_start;
            size_t take = std::min<size_t>(length, piece.length - within);
            out.push_back(reactor::byte_slice{piece.owner, uint32_t(piece.offset + within), uint32_t(take)});
            offset += take;
            length -= take;
        }
        piece_start = piece_end;
    }
}

std::optional<std::vector<std::string>> old_request_topics(int16_t api_key, int16_t version,
                                                           std::span<const std::byte> body) {
    protocol::wire_reader reader(body);
    size_t partition_bytes = 0;  // each partition entry's fixed part
    bool records = false;
    if (api_key == protocol::api_key::produce) {
        reader.read_int16();  // acks
        reader.read_int32();  // timeout
        partition_bytes = 4;
        records = true;
    } else if (api_key == protocol::api_key::fetch) {
        reader.skip(version >= 3 ? 16 : 12);  // replica id, max wait, min bytes (, max bytes)
        partition_bytes = 16;
    } else if (api_key == protocol::api_key::list_offsets) {
        reader.read_int32();  // replica id
        partition_bytes = 16;
    } else {
        return std::nullopt;
    }
    std::vector<std::string> names;
    int32_t topics = reader.read_array_length(false, false);
    for (int32_t t = 0; t < topics && reader.ok(); ++t) {
        names.emplace_back(reader.read_string(false, false).value_or(std::string_view{}));
        int32_t partitions = reader.read_array_length(false, false);
        for (int32_t p = 0; p < partitions && reader.ok(); ++p) {
            reader.skip(partition_bytes);
            if (records) reader.skip_bytes_field(false, true);
        }
    }
    if (!reader.ok()) return std::nullopt;
    return names;
}

exchange_start refuse_old_version_if_mapped(exchange_env& env, const client_request& request) {
    exchange_start start;
    int16_t key = request.header.fixed.api_key;
    int16_t version = request.header.fixed.api_version;
    auto names = old_request_topics(key, version, request.body());
    if (!names) return start;
    for (const auto& name : *names) {
        if (!env.remap.mappings.lookup(name).remapped()) continue;
        start.what = exchange_start::kind::refuse;
        start.reason = std::string(protocol::api_name(key)) + " v" + std::to_string(version) + " names mapped topic '" +
                       name + "': virtual partitions need a newer version (Produce v3+, Fetch v4+, ListOffsets v1+)";
        return start;
    }
    return start;
}

}  // namespace exchange_util
}  // namespace kpp

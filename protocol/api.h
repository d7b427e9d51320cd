// Per-API facts the proxy needs before anything else: the name, the first flexible
// version (which decides request header v1 vs v2 and response header v0 vs v1) and the
// version range this proxy can rewrite. Hand-kept for now; the schema generator of the
// protocol layer replaces this table.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace kpp::protocol {

namespace api_key {
inline constexpr int16_t produce = 0;
inline constexpr int16_t fetch = 1;
inline constexpr int16_t list_offsets = 2;
inline constexpr int16_t metadata = 3;
inline constexpr int16_t offset_commit = 8;
inline constexpr int16_t offset_fetch = 9;
inline constexpr int16_t find_coordinator = 10;
inline constexpr int16_t join_group = 11;
inline constexpr int16_t heartbeat = 12;
inline constexpr int16_t leave_group = 13;
inline constexpr int16_t sync_group = 14;
inline constexpr int16_t sasl_handshake = 17;
inline constexpr int16_t api_versions = 18;
inline constexpr int16_t init_producer_id = 22;
inline constexpr int16_t add_partitions_to_txn = 24;
inline constexpr int16_t add_offsets_to_txn = 25;
inline constexpr int16_t end_txn = 26;
inline constexpr int16_t txn_offset_commit = 28;
inline constexpr int16_t describe_producers = 61;
inline constexpr int16_t describe_cluster = 60;
inline constexpr int16_t count_known = 93;  // keys below this have a name in the table
}  // namespace api_key

struct api_info {
    std::string_view name;
    int16_t first_flexible_version;  // -1: never flexible
};

// Known keys; nullopt for keys this build has never heard of (still forwarded untouched).
std::optional<api_info> find_api(int16_t key);
std::string_view api_name(int16_t key);  // "Unknown(123)" style names are not kept: "Unknown"

bool request_header_is_flexible(int16_t key, int16_t version);
// ApiVersions responses always use header v0, so clients can parse them before knowing versions.
bool response_header_is_flexible(int16_t key, int16_t version);

// The versions this proxy understands for an API it rewrites; nullopt when it forwards the
// API without decoding (then the broker's range is advertised unchanged).
struct version_range {
    int16_t min;
    int16_t max;
};
std::optional<version_range> proxy_rewrite_range(int16_t key);
// APIs unsafe under remapping, never advertised (requests for them are still forwarded:
// a connection is never closed over an API key).
bool withheld_under_remapping(int16_t key);

}  // namespace kpp::protocol

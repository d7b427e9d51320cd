// Reactor limits in one place, checked against each other at compile time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kpp::reactor::limits {

inline constexpr uint32_t submission_entries_default = 1024;
inline constexpr uint32_t completion_entries_default = 16384;  // large CQ: multishot ops post many CQEs
inline constexpr uint32_t completion_batch_max = 256;          // CQEs reaped before running callbacks
inline constexpr uint16_t buffer_count_default = 256;          // provided buffers per core for clients (power of two)
// A ring of its own for broker connections: requests that wait for a broker's answer pin
// client buffers, and if they shared one ring the answer that releases them could not be
// read (a slow broker stalled the whole core until the request timeout).
inline constexpr uint16_t upstream_buffer_count_default = 256;
inline constexpr uint32_t buffer_bytes_default = 32 * 1024;
inline constexpr uint32_t zero_copy_send_bytes_min = 16 * 1024;  // below this a copy is cheaper
inline constexpr uint32_t send_iovecs_max = 64;                  // iovecs gathered into one sendmsg
inline constexpr uint32_t mailbox_slots = 4096;                  // cross-core messages queued per pair
inline constexpr uint32_t listen_backlog = 4096;
inline constexpr uint32_t shards_max = 1024;

static_assert(completion_entries_default >= 2 * submission_entries_default,
              "multishot operations need CQ headroom over the SQ");
static_assert(completion_batch_max <= completion_entries_default);
static_assert((upstream_buffer_count_default & (upstream_buffer_count_default - 1)) == 0,
              "a provided buffer ring holds a power-of-two count");
static_assert((buffer_count_default & (buffer_count_default - 1)) == 0,
              "a provided buffer ring holds a power-of-two count");
static_assert(buffer_count_default <= 32768, "buffer ids are 16-bit");
static_assert(zero_copy_send_bytes_min >= 4096);
static_assert((mailbox_slots & (mailbox_slots - 1)) == 0);
static_assert(send_iovecs_max <= 1024, "IOV_MAX");

}  // namespace kpp::reactor::limits

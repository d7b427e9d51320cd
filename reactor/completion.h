// The unit of asynchronous work: a caller-owned completion whose address rides in the
// io_uring user_data. No allocation per operation; the owner keeps the completion alive
// until its final CQE (one without IORING_CQE_F_MORE) has been delivered.
#pragma once

#include <cstdint>

namespace kpp::reactor {

struct completion;
using completion_callback = void (*)(completion& self, int32_t result, uint32_t flags);

struct completion {
    completion_callback callback = nullptr;
    void* context = nullptr;  // the owning object, for callbacks written as free functions

    template <typename owner_type>
    owner_type& owner() const { return *static_cast<owner_type*>(context); }
};

// user_data values with this bit set were posted by another ring (IORING_OP_MSG_RING):
// they are messages, not operations of this ring, and are not counted as in flight.
inline constexpr uint64_t user_data_remote_bit = 1;
// user_data 0 marks fire-and-forget operations (link timeouts, cancels) whose CQEs are ignored.
inline constexpr uint64_t user_data_ignored = 0;

}  // namespace kpp::reactor

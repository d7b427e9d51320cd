// Provided-buffer ring (one per core) and the byte handles that keep received memory
// alive until whatever was forwarded from it has been sent.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace kpp::reactor {

class buffer_pool;

// A reference-counted handle to bytes owned either by a provided buffer (returned to the
// kernel's ring when the last handle goes) or by a heap block. Shard-local: the count is
// not atomic, so a handle never crosses cores.
class shared_bytes {
public:
    shared_bytes() = default;
    static shared_bytes allocate(size_t size_bytes);  // heap block, contents uninitialised
    static shared_bytes copy_of(std::span<const std::byte> bytes);

    shared_bytes(const shared_bytes& other) noexcept : block_(other.block_) { retain(); }
    shared_bytes(shared_bytes&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
    shared_bytes& operator=(const shared_bytes& other) noexcept;
    shared_bytes& operator=(shared_bytes&& other) noexcept;
    ~shared_bytes() { release(); }

    explicit operator bool() const { return block_ != nullptr; }
    std::byte* data() const;
    size_t size() const;
    uint32_t use_count() const;
    // A provided buffer of a ring (given back to the kernel when the last handle goes), not
    // a heap block.
    bool pooled() const;

    struct block;  // public for buffer_pool only

private:
    friend class buffer_pool;
    explicit shared_bytes(block* owned) : block_(owned) {}
    void retain() const;
    void release();
    block* block_ = nullptr;
};

// A view into shared bytes that holds a reference: what framing hands to the proxy.
struct byte_slice {
    shared_bytes owner;
    uint32_t offset = 0;
    uint32_t length = 0;

    const std::byte* data() const { return owner.data() + offset; }
    std::span<const std::byte> span() const { return {data(), length}; }
};

class buffer_pool {
public:
    // Registers a ring of `count` buffers of `buffer_bytes` each under `group_id`.
    buffer_pool(io_uring& ring, uint16_t group_id, uint16_t count, uint32_t buffer_bytes);
    ~buffer_pool();
    buffer_pool(const buffer_pool&) = delete;
    buffer_pool& operator=(const buffer_pool&) = delete;

    uint16_t group_id() const { return group_id_; }
    uint32_t buffer_bytes() const { return buffer_bytes_; }
    uint16_t count() const { return count_; }
    uint32_t available() const { return available_; }

    // Takes ownership of buffer `id` that the kernel filled with `length` bytes.
    shared_bytes claim(uint16_t id, uint32_t length);

    // Called whenever buffers go back to the kernel, so receivers stalled on -ENOBUFS re-arm.
    void set_replenished_callback(void (*callback)(void* context), void* context) {
        replenished_callback_ = callback;
        replenished_context_ = context;
    }

private:
    friend class shared_bytes;
    void give_back(uint16_t id);

    io_uring& ring_;
    io_uring_buf_ring* buf_ring_ = nullptr;
    std::byte* memory_ = nullptr;
    size_t ring_map_bytes_ = 0;
    size_t memory_bytes_ = 0;
    uint16_t group_id_;
    uint16_t count_;
    uint32_t buffer_bytes_;
    uint32_t available_ = 0;
    std::vector<shared_bytes::block> blocks_;
    void (*replenished_callback_)(void*) = nullptr;
    void* replenished_context_ = nullptr;
};

struct shared_bytes::block {
    std::byte* data = nullptr;
    uint32_t size = 0;
    uint32_t refs = 0;
    buffer_pool* pool = nullptr;  // null for heap blocks
    uint16_t buffer_id = 0;
};

inline std::byte* shared_bytes::data() const { return block_ ? block_->data : nullptr; }
inline size_t shared_bytes::size() const { return block_ ? block_->size : 0; }
inline uint32_t shared_bytes::use_count() const { return block_ ? block_->refs : 0; }
inline bool shared_bytes::pooled() const { return block_ && block_->pool; }
inline void shared_bytes::retain() const {
    if (block_) ++block_->refs;
}

}  // namespace kpp::reactor

#include "reactor/buffer_pool.h"

#include <sys/mman.h>

#include <cassert>
#include <cstdlib>
#include <cstring>
#include <new>

#include "reactor/errors.h"

namespace kpp::reactor {

shared_bytes shared_bytes::allocate(size_t size_bytes) {
    // One allocation holds the header and the bytes.
    void* memory = std::malloc(sizeof(block) + size_bytes);
    if (!memory) throw std::bad_alloc();
    auto* owned = new (memory) block{};
    owned->data = reinterpret_cast<std::byte*>(owned + 1);
    owned->size = static_cast<uint32_t>(size_bytes);
    owned->refs = 1;
    return shared_bytes(owned);
}

shared_bytes shared_bytes::copy_of(std::span<const std::byte> bytes) {
    shared_bytes result = allocate(bytes.size());
    if (!bytes.empty()) std::memcpy(result.data(), bytes.data(), bytes.size());
    return result;
}

shared_bytes& shared_bytes::operator=(const shared_bytes& other) noexcept {
    if (this != &other) {
        other.retain();
        release();
        block_ = other.block_;
    }
    return *this;
}

shared_bytes& shared_bytes::operator=(shared_bytes&& other) noexcept {
    if (this != &other) {
        release();
        block_ = std::exchange(other.block_, nullptr);
    }
    return *this;
}

void shared_bytes::release() {
    block* owned = std::exchange(block_, nullptr);
    if (!owned) return;
    assert(owned->refs > 0);
    if (--owned->refs != 0) return;
    if (owned->pool) {
        owned->pool->give_back(owned->buffer_id);
    } else {
        owned->~block();
        std::free(owned);
    }
}

buffer_pool::buffer_pool(io_uring& ring, uint16_t group_id, uint16_t count, uint32_t buffer_bytes)
    : ring_(ring), group_id_(group_id), count_(count), buffer_bytes_(buffer_bytes), blocks_(count) {
    if (count == 0 || (count & (count - 1)) != 0)
        throw reactor_error("buffer pool: buffer count must be a power of two, got " +
                            std::to_string(count));
    ring_map_bytes_ = sizeof(io_uring_buf) * count;
    void* ring_memory = mmap(nullptr, ring_map_bytes_, PROT_READ | PROT_WRITE,
                             MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (ring_memory == MAP_FAILED) throw reactor_error("buffer pool: mmap of the buffer ring failed");
    buf_ring_ = static_cast<io_uring_buf_ring*>(ring_memory);
    io_uring_buf_ring_init(buf_ring_);

    io_uring_buf_reg registration{};
    registration.ring_addr = reinterpret_cast<uint64_t>(buf_ring_);
    registration.ring_entries = count;
    registration.bgid = group_id;
    int rc = io_uring_register_buf_ring(&ring_, &registration, 0);
    if (rc < 0) {
        munmap(buf_ring_, ring_map_bytes_);
        throw reactor_error("buffer pool: provided buffer rings are not supported by this kernel (" +
                            error_text(-rc) + "); Linux 6.1 or newer is required");
    }
    // Buffer memory is reserved, not touched: pages become resident only when the kernel
    // fills them, so idle connections cost nothing here.
    memory_bytes_ = size_t{buffer_bytes} * count;
    void* data = mmap(nullptr, memory_bytes_, PROT_READ | PROT_WRITE,
                      MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (data == MAP_FAILED) {
        io_uring_unregister_buf_ring(&ring_, group_id_);
        munmap(buf_ring_, ring_map_bytes_);
        throw reactor_error("buffer pool: mmap of buffer memory failed");
    }
    memory_ = static_cast<std::byte*>(data);
    int mask = io_uring_buf_ring_mask(count);
    for (uint16_t id = 0; id < count; ++id) {
        blocks_[id].pool = this;
        blocks_[id].buffer_id = id;
        blocks_[id].data = memory_ + size_t{id} * buffer_bytes_;
        io_uring_buf_ring_add(buf_ring_, blocks_[id].data, buffer_bytes_, id, mask, id);
    }
    io_uring_buf_ring_advance(buf_ring_, count);
    available_ = count;
}

buffer_pool::~buffer_pool() {
    io_uring_unregister_buf_ring(&ring_, group_id_);
    munmap(buf_ring_, ring_map_bytes_);
    munmap(memory_, memory_bytes_);
}

shared_bytes buffer_pool::claim(uint16_t id, uint32_t length) {
    assert(id < count_);
    assert(length <= buffer_bytes_);
    shared_bytes::block& owned = blocks_[id];
    assert(owned.refs == 0);
    owned.refs = 1;
    owned.size = length;
    --available_;
    return shared_bytes(&owned);
}

void buffer_pool::give_back(uint16_t id) {
    shared_bytes::block& owned = blocks_[id];
    owned.size = 0;
    io_uring_buf_ring_add(buf_ring_, owned.data, buffer_bytes_, id, io_uring_buf_ring_mask(count_), 0);
    io_uring_buf_ring_advance(buf_ring_, 1);
    ++available_;
    if (replenished_callback_) replenished_callback_(replenished_context_);
}

}  // namespace kpp::reactor

// Builds a rewritten message from the original bytes plus replacements at known offsets:
// untouched ranges are copied once, replaced ranges get new bytes. Used for the small
// control-plane responses whose field lengths change (hosts, arrays).
#pragma once

#include <cassert>
#include <cstddef>
#include <span>
#include <vector>

namespace kpp::protocol {

class splice_builder {
public:
    explicit splice_builder(std::span<const std::byte> original) : original_(original) {
        output_.reserve(original.size() + 64);
    }
    // Replaces original[offset, offset + length) with `replacement`; calls in increasing offset.
    void replace(size_t offset, size_t length, std::span<const std::byte> replacement) {
        assert(offset >= copied_ && offset + length <= original_.size());
        output_.insert(output_.end(), original_.begin() + long(copied_), original_.begin() + long(offset));
        output_.insert(output_.end(), replacement.begin(), replacement.end());
        copied_ = offset + length;
    }
    std::vector<std::byte> finish() {
        output_.insert(output_.end(), original_.begin() + long(copied_), original_.end());
        copied_ = original_.size();
        return std::move(output_);
    }

private:
    std::span<const std::byte> original_;
    std::vector<std::byte> output_;
    size_t copied_ = 0;
};

}  // namespace kpp::protocol

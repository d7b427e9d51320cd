// CRC-32C (Castagnoli), the checksum of Kafka record batch v2 (bytes 21..end of a batch).
// Values are the finished CRC (initial ~0, final inversion), so crc32c_extend can continue a
// checksum across several pieces: crc32c(a + b) == crc32c_extend(crc32c(a), b).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace kpp::protocol {

// SSE4.2 when the CPU has it (checked once at run time), else the portable tables.
uint32_t crc32c_extend(uint32_t crc, std::span<const std::byte> bytes);
inline uint32_t crc32c(std::span<const std::byte> bytes) { return crc32c_extend(0, bytes); }

// Table-driven (slicing-by-8), for any CPU; also the reference the hardware path is tested
// against.
uint32_t crc32c_portable_extend(uint32_t crc, std::span<const std::byte> bytes);
inline uint32_t crc32c_portable(std::span<const std::byte> bytes) { return crc32c_portable_extend(0, bytes); }

bool crc32c_hardware_available();

}  // namespace kpp::protocol

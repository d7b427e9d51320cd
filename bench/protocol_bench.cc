// Micro-benchmarks of the protocol layer's hot pieces: framing received chunks and the
// control-plane rewrites. Run with `meson test --benchmark` (suite 'bench').
#include <benchmark/benchmark.h>

#include <string>

#include "protocol/broker_endpoints.h"
#include "protocol/frame.h"
#include "protocol/wire.h"

namespace {

using namespace kpp::protocol;

void frame_assembly(benchmark::State& state) {
    // 64 KiB of back-to-back 1 KiB frames fed in 16 KiB chunks.
    std::string stream;
    for (int i = 0; i < 64; ++i) {
        std::string frame_bytes(4 + 1020, 'r');
        store_int32_be(reinterpret_cast<std::byte*>(frame_bytes.data()), 1020);
        stream += frame_bytes;
    }
    std::vector<byte_slice> chunks;
    for (size_t offset = 0; offset < stream.size(); offset += 16384) {
        auto piece = stream.substr(offset, 16384);
        chunks.push_back(byte_slice{shared_bytes::copy_of(std::as_bytes(std::span(piece.data(), piece.size()))), 0,
                                    uint32_t(piece.size())});
    }
    frame_assembler assembler(1 << 20);
    size_t frames = 0;
    for (auto _ : state) {
        for (const auto& chunk : chunks) assembler.feed(chunk, false, [&](frame&&) { ++frames; });
    }
    state.SetBytesProcessed(int64_t(state.iterations() * stream.size()));
    benchmark::DoNotOptimize(frames);
}
BENCHMARK(frame_assembly);

void metadata_rewrite(benchmark::State& state) {
    wire_writer writer;
    writer.write_int32(1);
    writer.write_int32(0);
    writer.write_array_length(3, false);
    for (int node = 1; node <= 3; ++node) {
        writer.write_int32(node);
        writer.write_string("broker-" + std::to_string(node) + ".kafka.internal", false);
        writer.write_int32(9092);
        writer.write_string("rack", false);
    }
    writer.write_string("cluster", false);
    writer.write_int32(1);
    writer.write_array_length(0, false);
    auto response = writer.bytes();
    for (auto _ : state) {
        auto result = rewrite_metadata_response(response, 7, [](int32_t node) { return endpoint{"proxy", 9100 + node}; });
        benchmark::DoNotOptimize(result.message.data());
    }
}
BENCHMARK(metadata_rewrite);

}  // namespace

BENCHMARK_MAIN();

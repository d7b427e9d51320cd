// Micro-benchmarks of the protocol layer's hot pieces: framing received chunks and the
// control-plane rewrites. Run with `meson test --benchmark` (suite 'bench').
#include <benchmark/benchmark.h>

#include <string>

#include "protocol/broker_endpoints.h"
#include "protocol/frame.h"
#include "protocol/kpp_messages.h"
#include "protocol/segmented_reader.h"
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

// A Fetch response as a broker sends it: 100 partitions of one topic, each with a 1 KiB
// record set. The walker visits every field with a role and skips record bytes.
std::vector<std::byte> fetch_response_of_100_partitions(int16_t version) {
    messages::fetch_response response;
    auto& topic = response.responses.emplace_back();
    topic.topic = "orders";
    for (int32_t partition = 0; partition < 100; ++partition) {
        auto& entry = topic.partitions.emplace_back();
        entry.partition_index = partition;
        entry.high_watermark = 1000 + partition;
        entry.last_stable_offset = entry.high_watermark;
        entry.aborted_transactions.emplace();
        entry.preferred_read_replica = -1;
        entry.records.emplace(1024, std::byte{0x42});
    }
    wire_writer writer;
    messages::encode(response, version, writer);
    return std::move(writer.bytes());
}

struct counting_visitor : messages::walk_visitor {
    size_t fields = 0;
    void on_field(const messages::field_event&) override { ++fields; }
};

void fetch_response_walk(benchmark::State& state) {
    int16_t version = int16_t(state.range(0));
    auto response = fetch_response_of_100_partitions(version);
    counting_visitor visitor;
    for (auto _ : state) {
        wire_reader reader(response);
        benchmark::DoNotOptimize(messages::walk_fetch_response(reader, version, visitor));
    }
    state.counters["fields_per_walk"] = double(visitor.fields) / double(state.iterations());
    state.SetLabel("100 partitions, " + std::to_string(response.size()) + " bytes");
}
BENCHMARK(fetch_response_walk)->Arg(11)->Arg(16);

void fetch_response_walk_in_buffers(benchmark::State& state) {
    // The same response as it lies in 32 KiB receive buffers.
    auto response = fetch_response_of_100_partitions(16);
    std::vector<std::span<const std::byte>> pieces;
    for (size_t offset = 0; offset < response.size(); offset += 32768)
        pieces.push_back(std::span<const std::byte>(response).subspan(offset, std::min<size_t>(32768, response.size() - offset)));
    counting_visitor visitor;
    for (auto _ : state) {
        segmented_reader reader(pieces);
        benchmark::DoNotOptimize(messages::walk_fetch_response(reader, 16, visitor));
    }
}
BENCHMARK(fetch_response_walk_in_buffers);

}  // namespace

BENCHMARK_MAIN();

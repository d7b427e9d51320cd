// Record batch hot paths: CRC-32C, the Produce tag rewrite per codec, and the Fetch
// classification of a batch by its first record's tag.
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "protocol/crc32c.h"
#include "protocol/record_batch.h"
#include "protocol/tag_rewrite.h"

namespace {

using namespace kpp::protocol;

std::vector<std::byte> random_bytes(size_t size) {
    std::mt19937 generator(42);
    std::vector<std::byte> bytes(size);
    for (auto& byte : bytes) byte = std::byte(generator() & 0xff);
    return bytes;
}

void crc32c_hardware_64k(benchmark::State& state) {
    if (!crc32c_hardware_available()) {
        state.SkipWithError("no SSE4.2");
        return;
    }
    auto bytes = random_bytes(64 << 10);
    for (auto _ : state) benchmark::DoNotOptimize(crc32c(bytes));
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(bytes.size()));
}
BENCHMARK(crc32c_hardware_64k);

void crc32c_portable_64k(benchmark::State& state) {
    auto bytes = random_bytes(64 << 10);
    for (auto _ : state) benchmark::DoNotOptimize(crc32c_portable(bytes));
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(bytes.size()));
}
BENCHMARK(crc32c_portable_64k);

// About 16 KiB of records of about 100 bytes each: key, JSON-ish value, one header on some.
struct sample_batch {
    std::vector<std::string> keys, values;
    std::string header_value = "trace-0123456789";
    std::vector<std::byte> bytes;
    size_t uncompressed_bytes = 0;
};

sample_batch make_batch(codec kind, bool tagged = false) {
    sample_batch sample;
    constexpr size_t record_count = 16 * 1024 / 100;
    std::mt19937 generator(7);
    std::vector<record_input> records(record_count);
    sample.keys.resize(record_count);
    sample.values.resize(record_count);
    for (size_t index = 0; index < record_count; ++index) {
        sample.keys[index] = "user-" + std::to_string(generator() % 100000);
        sample.values[index] = "{\"id\":" + std::to_string(generator()) + ",\"event\":\"click\",\"page\":\"/p/" +
                               std::to_string(generator() % 1000) + "\",\"pad\":\"";
        sample.values[index].resize(70, 'x');
        sample.values[index] += "\"}";
        records[index].key = std::as_bytes(std::span(sample.keys[index]));
        records[index].value = std::as_bytes(std::span(sample.values[index]));
        records[index].offset_delta = int32_t(index);
        records[index].timestamp_delta = int64_t(index);
        if (index % 4 == 0) records[index].headers.push_back({"trace", std::as_bytes(std::span(sample.header_value))});
    }
    batch_fields fields;
    fields.compression = kind;
    sample.bytes = build_record_batch(fields, records).bytes;
    fields.compression = codec::none;
    sample.uncompressed_bytes = build_record_batch(fields, records).bytes.size();
    if (tagged) {
        auto owner = shared_bytes::copy_of(sample.bytes);
        auto result = rewrite_batch_tag(byte_slice{owner, 0, uint32_t(sample.bytes.size())}, 3);
        std::vector<std::byte> flat;
        for (const auto& piece : result.pieces) flat.insert(flat.end(), piece.span().begin(), piece.span().end());
        sample.bytes = std::move(flat);
    }
    return sample;
}

void tag_rewrite(benchmark::State& state) {
    codec kind = codec(state.range(0));
    state.SetLabel(to_string(kind));
    sample_batch sample = make_batch(kind);
    shared_bytes owner = shared_bytes::copy_of(sample.bytes);
    byte_slice input{owner, 0, uint32_t(sample.bytes.size())};
    for (auto _ : state) {
        tag_rewrite_result result = rewrite_batch_tag(input, 5);
        if (!result.ok()) state.SkipWithError(to_string(result.error));
        benchmark::DoNotOptimize(result.size_bytes);
    }
    // Throughput in uncompressed record bytes, so the codecs compare.
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(sample.uncompressed_bytes));
}
BENCHMARK(tag_rewrite)->DenseRange(0, 4)->Unit(benchmark::kMicrosecond);

void classify(benchmark::State& state) {
    codec kind = codec(state.range(0));
    state.SetLabel(to_string(kind));
    sample_batch sample = make_batch(kind, true);
    for (auto _ : state) {
        batch_classification classified = classify_batch(sample.bytes);
        if (!classified.has_tag) state.SkipWithError("no tag");
        benchmark::DoNotOptimize(classified.virtual_partition);
    }
}
BENCHMARK(classify)->Arg(int(codec::none))->Arg(int(codec::lz4))->Arg(int(codec::zstd));

}  // namespace

BENCHMARK_MAIN();

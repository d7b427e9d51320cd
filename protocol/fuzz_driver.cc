// Runs a fuzz target without libFuzzer (gcc builds, the sanitizer build in CI): feeds the
// files named on the command line, then a bounded stream of pseudo-random and mutated
// inputs from a fixed seed, so every build exercises every target the same way.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
    size_t iterations = 20000;
    std::vector<std::vector<uint8_t>> corpus;
    for (int index = 1; index < argc; ++index) {
        std::string argument = argv[index];
        if (argument.rfind("--iterations=", 0) == 0) {
            iterations = std::stoul(argument.substr(13));
            continue;
        }
        std::ifstream file(argument, std::ios::binary);
        corpus.emplace_back(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    }
    for (const auto& input : corpus) LLVMFuzzerTestOneInput(input.data(), input.size());
    std::mt19937_64 random(0x6b7070);  // fixed: a failure reproduces
    for (size_t run = 0; run < iterations; ++run) {
        std::vector<uint8_t> input;
        if (!corpus.empty() && run % 2 == 0) {
            input = corpus[run % corpus.size()];
            size_t flips = 1 + random() % 8;
            for (size_t flip = 0; flip < flips && !input.empty(); ++flip) input[random() % input.size()] = uint8_t(random());
        } else {
            input.resize(random() % 512);
            for (auto& byte : input) byte = uint8_t(random() % 4 == 0 ? random() : random() % 8);
        }
        LLVMFuzzerTestOneInput(input.data(), input.size());
    }
    std::printf("%zu corpus inputs and %zu generated inputs ran clean\n", corpus.size(), iterations);
    return 0;
}

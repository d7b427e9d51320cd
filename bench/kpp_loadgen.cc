// kpp-loadgen: a load generator that behaves like a real Kafka client (librdkafka's C API), for
// comparing Kafka proxies on throughput, added latency and CPU per GB (issue 6). Run it once
// against the brokers directly and once through a proxy; the differences are the proxy's cost.
//
// Usage: kpp-loadgen --bootstrap H:P --topic T [--partitions N] [--mode produce|consume|both]
//          [--record-bytes B] [--rate R] [--duration S] [--warmup S] [--linger-ms MS]
//          [--batch-bytes B] [--compression none|lz4|zstd|gzip|snappy] [--acks -1|1|0]
//          [--producers K] [--idempotence 0|1] [-X name=value ...] [--json]
//
// -X passes a librdkafka setting to every producer and the consumer, after the generator's
// own (so it can override them), e.g. -X security.protocol=SSL -X ssl.ca.location=ca.pem.
//
// What it measures, all over a window of --duration seconds that starts after --warmup seconds:
//  - Produce throughput: records (and payload bytes, MB = 10^6 B) acknowledged inside the window.
//  - Ack latency: from a record's send time to its delivery report, for records sent inside the
//    window (acknowledgements that arrive after the window still count: the producers flush).
//  - Consume throughput: records received inside the window.
//  - End-to-end latency: receive time minus the send time the producer wrote into the first 8
//    bytes of the payload (CLOCK_MONOTONIC nanoseconds, so the producer must run on the same
//    machine: the same process in --mode both). In --mode both it covers records sent inside the
//    window and the consumer drains them after it; in --mode consume it covers records received
//    inside the window, which is meaningful only while a producer on this machine is writing.
//
// Coordinated omission: a closed-loop client that sends only when it gets around to it stops
// sending while the system stalls, so the stall hides in few samples. With --rate R > 0 every
// record instead has an intended send time t0 + i/R on a fixed timeline; when the client falls
// behind it sends the overdue records at once, and latency is measured from the *intended* time
// (that time is also the payload's stamp), so a stall shows up in every record it delayed. With
// --rate 0 (as fast as possible) there is no timeline and latency is measured from the actual
// produce() call, which includes time queued in the client (as kafka-producer-perf-test does).
//
// Each of the --producers K threads owns one producer instance and sends to the partitions in
// round robin; the total rate is split evenly between them. The consumer assigns the partitions
// itself (no group rebalance): from the current end in --mode both, from the beginning in
// --mode consume. Exits 1 when it cannot connect within 10 s or when any delivery failed
// (with --acks other than 0), 2 on bad arguments.

#include <librdkafka/rdkafka.h>

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using i64 = int64_t;

i64 now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return i64{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// SIGINT/SIGTERM end the run early; the window then ends when the signal came.
std::atomic<bool> interrupted{false};
std::atomic<i64> interrupted_at{0};
void on_signal(int) {
    if (!interrupted.exchange(true)) interrupted_at = now_ns();  // clock_gettime is signal-safe
}

// Log-linear histogram of microseconds in [1 us, 60 s], like HdrHistogram with two significant
// digits: exact below 128 us, then 64 linear sub-buckets per power of two (error < 1.6%).
// Values outside the range are clamped.
constexpr int kSubBits = 6;
constexpr uint64_t kSub = uint64_t{1} << kSubBits;  // sub-buckets per power of two
constexpr uint64_t kExact = 2 * kSub;                // exact below this

constexpr size_t bucket_index(uint64_t v) {
    if (v < kExact) return v;
    const int shift = std::bit_width(v) - 1 - kSubBits;  // >= 1, so v >> shift is in [64, 128)
    return kExact + (shift - 1) * kSub + ((v >> shift) - kSub);
}

constexpr uint64_t bucket_highest(size_t i) {
    if (i < kExact) return i;
    const uint64_t shift = (i - kExact) / kSub + 1, mantissa = (i - kExact) % kSub + kSub;
    return ((mantissa + 1) << shift) - 1;
}

class Histogram {
public:
    static constexpr uint64_t kMaxUs = 60'000'000;

    void record(i64 us) {
        const uint64_t v = static_cast<uint64_t>(std::clamp<i64>(us, 1, kMaxUs));
        ++counts_[bucket_index(v)];
        ++count_;
        max_ = std::max(max_, v);
    }
    void merge(const Histogram& other) {
        for (size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
        count_ += other.count_;
        max_ = std::max(max_, other.max_);
    }
    uint64_t count() const { return count_; }
    uint64_t max() const { return max_; }
    // The highest value in the bucket holding the q-quantile, capped at the recorded maximum.
    uint64_t percentile(double q) const {
        if (count_ == 0) return 0;
        const auto rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * count_)));
        uint64_t seen = 0;
        for (size_t i = 0; i < kBuckets; ++i) {
            seen += counts_[i];
            if (seen >= rank) return std::min(bucket_highest(i), max_);
        }
        return max_;
    }

private:
    static constexpr size_t kBuckets = bucket_index(kMaxUs) + 1;
    std::vector<uint64_t> counts_ = std::vector<uint64_t>(kBuckets);
    uint64_t count_ = 0, max_ = 0;
};

static_assert(bucket_index(127) == 127 && bucket_index(128) == 128 && bucket_highest(128) == 129);
static_assert(bucket_index(256) == 192 && bucket_highest(bucket_index(1000)) >= 1000);

struct Options {
    std::string bootstrap, topic, mode = "produce", compression = "none", acks = "-1";
    int partitions = 0;  // 0: all the topic has
    int record_bytes = 100, linger_ms = 5, batch_bytes = 1'000'000, producers = 1;
    bool idempotence = false;  // enable.idempotence (acks=all, at most 5 requests in flight)
    double rate = 0, duration = 10, warmup = 2;
    bool json = false;
    std::vector<std::pair<std::string, std::string>> extra_settings;  // -X name=value, in order
    bool produce() const { return mode != "consume"; }
    bool consume() const { return mode != "produce"; }
};

[[noreturn]] void usage(const char* problem) {
    std::fprintf(stderr,
                 "kpp-loadgen: %s\nusage: kpp-loadgen --bootstrap H:P --topic T [--partitions N]"
                 " [--mode produce|consume|both]\n  [--record-bytes B] [--rate R] [--duration S]"
                 " [--warmup S] [--linger-ms MS] [--batch-bytes B]\n  [--compression "
                 "none|lz4|zstd|gzip|snappy] [--acks -1|1|0] [--producers K] [--idempotence 0|1]\n  [-X name=value ...] [--json]\n",
                 problem);
    std::exit(2);
}

double number(const char* flag, const char* text, double low, double high) {
    char* end = nullptr;
    const double value = std::strtod(text, &end);
    if (end == text || *end != '\0' || !(value >= low && value <= high))
        usage((std::string("bad value for ") + flag + ": " + text).c_str());
    return value;
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--json") { o.json = true; continue; }
        if (i + 1 >= argc) usage(("missing value for " + flag).c_str());
        const char* v = argv[++i];
        if (flag == "--bootstrap") o.bootstrap = v;
        else if (flag == "--topic") o.topic = v;
        else if (flag == "--mode") o.mode = v;
        else if (flag == "--compression") o.compression = v;
        else if (flag == "--acks") o.acks = v;
        else if (flag == "--partitions") o.partitions = static_cast<int>(number("--partitions", v, 1, 1e6));
        else if (flag == "--record-bytes") o.record_bytes = static_cast<int>(number("--record-bytes", v, 8, 1e8));
        else if (flag == "--linger-ms") o.linger_ms = static_cast<int>(number("--linger-ms", v, 0, 9e5));
        else if (flag == "--batch-bytes") o.batch_bytes = static_cast<int>(number("--batch-bytes", v, 1, 2e9));
        else if (flag == "--producers") o.producers = static_cast<int>(number("--producers", v, 1, 1024));
        else if (flag == "--idempotence") o.idempotence = number("--idempotence", v, 0, 1) != 0;
        else if (flag == "--rate") o.rate = number("--rate", v, 0, 1e9);
        else if (flag == "--duration") o.duration = number("--duration", v, 0.1, 1e6);
        else if (flag == "--warmup") o.warmup = number("--warmup", v, 0, 1e6);
        else if (flag == "-X") {
            const char* equals = std::strchr(v, '=');
            if (!equals || equals == v) usage((std::string("-X expects name=value, got ") + v).c_str());
            o.extra_settings.emplace_back(std::string(v, equals), std::string(equals + 1));
        }
        else usage(("unknown option " + flag).c_str());
    }
    if (o.bootstrap.empty() || o.topic.empty()) usage("--bootstrap and --topic are required");
    if (o.mode != "produce" && o.mode != "consume" && o.mode != "both") usage("bad --mode");
    if (o.acks != "-1" && o.acks != "1" && o.acks != "0" && o.acks != "all") usage("bad --acks");
    return o;
}

// The measurement window [warm_end, end) on the CLOCK_MONOTONIC timeline that starts at start.
struct Window {
    i64 start = 0, warm_end = 0, end = 0;
    bool contains(i64 t) const { return t >= warm_end && t < end; }
};

void on_error(rd_kafka_t* rk, int err, const char* reason, void*) {
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT) return;  // librdkafka logs these itself
    std::fprintf(stderr, "kpp-loadgen: %s: %s: %s\n", rd_kafka_name(rk),
                 rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err)), reason);
}

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque);

// A producer (with the delivery report callback and its stats as opaque) or a consumer.
rd_kafka_t* make_client(rd_kafka_type_t type, const Options& o,
                        std::vector<std::pair<const char*, std::string>> settings,
                        void* opaque = nullptr) {
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    char error[512];
    // TCP_NODELAY as the Java client does: with Nagle (librdkafka's default) a request that
    // follows an unacknowledged one can wait ~40 ms for a delayed ACK, which is noise here.
    settings.insert(settings.begin(), {{"bootstrap.servers", o.bootstrap}, {"socket.nagle.disable", "true"}});
    for (const auto& [name, value] : o.extra_settings) settings.emplace_back(name.c_str(), value);
    for (const auto& [name, value] : settings) {
        if (rd_kafka_conf_set(conf, name, value.c_str(), error, sizeof error) != RD_KAFKA_CONF_OK) {
            std::fprintf(stderr, "kpp-loadgen: %s=%s: %s\n", name, value.c_str(), error);
            std::exit(2);
        }
    }
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_opaque(conf, opaque);
    if (type == RD_KAFKA_PRODUCER) rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t* rk = rd_kafka_new(type, conf, error, sizeof error);
    if (!rk) {
        std::fprintf(stderr, "kpp-loadgen: rd_kafka_new: %s\n", error);
        std::exit(1);
    }
    return rk;
}

// ---- Producer ---------------------------------------------------------------------------------

struct ProducerStats {
    const Window* window = nullptr;
    std::atomic<uint64_t>* acked_total = nullptr;  // all successful acks, for the consumer's drain
    Histogram ack;
    uint64_t records = 0, bytes = 0, errors = 0;  // records and bytes: acked inside the window
};

// Delivery reports run on the producer's own thread (inside rd_kafka_poll/flush), so the stats
// need no lock. The message opaque carries the send time the latency counts from.
void on_delivery(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque) {
    auto& stats = *static_cast<ProducerStats*>(opaque);
    const i64 now = now_ns();
    if (message->err) {
        if (stats.errors++ < 5)
            std::fprintf(stderr, "kpp-loadgen: delivery failed: %s\n", rd_kafka_err2str(message->err));
        return;
    }
    stats.acked_total->fetch_add(1, std::memory_order_relaxed);
    const auto sent = static_cast<i64>(reinterpret_cast<intptr_t>(message->_private));
    if (stats.window->contains(sent)) stats.ack.record((now - sent) / 1000);
    if (stats.window->contains(now)) {
        ++stats.records;
        stats.bytes += message->len;
    }
}

// Waits until time t, serving delivery reports while there is time to spare.
void wait_until(rd_kafka_t* rk, i64 t) {
    for (i64 left = t - now_ns(); left > 0; left = t - now_ns()) {
        if (left > 2'000'000) {
            rd_kafka_poll(rk, static_cast<int>(left / 1'000'000) - 1);
        } else {
            const timespec ts{static_cast<time_t>(t / 1'000'000'000), static_cast<long>(t % 1'000'000'000)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
        }
    }
}

void run_producer(rd_kafka_t* rk, rd_kafka_topic_t* topic, const Options& o, int k,
                  const std::vector<int32_t>& partitions, const Window& w, ProducerStats& stats) {
    // Filler: random letters and digits, so compression does about as well as on text.
    std::string payload(static_cast<size_t>(o.record_bytes), '\0');
    std::mt19937 random(static_cast<unsigned>(k) + 1);
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for (size_t i = 8; i < payload.size(); ++i) payload[i] = kAlphabet[random() % (sizeof kAlphabet - 1)];

    size_t next = static_cast<size_t>(k) % partitions.size();
    for (uint64_t i = 0; !interrupted; ++i) {
        i64 stamp = 0;
        if (o.rate > 0) {  // record i of this producer is record i*K+k of the whole timeline
            stamp = w.start + static_cast<i64>(static_cast<double>(i * o.producers + k) * 1e9 / o.rate);
            if (stamp >= w.end) break;
            wait_until(rk, stamp);
        } else if (now_ns() >= w.end) {
            break;
        }
        const int32_t partition = partitions[next];
        next = (next + 1) % partitions.size();
        rd_kafka_resp_err_t err;
        for (;;) {
            if (o.rate == 0) stamp = now_ns();  // as fast as possible: from the actual produce()
            std::memcpy(payload.data(), &stamp, sizeof stamp);
            err = rd_kafka_producev(rk, RD_KAFKA_V_RKT(topic), RD_KAFKA_V_PARTITION(partition),
                                    RD_KAFKA_V_VALUE(payload.data(), payload.size()),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<intptr_t>(stamp))),
                                    RD_KAFKA_V_END);
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || interrupted) break;
            rd_kafka_poll(rk, 1);  // the client's queue is full: serve reports, then retry
        }
        if (err && stats.errors++ < 5)
            std::fprintf(stderr, "kpp-loadgen: produce failed: %s\n", rd_kafka_err2str(err));
        rd_kafka_poll(rk, 0);
    }
    if (rd_kafka_flush(rk, 10'000) == RD_KAFKA_RESP_ERR__TIMED_OUT) {
        std::fprintf(stderr, "kpp-loadgen: %d records not delivered 10 s after the run\n", rd_kafka_outq_len(rk));
        rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(rk, 1'000);  // their delivery reports count them as errors
    }
}

// ---- Consumer ---------------------------------------------------------------------------------

struct ConsumerStats {
    Histogram e2e;
    uint64_t records = 0, bytes = 0, errors = 0;  // records and bytes: received inside the window
    uint64_t total = 0;                           // all records received
};

void run_consumer(rd_kafka_t* rk, const Options& o, const Window& w, ConsumerStats& stats,
                  const std::atomic<bool>& producers_done, const std::atomic<uint64_t>& acked_total) {
    i64 drain_deadline = 0;
    for (;;) {
        rd_kafka_message_t* message = rd_kafka_consumer_poll(rk, 50);
        const i64 now = now_ns();
        if (message && message->err) {
            if (stats.errors++ < 5)
                std::fprintf(stderr, "kpp-loadgen: consume error: %s\n", rd_kafka_message_errstr(message));
        } else if (message) {
            ++stats.total;
            if (w.contains(now)) {
                ++stats.records;
                stats.bytes += message->len;
            }
            i64 stamp = 0;
            if (message->len >= sizeof stamp) {
                std::memcpy(&stamp, message->payload, sizeof stamp);
                const bool counted = o.produce() ? w.contains(stamp) : w.contains(now);
                if (counted && stamp > 0 && stamp <= now) stats.e2e.record((now - stamp) / 1000);
            }
        }
        if (message) rd_kafka_message_destroy(message);
        if (interrupted) break;
        if (!o.produce()) {
            if (now >= w.end) break;
        } else if (producers_done) {  // drain what was produced, for at most 5 s
            if (drain_deadline == 0) drain_deadline = now + 5'000'000'000;
            if (stats.total >= acked_total.load()) break;
            if (now >= drain_deadline) {
                std::fprintf(stderr, "kpp-loadgen: the consumer did not catch up within 5 s: %" PRIu64
                             " of %" PRIu64 " produced records consumed\n", stats.total, acked_total.load());
                break;
            }
        }
    }
}

// ---- Main -------------------------------------------------------------------------------------

std::vector<int32_t> discover_partitions(rd_kafka_t* rk, const Options& o) {
    rd_kafka_topic_t* topic = rd_kafka_topic_new(rk, o.topic.c_str(), nullptr);
    const rd_kafka_metadata_t* metadata = nullptr;
    const rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, topic, &metadata, 10'000);
    rd_kafka_topic_destroy(topic);
    if (err) {
        std::fprintf(stderr, "kpp-loadgen: cannot reach %s within 10 s: %s\n", o.bootstrap.c_str(),
                     rd_kafka_err2str(err));
        std::exit(1);
    }
    int count = 0;
    rd_kafka_resp_err_t topic_err = RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    if (metadata->topic_cnt == 1) {
        count = metadata->topics[0].partition_cnt;
        topic_err = metadata->topics[0].err;
    }
    rd_kafka_metadata_destroy(metadata);
    if (topic_err || count == 0) {
        std::fprintf(stderr, "kpp-loadgen: topic %s: %s\n", o.topic.c_str(), rd_kafka_err2str(topic_err));
        std::exit(1);
    }
    if (o.partitions > count) {
        std::fprintf(stderr, "kpp-loadgen: --partitions %d but %s has %d\n", o.partitions, o.topic.c_str(), count);
        std::exit(2);
    }
    std::vector<int32_t> partitions(static_cast<size_t>(o.partitions > 0 ? o.partitions : count));
    for (size_t i = 0; i < partitions.size(); ++i) partitions[i] = static_cast<int32_t>(i);
    return partitions;
}

// Assigns the partitions from their current end (--mode both: only what this run produces) or
// from the beginning (--mode consume).
void assign(rd_kafka_t* consumer, const Options& o, const std::vector<int32_t>& partitions) {
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(static_cast<int>(partitions.size()));
    for (const int32_t partition : partitions) {
        int64_t low = 0, high = RD_KAFKA_OFFSET_END;
        if (o.produce()) {
            const auto err = rd_kafka_query_watermark_offsets(consumer, o.topic.c_str(), partition, &low, &high, 10'000);
            if (err) {
                std::fprintf(stderr, "kpp-loadgen: end offset of %s/%d: %s\n", o.topic.c_str(), partition,
                             rd_kafka_err2str(err));
                std::exit(1);
            }
        }
        rd_kafka_topic_partition_list_add(list, o.topic.c_str(), partition)->offset =
            o.produce() ? high : RD_KAFKA_OFFSET_BEGINNING;
    }
    if (const auto err = rd_kafka_assign(consumer, list)) {
        std::fprintf(stderr, "kpp-loadgen: assign: %s\n", rd_kafka_err2str(err));
        std::exit(1);
    }
    rd_kafka_topic_partition_list_destroy(list);
}

void print_latency(FILE* out, const char* what, const Histogram& h) {
    std::fprintf(out, "  %s latency (us): p50 %" PRIu64 "  p99 %" PRIu64 "  p99.9 %" PRIu64 "  max %" PRIu64
                 "  (%" PRIu64 " samples)\n", what, h.percentile(0.5), h.percentile(0.99), h.percentile(0.999),
                 h.max(), h.count());
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    Window w;
    std::atomic<uint64_t> acked_total{0};
    std::atomic<bool> producers_done{false};
    std::vector<ProducerStats> producer_stats(o.produce() ? static_cast<size_t>(o.producers) : 0);
    std::vector<rd_kafka_t*> producers;
    for (ProducerStats& stats : producer_stats) {
        stats.window = &w;
        stats.acked_total = &acked_total;
        rd_kafka_t* rk = make_client(RD_KAFKA_PRODUCER, o,
                                     {{"linger.ms", std::to_string(o.linger_ms)},
                                      {"batch.size", std::to_string(o.batch_bytes)},
                                      {"compression.type", o.compression},
                                      {"acks", o.acks},
                                      {"enable.idempotence", o.idempotence ? "true" : "false"}},
                                     &stats);
        producers.push_back(rk);
    }
    rd_kafka_t* consumer = nullptr;
    if (o.consume()) {
        // assign() needs a group.id in librdkafka; nothing is committed and no group is joined.
        consumer = make_client(RD_KAFKA_CONSUMER, o,
                               {{"group.id", "kpp-loadgen-" + std::to_string(getpid())},
                                {"enable.auto.commit", "false"},
                                {"enable.auto.offset.store", "false"},
                                {"enable.partition.eof", "false"},
                                {"fetch.wait.max.ms", "10"},
                                {"fetch.min.bytes", "1"},
                                {"queued.max.messages.kbytes", "1048576"}});
        rd_kafka_poll_set_consumer(consumer);
    }

    const std::vector<int32_t> partitions = discover_partitions(consumer ? consumer : producers[0], o);
    if (consumer) assign(consumer, o, partitions);

    w.start = now_ns();
    w.warm_end = w.start + static_cast<i64>(o.warmup * 1e9);
    w.end = w.warm_end + static_cast<i64>(o.duration * 1e9);

    ConsumerStats consumed;
    std::thread consumer_thread;
    if (consumer)
        consumer_thread = std::thread(run_consumer, consumer, std::cref(o), std::cref(w), std::ref(consumed),
                                      std::cref(producers_done), std::cref(acked_total));
    std::vector<std::thread> producer_threads;
    std::vector<rd_kafka_topic_t*> topics;
    for (size_t k = 0; k < producers.size(); ++k) {
        topics.push_back(rd_kafka_topic_new(producers[k], o.topic.c_str(), nullptr));
        producer_threads.emplace_back(run_producer, producers[k], topics[k], std::cref(o), static_cast<int>(k),
                                      std::cref(partitions), std::cref(w), std::ref(producer_stats[k]));
    }
    for (std::thread& t : producer_threads) t.join();
    producers_done = true;
    if (consumer_thread.joinable()) consumer_thread.join();

    const i64 stop = interrupted ? std::min(w.end, interrupted_at.load()) : w.end;
    const double seconds = std::max(1e-9, static_cast<double>(stop - w.warm_end) / 1e9);
    ProducerStats produced;
    for (const ProducerStats& stats : producer_stats) {
        produced.ack.merge(stats.ack);
        produced.records += stats.records;
        produced.bytes += stats.bytes;
        produced.errors += stats.errors;
    }
    const uint64_t errors = produced.errors + consumed.errors;
    const double produce_mb_s = static_cast<double>(produced.bytes) / 1e6 / seconds;
    const double consume_mb_s = static_cast<double>(consumed.bytes) / 1e6 / seconds;
    const double achieved_rate =
        static_cast<double>(o.produce() ? produced.records : consumed.records) / seconds;

    // The human summary goes to stdout, or to stderr when stdout carries the JSON line.
    FILE* out = o.json ? stderr : stdout;
    const std::string target = o.rate > 0 ? std::to_string(std::llround(o.rate)) + " records/s" : "as fast as possible";
    std::fprintf(out, "kpp-loadgen: mode %s, topic %s (%zu partitions), %d B records, %d producer(s), target %s, "
                 "%.1f s measured after %.1f s warm-up\n", o.mode.c_str(), o.topic.c_str(), partitions.size(),
                 o.record_bytes, o.produce() ? o.producers : 0, target.c_str(), seconds, o.warmup);
    if (o.produce()) {
        std::fprintf(out, "produce: %" PRIu64 " records acked, %.2f MB/s, %.0f records/s, %" PRIu64 " errors\n",
                     produced.records, produce_mb_s, static_cast<double>(produced.records) / seconds, produced.errors);
        print_latency(out, "ack", produced.ack);
    }
    if (o.consume()) {
        std::fprintf(out, "consume: %" PRIu64 " records, %.2f MB/s, %.0f records/s, %" PRIu64 " errors\n",
                     consumed.records, consume_mb_s, static_cast<double>(consumed.records) / seconds, consumed.errors);
        print_latency(out, "end-to-end", consumed.e2e);
    }
    if (o.json) {
        const Histogram& a = produced.ack;
        const Histogram& e = consumed.e2e;
        std::printf("{\"mode\":\"%s\",\"records_produced\":%" PRIu64 ",\"bytes_produced\":%" PRIu64
                    ",\"produce_mb_s\":%.3f,\"ack_p50_us\":%" PRIu64 ",\"ack_p99_us\":%" PRIu64 ",\"ack_p999_us\":%" PRIu64
                    ",\"ack_max_us\":%" PRIu64 ",\"records_consumed\":%" PRIu64 ",\"consume_mb_s\":%.3f,\"e2e_p50_us\":%" PRIu64
                    ",\"e2e_p99_us\":%" PRIu64 ",\"e2e_p999_us\":%" PRIu64 ",\"e2e_max_us\":%" PRIu64 ",\"errors\":%" PRIu64
                    ",\"duration_s\":%.3f,\"target_rate\":%.0f,\"achieved_rate\":%.1f}\n",
                    o.mode.c_str(), produced.records, produced.bytes, produce_mb_s, a.percentile(0.5),
                    a.percentile(0.99), a.percentile(0.999), a.max(), consumed.records, consume_mb_s,
                    e.percentile(0.5), e.percentile(0.99), e.percentile(0.999), e.max(), errors, seconds, o.rate,
                    achieved_rate);
        std::fflush(stdout);
    }

    for (rd_kafka_topic_t* topic : topics) rd_kafka_topic_destroy(topic);
    for (rd_kafka_t* rk : producers) rd_kafka_destroy(rk);
    if (consumer) {
        rd_kafka_consumer_close(consumer);
        rd_kafka_destroy(consumer);
    }
    return produced.errors > 0 && o.acks != "0" ? 1 : 0;
}

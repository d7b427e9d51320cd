// kafka-partition-proxy: start-up, signals and the metadata refresher. The data plane is
// the shard group; this thread only waits for signals.
#include <signal.h>
#include <unistd.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "kpp_version.h"
#include "proxy/admin_http.h"
#include "proxy/cli.h"
#include "proxy/client_auth.h"
#include "proxy/cluster_directory.h"
#include "proxy/config.h"
#include "proxy/logging.h"
#include "proxy/layout_guard.h"
#include "proxy/metrics.h"
#include "proxy/principal.h"
#include "proxy/reload.h"
#include "proxy/shard_server.h"
#include "proxy/security.h"
#include "reactor/tls.h"
#include "reactor/errors.h"
#include "reactor/shard_group.h"
#include "remap/mapping.h"

namespace {

// Host, process and a random part: distinct for every start, also after a restart that
// reuses the process id, so two instances' alias candidates never share a key.
std::string instance_name() {
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
    std::random_device random;
    char suffix[17];
    std::snprintf(suffix, sizeof(suffix), "%08x%08x", random(), random());
    return std::string(host) + ":" + std::to_string(getpid()) + ":" + suffix;
}

using namespace kpp;

std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    size_t start = 0;
    while (start < text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        if (end > start) lines.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    return lines;
}

// Waits up to `timeout_ms` for SIGINT/SIGTERM (blocked in every thread); returns the signal or 0.
int wait_for_signal(uint32_t timeout_ms) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    timespec timeout{time_t(timeout_ms / 1000), long(timeout_ms % 1000) * 1'000'000L};
    int received = sigtimedwait(&set, nullptr, &timeout);
    return received > 0 ? received : 0;
}

// Discovers the cluster, retrying with backoff until it answers or a stop signal arrives.
std::shared_ptr<const cluster_directory> discover_until_ready(const proxy_config& config, int& stop_signal) {
    uint32_t delay_ms = 200;
    for (;;) {
        discovery_result result = discover_cluster(config);
        if (result.directory) {
            spdlog::info("Upstream connected via {}: {} broker(s)", result.bootstrap_used, result.directory->brokers.size());
            return result.directory;
        }
        spdlog::warn("waiting for the upstream cluster (kafka.bootstrap_servers): {}", result.error);
        stop_signal = wait_for_signal(delay_ms);
        if (stop_signal) return nullptr;
        delay_ms = std::min<uint32_t>(delay_ms * 2, 5000);
    }
}

// Finds (or creates) the offset store topic, retrying while the cluster does not answer.
// nullopt with exit_code set when start-up must stop.
std::optional<offset_store_info> prepare_store_until_ready(const proxy_config& config, const cluster_directory& directory,
                                                           int& stop_signal) {
    uint32_t delay_ms = 200;
    for (;;) {
        offset_store_result result = prepare_offset_store(config, directory);
        if (result.info) return result.info;
        if (result.fatal) {
            spdlog::error("{}", result.error);
            return std::nullopt;
        }
        spdlog::warn("waiting for the offset store topic {}: {}", config.offset_store.topic, result.error);
        stop_signal = wait_for_signal(delay_ms);
        if (stop_signal) return std::nullopt;
        delay_ms = std::min<uint32_t>(delay_ms * 2, 5000);
    }
}

void log_directory(const cluster_directory& directory, const host_port& advertised) {
    for (const auto& [node_id, broker] : directory.brokers)
        spdlog::info("Broker {} at {}:{} served on {}:{}", node_id, broker.advertised.host, broker.advertised.port,
                     advertised.host, broker.proxy_port);
}

// Re-reads metadata periodically (kafka.metadata_refresh_interval_secs) or when a core
// sees a broker it does not serve, and hands a new directory to every core.
class metadata_refresher {
public:
    // `after_refresh` runs on the refresher's thread after each refresh (the topic layout check).
    metadata_refresher(proxy_runtime& runtime, reactor::shard_group& group,
                       std::shared_ptr<const cluster_directory> current, std::function<void()> after_refresh)
        : runtime_(runtime), group_(group), current_(std::move(current)), after_refresh_(std::move(after_refresh)) {
        thread_ = std::thread([this] { run(); });
    }
    ~metadata_refresher() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        thread_.join();
    }
    void request() {
        {
            std::lock_guard lock(mutex_);
            requested_ = true;
        }
        wake_.notify_all();
    }

private:
    void run() {
        pthread_setname_np(pthread_self(), "kpp-refresh");
        uint32_t interval_secs = runtime_.config.kafka.metadata_refresh_interval_secs;
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            auto wake_at = std::chrono::steady_clock::now() + std::chrono::seconds(interval_secs ? interval_secs : 3600);
            wake_.wait_until(lock, wake_at, [this] { return stopping_ || requested_; });
            if (stopping_) return;
            if (!requested_ && interval_secs == 0) continue;
            requested_ = false;
            lock.unlock();
            refresh();
            if (after_refresh_) after_refresh_();
            lock.lock();
        }
    }
    void refresh() {
        try {
            discovery_result result = discover_cluster(runtime_.config);
            if (!result.directory) {
                spdlog::warn("metadata refresh failed: {}", result.error);
                return;
            }
            if (result.directory->same_brokers(*current_)) return;
            spdlog::info("the cluster's brokers changed: now {}", result.directory->brokers.size());
            log_directory(*result.directory, runtime_.advertised);
            current_ = result.directory;
            for (uint32_t index = 0; index < group_.size(); ++index) {
                group_.post(index, [directory = current_](reactor::shard& shard) {
                    auto server = std::static_pointer_cast<shard_server>(shard.user_state);
                    if (!server) return;
                    try {
                        server->apply_directory(directory);
                    } catch (const std::exception& error) {
                        spdlog::error("cannot serve a new broker: {}", error.what());
                    }
                });
            }
        } catch (const std::exception& error) {
            spdlog::error("metadata refresh: {}", error.what());
        }
    }

    proxy_runtime& runtime_;
    reactor::shard_group& group_;
    std::shared_ptr<const cluster_directory> current_;
    std::function<void()> after_refresh_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    bool requested_ = false;
    std::thread thread_;
};

std::string join_names(const std::vector<std::string>& names) {
    std::string out;
    for (const std::string& name : names) out += (out.empty() ? "" : ", ") + name;
    return out;
}

size_t count_key_only_users(const sasl_listener& listener) {
    std::set<std::string> names;
    for (const auto& entry : listener.scram)
        if (listener.passwords.count(entry.first.second) == 0) names.insert(entry.first.second);
    return names.size();
}

// GET /admin/shards: each core's connections and requests (from its metrics slots).
std::string shards_json(proxy_runtime& runtime) {
    std::string out = "{\"shards\":[";
    for (uint32_t index = 0; index < runtime.metrics->shard_count(); ++index) {
        shard_metrics& shard = runtime.metrics->shard(index);
        uint64_t opened = shard.client_connections_opened.load(std::memory_order_relaxed);
        uint64_t closed = shard.client_connections_closed.load(std::memory_order_relaxed);
        uint64_t requests = 0;
        for (const auto& count : shard.requests_by_api) requests += count.load(std::memory_order_relaxed);
        out += std::string(index ? "," : "") + "{\"shard\":" + std::to_string(index) +
               ",\"client_connections_open\":" + std::to_string(opened >= closed ? opened - closed : 0) +
               ",\"client_connections_opened\":" + std::to_string(opened) +
               ",\"client_connections_refused\":" +
               std::to_string(shard.client_connections_refused.load(std::memory_order_relaxed)) +
               ",\"requests\":" + std::to_string(requests) + "}";
    }
    return out + "],\"client_connections_open\":" + std::to_string(runtime.client_connections.load()) +
           ",\"max_connections\":" + std::to_string(runtime.max_connections.load()) + "}";
}

// GET /admin/store: the offset store as this process uses it.
std::string store_json(proxy_runtime& runtime) {
    const offset_store_info& info = runtime.store_info;
    std::string out = "{\"topic\":\"" + json_escape(info.topic) + "\",\"partitions\":" +
                      std::to_string(info.partitions) + ",\"in_use\":" + (info.partitions > 0 ? "true" : "false") +
                      ",\"versions\":{\"metadata\":" + std::to_string(info.metadata_version) +
                      ",\"produce\":" + std::to_string(info.produce_version) +
                      ",\"fetch\":" + std::to_string(info.fetch_version) + "},\"shards\":[";
    for (uint32_t index = 0; index < runtime.metrics->shard_count(); ++index) {
        shard_metrics& shard = runtime.metrics->shard(index);
        auto value = [](const std::atomic<uint64_t>& counter) {
            return std::to_string(counter.load(std::memory_order_relaxed));
        };
        out += std::string(index ? "," : "") + "{\"shard\":" + std::to_string(index) +
               ",\"reads\":" + value(shard.offset_store_reads) +
               ",\"records_read\":" + value(shard.offset_store_records_read) +
               ",\"records_written\":" + value(shard.offset_store_records_written) +
               ",\"failures\":" + value(shard.offset_store_failures) +
               ",\"evictions\":" + value(shard.offset_store_evictions) +
               ",\"producer_aliases_created\":" + value(shard.producer_aliases_created) + "}";
    }
    return out + "]}";
}

// --check-config: everything start-up validates without contacting the cluster (the file,
// then the certificates, keys, credential and token files it names); prints the mapping.
// The configuration the CLI names, or nullopt after printing why (the caller exits 2).
std::optional<proxy_config> load_or_explain(const cli_options& options) {
    try {
        return load_cli_config(options);
    } catch (const config_error& error) {
        std::fprintf(stderr, "kafka-partition-proxy: configuration error: %s\n", error.what());
        return std::nullopt;
    }
}

int check_config(const cli_options& options) {
    std::optional<proxy_config> loaded = load_or_explain(options);
    if (!loaded) return 2;
    const proxy_config& config = *loaded;
    std::string error;
    if (!build_security_material(config, error)) {
        std::fprintf(stderr, "kafka-partition-proxy: configuration error: %s\n", error.c_str());
        return 2;
    }
    std::cout << options.config_path << ": valid\n";
    for (const std::string& warning : config.warnings) std::cout << "warning: " << warning << "\n";
    std::cout << "listen " << config.listen.address.to_string() << " (" << config.listen.security.protocol
              << "), advertising " << advertised_address_of(config.listen).host << "\n";
    std::string servers;
    for (const host_port& server : config.kafka.bootstrap_servers) servers += (servers.empty() ? "" : ", ") + server.to_string();
    std::cout << "kafka " << servers << " (" << config.kafka.security_protocol << ")\n";
    for (const std::string& line : split_lines(mapping_registry(config.mapping).describe())) std::cout << line << "\n";
    return 0;
}

int run_proxy(const cli_options& options) {
    std::optional<proxy_config> loaded = load_or_explain(options);
    if (!loaded) return 2;
    proxy_config config = std::move(*loaded);
    setup_logging(config.logging, options.verbosity);
    spdlog::info("kafka-partition-proxy {} starting", KPP_VERSION);
    for (const std::string& warning : config.warnings) spdlog::warn("{}", warning);

    // Signals are handled by this thread only: block them before any other thread exists.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    signal(SIGPIPE, SIG_IGN);

    proxy_runtime runtime;
    runtime.config = config;
    runtime.advertised = advertised_address_of(config.listen);
    runtime.aliases.set_entries_max(config.producers.aliases_max);
    runtime.instance_id = instance_name();
    runtime.max_connections = config.listen.max_connections;
    {
        std::string error;
        std::optional<security_material> security = build_security_material(config, error);
        if (!security) {
            spdlog::error("configuration error: {}", error);
            return 2;
        }
        runtime.client_tls = std::move(security->client_tls);
        runtime.broker_tls = std::move(security->broker_tls);
        runtime.principal_rules = std::move(security->principal_rules);
        runtime.client_sasl = std::move(security->client_sasl);
        runtime.broker_identity = std::move(security->broker_identity);
        if (runtime.broker_identity.load())
            spdlog::info("SASL toward brokers ({}): {}{}", config.kafka.security_protocol, config.kafka.sasl.mechanism,
                         config.kafka.sasl.mechanism == "OAUTHBEARER" ? " with the token in " + config.kafka.sasl.token_file
                                                                      : " as '" + config.kafka.sasl.username + "'");
        if (auto sasl = runtime.client_sasl.load())
            spdlog::info("SASL toward clients ({}): {}; {} user(s); sessions {}", config.listen.security.protocol,
                         join_names(sasl->mechanisms), sasl->passwords.size() + count_key_only_users(*sasl),
                         sasl->session_lifetime_ms ? "expire after " + std::to_string(sasl->session_lifetime_ms) + " ms"
                                                   : std::string("do not expire"));
        // Decided once for every connection: the kernel path needs the kernel's TLS ULP.
        std::string kernel = reactor::kernel_tls_offered() ? "offered by this kernel" : "not offered by this kernel";
        if (runtime.client_tls.load()) {
            const listen_tls_settings& tls = config.listen.security.tls;
            spdlog::info("TLS toward clients: {} or newer, client certificates {}; kernel TLS {}, record layer in the "
                         "proxy (OpenSSL)",
                         tls.min_version,
                         tls.require_client_cert ? "required" : (tls.ca_cert_path.empty() ? "not asked for" : "optional"),
                         kernel);
        }
        if (runtime.broker_tls.load()) {
            const tls_client_settings& tls = config.kafka.tls;
            spdlog::info("TLS toward brokers: CA {}, client certificate {}; kernel TLS {}, record layer in the proxy "
                         "(OpenSSL)",
                         tls.ca_cert_path.empty() ? std::string("the system's roots") : tls.ca_cert_path,
                         tls.cert_path.empty() ? std::string("none") : tls.cert_path, kernel);
            if (tls.insecure_skip_verify)
                spdlog::warn("kafka.tls.insecure_skip_verify: broker certificates and host names are NOT checked; "
                             "anyone on the path can read and change the traffic");
        }
    }
    if (const char* verify = std::getenv("KPP_VERIFY_PROTOCOL"); verify && std::string(verify) == "1") {
        runtime.verify_protocol = true;
        spdlog::warn("KPP_VERIFY_PROTOCOL=1: every request and response is checked against the schema files (slow)");
    }
    try {
        for (const host_port& server : config.kafka.bootstrap_servers)
            runtime.bootstrap_addresses.push_back(reactor::resolve_address(server.host, server.port));
    } catch (const std::exception& error) {
        spdlog::error("kafka.bootstrap_servers: {}", error.what());
        return 2;
    }
    for (const std::string& line : split_lines(mapping_registry(config.mapping).describe())) spdlog::info("{}", line);

    // The admin endpoint first: /health answers while the upstream is awaited, /ready only
    // once clients can be served (and no longer while draining).
    reactor::shard_group_options group_options;
    group_options.shard_count = config.threads;
    group_options.loop.spin_before_sleep_ns = config.spin_before_sleep_us * 1000u;
    uint32_t shard_count = config.threads ? config.threads : uint32_t(reactor::shard_group::available_cpus().size());
    runtime.metrics = std::make_unique<metrics_registry>(shard_count, config.metrics.topic_labels_max);
    std::atomic<bool> ready{false};
    std::atomic<bool> draining{false};
    std::unique_ptr<admin_http_server> admin;
    try {
        if (config.metrics.enabled)
            admin = std::make_unique<admin_http_server>(config.metrics.address, *runtime.metrics,
                                                        [&ready, &draining] { return ready.load() && !draining.load(); });
    } catch (const std::exception& error) {
        spdlog::error("{}", error.what());
        return 2;
    }
    if (admin) spdlog::info("Metrics on {}:{} (/metrics, /health, /ready, /admin/*)", config.metrics.address.host,
                            admin->port());

    int stop_signal = 0;
    std::shared_ptr<const cluster_directory> directory;
    try {
        directory = discover_until_ready(config, stop_signal);
    } catch (const config_error& error) {
        spdlog::error("configuration error: {}", error.what());
        return 2;
    }
    if (!directory) {
        spdlog::info("stopped before the upstream answered");
        return 0;
    }
    log_directory(*directory, runtime.advertised);
    runtime.initial_directory = directory;
    if (mapping_registry(config.mapping).remaps_anything()) {
        // Virtual committed offsets need the store before the first client arrives.
        auto store = prepare_store_until_ready(config, *directory, stop_signal);
        if (!store) {
            if (stop_signal) {
                spdlog::info("stopped before the offset store was ready");
                return 0;
            }
            return 2;
        }
        if (store->partitions != config.offset_store.partitions)
            spdlog::info("offset store {} has {} partitions (offset_store.partitions = {} applies only when the "
                         "proxy creates it)", store->topic, store->partitions, config.offset_store.partitions);
        spdlog::info("Offset store: topic {}, {} partitions", store->topic, store->partitions);
        runtime.store_info = *store;
    }

    reactor::shard_group* running_group = nullptr;
    reloader reloads(runtime, options, [&running_group](std::shared_ptr<const mapping_settings> mapping) {
        for (uint32_t index = 0; running_group && index < running_group->size(); ++index)
            running_group->post(index, [mapping](reactor::shard& shard) {
                if (auto server = std::static_pointer_cast<shard_server>(shard.user_state)) server->apply_mapping(*mapping);
            });
    });
    // Lowering V (or changing P) since the store recorded a topic's layout stops start-up.
    if (!reloads.check_at_start()) return 2;

    reactor::shard_group group(group_options, [&runtime](reactor::shard& shard) {
        auto server = std::make_shared<shard_server>(shard, runtime);
        server->apply_directory(runtime.initial_directory);
        shard.user_state = server;
        shard.on_stop = [](reactor::shard& self) {
            std::static_pointer_cast<shard_server>(self.user_state)->begin_stop();
        };
    });
    try {
        group.start();
    } catch (const std::exception& error) {
        spdlog::error("cannot start: {}", error.what());
        return 1;
    }
    running_group = &group;
    metadata_refresher refresher(runtime, group, directory, [&reloads] { reloads.check_layouts(); });
    runtime.request_refresh = [&refresher] { refresher.request(); };
    if (admin) {
        admin_routes routes;
        routes.mapping = [&reloads] { return reloads.mapping_json(); };
        routes.shards = [&runtime] { return shards_json(runtime); };
        routes.store = [&runtime] { return store_json(runtime); };
        routes.reload = [&reloads] {
            reload_outcome outcome = reloads.reload("POST /reload");
            return std::make_pair(outcome.applied, outcome.message);
        };
        routes.drain = [&draining] {
            if (!draining.exchange(true)) spdlog::info("POST /drain: /ready answers 503 from now on; open connections "
                                                       "keep being served until SIGTERM");
        };
        routes.actions_enabled = config.metrics.admin_endpoints;
        admin->set_routes(std::move(routes));
    }
    ready = true;
    spdlog::info("Listening on {} ({} thread(s)); advertising {}", config.listen.address.to_string(), group.size(),
                 runtime.advertised.host);
    if (config.spin_before_sleep_us > 0)
        spdlog::info("Each core asks its ring for completions for {} us before it sleeps (spin_before_sleep_us)",
                     config.spin_before_sleep_us);

    for (;;) {
        int received = wait_for_signal(1000);
        if (received == SIGHUP) {
            reloads.reload("SIGHUP");
            continue;
        }
        if (received) {
            stop_signal = received;
            break;
        }
    }
    spdlog::info("received {}: stopping (finishing in-flight requests, up to shutdown_timeout_ms = {} ms)",
                 stop_signal == SIGINT ? "SIGINT" : "SIGTERM", config.shutdown_timeout_ms);
    ready = false;
    runtime.request_refresh = nullptr;
    group.request_stop();
    group.join();
    spdlog::info("stopped");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    kpp::cli_options options;
    try {
        options = kpp::parse_cli(argc, argv);
    } catch (const std::exception& error) {
        std::fprintf(stderr, "kafka-partition-proxy: %s\n\n%s", error.what(), kpp::cli_usage().c_str());
        return 2;
    }
    if (options.show_help) {
        std::cout << kpp::cli_usage();
        return 0;
    }
    if (options.show_version) {
        std::cout << "kafka-partition-proxy " << KPP_VERSION << "\n";
        return 0;
    }
    if (options.check_config) return check_config(options);
    return run_proxy(options);
}

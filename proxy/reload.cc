#include "proxy/reload.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "proxy/client_auth.h"
#include "proxy/logging.h"
#include "proxy/security.h"
#include "proxy/shard_server.h"
#include "remap/mapping.h"

namespace kpp {
namespace {

int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string joined(const std::vector<std::string>& items, const char* separator = ", ") {
    std::string out;
    for (const std::string& item : items) out += (out.empty() ? "" : separator) + item;
    return out;
}

// The view shows what the store holds once `recorded` is written.
void note_recorded(std::vector<topic_view>& topics, const topic_layouts& recorded) {
    for (topic_view& view : topics)
        if (auto found = recorded.find(view.topic); found != recorded.end()) view.recorded = found->second;
}

}  // namespace

proxy_config load_cli_config(const cli_options& options) {
    proxy_config config = load_config_file(options.config_path);
    if (options.listen_override) apply_listen_override(config, *options.listen_override);
    return config;
}

std::optional<security_material> build_security_material(const proxy_config& config, std::string& error) {
    security_material built;
    error.clear();
    built.client_tls = listener_tls_context(config, error);
    if (error.empty()) built.broker_tls = broker_tls_context(config, error);
    if (error.empty())
        if (auto rules = parse_principal_rules(config.listen.security.tls.principal_mapping_rules, error))
            built.principal_rules = std::move(*rules);
    if (error.empty()) built.client_sasl = build_sasl_listener(config, error);
    if (error.empty()) built.broker_identity = broker_sasl_identity(config, error);
    if (!error.empty()) return std::nullopt;
    return built;
}

config_diff diff_configs(const proxy_config& running, const proxy_config& next) {
    config_diff diff;
    auto check = [](bool changed, std::vector<std::string>& into, const char* key) {
        if (changed) into.push_back(key);
        return changed;
    };
    // Restart only: what the listeners, the cores and the upstream connections were built with.
    check(running.threads != next.threads, diff.restart, "threads");
    check(running.spin_before_sleep_us != next.spin_before_sleep_us, diff.restart, "spin_before_sleep_us");
    check(running.shutdown_timeout_ms != next.shutdown_timeout_ms, diff.restart, "shutdown_timeout_ms");
    const listen_settings& a = running.listen;
    const listen_settings& b = next.listen;
    check(a.address != b.address, diff.restart, "listen.address");
    check(a.advertised_address != b.advertised_address, diff.restart, "listen.advertised_address");
    check(a.broker_port_base != b.broker_port_base, diff.restart, "listen.broker_port_base");
    check(a.broker_ports != b.broker_ports, diff.restart, "listen.broker_ports");
    check(a.frame_bytes_max != b.frame_bytes_max, diff.restart, "listen.frame_bytes_max");
    diff.max_connections = check(a.max_connections != b.max_connections, diff.live, "listen.max_connections");
    // The security protocols decide what a listener and a broker connection speak: a change
    // would put new connections on a different protocol than the running ones.
    check(a.security.protocol != b.security.protocol, diff.refused, "listen.security.protocol");
    check(running.kafka.security_protocol != next.kafka.security_protocol, diff.refused, "kafka.security_protocol");
    check(a.security.tls.principal_mapping_rules != b.security.tls.principal_mapping_rules, diff.restart,
          "listen.security.tls.principal.mapping_rules");
    listen_tls_settings tls_a = a.security.tls, tls_b = b.security.tls;
    tls_a.principal_mapping_rules = tls_b.principal_mapping_rules;
    check(tls_a != tls_b, diff.live, "listen.security.tls");
    check(a.security.sasl != b.security.sasl, diff.live, "listen.security.sasl");
    const kafka_settings& ka = running.kafka;
    const kafka_settings& kb = next.kafka;
    check(ka.bootstrap_servers != kb.bootstrap_servers, diff.restart, "kafka.bootstrap_servers");
    check(ka.connection_timeout_ms != kb.connection_timeout_ms, diff.restart, "kafka.connection_timeout_ms");
    check(ka.request_timeout_ms != kb.request_timeout_ms, diff.restart, "kafka.request_timeout_ms");
    check(ka.metadata_refresh_interval_secs != kb.metadata_refresh_interval_secs, diff.restart,
          "kafka.metadata_refresh_interval_secs");
    check(ka.tls != kb.tls, diff.live, "kafka.tls");
    check(ka.sasl != kb.sasl, diff.live, "kafka.sasl");
    // Certificates, keys, credential and token files change on disk under the same names
    // (rotation): they are read again by every reload, changed or not.
    diff.security = true;
    check(running.mapping.tag_header != next.mapping.tag_header, diff.refused, "mapping.tag_header");
    mapping_settings ma = running.mapping, mb = next.mapping;
    ma.tag_header = mb.tag_header;
    ma.offset_range_given = mb.offset_range_given;
    diff.mapping = check(ma != mb, diff.live, "mapping");
    check(running.offset_store != next.offset_store, diff.restart, "offset_store");
    check(running.producers != next.producers, diff.restart, "producers");
    check(running.metrics != next.metrics, diff.restart, "metrics");
    diff.logging_level = check(running.logging.level != next.logging.level, diff.live, "logging.level");
    check(running.logging.json != next.logging.json, diff.restart, "logging.format");
    return diff;
}

reloader::reloader(proxy_runtime& runtime, const cli_options& options,
                   std::function<void(std::shared_ptr<const mapping_settings>)> apply_mapping)
    : runtime_(runtime),
      options_(options),
      apply_mapping_(std::move(apply_mapping)),
      effective_(runtime.config),
      view_mapping_(runtime.config.mapping) {}

void reloader::publish_view(std::vector<topic_view> topics, std::string error) {
    std::lock_guard lock(view_mutex_);
    view_mapping_ = effective_.mapping;
    topics_ = std::move(topics);
    layouts_error_ = std::move(error);
}

bool reloader::check_at_start() {
    std::lock_guard lock(mutex_);
    if (runtime_.store_info.partitions == 0) return true;  // nothing remapped: nothing to guard
    layout_snapshot snapshot = read_layout_snapshot(effective_, runtime_.store_info);
    if (!snapshot.error.empty()) {
        // The cluster answered discovery moments ago; a store that cannot be read now is
        // reported and checked again at the next refresh.
        spdlog::warn("topic layouts not checked at start-up: {}", snapshot.error);
        publish_view({}, snapshot.error);
        return true;
    }
    layout_check check = check_topic_layouts(effective_.mapping, nullptr, snapshot, now_ms());
    if (!check.refusals.empty()) {
        for (const std::string& refusal : check.refusals) spdlog::error("configuration error: {}", refusal);
        spdlog::error("the offset store {} recorded how these topics were served; raise V back (or restore the "
                      "rule) to start", runtime_.store_info.topic);
        return false;
    }
    if (std::string error = record_topic_layouts(effective_, runtime_.store_info, check.to_record); !error.empty()) {
        spdlog::warn("topic layouts not recorded: {}", error);
    } else if (!check.to_record.empty()) {
        spdlog::info("topic layouts recorded in {}: {} topic(s)", runtime_.store_info.topic, check.to_record.size());
        note_recorded(check.topics, check.to_record);
    }
    publish_view(std::move(check.topics), {});
    return true;
}

void reloader::check_layouts() {
    std::lock_guard lock(mutex_);
    if (runtime_.store_info.partitions == 0) return;
    layout_snapshot snapshot = read_layout_snapshot(effective_, runtime_.store_info);
    if (!snapshot.error.empty()) {
        std::lock_guard view(view_mutex_);
        layouts_error_ = snapshot.error;
        return;
    }
    layout_check check = check_topic_layouts(effective_.mapping, nullptr, snapshot, now_ms());
    // Another instance served a topic with a larger V: this one must be reloaded to match.
    for (const std::string& refusal : check.refusals)
        spdlog::error("this instance's mapping disagrees with the offset store: {}", refusal);
    if (!check.to_record.empty()) {
        if (std::string error = record_topic_layouts(effective_, runtime_.store_info, check.to_record);
            !error.empty()) {
            spdlog::warn("topic layouts not recorded: {}", error);
        } else {
            for (const auto& [topic, layout] : check.to_record)
                spdlog::info("topic layout recorded: {} served with V = {}, P = {}", topic, layout.virtual_partitions,
                             layout.physical_partitions);
            note_recorded(check.topics, check.to_record);
        }
    }
    publish_view(std::move(check.topics), {});
}

reload_outcome reloader::reload(const std::string& trigger) {
    std::lock_guard lock(mutex_);
    reload_outcome outcome;
    auto refuse = [&](const std::string& why) {
        outcome.message = "reload (" + trigger + ") refused, nothing changed: " + why;
        spdlog::error("{}", outcome.message);
        return outcome;
    };
    proxy_config fresh;
    try {
        fresh = load_cli_config(options_);
    } catch (const config_error& error) {
        return refuse(error.what());
    }
    config_diff diff = diff_configs(effective_, fresh);
    if (!diff.refused.empty())
        return refuse(joined(diff.refused) + " cannot change without a restart (the running connections use it)");

    // Everything is built before anything is applied: all or nothing.
    std::string error;
    std::optional<security_material> security = build_security_material(fresh, error);
    if (!security) return refuse(error);

    std::vector<std::string> mapping_changes;
    std::vector<topic_view> topics;
    if (diff.mapping) {
        bool remaps_now = mapping_registry(fresh.mapping).remaps_anything();
        if (remaps_now && runtime_.store_info.partitions == 0)
            return refuse("mapping: the first remapped topic needs a restart (the offset store " +
                          effective_.offset_store.topic + " is prepared at start-up)");
        layout_snapshot snapshot = read_layout_snapshot(effective_, runtime_.store_info);
        if (!snapshot.error.empty()) return refuse("mapping: cannot check the topics' layouts: " + snapshot.error);
        layout_check check = check_topic_layouts(fresh.mapping, &effective_.mapping, snapshot, now_ms());
        if (!check.refusals.empty()) return refuse(joined(check.refusals, "; "));
        if (std::string failed = record_topic_layouts(effective_, runtime_.store_info, check.to_record);
            !failed.empty())
            return refuse("mapping: " + failed);
        note_recorded(check.topics, check.to_record);
        mapping_registry before(effective_.mapping);
        for (const topic_view& view : check.topics) {
            topic_mapping old = before.lookup(view.topic);
            if (old.virtual_partitions != view.virtual_partitions || old.physical_partitions != view.physical_partitions)
                mapping_changes.push_back(view.topic + " V " + std::to_string(old.remapped() ? old.virtual_partitions : 0) +
                                          " -> " + std::to_string(view.virtual_partitions));
        }
        topics = std::move(check.topics);
    }

    // Apply.
    runtime_.client_tls = std::move(security->client_tls);
    runtime_.broker_tls = std::move(security->broker_tls);
    runtime_.client_sasl = std::move(security->client_sasl);
    runtime_.broker_identity = std::move(security->broker_identity);
    if (diff.max_connections) {
        runtime_.max_connections = fresh.listen.max_connections;
        effective_.listen.max_connections = fresh.listen.max_connections;
    }
    if (diff.logging_level) {
        spdlog::set_level(effective_level(fresh.logging, options_.verbosity));
        effective_.logging.level = fresh.logging.level;
    }
    effective_.listen.security.tls = fresh.listen.security.tls;
    effective_.listen.security.tls.principal_mapping_rules = runtime_.config.listen.security.tls.principal_mapping_rules;
    effective_.listen.security.sasl = fresh.listen.security.sasl;
    effective_.kafka.tls = fresh.kafka.tls;
    effective_.kafka.sasl = fresh.kafka.sasl;
    if (diff.mapping) {
        std::string tag_header = effective_.mapping.tag_header;
        effective_.mapping = fresh.mapping;
        effective_.mapping.tag_header = tag_header;
        apply_mapping_(std::make_shared<const mapping_settings>(effective_.mapping));
        publish_view(std::move(topics), {});
    }
    outcome.applied = true;
    outcome.message = "reload (" + trigger + ") applied";
    std::vector<std::string> applied = diff.live;
    applied.push_back("TLS certificates, keys, SASL credentials and token keys read again");
    outcome.message += ": " + joined(applied);
    if (!mapping_changes.empty()) outcome.message += " (" + joined(mapping_changes) + ")";
    if (!diff.restart.empty())
        outcome.message += "; changed but needing a restart, still running with the old value: " + joined(diff.restart);
    spdlog::info("{}", outcome.message);
    return outcome;
}

std::string reloader::mapping_json() {
    std::lock_guard lock(view_mutex_);
    const mapping_settings& mapping = view_mapping_;
    std::string out = "{\"tag_header\":\"" + json_escape(mapping.tag_header) + "\",\"default\":{" +
                      "\"virtual_partitions\":" + std::to_string(mapping.virtual_partitions) +
                      ",\"physical_partitions\":" + std::to_string(mapping.physical_partitions) +
                      "},\"rules\":[";
    bool first = true;
    for (const topic_mapping_rule& rule : mapping.topics) {
        out += std::string(first ? "" : ",") + "{\"key\":\"" + json_escape(rule.pattern) + "\",\"regex\":" +
               (rule.is_regex ? "true" : "false") + ",\"virtual_partitions\":" + std::to_string(rule.virtual_partitions) +
               ",\"physical_partitions\":" + std::to_string(rule.physical_partitions) + "}";
        first = false;
    }
    out += "],\"topics\":[";
    first = true;
    for (const topic_view& view : topics_) {
        out += std::string(first ? "" : ",") + "{\"topic\":\"" + json_escape(view.topic) + "\",\"rule\":\"" +
               json_escape(view.rule) + "\",\"virtual_partitions\":" + std::to_string(view.virtual_partitions) +
               ",\"physical_partitions\":" + std::to_string(view.physical_partitions) +
               ",\"physical_seen\":" + std::to_string(view.physical_seen) + ",\"recorded_virtual_partitions\":" +
               (view.recorded ? std::to_string(view.recorded->virtual_partitions) : std::string("null")) + "}";
        first = false;
    }
    out += "],\"layouts_error\":" + (layouts_error_.empty() ? std::string("null") : "\"" + json_escape(layouts_error_) + "\"") +
           "}";
    return out;
}

}  // namespace kpp

#include "proxy/shard_server.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include "proxy/client_session.h"
#include "reactor/errors.h"

namespace kpp {
namespace {
constexpr uint64_t sweep_interval_ms = 200;

std::string describe_broker(const upstream_broker& broker) {
    return "broker " + std::to_string(broker.node_id) + " at " + broker.advertised.host + ":" +
           std::to_string(broker.advertised.port);
}
}  // namespace

shard_server::shard_server(reactor::shard& shard, proxy_runtime& runtime)
    : shard_(shard), runtime_(runtime), metrics_(runtime.metrics->shard(shard.index())),
      remap_(runtime.config, runtime.names, runtime.ends),
      store_(std::make_unique<offset_store>(*this, runtime.store_info)),
      aliases_(std::make_unique<alias_resolver>(*this, runtime.aliases,
                                                runtime.instance_id + "/" + std::to_string(shard.index()))),
      sweep_timer_(shard.loop()), reap_timer_(shard.loop()), soon_timer_(shard.loop()), stop_deadline_(shard.loop()) {
    sweep_timer_.arm_after_ms(sweep_interval_ms, &shard_server::on_sweep, this);
}

shard_server::~shard_server() {
    for (client_session* session : retired_) delete session;
    for (client_session* session : sessions_) delete session;
}

void shard_server::apply_mapping(const mapping_settings& mapping) {
    remap_.mappings = mapping_registry(mapping);
    remap_.default_mismatch_warned.clear();
    remap_.window.set_bytes_max(mapping.fetch_window_bytes);
}

void shard_server::apply_directory(std::shared_ptr<const cluster_directory> directory) {
    directory_ = std::move(directory);
    refresh_requested_ = false;
    if (stopping_) return;
    if (!listeners_.count(runtime_.config.listen.address.port)) open_listener(-1, runtime_.config.listen.address.port);
    for (const auto& [node_id, broker] : directory_->brokers)
        if (!listeners_.count(broker.proxy_port)) open_listener(node_id, broker.proxy_port);
}

void shard_server::open_listener(int32_t node_id, uint16_t port) {
    auto entry = std::make_unique<port_listener>();
    entry->server = this;
    entry->node_id = node_id;
    auto bind_address = reactor::resolve_address(runtime_.config.listen.address.host, port, true);
    try {
        entry->socket = std::make_unique<reactor::listener>(loop(), bind_address, &shard_server::on_accept, entry.get());
    } catch (const reactor::reactor_error& error) {
        throw reactor::reactor_error(std::string(node_id < 0 ? "listen.address: " : "listen.broker_port_base: ") +
                                     error.what());
    }
    listeners_[port] = std::move(entry);
}

void shard_server::on_accept(void* context, int fd) {
    auto& entry = *static_cast<port_listener*>(context);
    entry.server->accept_on(entry, fd);
}

bool shard_server::target_for(int32_t node_id, upstream_target& target) {
    target.node_id = node_id;
    target.tls = runtime_.broker_tls.load();
    target.sasl = runtime_.broker_identity.load();
    if (node_id < 0) {
        // Round robin over the bootstrap servers, then every known broker as a fallback.
        const auto& servers = runtime_.bootstrap_addresses;
        size_t first = next_bootstrap_++ % servers.size();
        for (size_t offset = 0; offset < servers.size(); ++offset) {
            size_t index = (first + offset) % servers.size();
            target.endpoints.push_back(
                {servers[index], "bootstrap server " + runtime_.config.kafka.bootstrap_servers[index].to_string(),
                 runtime_.config.kafka.bootstrap_servers[index].host});
        }
        if (directory_) {
            for (const auto& [id, broker] : directory_->brokers) {
                bool listed = false;
                for (const auto& endpoint : target.endpoints)
                    listed |= endpoint.address.to_string() == broker.address.to_string();
                if (!listed)
                    target.endpoints.push_back({broker.address, describe_broker(broker), broker.advertised.host});
            }
        }
        return true;
    }
    const upstream_broker* broker = directory_ ? directory_->find(node_id) : nullptr;
    if (!broker) return false;
    target.endpoints.push_back({broker->address, describe_broker(*broker), broker->advertised.host});
    return true;
}

void shard_server::accept_on(port_listener& entry, int fd) {
    if (fd < 0) {
        spdlog::warn("accept failed on port {}: {}", entry.socket->port(), reactor::error_text(-fd));
        return;
    }
    if (stopping_) {
        ::close(fd);
        return;
    }
    uint32_t open_now = runtime_.client_connections.fetch_add(1, std::memory_order_relaxed);
    uint32_t limit = runtime_.max_connections.load(std::memory_order_relaxed);
    if (open_now >= limit) {
        runtime_.client_connections.fetch_sub(1, std::memory_order_relaxed);
        bump(metrics_.client_connections_refused);
        spdlog::warn("refusing a connection on port {}: listen.max_connections ({}) reached", entry.socket->port(),
                     limit);
        ::close(fd);
        return;
    }
    upstream_target target;
    if (!target_for(entry.node_id, target)) {
        runtime_.client_connections.fetch_sub(1, std::memory_order_relaxed);
        spdlog::warn("closing a connection on port {}: broker {} is no longer in the cluster", entry.socket->port(),
                     entry.node_id);
        ::close(fd);
        return;
    }
    bump(metrics_.client_connections_opened);
    auto* session = new client_session(*this, fd, std::move(target));
    sessions_.insert(session);
    if (auto tls = runtime_.client_tls.load()) session->use_tls(std::move(tls));
    if (auto sasl = runtime_.client_sasl.load()) session->use_sasl(std::move(sasl));
    spdlog::debug("client {} connected on port {} (shard {})", session->peer(), entry.socket->port(), shard_.index());
    session->start();
}

void shard_server::retire(client_session* session) {
    if (!sessions_.erase(session)) return;
    runtime_.client_connections.fetch_sub(1, std::memory_order_relaxed);
    bump(metrics_.client_connections_closed);
    retired_.push_back(session);
    if (!reap_timer_.armed()) reap_timer_.arm_after_ms(0, &shard_server::on_reap, this);
}

void shard_server::run_soon(std::function<void()> work) {
    soon_.push_back(std::move(work));
    if (!soon_timer_.armed()) soon_timer_.arm_after_ms(0, &shard_server::on_soon, this);
}

void shard_server::on_soon(reactor::timer&, void* context) {
    auto& server = *static_cast<shard_server*>(context);
    std::vector<std::function<void()>> due;
    due.swap(server.soon_);
    for (auto& work : due) work();
}

void shard_server::on_reap(reactor::timer&, void* context) {
    auto& server = *static_cast<shard_server*>(context);
    std::vector<client_session*> finished;
    finished.swap(server.retired_);
    for (client_session* session : finished) delete session;
    server.check_stopped();
}

void shard_server::on_sweep(reactor::timer& self, void* context) {
    auto& server = *static_cast<shard_server*>(context);
    uint64_t now = server.loop().now_ns();
    std::vector<client_session*> snapshot(server.sessions_.begin(), server.sessions_.end());
    for (client_session* session : snapshot)
        if (server.sessions_.count(session)) session->check_timeouts(now);
    server.store_->check_timeouts(now);
    if (!server.stopping_) self.arm_after_ms(sweep_interval_ms, &shard_server::on_sweep, &server);
}

void shared_txn_sequences::expire(int64_t now_ms) {
    std::lock_guard lock(mutex_);
    if (now_ms - expired_ms_ < 60'000) return;
    expired_ms_ = now_ms;
    state_.expire_idle(now_ms);
}

void shard_server::note_unknown_brokers(const std::vector<int32_t>& node_ids) {
    if (refresh_requested_ || !runtime_.request_refresh) return;
    refresh_requested_ = true;
    spdlog::info("the cluster names broker {} that the proxy does not serve yet; refreshing metadata", node_ids.front());
    runtime_.request_refresh();
}

void shard_server::begin_stop() {
    if (stopping_) return;
    stopping_ = true;
    sweep_timer_.cancel();
    for (auto& [port, entry] : listeners_) entry->socket->close();
    std::vector<client_session*> snapshot(sessions_.begin(), sessions_.end());
    for (client_session* session : snapshot)
        if (sessions_.count(session)) session->begin_drain();
    stop_deadline_.arm_after_ms(runtime_.config.shutdown_timeout_ms, &shard_server::on_stop_deadline, this);
    check_stopped();
}

void shard_server::on_stop_deadline(reactor::timer&, void* context) {
    auto& server = *static_cast<shard_server*>(context);
    if (!server.sessions_.empty())
        spdlog::warn("shutdown_timeout_ms reached with {} connection(s) still busy on shard {}; closing them",
                     server.sessions_.size(), server.shard_.index());
    std::vector<client_session*> snapshot(server.sessions_.begin(), server.sessions_.end());
    for (client_session* session : snapshot)
        if (server.sessions_.count(session)) session->abort("");
}

void shard_server::check_stopped() {
    if (!stopping_ || !sessions_.empty() || !retired_.empty()) return;
    stop_deadline_.cancel();
    store_->close();
    // Every session is gone; the loop exits once the listeners' accepts have ended.
}

}  // namespace kpp

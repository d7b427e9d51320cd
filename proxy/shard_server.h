// Everything one core serves: a listener per port (bootstrap + one per broker), the client
// sessions accepted there, and the sweep that times out slow brokers.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "proxy/client_auth.h"
#include "proxy/cluster_directory.h"
#include "proxy/config.h"
#include "proxy/metrics.h"
#include "proxy/offset_store.h"
#include "proxy/principal.h"
#include "proxy/producer_aliases.h"
#include "proxy/remap_state.h"
#include "proxy/upstream_link.h"
#include "reactor/listener.h"
#include "reactor/shard_group.h"
#include "reactor/tls.h"
#include "remap/txn_sequences.h"

namespace kpp {

class client_session;

// The transactional sequence state of the whole process (DESIGN.md section 2,
// "Transactional producers"): the broker keeps one sequence per (producer, epoch, topic,
// physical partition) whichever connection its batches come on, and a client's connections
// land on any core (a reconnect does), so all cores share one state behind a mutex. Only
// transactional batches of mapped topics take it.
class shared_txn_sequences {
public:
    class access {
    public:
        access(std::mutex& mutex, txn_sequences& state) : lock_(mutex), state_(state) {}
        txn_sequences* operator->() { return &state_; }
        txn_sequences& operator*() { return state_; }

    private:
        std::unique_lock<std::mutex> lock_;
        txn_sequences& state_;
    };
    access lock() { return access(mutex_, state_); }
    // Forgets idle streams, at most once a minute.
    void expire(int64_t now_ms);

private:
    std::mutex mutex_;
    txn_sequences state_;
    int64_t expired_ms_ = 0;
};

// State shared by all cores: immutable config, the directory snapshot (replaced whole),
// metrics (per-shard slots), and the connection budget.
struct proxy_runtime {
    proxy_config config;
    host_port advertised;
    std::vector<reactor::socket_address> bootstrap_addresses;
    std::unique_ptr<metrics_registry> metrics;
    std::shared_ptr<const cluster_directory> initial_directory;
    std::atomic<uint32_t> client_connections{0};
    std::atomic<uint32_t> max_connections{0};  // listen.max_connections, changed by reload
    std::function<void()> request_refresh;  // asks the refresher for new metadata now
    bool verify_protocol = false;           // KPP_VERIFY_PROTOCOL=1: walk every message against its schema
    topic_names names;                      // topic id -> name, for Fetch v13+
    virtual_ends ends;                      // virtual high watermarks, for ListOffsets on any core
    offset_store_info store_info;           // partitions 0: no offset store (nothing is remapped)
    alias_registry aliases;                 // producer aliases resolved by any core
    shared_txn_sequences transactions;      // transactional sequences, for every core
    // Security material, replaced whole on SIGHUP (rotation): new connections take the
    // current one, open connections keep theirs.
    std::atomic<std::shared_ptr<reactor::tls_context>> client_tls;  // listen.security.protocol *SSL; null: plaintext
    std::atomic<std::shared_ptr<reactor::tls_context>> broker_tls;  // kafka.security_protocol *SSL; null: plaintext
    std::atomic<std::shared_ptr<const sasl_listener>> client_sasl;   // listen.security.protocol SASL_*; null: none
    std::atomic<std::shared_ptr<const kpp::broker_sasl>> broker_identity;// kafka.security_protocol SASL_*; null: none
    std::string instance_id;                // names this process in the store's alias records
    std::vector<principal_rule> principal_rules;  // listen.security.tls.principal.mapping_rules
};

class shard_server {
public:
    shard_server(reactor::shard& shard, proxy_runtime& runtime);
    ~shard_server();

    // Opens listeners for ports not yet open (throws reactor_error naming the address).
    void apply_directory(std::shared_ptr<const cluster_directory> directory);
    // Reload: the mapping new requests use; requests in flight finish with the old one
    // (a reload only raises V or adds topics, so both agree on every partition they share).
    void apply_mapping(const mapping_settings& mapping);
    void begin_stop();

    reactor::event_loop& loop() { return shard_.loop(); }
    const proxy_config& config() const { return runtime_.config; }
    const std::vector<principal_rule>& principal_rules() const { return runtime_.principal_rules; }
    const host_port& advertised() const { return runtime_.advertised; }
    bool verify_protocol() const { return runtime_.verify_protocol; }
    shard_metrics& metrics() { return metrics_; }
    remap_state& remap() { return remap_; }
    offset_store& store() { return *store_; }
    alias_resolver& aliases() { return *aliases_; }
    // Physical sequences of transactional producers on mapped topics, locked for the caller.
    shared_txn_sequences::access transactions() { return runtime_.transactions.lock(); }
    shared_txn_sequences& shared_transactions() { return runtime_.transactions; }
    // Where a connection to `node_id` (-1: any bootstrap server) goes; false for a node the
    // directory does not list.
    bool target_for(int32_t node_id, upstream_target& target);
    const std::shared_ptr<const cluster_directory>& directory() const { return directory_; }
    void note_unknown_brokers(const std::vector<int32_t>& node_ids);
    // A finished session is freed after the current batch of completions.
    void retire(client_session* session);
    // Runs `work` after the current batch of completions (never inside the caller).
    void run_soon(std::function<void()> work);

private:
    struct port_listener {
        shard_server* server;
        int32_t node_id;  // -1: bootstrap
        std::unique_ptr<reactor::listener> socket;
    };

    static void on_accept(void* context, int fd);
    static void on_sweep(reactor::timer& self, void* context);
    static void on_reap(reactor::timer& self, void* context);
    static void on_soon(reactor::timer& self, void* context);
    static void on_stop_deadline(reactor::timer& self, void* context);
    void open_listener(int32_t node_id, uint16_t port);
    void accept_on(port_listener& entry, int fd);
    void check_stopped();

    reactor::shard& shard_;
    proxy_runtime& runtime_;
    shard_metrics& metrics_;
    std::shared_ptr<const cluster_directory> directory_;
    remap_state remap_;
    std::unique_ptr<offset_store> store_;
    std::unique_ptr<alias_resolver> aliases_;
    std::map<uint16_t, std::unique_ptr<port_listener>> listeners_;
    std::unordered_set<client_session*> sessions_;
    std::vector<client_session*> retired_;
    reactor::timer sweep_timer_;
    reactor::timer reap_timer_;
    std::vector<std::function<void()>> soon_;
    reactor::timer soon_timer_;
    reactor::timer stop_deadline_;
    uint32_t next_bootstrap_ = 0;
    bool stopping_ = false;
    bool refresh_requested_ = false;
};

}  // namespace kpp

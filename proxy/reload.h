// Reload without restart (DESIGN.md section 7): SIGHUP and POST /reload read the whole
// configuration again, validate it, and apply what can change while connections stay open
// (the mapping: raising V and new topics; TLS and SASL material; logging.level;
// listen.max_connections). What needs a restart is reported and keeps its running value.
// Lowering V, changing P or unmapping a topic served remapped is refused, whether the
// proxy served it so or the offset store recorded it (remap/topic_layouts.h).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "proxy/cli.h"
#include "proxy/client_auth.h"
#include "proxy/config.h"
#include "proxy/layout_guard.h"
#include "proxy/principal.h"
#include "proxy/security.h"
#include "reactor/tls.h"

namespace kpp {

struct proxy_runtime;

// The file the CLI names, with --listen applied. Throws config_error naming the key.
proxy_config load_cli_config(const cli_options& options);

// Everything security the configuration names, built from its files (certificates, keys,
// CAs, credential and token files, principal rules): what start-up, --check-config and every
// reload build before anything is applied. nullopt with `error` naming the key.
struct security_material {
    std::shared_ptr<reactor::tls_context> client_tls, broker_tls;  // null: plaintext
    std::shared_ptr<const sasl_listener> client_sasl;                // null: no SASL toward clients
    std::shared_ptr<const broker_sasl> broker_identity;              // null: no SASL toward brokers
    std::vector<principal_rule> principal_rules;
};
std::optional<security_material> build_security_material(const proxy_config& config, std::string& error);

// What differs between two configurations, by key.
struct config_diff {
    std::vector<std::string> live;     // keys a reload applies
    std::vector<std::string> restart;  // keys that need a restart (the running value stays)
    std::vector<std::string> refused;  // keys that cannot change by reload at all: the whole reload is refused
    bool mapping = false, security = false, logging_level = false, max_connections = false;
    bool empty() const { return live.empty() && restart.empty() && refused.empty(); }
};
config_diff diff_configs(const proxy_config& running, const proxy_config& next);

struct reload_outcome {
    bool applied = false;
    std::string message;  // one line for the log and the admin endpoint's answer
};

class reloader {
public:
    // `apply_mapping` hands a new mapping to every core.
    reloader(proxy_runtime& runtime, const cli_options& options,
             std::function<void(std::shared_ptr<const mapping_settings>)> apply_mapping);
    // Reads options.config_path again; `trigger` names the cause in messages ("SIGHUP").
    reload_outcome reload(const std::string& trigger);
    // After a metadata refresh: records the layouts of remapped topics the store does not
    // know yet and keeps the view the admin endpoint shows. Blocking; not on a core.
    void check_layouts();
    // The admin views' JSON.
    std::string mapping_json();
    // Start-up: the layout check of the configuration the proxy starts with; false (with
    // the messages logged) when it would strand records.
    bool check_at_start();

private:
    proxy_runtime& runtime_;
    const cli_options& options_;
    std::function<void(std::shared_ptr<const mapping_settings>)> apply_mapping_;
    // Serialises reloads and layout checks, which do blocking I/O while holding it.
    std::mutex mutex_;
    proxy_config effective_;  // the running values, reloads included
    // What the admin view shows, under a lock of its own so that a view (the admin thread
    // also answers /ready) never waits for a reload's or a check's I/O.
    std::mutex view_mutex_;
    mapping_settings view_mapping_;
    std::vector<topic_view> topics_;  // from the last layout check
    std::string layouts_error_;
    void publish_view(std::vector<topic_view> topics, std::string error);
};

}  // namespace kpp

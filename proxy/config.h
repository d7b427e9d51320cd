// The proxy's configuration: the typed model of the YAML file and its loader.
//
// Loading happens once at start-up, so errors are exceptions (config_error) whose
// message always begins with the full key path ("kafka.request_timeout_ms: ..."),
// letting an operator fix the file without reading code. docs/configuration.md is
// the user-facing reference for every key below.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace kpp {

struct config_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct host_port {
  std::string host;
  uint16_t port = 0;
  // IPv6 literals come back bracketed ("[::1]:9092") so the text parses again.
  std::string to_string() const;
  bool operator==(const host_port&) const = default;
};

// Accepts "host:port", "[v6-literal]:port" and "0.0.0.0:9092"; port 1..65535.
// Errors name `key`.
host_port parse_host_port(std::string_view text, std::string_view key);

struct tls_client_settings {
  std::string ca_cert_path, cert_path, key_path;
  bool insecure_skip_verify = false;
  bool operator==(const tls_client_settings&) const = default;
};

struct sasl_client_settings {
  std::string mechanism = "PLAIN", username, password;
  std::string token_file;  // OAUTHBEARER: the token, re-read when the file changes
  bool operator==(const sasl_client_settings&) const = default;
};

struct listen_tls_settings {
  std::string cert_path, key_path, ca_cert_path;
  bool require_client_cert = false;
  std::string min_version = "TLSv1.2";
  uint32_t handshake_timeout_ms = 10000;  // a connection still handshaking then is closed
  bool kernel_offload = true;  // hand the record layer to the kernel where it offers TLS
  std::vector<std::string> principal_mapping_rules{"DEFAULT"};
  bool operator==(const listen_tls_settings&) const = default;
};

// One SASL user: a password (PLAIN, and SCRAM keys derived from it at load), or only
// SCRAM keys (base64, as Kafka's SCRAM credentials hold them) so the proxy never holds the
// password; the hash follows from the key length (32 bytes SHA-256, 64 bytes SHA-512).
struct sasl_user {
  std::string password;
  uint32_t iterations = 4096;
  std::string salt, stored_key, server_key;
  bool operator==(const sasl_user&) const = default;
};
using sasl_user_map = std::map<std::string, sasl_user>;

struct listen_sasl_settings {
  std::vector<std::string> enabled_mechanisms;
  sasl_user_map users;
  std::string credentials_file;  // YAML map of the same shape as `users`, re-read on reload
  uint64_t session_lifetime_ms = 0;  // 0: sessions do not expire (OAUTHBEARER: the token's exp still does)
  uint32_t failed_authentication_delay_ms = 100;
  // OAUTHBEARER token validation.
  std::string jwks_url, public_key_path, issuer, audience;
  std::vector<std::string> required_scopes;
  uint32_t clock_skew_seconds = 60;
  bool operator==(const listen_sasl_settings&) const = default;
};

struct listen_security_settings {
  std::string protocol = "PLAINTEXT";
  listen_tls_settings tls;
  listen_sasl_settings sasl;
  bool operator==(const listen_security_settings&) const = default;
};

struct listen_settings {
  host_port address{"0.0.0.0", 9092};  // bootstrap listener
  // As written in the file (nullopt when absent; port 0 when only a host was given);
  // use advertised_address_of() for the value to tell clients.
  std::optional<host_port> advertised_address;
  // As written in the file; use broker_port_of() for the port of a node.
  std::optional<uint16_t> broker_port_base;
  std::map<int32_t, uint16_t> broker_ports;  // explicit node id -> port, beats the base
  uint32_t max_connections = 1000;
  uint32_t frame_bytes_max = 104857600;  // Kafka's socket.request.max.bytes default
  listen_security_settings security;
  bool operator==(const listen_settings&) const = default;
};

struct kafka_settings {
  std::vector<host_port> bootstrap_servers;  // never empty after load
  uint32_t connection_timeout_ms = 10000;
  uint32_t request_timeout_ms = 30000;
  uint32_t metadata_refresh_interval_secs = 30;  // 0: refresh only on demand
  std::string security_protocol = "PLAINTEXT";  // upper case after load
  tls_client_settings tls;
  sasl_client_settings sasl;
  bool operator==(const kafka_settings&) const = default;
};

struct topic_mapping_rule {
  std::string pattern;  // the key as written under mapping.topics
  bool is_regex = false;
  int32_t virtual_partitions = 0, physical_partitions = 0;  // inherited ones filled in
  bool operator==(const topic_mapping_rule&) const = default;
};

struct mapping_settings {
  // Global default; V = P = 0 means "no default": topics no rule names pass through.
  int32_t virtual_partitions = 0, physical_partitions = 0;
  std::vector<topic_mapping_rule> topics;  // in file order, which decides regex precedence
  std::string tag_header = "kpr.vp";
  // Shared fetch: bytes of recent broker answers each core keeps for the consumers of other
  // virtual partitions of the same physical one (remap/fetch_window.h); 0 turns it off.
  uint64_t fetch_window_bytes = uint64_t(2) << 20;
  bool offset_range_given = false;  // accepted for compatibility, ignored (see warnings)
  bool operator==(const mapping_settings&) const = default;
};

struct offset_store_settings {
  std::string topic = "__kpr_offsets";
  int32_t partitions = 16;
  int16_t replication_factor = 3;  // -1: the broker's default
  uint32_t cache_entries = 200000;  // per core: committed offsets held in memory
  bool operator==(const offset_store_settings&) const = default;
};

// Idempotent producers on mapped topics (DESIGN.md section 2): producer aliases.
struct producer_settings {
  // An alias not used for this long is tombstoned in the offset store; longer than the
  // broker's producer id expiry, so the broker has forgotten the alias's state by then.
  uint64_t alias_idle_ms = 7ull * 24 * 3600 * 1000;
  uint32_t aliases_max = 1000000;  // per process: resolved aliases held in memory (about 100 bytes each)
  bool operator==(const producer_settings&) const = default;
};

struct metrics_settings {
  bool enabled = true;
  host_port address{"0.0.0.0", 9090};
  // POST /reload and POST /drain on the metrics port; off by default (anyone who reaches
  // the port could use them).
  bool admin_endpoints = false;
  // Mapped topics with their own `topic` label in the per-topic figures; later ones share
  // topic="__other__" (bounded label sets). Fixed at start.
  uint32_t topic_labels_max = 100;
  bool operator==(const metrics_settings&) const = default;
};

struct logging_settings {
  std::string level = "info";  // trace|debug|info|warn|error after load
  bool json = false;
  bool operator==(const logging_settings&) const = default;
};

struct proxy_config {
  uint32_t threads = 0;  // 0: one per CPU this process may run on
  // Each core asks its ring for completions this long before it sleeps (0: sleeps at once).
  uint32_t spin_before_sleep_us = 0;
  uint32_t shutdown_timeout_ms = 10000;
  listen_settings listen;
  kafka_settings kafka;
  mapping_settings mapping;
  offset_store_settings offset_store;
  producer_settings producers;
  metrics_settings metrics;
  logging_settings logging;
  // Non-fatal findings of the load; main logs them once logging is up.
  std::vector<std::string> warnings;
};

proxy_config load_config_file(const std::string& path);
// A SASL credentials file (listen.security.sasl.credentials.file): a YAML map of user to
// password or SCRAM keys. Throws config_error naming the file and the entry.
sasl_user_map load_sasl_credentials_file(const std::string& path);
proxy_config load_config_string(std::string_view yaml_text);

// Replaces ${VAR} and ${VAR:-fallback} (fallback also when VAR is empty); "$${"
// stays a literal "${". An unset VAR without fallback throws config_error.
std::string expand_environment(std::string_view text);

// What clients are told to connect to: listen.advertised_address when given (a
// missing port there means the listen port), else the listen address, with a
// wildcard bind host (0.0.0.0, ::) replaced by 127.0.0.1.
host_port advertised_address_of(const listen_settings& listen);

// The port that serves broker `node_id`: listen.broker_ports[node_id], else
// broker_port_base + node_id, else listen port + 1 + node_id. nullopt when that
// lands past 65535 or node_id is negative.
std::optional<uint16_t> broker_port_of(const listen_settings& listen, int32_t node_id);

// Applies the CLI's --listen to a loaded config: re-validates like the file key
// would, and adds the wildcard-advertising warning when it applies.
void apply_listen_override(proxy_config& config, std::string_view address_text);

}  // namespace kpp

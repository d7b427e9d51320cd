#include "proxy/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include "proxy/principal.h"
#include "proxy/sasl.h"
#include "remap/std_regex.h"

namespace kpp {
namespace {

using key_list = std::initializer_list<std::string_view>;

constexpr int64_t uint32_max = std::numeric_limits<uint32_t>::max();
constexpr int64_t int32_max = std::numeric_limits<int32_t>::max();
constexpr int64_t frame_bytes_min = 1024;
constexpr int64_t frame_bytes_limit = int64_t{1} << 30;
constexpr int64_t threads_max = 1024;
constexpr int64_t spin_before_sleep_us_max = 10000;
constexpr int64_t fetch_window_bytes_max = int64_t(1) << 30;
constexpr std::size_t topic_name_bytes_max = 249;  // Kafka's own limit
constexpr std::string_view regex_metacharacters = ".*+?[](){}|^$\\";
constexpr std::string_view protocol_names = "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL";

[[noreturn]] void fail(std::string_view key, std::string_view what) {
  throw config_error(std::string(key) + ": " + std::string(what));
}

std::string child_key(std::string_view parent, std::string_view name) {
  if (parent.empty()) return std::string(name);
  return std::string(parent) + "." + std::string(name);
}

std::string quoted(std::string_view text) { return "'" + std::string(text) + "'"; }

std::string to_upper(std::string text) {
  for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

std::string to_lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// Plain Levenshtein distance, for "did you mean" hints on misspelt keys.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> previous(b.size() + 1), current(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t substitute = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitute});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

std::string unknown_key_message(std::string_view parent, std::string_view name, key_list allowed) {
  std::string message = "unknown key " + quoted(child_key(parent, name));
  std::string_view best;
  std::size_t best_distance = 3;  // suggest only within distance 2
  for (std::string_view candidate : allowed) {
    std::size_t distance = edit_distance(name, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  if (!best.empty()) message += " (did you mean " + quoted(child_key(parent, best)) + "?)";
  return message;
}

std::string describe_node(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Scalar: return quoted(node.Scalar());
    default: return "nothing";
  }
}

// --- environment expansion ---------------------------------------------------

bool is_variable_name(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

// `key` prefixes errors when the text came from a config value.
std::string expand(std::string_view text, std::string_view key) {
  auto error = [&](const std::string& what) -> config_error {
    return config_error(key.empty() ? what : std::string(key) + ": " + what);
  };
  std::string result;
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t dollar = text.find('$', at);
    if (dollar == std::string_view::npos) break;
    result.append(text.substr(at, dollar - at));
    if (text.substr(dollar, 3) == "$${") {  // escape for a literal "${"
      result.append("${");
      at = dollar + 3;
      continue;
    }
    if (text.substr(dollar, 2) != "${") {
      result.push_back('$');
      at = dollar + 1;
      continue;
    }
    std::size_t close = text.find('}', dollar + 2);
    if (close == std::string_view::npos) throw error("unterminated '${' in " + quoted(text));
    std::string_view reference = text.substr(dollar + 2, close - dollar - 2);
    std::size_t separator = reference.find(":-");
    std::string_view name = reference.substr(0, separator);
    if (!is_variable_name(name)) {
      throw error("invalid environment variable reference " + quoted(text.substr(dollar, close - dollar + 1)));
    }
    const char* value = std::getenv(std::string(name).c_str());
    if (separator != std::string_view::npos) {
      result.append(value != nullptr && *value != '\0' ? std::string_view(value)
                                                       : reference.substr(separator + 2));
    } else if (value != nullptr) {
      result.append(value);
    } else {
      throw error("environment variable " + quoted(name) + " is not set (use ${" + std::string(name) +
                  ":-default} to give a fallback)");
    }
    at = close + 1;
  }
  if (at < text.size()) result.append(text.substr(at));
  return result;
}

// --- typed scalars -----------------------------------------------------------

int64_t to_integer(std::string_view text, std::string_view key, int64_t min, int64_t max) {
  int64_t value = 0;
  auto [end, status] = std::from_chars(text.data(), text.data() + text.size(), value);
  bool complete = status == std::errc() && end == text.data() + text.size();
  bool too_big = status == std::errc::result_out_of_range;
  if (!complete && !too_big) {
    fail(key, std::string(min >= 0 ? "expected a non-negative integer" : "expected an integer") +
                  ", got " + quoted(text));
  }
  if (min >= 0 && !too_big && value < 0) fail(key, "expected a non-negative integer, got " + quoted(text));
  if (too_big || value < min || value > max) {
    fail(key, "expected an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                  ", got " + quoted(text));
  }
  return value;
}

bool to_bool(std::string_view text, std::string_view key) {
  std::string lower = to_lower(std::string(text));
  if (lower == "true" || lower == "yes" || lower == "on" || lower == "1") return true;
  if (lower == "false" || lower == "no" || lower == "off" || lower == "0") return false;
  fail(key, "expected true or false, got " + quoted(text));
}

// The scalar's text after ${ENV} expansion; nullopt for an explicit null ("key:" or "~").
std::optional<std::string> scalar_text(const YAML::Node& node, std::string_view key) {
  if (node.IsNull()) return std::nullopt;
  if (!node.IsScalar()) fail(key, "expected a single value, got " + describe_node(node));
  return expand(node.Scalar(), key);
}

// One YAML map at a known key path. Construction rejects unknown and duplicate keys,
// so every reader below sees only names it asked for.
class section {
 public:
  section(const YAML::Node& node, std::string path, key_list allowed) : path_(std::move(path)) {
    if (!node.IsDefined() || node.IsNull()) return;
    if (!node.IsMap()) fail(path_, "expected a map, got " + describe_node(node));
    for (const auto& entry : node) {
      if (!entry.first.IsScalar()) fail(path_, "keys must be plain names, got " + describe_node(entry.first));
      std::string name = entry.first.Scalar();
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        throw config_error(unknown_key_message(path_, name, allowed));
      }
      if (find(name) != nullptr) fail(key_of(name), "duplicate key");
      entries_.emplace_back(std::move(name), entry.second);
    }
  }

  std::string key_of(std::string_view name) const { return child_key(path_, name); }

  // The value under `name`; nullopt when absent or null, which both mean "use the default".
  std::optional<YAML::Node> get(std::string_view name) const {
    const YAML::Node* node = find(name);
    if (node == nullptr || node->IsNull()) return std::nullopt;
    return *node;
  }

  std::optional<std::string> text(std::string_view name) const {
    auto node = get(name);
    if (!node) return std::nullopt;
    return scalar_text(*node, key_of(name));
  }

  section child(std::string_view name, key_list allowed) const {
    auto node = get(name);
    return section(node ? *node : YAML::Node(), key_of(name), allowed);
  }

 private:
  const YAML::Node* find(std::string_view name) const {
    for (const auto& [entry_name, node] : entries_) {
      if (entry_name == name) return &node;
    }
    return nullptr;
  }

  std::string path_;
  std::vector<std::pair<std::string, YAML::Node>> entries_;
};

template <typename T>
bool read_integer(const section& s, std::string_view name, T& out, int64_t min, int64_t max) {
  auto text = s.text(name);
  if (!text) return false;
  out = static_cast<T>(to_integer(*text, s.key_of(name), min, max));
  return true;
}

void read_bool(const section& s, std::string_view name, bool& out) {
  if (auto text = s.text(name)) out = to_bool(*text, s.key_of(name));
}

void read_string(const section& s, std::string_view name, std::string& out) {
  if (auto text = s.text(name)) out = *text;
}

void read_host_port(const section& s, std::string_view name, host_port& out) {
  if (auto text = s.text(name)) out = parse_host_port(*text, s.key_of(name));
}

std::vector<std::string> split_commas(std::string_view text) {
  std::vector<std::string> parts;
  std::stringstream stream{std::string(text)};
  std::string part;
  while (std::getline(stream, part, ',')) {
    auto first = part.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    parts.push_back(part.substr(first, part.find_last_not_of(" \t") - first + 1));
  }
  return parts;
}

// A YAML list, or one string (split at commas when `comma_separated`, as Kafka's own
// tools write broker lists). Each element comes back with its key for error messages.
std::optional<std::vector<std::pair<std::string, std::string>>> read_list(
    const section& s, std::string_view name, bool comma_separated) {
  auto node = s.get(name);
  if (!node) return std::nullopt;
  std::string key = s.key_of(name);
  std::vector<std::pair<std::string, std::string>> items;
  if (node->IsScalar()) {
    std::string text = *scalar_text(*node, key);
    std::vector<std::string> parts = comma_separated ? split_commas(text) : std::vector<std::string>{text};
    for (auto& part : parts) items.emplace_back(key, std::move(part));
    return items;
  }
  if (!node->IsSequence()) fail(key, "expected a list, got " + describe_node(*node));
  for (std::size_t i = 0; i < node->size(); ++i) {
    std::string item_key = key + "[" + std::to_string(i) + "]";
    auto text = scalar_text((*node)[i], item_key);
    if (!text) fail(item_key, "expected a value, got nothing");
    items.emplace_back(item_key, std::move(*text));
  }
  return items;
}

bool read_string_list(const section& s, std::string_view name, std::vector<std::string>& out,
                      bool comma_separated) {
  auto items = read_list(s, name, comma_separated);
  if (!items) return false;
  out.clear();
  for (auto& item : *items) out.push_back(std::move(item.second));
  return true;
}

std::string checked_choice(std::string_view text, std::string_view key, const std::set<std::string>& choices,
                           std::string_view listed) {
  std::string upper = to_upper(std::string(text));
  if (choices.count(upper) == 0) fail(key, "expected one of " + std::string(listed) + ", got " + quoted(text));
  return upper;
}

void read_security_protocol(const section& s, std::string_view name, std::string& out) {
  static const std::set<std::string> protocols{"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"};
  if (auto text = s.text(name)) out = checked_choice(*text, s.key_of(name), protocols, protocol_names);
}

bool is_wildcard_host(std::string_view host) { return host.empty() || host == "0.0.0.0" || host == "::"; }

// --- sections ----------------------------------------------------------------

void parse_broker_ports(const section& listen, std::map<int32_t, uint16_t>& out) {
  auto node = listen.get("broker_ports");
  if (!node) return;
  std::string key = listen.key_of("broker_ports");
  if (!node->IsMap()) fail(key, "expected a map of broker node id to port, got " + describe_node(*node));
  for (const auto& entry : *node) {
    std::string entry_key = key + "." + entry.first.Scalar();
    auto node_id = static_cast<int32_t>(to_integer(entry.first.Scalar(), entry_key, 0, int32_max));
    auto port_text = scalar_text(entry.second, entry_key);
    if (!port_text) fail(entry_key, "expected a port, got nothing");
    if (out.count(node_id) != 0) fail(entry_key, "node id " + std::to_string(node_id) + " listed twice");
    out[node_id] = static_cast<uint16_t>(to_integer(*port_text, entry_key, 1, 65535));
  }
}

// A SASL user is either its password or a map of its password or SCRAM keys.
sasl_user parse_sasl_user(const YAML::Node& node, const std::string& key) {
  sasl_user user;
  if (!node.IsMap()) {
    user.password = scalar_text(node, key).value_or("");
    if (user.password.empty()) fail(key, "expected a password or a map of SCRAM keys, got nothing");
    return user;
  }
  section entry(node, key, {"password", "iterations", "salt", "stored_key", "server_key"});
  read_string(entry, "password", user.password);
  // Kafka refuses SCRAM iteration counts below 4096; more than a million would let one
  // login stall a core.
  read_integer(entry, "iterations", user.iterations, 4096, 1000000);
  read_string(entry, "salt", user.salt);
  read_string(entry, "stored_key", user.stored_key);
  read_string(entry, "server_key", user.server_key);
  bool keys = !user.salt.empty() || !user.stored_key.empty() || !user.server_key.empty();
  if (keys && !user.password.empty()) fail(entry.key_of("password"), "give either the password or the SCRAM keys, not both");
  if (!keys && user.password.empty()) fail(entry.key_of("password"), "required (or salt, stored_key and server_key)");
  if (keys) {
    auto decoded_length = [&](std::string_view name, const std::string& text) {
      std::string field_key = entry.key_of(name);
      if (text.empty()) fail(field_key, "required with the other SCRAM keys");
      auto bytes = sasl::base64_decode(text);
      if (!bytes || bytes->empty()) fail(field_key, "expected base64");
      return bytes->size();
    };
    decoded_length("salt", user.salt);
    size_t stored = decoded_length("stored_key", user.stored_key);
    size_t server = decoded_length("server_key", user.server_key);
    if (stored != 32 && stored != 64)
      fail(entry.key_of("stored_key"), "expected 32 bytes (SCRAM-SHA-256) or 64 bytes (SCRAM-SHA-512), got " +
                                           std::to_string(stored));
    if (server != stored)
      fail(entry.key_of("server_key"), "must be as long as stored_key (" + std::to_string(stored) + " bytes)");
  }
  return user;
}

void parse_sasl_users(const YAML::Node& node, const std::string& key, sasl_user_map& out) {
  if (!node.IsMap()) fail(key, "expected a map of user name to password, got " + describe_node(node));
  for (const auto& entry : node) {
    std::string name = entry.first.Scalar();
    if (name.empty()) fail(key, "a user name is empty");
    if (out.count(name) != 0) fail(key + "." + name, "duplicate user");
    out[name] = parse_sasl_user(entry.second, key + "." + name);
  }
}

void parse_sasl_mechanisms(const section& sasl, std::vector<std::string>& out) {
  static const std::set<std::string> mechanisms{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"};
  auto items = read_list(sasl, "enabled_mechanisms", true);
  if (!items) return;
  out.clear();
  for (auto& [key, text] : *items) {
    out.push_back(checked_choice(text, key, mechanisms, "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER"));
  }
}

void parse_listen_sasl(const section& security, listen_sasl_settings& out) {
  section sasl = security.child("sasl", {"enabled_mechanisms", "credentials", "oauthbearer", "session_lifetime_ms",
                                        "failed_authentication_delay_ms"});
  parse_sasl_mechanisms(sasl, out.enabled_mechanisms);

  section credentials = sasl.child("credentials", {"users", "file"});
  read_string(credentials, "file", out.credentials_file);
  if (auto users = credentials.get("users")) parse_sasl_users(*users, credentials.key_of("users"), out.users);
  read_integer(sasl, "session_lifetime_ms", out.session_lifetime_ms, 0, int64_t(1) << 53);
  read_integer(sasl, "failed_authentication_delay_ms", out.failed_authentication_delay_ms, 0, 60000);

  section oauth = sasl.child("oauthbearer", {"jwks_url", "public_key_path", "issuer", "audience",
                                             "required_scopes", "clock_skew_seconds"});
  read_string(oauth, "jwks_url", out.jwks_url);
  read_string(oauth, "public_key_path", out.public_key_path);
  read_string(oauth, "issuer", out.issuer);
  read_string(oauth, "audience", out.audience);
  read_string_list(oauth, "required_scopes", out.required_scopes, true);
  read_integer(oauth, "clock_skew_seconds", out.clock_skew_seconds, 0, uint32_max);
}

void parse_listen_security(const section& listen, listen_security_settings& out) {
  section security = listen.child("security", {"protocol", "tls", "sasl"});
  read_security_protocol(security, "protocol", out.protocol);

  section tls = security.child("tls", {"cert_path", "key_path", "ca_cert_path", "require_client_cert", "principal",
                                      "min_version", "handshake_timeout_ms", "kernel_offload"});
  read_bool(tls, "kernel_offload", out.tls.kernel_offload);
  read_string(tls, "cert_path", out.tls.cert_path);
  read_string(tls, "key_path", out.tls.key_path);
  read_string(tls, "ca_cert_path", out.tls.ca_cert_path);
  read_bool(tls, "require_client_cert", out.tls.require_client_cert);
  read_string(tls, "min_version", out.tls.min_version);
  if (out.tls.min_version != "TLSv1.2" && out.tls.min_version != "TLSv1.3")
    fail(tls.key_of("min_version"), "expected TLSv1.2 or TLSv1.3, got " + quoted(out.tls.min_version));
  read_integer(tls, "handshake_timeout_ms", out.tls.handshake_timeout_ms, 100, 600000);
  section principal = tls.child("principal", {"mapping_rules"});
  // Rules hold regexes with commas, so a single string is one rule, never split.
  if (read_string_list(principal, "mapping_rules", out.tls.principal_mapping_rules, false) &&
      out.tls.principal_mapping_rules.empty()) {
    fail(principal.key_of("mapping_rules"), "must name at least one rule (use DEFAULT for the full name)");
  }
  parse_listen_sasl(security, out.sasl);
}

// The port is optional here: a bare host advertises the listen port. Port 0 records that.
host_port parse_advertised_address(std::string_view text, std::string_view key) {
  bool bracketed_only = !text.empty() && text.front() == '[' && text.back() == ']';
  bool has_port = bracketed_only ? false : text.find(':') != std::string_view::npos;
  host_port address;
  if (has_port) {
    address = parse_host_port(text, key);
  } else {
    address.host = std::string(bracketed_only ? text.substr(1, text.size() - 2) : text);
    if (address.host.empty()) fail(key, "expected host or host:port, got " + quoted(text));
  }
  if (is_wildcard_host(address.host)) {
    fail(key, quoted(text) + " is a wildcard address; advertise a host name or address clients can reach");
  }
  return address;
}

void parse_listen(const section& root, listen_settings& out) {
  section listen = root.child("listen", {"address", "advertised_address", "broker_port_base", "broker_ports",
                                         "max_connections", "frame_bytes_max", "security"});
  read_host_port(listen, "address", out.address);
  if (auto text = listen.text("advertised_address")) {
    out.advertised_address = parse_advertised_address(*text, listen.key_of("advertised_address"));
  }
  uint16_t base = 0;
  if (read_integer(listen, "broker_port_base", base, 1, 65535)) out.broker_port_base = base;
  parse_broker_ports(listen, out.broker_ports);
  read_integer(listen, "max_connections", out.max_connections, 1, uint32_max);
  read_integer(listen, "frame_bytes_max", out.frame_bytes_max, frame_bytes_min, frame_bytes_limit);
  parse_listen_security(listen, out.security);
}

void parse_kafka(const section& root, kafka_settings& out) {
  section kafka = root.child("kafka", {"bootstrap_servers", "connection_timeout_ms", "request_timeout_ms",
                                       "metadata_refresh_interval_secs", "security_protocol", "tls", "sasl"});
  if (auto items = read_list(kafka, "bootstrap_servers", true)) {
    for (const auto& [key, text] : *items) out.bootstrap_servers.push_back(parse_host_port(text, key));
  }
  if (out.bootstrap_servers.empty()) {
    fail(kafka.key_of("bootstrap_servers"), "required: list at least one broker as host:port");
  }
  read_integer(kafka, "connection_timeout_ms", out.connection_timeout_ms, 1, uint32_max);
  read_integer(kafka, "request_timeout_ms", out.request_timeout_ms, 1, uint32_max);
  read_integer(kafka, "metadata_refresh_interval_secs", out.metadata_refresh_interval_secs, 0, uint32_max);
  read_security_protocol(kafka, "security_protocol", out.security_protocol);

  section tls = kafka.child("tls", {"ca_cert_path", "cert_path", "key_path", "insecure_skip_verify"});
  read_string(tls, "ca_cert_path", out.tls.ca_cert_path);
  read_string(tls, "cert_path", out.tls.cert_path);
  read_string(tls, "key_path", out.tls.key_path);
  read_bool(tls, "insecure_skip_verify", out.tls.insecure_skip_verify);

  section sasl = kafka.child("sasl", {"mechanism", "username", "password", "token_file"});
  static const std::set<std::string> mechanisms{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"};
  if (auto text = sasl.text("mechanism")) {
    out.sasl.mechanism = checked_choice(*text, sasl.key_of("mechanism"), mechanisms,
                                        "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER");
  }
  read_string(sasl, "username", out.sasl.username);
  read_string(sasl, "password", out.sasl.password);
  read_string(sasl, "token_file", out.sasl.token_file);
}

void check_partition_pair(int32_t virtual_partitions, int32_t physical_partitions, std::string_view prefix) {
  std::string virtual_key = std::string(prefix) + ".virtual_partitions";
  std::string physical = std::to_string(physical_partitions);
  if (virtual_partitions < physical_partitions) {
    fail(virtual_key, "must be at least physical_partitions (" + physical + "), got " +
                          std::to_string(virtual_partitions));
  }
  if (virtual_partitions % physical_partitions != 0) {
    fail(virtual_key, "must be a multiple of physical_partitions (" + physical + "), got " +
                          std::to_string(virtual_partitions));
  }
}

bool is_regex_pattern(std::string_view pattern) {
  return pattern.find_first_of(regex_metacharacters) != std::string_view::npos;
}

// Reads one V/P pair; a missing half falls back to `inherited`, whose zero means
// "nothing to inherit".
void read_partition_pair(const section& s, int32_t& virtual_partitions, int32_t& physical_partitions,
                         std::pair<int32_t, int32_t> inherited, std::string_view inherit_from) {
  bool has_virtual = read_integer(s, "virtual_partitions", virtual_partitions, 1, int32_max);
  bool has_physical = read_integer(s, "physical_partitions", physical_partitions, 1, int32_max);
  if (!has_virtual) virtual_partitions = inherited.first;
  if (!has_physical) physical_partitions = inherited.second;
  auto missing = [&](std::string_view name, bool given_other) {
    std::string why = given_other ? "required together with the other partition count"
                                  : "required";
    if (!inherit_from.empty()) why += " (there is no " + std::string(inherit_from) + "." + std::string(name) + " to inherit)";
    fail(s.key_of(name), why);
  };
  if (virtual_partitions == 0) missing("virtual_partitions", has_physical);
  if (physical_partitions == 0) missing("physical_partitions", has_virtual);
}

void read_offset_range(const section& s, bool& given) {
  uint64_t unused = 0;
  if (read_integer(s, "offset_range", unused, 0, std::numeric_limits<int64_t>::max())) given = true;
}

topic_mapping_rule parse_topic_rule(const std::string& pattern, const YAML::Node& node, const std::string& key,
                                    mapping_settings& mapping) {
  if (pattern.empty()) fail(key, "a topic name or pattern must not be empty");
  topic_mapping_rule rule;
  rule.pattern = pattern;
  rule.is_regex = is_regex_pattern(pattern);
  if (rule.is_regex) {
    try {
      std::regex compiled(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& error) {
      fail(key, std::string("invalid regular expression: ") + error.what());
    }
  }
  section s(node, key, {"virtual_partitions", "physical_partitions", "offset_range"});
  read_partition_pair(s, rule.virtual_partitions, rule.physical_partitions,
                      {mapping.virtual_partitions, mapping.physical_partitions}, "mapping");
  check_partition_pair(rule.virtual_partitions, rule.physical_partitions, key);
  read_offset_range(s, mapping.offset_range_given);
  return rule;
}

void parse_mapping(const section& root, mapping_settings& out) {
  section mapping = root.child("mapping", {"virtual_partitions", "physical_partitions", "offset_range",
                                           "topics", "tag_header", "fetch_window_bytes"});
  if (mapping.get("virtual_partitions") || mapping.get("physical_partitions")) {
    read_partition_pair(mapping, out.virtual_partitions, out.physical_partitions, {0, 0}, "");
    check_partition_pair(out.virtual_partitions, out.physical_partitions, "mapping");
  }
  read_offset_range(mapping, out.offset_range_given);
  read_string(mapping, "tag_header", out.tag_header);
  if (out.tag_header.empty()) fail(mapping.key_of("tag_header"), "must not be empty");
  read_integer(mapping, "fetch_window_bytes", out.fetch_window_bytes, 0, fetch_window_bytes_max);

  auto topics = mapping.get("topics");
  if (!topics) return;
  std::string topics_key = mapping.key_of("topics");
  if (!topics->IsMap()) fail(topics_key, "expected a map of topic name or pattern to mapping, got " + describe_node(*topics));
  for (const auto& entry : *topics) {
    std::string pattern = entry.first.Scalar();
    std::string key = topics_key + "." + pattern;
    for (const auto& earlier : out.topics) {
      if (earlier.pattern == pattern) fail(key, "duplicate key");
    }
    out.topics.push_back(parse_topic_rule(pattern, entry.second, key, out));
  }
}

bool is_valid_topic_name(std::string_view name) {
  if (name.empty() || name.size() > topic_name_bytes_max || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

void parse_offset_store(const section& root, offset_store_settings& out) {
  section store = root.child("offset_store", {"topic", "partitions", "replication_factor", "cache_entries"});
  read_string(store, "topic", out.topic);
  if (!is_valid_topic_name(out.topic)) {
    fail(store.key_of("topic"), "expected a Kafka topic name (letters, digits, '.', '_', '-'), got " + quoted(out.topic));
  }
  // "__" keeps the store out of every mapping, like Kafka's own internal topics.
  if (out.topic.rfind("__", 0) != 0) fail(store.key_of("topic"), "must start with '__', got " + quoted(out.topic));
  read_integer(store, "partitions", out.partitions, 1, int32_max);
  if (read_integer(store, "replication_factor", out.replication_factor, -1, std::numeric_limits<int16_t>::max()) &&
      out.replication_factor == 0) {
    fail(store.key_of("replication_factor"), "expected -1 (the broker's default) or at least 1, got '0'");
  }
  read_integer(store, "cache_entries", out.cache_entries, 1000, uint32_t(100000000));
}

void parse_producers(const section& root, producer_settings& out) {
  section producers = root.child("producers", {"alias_idle_ms", "aliases_max"});
  // At least a minute: an alias must outlive the client's retries of one batch.
  read_integer(producers, "alias_idle_ms", out.alias_idle_ms, 60000, int64_t(365) * 24 * 3600 * 1000);
  read_integer(producers, "aliases_max", out.aliases_max, 1000, uint32_t(100000000));
}

void parse_metrics(const section& root, metrics_settings& out) {
  section metrics = root.child("metrics", {"enabled", "address", "topic_labels_max", "admin_endpoints"});
  read_bool(metrics, "enabled", out.enabled);
  read_bool(metrics, "admin_endpoints", out.admin_endpoints);
  read_host_port(metrics, "address", out.address);
  read_integer(metrics, "topic_labels_max", out.topic_labels_max, 0, 10000);
}

void parse_logging(const section& root, logging_settings& out) {
  section logging = root.child("logging", {"level", "format", "json"});
  if (auto text = logging.text("level")) {
    std::string level = to_lower(*text);
    if (level == "warning") level = "warn";
    static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error"};
    if (levels.count(level) == 0) {
      fail(logging.key_of("level"), "expected one of trace, debug, info, warn, error, got " + quoted(*text));
    }
    out.level = level;
  }
  std::optional<bool> json_from_format;
  if (auto text = logging.text("format")) {
    std::string format = to_lower(*text);
    if (format != "json" && format != "text") fail(logging.key_of("format"), "expected json or text, got " + quoted(*text));
    json_from_format = format == "json";
    out.json = *json_from_format;
  }
  read_bool(logging, "json", out.json);
  if (json_from_format && *json_from_format != out.json) {
    fail(logging.key_of("json"), "contradicts logging.format; set only one of them");
  }
}

// --- checks across sections ----------------------------------------------------

bool is_sasl(const std::string& protocol) { return protocol == "SASL_PLAINTEXT" || protocol == "SASL_SSL"; }
bool is_tls(const std::string& protocol) { return protocol == "SSL" || protocol == "SASL_SSL"; }

// What each security protocol needs, checked at load so a half-configured listener never
// serves: a SASL listener without any way to check a credential would let nobody in, a TLS
// listener without a key cannot handshake.
void check_security(const proxy_config& config) {
  const listen_security_settings& security = config.listen.security;
  const std::string& listen = security.protocol;
  if (is_tls(listen) && security.tls.cert_path.empty()) {
    fail("listen.security.tls.cert_path", listen + " needs the server certificate chain (PEM) and listen.security.tls.key_path");
  }
  if (is_tls(listen) && security.tls.key_path.empty()) {
    fail("listen.security.tls.key_path", listen + " needs the private key (PEM) of listen.security.tls.cert_path");
  }
  if (security.tls.require_client_cert && security.tls.ca_cert_path.empty()) {
    fail("listen.security.tls.ca_cert_path", "require_client_cert needs the CA (PEM) that signs client certificates");
  }
  std::string rule_error;
  if (!parse_principal_rules(security.tls.principal_mapping_rules, rule_error))
    fail("listen.security.tls.principal.mapping_rules", rule_error);
  const listen_sasl_settings& sasl = security.sasl;
  if (is_sasl(listen)) {
    if (sasl.enabled_mechanisms.empty()) {
      fail("listen.security.sasl.enabled_mechanisms", listen + " needs at least one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER");
    }
    bool passwords = std::any_of(sasl.enabled_mechanisms.begin(), sasl.enabled_mechanisms.end(),
                                 [](const std::string& name) { return name != "OAUTHBEARER"; });
    if (passwords && sasl.users.empty() && sasl.credentials_file.empty()) {
      fail("listen.security.sasl.credentials", "PLAIN and SCRAM need users (credentials.users or credentials.file)");
    }
    bool oauth = std::find(sasl.enabled_mechanisms.begin(), sasl.enabled_mechanisms.end(), "OAUTHBEARER") !=
                 sasl.enabled_mechanisms.end();
    if (oauth && sasl.public_key_path.empty() && sasl.jwks_url.empty()) {
      fail("listen.security.sasl.oauthbearer", "OAUTHBEARER needs public_key_path or jwks_url to check token signatures");
    }
    if (!sasl.jwks_url.empty() && sasl.jwks_url.find("://") != std::string::npos &&
        sasl.jwks_url.rfind("file://", 0) != 0) {
      fail("listen.security.sasl.oauthbearer.jwks_url",
           "only a file (a path or file://) is read; fetch the JWKS to a file and re-read it with a reload");
    }
  }
  const std::string& kafka = config.kafka.security_protocol;
  if (is_sasl(kafka)) {
    const sasl_client_settings& client = config.kafka.sasl;
    if (client.mechanism == "OAUTHBEARER") {
      if (client.token_file.empty()) fail("kafka.sasl.token_file", "OAUTHBEARER needs the file holding the token");
    } else {
      if (client.username.empty()) fail("kafka.sasl.username", client.mechanism + " needs the proxy's user name");
      if (client.password.empty()) fail("kafka.sasl.password", client.mechanism + " needs the proxy's password (use ${ENV})");
    }
  }
}

void check_ports(const proxy_config& config) {
  const listen_settings& listen = config.listen;
  uint16_t bootstrap = listen.address.port;
  if (listen.broker_port_base && *listen.broker_port_base == bootstrap) {
    fail("listen.broker_port_base", "must differ from the port of listen.address (" + std::to_string(bootstrap) + ")");
  }
  std::set<uint16_t> seen;
  for (const auto& [node_id, port] : listen.broker_ports) {
    std::string key = "listen.broker_ports." + std::to_string(node_id);
    if (port == bootstrap) fail(key, "port " + std::to_string(port) + " is already the port of listen.address");
    if (!seen.insert(port).second) fail(key, "port " + std::to_string(port) + " is given to two brokers");
  }
  if (config.metrics.enabled && config.metrics.address.port == bootstrap) {
    fail("metrics.address", "port " + std::to_string(bootstrap) + " is already the port of listen.address");
  }
}

constexpr std::string_view wildcard_warning_prefix = "listen.advertised_address is not set";

void add_wildcard_warning(proxy_config& config) {
  if (!config.listen.advertised_address && is_wildcard_host(config.listen.address.host)) {
    config.warnings.push_back(std::string(wildcard_warning_prefix) +
                              " and listen.address binds a wildcard host; clients are told 127.0.0.1, "
                              "which only clients on this machine can reach");
  }
}

void add_load_warnings(proxy_config& config) {
  if (config.mapping.offset_range_given) {
    config.warnings.push_back(
        "mapping offset_range is ignored: virtual offsets are the physical offsets, so no range is needed "
        "(accepted only so older config files load)");
  }
  add_wildcard_warning(config);
}

proxy_config parse_root(const YAML::Node& document) {
  section root(document, "", {"threads", "spin_before_sleep_us", "shutdown_timeout_ms", "listen", "kafka", "mapping", "offset_store",
                              "producers", "metrics", "logging"});
  proxy_config config;
  read_integer(root, "threads", config.threads, 0, threads_max);
  read_integer(root, "spin_before_sleep_us", config.spin_before_sleep_us, 0, spin_before_sleep_us_max);
  read_integer(root, "shutdown_timeout_ms", config.shutdown_timeout_ms, 0, uint32_max);
  parse_listen(root, config.listen);
  parse_kafka(root, config.kafka);
  parse_mapping(root, config.mapping);
  parse_offset_store(root, config.offset_store);
  parse_producers(root, config.producers);
  parse_metrics(root, config.metrics);
  parse_logging(root, config.logging);
  check_security(config);
  check_ports(config);
  add_load_warnings(config);
  return config;
}

}  // namespace

std::string host_port::to_string() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

host_port parse_host_port(std::string_view text, std::string_view key) {
  auto bad = [&](std::string_view why) { fail(key, std::string(why) + ", got " + quoted(text)); };
  if (text.empty() || text.find_first_of(" \t\r\n") != std::string_view::npos) bad("expected host:port");
  host_port result;
  std::string_view port_text;
  if (text.front() == '[') {
    std::size_t close = text.find(']');
    if (close == std::string_view::npos || close == 1) bad("expected [address]:port");
    if (close + 1 >= text.size() || text[close + 1] != ':') bad("expected [address]:port");
    result.host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) bad("expected host:port");
    result.host = std::string(text.substr(0, colon));
    if (result.host.find(':') != std::string::npos) bad("expected host:port (write IPv6 addresses as [::1]:9092)");
    port_text = text.substr(colon + 1);
  }
  bool digits = !port_text.empty() && std::all_of(port_text.begin(), port_text.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c));
  });
  if (!digits || port_text.size() > 5) bad("expected a port from 1 to 65535 after ':'");
  int port = std::stoi(std::string(port_text));
  if (port < 1 || port > 65535) bad("expected a port from 1 to 65535 after ':'");
  result.port = static_cast<uint16_t>(port);
  return result;
}

std::string expand_environment(std::string_view text) { return expand(text, ""); }

proxy_config load_config_string(std::string_view yaml_text) {
  YAML::Node document;
  try {
    document = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& error) {
    throw config_error("config: invalid YAML at line " + std::to_string(error.mark.line + 1) + ", column " +
                       std::to_string(error.mark.column + 1) + ": " + error.msg);
  }
  if (document.IsDefined() && !document.IsNull() && !document.IsMap()) {
    throw config_error("config: expected a map of sections at the top level, got " + describe_node(document));
  }
  return parse_root(document);
}

proxy_config load_config_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw config_error("config file " + quoted(path) + ": cannot read: " + std::strerror(errno));
  std::stringstream contents;
  contents << file.rdbuf();
  if (file.bad()) throw config_error("config file " + quoted(path) + ": cannot read: " + std::strerror(errno));
  try {
    return load_config_string(contents.str());
  } catch (const config_error& error) {
    throw config_error("config file " + quoted(path) + ": " + error.what());
  }
}

sasl_user_map load_sasl_credentials_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::string prefix = "credentials file " + quoted(path);
  if (!file) throw config_error(prefix + ": cannot read: " + std::strerror(errno));
  std::stringstream contents;
  contents << file.rdbuf();
  sasl_user_map users;
  try {
    YAML::Node root = YAML::Load(contents.str());
    if (root.IsDefined() && !root.IsNull()) parse_sasl_users(root, "users", users);
  } catch (const YAML::Exception& error) {
    // The parser's message may quote the line, which can hold a password.
    throw config_error(prefix + ": not valid YAML at line " + std::to_string(error.mark.line + 1));
  } catch (const config_error& error) {
    throw config_error(prefix + ": " + error.what());
  }
  if (users.empty()) throw config_error(prefix + ": lists no user");
  return users;
}

host_port advertised_address_of(const listen_settings& listen) {
  host_port result = listen.advertised_address.value_or(listen.address);
  if (result.port == 0) result.port = listen.address.port;
  if (is_wildcard_host(result.host)) result.host = "127.0.0.1";
  return result;
}

std::optional<uint16_t> broker_port_of(const listen_settings& listen, int32_t node_id) {
  if (node_id < 0) return std::nullopt;
  if (auto explicit_port = listen.broker_ports.find(node_id); explicit_port != listen.broker_ports.end()) {
    return explicit_port->second;
  }
  int64_t base = listen.broker_port_base ? *listen.broker_port_base : int64_t{listen.address.port} + 1;
  int64_t port = base + node_id;
  if (port > 65535) return std::nullopt;
  return static_cast<uint16_t>(port);
}

void apply_listen_override(proxy_config& config, std::string_view address_text) {
  config.listen.address = parse_host_port(address_text, "--listen");
  // The wildcard note depends on the address, so recompute it for the new one.
  std::erase_if(config.warnings, [](const std::string& line) { return line.starts_with(wildcard_warning_prefix); });
  check_ports(config);
  add_wildcard_warning(config);
}

}  // namespace kpp

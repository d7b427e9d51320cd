#include "proxy/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace kpp {
namespace {

constexpr const char* bootstrap_only = "kafka:\n  bootstrap_servers: [\"broker-1:9092\"]\n";

std::string with_bootstrap(const std::string& yaml) { return std::string(bootstrap_only) + yaml; }

// The message of the config_error a load throws, or a marker when it loads.
std::string load_error(const std::string& yaml) {
  try {
    load_config_string(yaml);
  } catch (const config_error& error) {
    return error.what();
  }
  return "<loaded without error>";
}

#define EXPECT_LOAD_ERROR(yaml, fragment) EXPECT_PRED_FORMAT2(::testing::IsSubstring, fragment, load_error(yaml))

// Sets or unsets an environment variable for one test and restores it after.
class scoped_env {
 public:
  scoped_env(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~scoped_env() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(config_defaults, minimal_file_gets_documented_defaults) {
  proxy_config config = load_config_string(bootstrap_only);
  EXPECT_EQ(config.threads, 0u);
  EXPECT_EQ(config.shutdown_timeout_ms, 10000u);
  EXPECT_EQ(config.listen.address, (host_port{"0.0.0.0", 9092}));
  EXPECT_FALSE(config.listen.advertised_address.has_value());
  EXPECT_FALSE(config.listen.broker_port_base.has_value());
  EXPECT_TRUE(config.listen.broker_ports.empty());
  EXPECT_EQ(config.listen.max_connections, 1000u);
  EXPECT_EQ(config.listen.frame_bytes_max, 104857600u);
  EXPECT_EQ(config.listen.security.protocol, "PLAINTEXT");
  EXPECT_EQ(config.listen.security.tls.principal_mapping_rules, std::vector<std::string>{"DEFAULT"});
  ASSERT_EQ(config.kafka.bootstrap_servers.size(), 1u);
  EXPECT_EQ(config.kafka.bootstrap_servers[0], (host_port{"broker-1", 9092}));
  EXPECT_EQ(config.kafka.connection_timeout_ms, 10000u);
  EXPECT_EQ(config.kafka.request_timeout_ms, 30000u);
  EXPECT_EQ(config.kafka.metadata_refresh_interval_secs, 30u);
  EXPECT_EQ(config.kafka.security_protocol, "PLAINTEXT");
  EXPECT_EQ(config.kafka.sasl.mechanism, "PLAIN");
  EXPECT_EQ(config.mapping.virtual_partitions, 0);
  EXPECT_EQ(config.mapping.physical_partitions, 0);
  EXPECT_TRUE(config.mapping.topics.empty());
  EXPECT_EQ(config.mapping.tag_header, "kpr.vp");
  EXPECT_FALSE(config.mapping.offset_range_given);
  EXPECT_EQ(config.offset_store.topic, "__kpr_offsets");
  EXPECT_EQ(config.offset_store.partitions, 16);
  EXPECT_EQ(config.offset_store.replication_factor, 3);
  EXPECT_EQ(config.offset_store.cache_entries, 200000u);
  EXPECT_TRUE(config.metrics.enabled);
  EXPECT_EQ(config.metrics.address, (host_port{"0.0.0.0", 9090}));
  EXPECT_EQ(config.logging.level, "info");
  EXPECT_FALSE(config.logging.json);
}

TEST(config_defaults, wildcard_listen_without_advertised_address_warns) {
  proxy_config config = load_config_string(bootstrap_only);
  ASSERT_EQ(config.warnings.size(), 1u);
  EXPECT_NE(config.warnings[0].find("listen.advertised_address"), std::string::npos);
  EXPECT_EQ(advertised_address_of(config.listen), (host_port{"127.0.0.1", 9092}));
}

TEST(config_full, every_key_is_read) {
  proxy_config config = load_config_string(R"(
threads: 4
shutdown_timeout_ms: 2500
listen:
  address: "10.0.0.5:19092"
  advertised_address: "proxy.example.com:29092"
  broker_port_base: 30000
  broker_ports: {1: 31001, 7: 31007}
  max_connections: 50
  frame_bytes_max: 2048
  security:
    protocol: plaintext
    tls:
      cert_path: /tls/server.crt
      key_path: /tls/server.key
      ca_cert_path: /tls/ca.crt
      require_client_cert: true
      principal:
        mapping_rules: ["RULE:^CN=([^,]+).*$/$1/L", DEFAULT]
    sasl:
      enabled_mechanisms: [plain, SCRAM-SHA-256]
      credentials:
        users:
          alice: secret
          bob: {password: hunter2, iterations: 8192}
          carol: {salt: c2FsdA==, iterations: 4096, stored_key: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=, server_key: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=}
        file: /etc/creds.yaml
      oauthbearer:
        jwks_url: https://auth.example.com/jwks.json
        public_key_path: /keys/pub.pem
        issuer: https://auth.example.com
        audience: kafka-proxy
        required_scopes: [kafka:produce, kafka:consume]
        clock_skew_seconds: 120
kafka:
  bootstrap_servers: ["b1:9092", "[::1]:9093"]
  connection_timeout_ms: 5000
  request_timeout_ms: 15000
  metadata_refresh_interval_secs: 0
  security_protocol: PLAINTEXT
  tls: {ca_cert_path: /ca.pem, cert_path: /c.pem, key_path: /k.pem, insecure_skip_verify: true}
  sasl: {mechanism: scram-sha-512, username: proxy, password: pw}
mapping:
  virtual_partitions: 100
  physical_partitions: 10
  tag_header: x-vp
  topics:
    orders: {virtual_partitions: 40, physical_partitions: 4}
offset_store: {topic: __my_offsets, partitions: 3, replication_factor: -1}
metrics: {enabled: false, address: "127.0.0.1:9999"}
logging: {level: DEBUG, format: json}
)");
  EXPECT_EQ(config.threads, 4u);
  EXPECT_EQ(config.shutdown_timeout_ms, 2500u);
  EXPECT_EQ(config.listen.address, (host_port{"10.0.0.5", 19092}));
  EXPECT_EQ(config.listen.advertised_address, (host_port{"proxy.example.com", 29092}));
  EXPECT_EQ(config.listen.broker_port_base, 30000);
  EXPECT_EQ(config.listen.broker_ports, (std::map<int32_t, uint16_t>{{1, 31001}, {7, 31007}}));
  EXPECT_EQ(config.listen.max_connections, 50u);
  EXPECT_EQ(config.listen.frame_bytes_max, 2048u);
  const auto& security = config.listen.security;
  EXPECT_EQ(security.protocol, "PLAINTEXT");
  EXPECT_EQ(security.tls.cert_path, "/tls/server.crt");
  EXPECT_EQ(security.tls.key_path, "/tls/server.key");
  EXPECT_EQ(security.tls.ca_cert_path, "/tls/ca.crt");
  EXPECT_TRUE(security.tls.require_client_cert);
  EXPECT_EQ(security.tls.principal_mapping_rules,
            (std::vector<std::string>{"RULE:^CN=([^,]+).*$/$1/L", "DEFAULT"}));
  EXPECT_EQ(security.sasl.enabled_mechanisms, (std::vector<std::string>{"PLAIN", "SCRAM-SHA-256"}));
  ASSERT_EQ(security.sasl.users.size(), 3u);
  EXPECT_EQ(security.sasl.users.at("alice").password, "secret");
  EXPECT_EQ(security.sasl.users.at("bob").password, "hunter2");
  EXPECT_EQ(security.sasl.users.at("bob").iterations, 8192u);
  EXPECT_EQ(security.sasl.users.at("carol").password, "");
  EXPECT_EQ(security.sasl.users.at("carol").salt, "c2FsdA==");
  EXPECT_EQ(security.sasl.users.at("carol").stored_key.size(), 44u);
  EXPECT_EQ(security.sasl.credentials_file, "/etc/creds.yaml");
  EXPECT_EQ(security.sasl.jwks_url, "https://auth.example.com/jwks.json");
  EXPECT_EQ(security.sasl.public_key_path, "/keys/pub.pem");
  EXPECT_EQ(security.sasl.issuer, "https://auth.example.com");
  EXPECT_EQ(security.sasl.audience, "kafka-proxy");
  EXPECT_EQ(security.sasl.required_scopes, (std::vector<std::string>{"kafka:produce", "kafka:consume"}));
  EXPECT_EQ(security.sasl.clock_skew_seconds, 120u);
  EXPECT_EQ(config.kafka.bootstrap_servers, (std::vector<host_port>{{"b1", 9092}, {"::1", 9093}}));
  EXPECT_EQ(config.kafka.connection_timeout_ms, 5000u);
  EXPECT_EQ(config.kafka.request_timeout_ms, 15000u);
  EXPECT_EQ(config.kafka.metadata_refresh_interval_secs, 0u);
  EXPECT_EQ(config.kafka.tls.ca_cert_path, "/ca.pem");
  EXPECT_EQ(config.kafka.tls.cert_path, "/c.pem");
  EXPECT_EQ(config.kafka.tls.key_path, "/k.pem");
  EXPECT_TRUE(config.kafka.tls.insecure_skip_verify);
  EXPECT_EQ(config.kafka.sasl.mechanism, "SCRAM-SHA-512");
  EXPECT_EQ(config.kafka.sasl.username, "proxy");
  EXPECT_EQ(config.kafka.sasl.password, "pw");
  EXPECT_EQ(config.mapping.virtual_partitions, 100);
  EXPECT_EQ(config.mapping.physical_partitions, 10);
  EXPECT_EQ(config.mapping.tag_header, "x-vp");
  ASSERT_EQ(config.mapping.topics.size(), 1u);
  EXPECT_EQ(config.offset_store.topic, "__my_offsets");
  EXPECT_EQ(config.offset_store.partitions, 3);
  EXPECT_EQ(config.offset_store.replication_factor, -1);
  EXPECT_FALSE(config.metrics.enabled);
  EXPECT_EQ(config.metrics.address, (host_port{"127.0.0.1", 9999}));
  EXPECT_EQ(config.logging.level, "debug");
  EXPECT_TRUE(config.logging.json);
  EXPECT_TRUE(config.warnings.empty());
}

TEST(config_kafka, bootstrap_servers_as_comma_separated_string) {
  proxy_config config = load_config_string("kafka:\n  bootstrap_servers: \"a:1, b:2 ,c:3\"\n");
  EXPECT_EQ(config.kafka.bootstrap_servers, (std::vector<host_port>{{"a", 1}, {"b", 2}, {"c", 3}}));
}

TEST(config_kafka, bootstrap_servers_required_and_non_empty) {
  EXPECT_LOAD_ERROR("", "kafka.bootstrap_servers: required");
  EXPECT_LOAD_ERROR("kafka: {}\n", "kafka.bootstrap_servers: required");
  EXPECT_LOAD_ERROR("kafka:\n  bootstrap_servers: []\n", "kafka.bootstrap_servers: required");
  EXPECT_LOAD_ERROR("kafka:\n  bootstrap_servers: \" , \"\n", "kafka.bootstrap_servers: required");
}

TEST(config_kafka, bad_bootstrap_entry_names_its_index) {
  EXPECT_LOAD_ERROR("kafka:\n  bootstrap_servers: [\"a:1\", \"nope\"]\n",
                    "kafka.bootstrap_servers[1]: expected host:port, got 'nope'");
  EXPECT_LOAD_ERROR("kafka:\n  bootstrap_servers: [\"a:1\", {x: 1}]\n",
                    "kafka.bootstrap_servers[1]: expected a single value, got a map");
  EXPECT_LOAD_ERROR("kafka:\n  bootstrap_servers: {a: 1}\n", "kafka.bootstrap_servers: expected a list, got a map");
}

TEST(host_port_parsing, accepts_names_ipv4_and_bracketed_ipv6) {
  EXPECT_EQ(parse_host_port("0.0.0.0:9092", "k"), (host_port{"0.0.0.0", 9092}));
  EXPECT_EQ(parse_host_port("broker.internal:1", "k"), (host_port{"broker.internal", 1}));
  EXPECT_EQ(parse_host_port("[::1]:65535", "k"), (host_port{"::1", 65535}));
  EXPECT_EQ(parse_host_port("[fe80::1%eth0]:9092", "k").host, "fe80::1%eth0");
}

TEST(host_port_parsing, to_string_round_trips) {
  EXPECT_EQ((host_port{"::1", 9092}).to_string(), "[::1]:9092");
  EXPECT_EQ((host_port{"example.com", 80}).to_string(), "example.com:80");
  EXPECT_EQ(parse_host_port(host_port{"::", 1}.to_string(), "k"), (host_port{"::", 1}));
}

TEST(host_port_parsing, errors_name_the_key) {
  auto error_of = [](std::string_view text) {
    try {
      parse_host_port(text, "listen.address");
    } catch (const config_error& error) {
      return std::string(error.what());
    }
    return std::string("<parsed>");
  };
  EXPECT_EQ(error_of("foo"), "listen.address: expected host:port, got 'foo'");
  EXPECT_EQ(error_of(""), "listen.address: expected host:port, got ''");
  EXPECT_EQ(error_of(":9092"), "listen.address: expected host:port, got ':9092'");
  EXPECT_NE(error_of("host:0").find("listen.address: expected a port from 1 to 65535"), std::string::npos);
  EXPECT_NE(error_of("host:65536").find("from 1 to 65535"), std::string::npos);
  EXPECT_NE(error_of("host:http").find("from 1 to 65535"), std::string::npos);
  EXPECT_NE(error_of("host:").find("from 1 to 65535"), std::string::npos);
  EXPECT_NE(error_of("::1:9092").find("[::1]:9092"), std::string::npos);
  EXPECT_NE(error_of("[::1]").find("listen.address: expected [address]:port"), std::string::npos);
  EXPECT_NE(error_of("[]:1").find("listen.address: expected [address]:port"), std::string::npos);
  EXPECT_NE(error_of("a b:1").find("listen.address: expected host:port"), std::string::npos);
}

TEST(config_keys, unknown_key_is_rejected_with_suggestion) {
  EXPECT_EQ(load_error(with_bootstrap("listen:\n  adress: \"0.0.0.0:1\"\n")),
            "unknown key 'listen.adress' (did you mean 'listen.address'?)");
  EXPECT_EQ(load_error(with_bootstrap("metrcs: {}\n")), "unknown key 'metrcs' (did you mean 'metrics'?)");
  EXPECT_EQ(load_error(with_bootstrap("listen:\n  security:\n    tls:\n      principal:\n        mapping_rule: []\n")),
            "unknown key 'listen.security.tls.principal.mapping_rule' "
            "(did you mean 'listen.security.tls.principal.mapping_rules'?)");
  EXPECT_LOAD_ERROR(with_bootstrap("mapping:\n  topics:\n    events:\n      virtual_partition: 4\n"),
                    "unknown key 'mapping.topics.events.virtual_partition' (did you mean "
                    "'mapping.topics.events.virtual_partitions'?)");
  EXPECT_LOAD_ERROR(with_bootstrap("listen:\n  security:\n    sasl:\n      credentials:\n        users:\n"
                                   "          bob: {pasword: x}\n"),
                    "unknown key 'listen.security.sasl.credentials.users.bob.pasword'");
}

TEST(config_keys, unknown_key_far_from_every_sibling_gets_no_suggestion) {
  EXPECT_EQ(load_error(with_bootstrap("listen:\n  something_else: 1\n")), "unknown key 'listen.something_else'");
}

TEST(config_keys, duplicate_key_is_rejected) {
  EXPECT_LOAD_ERROR(with_bootstrap("threads: 1\nthreads: 2\n"), "threads: duplicate key");
}

TEST(config_types, wrong_scalar_types_name_the_key) {
  EXPECT_EQ(load_error(with_bootstrap("  request_timeout_ms: abc\n")),
            "kafka.request_timeout_ms: expected a non-negative integer, got 'abc'");
  EXPECT_LOAD_ERROR(with_bootstrap("  request_timeout_ms: -5\n"),
                    "kafka.request_timeout_ms: expected a non-negative integer, got '-5'");
  EXPECT_LOAD_ERROR(with_bootstrap("  request_timeout_ms: 4294967296\n"),
                    "kafka.request_timeout_ms: expected an integer from 1 to 4294967295");
  EXPECT_LOAD_ERROR(with_bootstrap("  connection_timeout_ms: 99999999999999999999999\n"),
                    "kafka.connection_timeout_ms: expected an integer from 1 to 4294967295");
  EXPECT_LOAD_ERROR(with_bootstrap("  request_timeout_ms: 1.5\n"), "kafka.request_timeout_ms: expected a non-negative");
  EXPECT_LOAD_ERROR(with_bootstrap("  request_timeout_ms: [1]\n"),
                    "kafka.request_timeout_ms: expected a single value, got a list");
  EXPECT_LOAD_ERROR(with_bootstrap("metrics:\n  enabled: maybe\n"),
                    "metrics.enabled: expected true or false, got 'maybe'");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: 5\n"), "listen: expected a map, got '5'");
  EXPECT_LOAD_ERROR("- a\n- b\n", "config: expected a map of sections at the top level, got a list");
}

TEST(config_types, null_value_keeps_the_default) {
  proxy_config config = load_config_string(with_bootstrap("listen:\n  advertised_address: null\n  max_connections:\n"));
  EXPECT_FALSE(config.listen.advertised_address.has_value());
  EXPECT_EQ(config.listen.max_connections, 1000u);
}

TEST(config_types, booleans_accept_yaml_spellings) {
  EXPECT_FALSE(load_config_string(with_bootstrap("metrics: {enabled: no}\n")).metrics.enabled);
  EXPECT_FALSE(load_config_string(with_bootstrap("metrics: {enabled: FALSE}\n")).metrics.enabled);
  EXPECT_TRUE(load_config_string(with_bootstrap("metrics: {enabled: on}\n")).metrics.enabled);
}

TEST(config_types, invalid_yaml_reports_position) {
  EXPECT_LOAD_ERROR("kafka: [unclosed\n", "config: invalid YAML at line");
}

TEST(config_limits, threads_frame_size_and_ports) {
  EXPECT_EQ(load_config_string(with_bootstrap("threads: 1024\n")).threads, 1024u);
  EXPECT_LOAD_ERROR(with_bootstrap("threads: 1025\n"), "threads: expected an integer from 0 to 1024, got '1025'");
  EXPECT_EQ(load_config_string(with_bootstrap("")).spin_before_sleep_us, 0u);
  EXPECT_EQ(load_config_string(with_bootstrap("spin_before_sleep_us: 50\n")).spin_before_sleep_us, 50u);
  EXPECT_LOAD_ERROR(with_bootstrap("spin_before_sleep_us: 10001\n"),
                    "spin_before_sleep_us: expected an integer from 0 to 10000, got '10001'");
  EXPECT_EQ(load_config_string(with_bootstrap("")).mapping.fetch_window_bytes, uint64_t(2) << 20);
  EXPECT_EQ(load_config_string(with_bootstrap("mapping: {fetch_window_bytes: 0}\n")).mapping.fetch_window_bytes, 0u);
  EXPECT_LOAD_ERROR(with_bootstrap("mapping: {fetch_window_bytes: -1}\n"),
                    "mapping.fetch_window_bytes: expected a non-negative integer, got '-1'");
  EXPECT_LOAD_ERROR(with_bootstrap("mapping: {fetch_window_bytes: 1073741825}\n"),
                    "mapping.fetch_window_bytes: expected an integer from 0 to 1073741824, got '1073741825'");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {frame_bytes_max: 1023}\n"),
                    "listen.frame_bytes_max: expected an integer from 1024 to 1073741824");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {frame_bytes_max: 1073741825}\n"), "listen.frame_bytes_max:");
  EXPECT_EQ(load_config_string(with_bootstrap("listen: {frame_bytes_max: 1073741824}\n")).listen.frame_bytes_max,
            1073741824u);
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {max_connections: 0}\n"), "listen.max_connections:");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {broker_port_base: 0}\n"), "listen.broker_port_base:");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {broker_port_base: 9092}\n"),
                    "listen.broker_port_base: must differ from the port of listen.address");
  EXPECT_LOAD_ERROR(with_bootstrap("metrics: {address: \"0.0.0.0:9092\"}\n"), "metrics.address: port 9092");
  EXPECT_NO_THROW(load_config_string(with_bootstrap("metrics: {enabled: false, address: \"0.0.0.0:9092\"}\n")));
  EXPECT_LOAD_ERROR(with_bootstrap("metrics: {address: nowhere}\n"), "metrics.address: expected host:port");
}

TEST(config_listen, broker_ports_map) {
  proxy_config config = load_config_string(with_bootstrap("listen:\n  broker_ports:\n    0: 19000\n    5: 19005\n"));
  EXPECT_EQ(config.listen.broker_ports, (std::map<int32_t, uint16_t>{{0, 19000}, {5, 19005}}));
  EXPECT_EQ(broker_port_of(config.listen, 5), 19005);
  EXPECT_EQ(broker_port_of(config.listen, 1), 9094);  // no base: listen port + 1 + node id
}

TEST(config_listen, broker_ports_errors_name_the_entry) {
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {broker_ports: {x: 1}}\n"),
                    "listen.broker_ports.x: expected a non-negative integer, got 'x'");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {broker_ports: {-1: 1000}}\n"),
                    "listen.broker_ports.-1: expected a non-negative integer");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {broker_ports: {1: 70000}}\n"),
                    "listen.broker_ports.1: expected an integer from 1 to 65535");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {broker_ports: {1: 9092}}\n"),
                    "listen.broker_ports.1: port 9092 is already the port of listen.address");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {broker_ports: {1: 9500, 2: 9500}}\n"),
                    "listen.broker_ports.2: port 9500 is given to two brokers");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {broker_ports: [1, 2]}\n"),
                    "listen.broker_ports: expected a map of broker node id to port");
}

TEST(config_listen, broker_port_base_and_overflow) {
  proxy_config config = load_config_string(with_bootstrap("listen: {broker_port_base: 65530}\n"));
  EXPECT_EQ(broker_port_of(config.listen, 0), 65530);
  EXPECT_EQ(broker_port_of(config.listen, 5), 65535);
  EXPECT_EQ(broker_port_of(config.listen, 6), std::nullopt);
  EXPECT_EQ(broker_port_of(config.listen, -1), std::nullopt);
}

TEST(config_listen, advertised_address_forms) {
  proxy_config bare = load_config_string(with_bootstrap("listen: {advertised_address: proxy.local}\n"));
  EXPECT_EQ(advertised_address_of(bare.listen), (host_port{"proxy.local", 9092}));
  EXPECT_TRUE(bare.warnings.empty());
  proxy_config bracketed = load_config_string(with_bootstrap("listen: {advertised_address: \"[fd00::5]\"}\n"));
  EXPECT_EQ(advertised_address_of(bracketed.listen), (host_port{"fd00::5", 9092}));
  proxy_config named = load_config_string(with_bootstrap("listen: {address: \"10.1.1.1:9000\"}\n"));
  EXPECT_EQ(advertised_address_of(named.listen), (host_port{"10.1.1.1", 9000}));
  EXPECT_TRUE(named.warnings.empty());
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {advertised_address: \"0.0.0.0:9092\"}\n"),
                    "listen.advertised_address: '0.0.0.0:9092' is a wildcard address");
}

TEST(config_listen, listen_override_replaces_address_and_warning) {
  proxy_config config = load_config_string(bootstrap_only);
  apply_listen_override(config, "192.168.1.9:7000");
  EXPECT_EQ(config.listen.address, (host_port{"192.168.1.9", 7000}));
  EXPECT_TRUE(config.warnings.empty());
  EXPECT_EQ(advertised_address_of(config.listen), (host_port{"192.168.1.9", 7000}));
  apply_listen_override(config, "[::]:7001");
  EXPECT_EQ(config.warnings.size(), 1u);
  try {
    apply_listen_override(config, "garbage");
    FAIL() << "expected config_error";
  } catch (const config_error& error) {
    EXPECT_STREQ(error.what(), "--listen: expected host:port, got 'garbage'");
  }
}

TEST(config_security, protocol_names_are_validated_case_insensitively) {
  EXPECT_EQ(load_config_string(with_bootstrap("  security_protocol: plaintext\n")).kafka.security_protocol,
            "PLAINTEXT");
  EXPECT_LOAD_ERROR(with_bootstrap("  security_protocol: TLS\n"),
                    "kafka.security_protocol: expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, got 'TLS'");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {protocol: bogus}}\n"),
                    "listen.security.protocol: expected one of PLAINTEXT");
}

TEST(config_security, ssl_listener_needs_its_files_and_sasl_is_refused_for_now) {
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {protocol: ssl}}\n"),
                    "listen.security.tls.cert_path: SSL needs the server certificate chain");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {protocol: ssl, tls: {cert_path: /c.pem}}}\n"),
                    "listen.security.tls.key_path: SSL needs the private key");
  auto config = load_config_string(
      with_bootstrap("listen: {security: {protocol: SSL, tls: {cert_path: /c.pem, key_path: /k.pem, "
                     "min_version: TLSv1.3, handshake_timeout_ms: 2500}}}\n"));
  EXPECT_EQ(config.listen.security.protocol, "SSL");
  EXPECT_EQ(config.listen.security.tls.min_version, "TLSv1.3");
  EXPECT_EQ(config.listen.security.tls.handshake_timeout_ms, 2500u);
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {tls: {min_version: TLSv1.1}}}\n"),
                    "listen.security.tls.min_version: expected TLSv1.2 or TLSv1.3, got 'TLSv1.1'");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {tls: {handshake_timeout_ms: 5}}}\n"),
                    "listen.security.tls.handshake_timeout_ms:");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {tls: {require_client_cert: true}}}\n"),
                    "listen.security.tls.ca_cert_path: require_client_cert needs the CA");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {protocol: SASL_SSL}}\n"),
                    "listen.security.tls.cert_path: SASL_SSL needs the server certificate chain");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {protocol: SASL_PLAINTEXT}}\n"),
                    "listen.security.sasl.enabled_mechanisms: SASL_PLAINTEXT needs at least one of");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {protocol: SASL_PLAINTEXT, sasl: {enabled_mechanisms: [PLAIN]}}}\n"),
                    "listen.security.sasl.credentials: PLAIN and SCRAM need users");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {protocol: SASL_PLAINTEXT, sasl: {enabled_mechanisms: "
                                   "[OAUTHBEARER]}}}\n"),
                    "listen.security.sasl.oauthbearer: OAUTHBEARER needs public_key_path or jwks_url");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {protocol: SASL_PLAINTEXT, sasl: {enabled_mechanisms: "
                                   "[OAUTHBEARER], oauthbearer: {jwks_url: 'https://idp/keys'}}}}\n"),
                    "listen.security.sasl.oauthbearer.jwks_url: only a file");
  proxy_config sasl = load_config_string(
      with_bootstrap("listen: {security: {protocol: SASL_PLAINTEXT, sasl: {enabled_mechanisms: [SCRAM-SHA-512], "
                     "session_lifetime_ms: 60000, credentials: {users: {app: pw}}}}}\n"));
  EXPECT_EQ(sasl.listen.security.sasl.session_lifetime_ms, 60000u);
  EXPECT_EQ(sasl.listen.security.sasl.failed_authentication_delay_ms, 100u);
  EXPECT_LOAD_ERROR(with_bootstrap("  security_protocol: sasl_plaintext\n"),
                    "kafka.sasl.username: PLAIN needs the proxy's user name");
  EXPECT_LOAD_ERROR(with_bootstrap("  security_protocol: sasl_ssl\n  sasl: {mechanism: oauthbearer}\n"),
                    "kafka.sasl.token_file: OAUTHBEARER needs the file holding the token");
}

TEST(config_security, sasl_values_are_validated) {
  EXPECT_LOAD_ERROR(with_bootstrap("  sasl: {mechanism: GSSAPI}\n"),
                    "kafka.sasl.mechanism: expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, got 'GSSAPI'");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {sasl: {credentials: {users: {bob: {iterations: 100, "
                                   "password: x}}}}}}\n"),
                    "listen.security.sasl.credentials.users.bob.iterations:");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {sasl: {credentials: {users: {bob: {salt: c2FsdA==, "
                                   "stored_key: a2V5, server_key: a2V5}}}}}}\n"),
                    "listen.security.sasl.credentials.users.bob.stored_key: expected 32 bytes (SCRAM-SHA-256) or 64");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {sasl: {credentials: {users: {bob: {salt: c2FsdA==}}}}}}\n"),
                    "listen.security.sasl.credentials.users.bob.stored_key: required with the other SCRAM keys");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {sasl: {enabled_mechanisms: [PLAIN, MD5]}}}\n"),
                    "listen.security.sasl.enabled_mechanisms[1]: expected one of PLAIN");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {sasl: {credentials: {users: {bob: {iterations: x}}}}}}\n"),
                    "listen.security.sasl.credentials.users.bob.iterations: expected a non-negative integer");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {sasl: {credentials: {users: [a]}}}}\n"),
                    "listen.security.sasl.credentials.users: expected a map");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {tls: {principal: {mapping_rules: []}}}}\n"),
                    "listen.security.tls.principal.mapping_rules: must name at least one rule");
  EXPECT_LOAD_ERROR(with_bootstrap("listen: {security: {tls: {require_client_cert: sometimes}}}\n"),
                    "listen.security.tls.require_client_cert: expected true or false");
}

TEST(config_mapping, omitted_mapping_means_no_default) {
  proxy_config config = load_config_string(with_bootstrap("mapping: {}\n"));
  EXPECT_EQ(config.mapping.virtual_partitions, 0);
  EXPECT_EQ(config.mapping.physical_partitions, 0);
}

TEST(config_mapping, global_pair_is_validated) {
  EXPECT_LOAD_ERROR(with_bootstrap("mapping: {virtual_partitions: 10, physical_partitions: 0}\n"),
                    "mapping.physical_partitions: expected an integer from 1 to 2147483647, got '0'");
  EXPECT_LOAD_ERROR(with_bootstrap("mapping: {virtual_partitions: 5, physical_partitions: 10}\n"),
                    "mapping.virtual_partitions: must be at least physical_partitions (10), got 5");
  EXPECT_LOAD_ERROR(with_bootstrap("mapping: {virtual_partitions: 100, physical_partitions: 30}\n"),
                    "mapping.virtual_partitions: must be a multiple of physical_partitions (30), got 100");
  EXPECT_LOAD_ERROR(with_bootstrap("mapping: {virtual_partitions: 100}\n"), "mapping.physical_partitions: required");
  EXPECT_LOAD_ERROR(with_bootstrap("mapping: {physical_partitions: 10}\n"), "mapping.virtual_partitions: required");
  EXPECT_LOAD_ERROR(with_bootstrap("mapping: {virtual_partitions: -4, physical_partitions: 2}\n"),
                    "mapping.virtual_partitions: expected a non-negative integer, got '-4'");
  proxy_config equal = load_config_string(with_bootstrap("mapping: {virtual_partitions: 8, physical_partitions: 8}\n"));
  EXPECT_EQ(equal.mapping.virtual_partitions, 8);
}

TEST(config_mapping, topic_rules_keep_file_order_and_classify_regexes) {
  proxy_config config = load_config_string(with_bootstrap(R"(
mapping:
  virtual_partitions: 100
  physical_partitions: 10
  topics:
    zeta: {virtual_partitions: 6, physical_partitions: 3}
    "events.*": {virtual_partitions: 200, physical_partitions: 20}
    alpha: {virtual_partitions: 4, physical_partitions: 4}
    "metrics\\..*": {virtual_partitions: 50, physical_partitions: 5}
    orders.v1: {virtual_partitions: 8, physical_partitions: 2}
)"));
  const auto& topics = config.mapping.topics;
  ASSERT_EQ(topics.size(), 5u);
  EXPECT_EQ(topics[0].pattern, "zeta");
  EXPECT_FALSE(topics[0].is_regex);
  EXPECT_EQ(topics[1].pattern, "events.*");
  EXPECT_TRUE(topics[1].is_regex);
  EXPECT_EQ(topics[1].virtual_partitions, 200);
  EXPECT_EQ(topics[2].pattern, "alpha");
  EXPECT_EQ(topics[3].pattern, "metrics\\..*");
  EXPECT_TRUE(topics[3].is_regex);
  EXPECT_TRUE(topics[4].is_regex);  // '.' is a metacharacter
}

TEST(config_mapping, topic_rules_inherit_missing_fields_from_global) {
  proxy_config config = load_config_string(with_bootstrap(R"(
mapping:
  virtual_partitions: 100
  physical_partitions: 10
  topics:
    only_virtual: {virtual_partitions: 40}
    only_physical: {physical_partitions: 5}
    neither:
)"));
  const auto& topics = config.mapping.topics;
  ASSERT_EQ(topics.size(), 3u);
  EXPECT_EQ(topics[0].virtual_partitions, 40);
  EXPECT_EQ(topics[0].physical_partitions, 10);
  EXPECT_EQ(topics[1].virtual_partitions, 100);
  EXPECT_EQ(topics[1].physical_partitions, 5);
  EXPECT_EQ(topics[2].virtual_partitions, 100);
  EXPECT_EQ(topics[2].physical_partitions, 10);
}

TEST(config_mapping, topic_rule_errors_name_the_rule_key) {
  std::string globals = "mapping:\n  virtual_partitions: 100\n  physical_partitions: 10\n  topics:\n";
  EXPECT_LOAD_ERROR(with_bootstrap(globals + "    \"events.*\": {virtual_partitions: 10, physical_partitions: 20}\n"),
                    "mapping.topics.events.*.virtual_partitions: must be at least physical_partitions (20), got 10");
  EXPECT_LOAD_ERROR(with_bootstrap(globals + "    orders: {virtual_partitions: 25}\n"),
                    "mapping.topics.orders.virtual_partitions: must be a multiple of physical_partitions (10), got 25");
  EXPECT_LOAD_ERROR(with_bootstrap(globals + "    orders: {physical_partitions: 0}\n"),
                    "mapping.topics.orders.physical_partitions: expected an integer from 1");
  EXPECT_LOAD_ERROR(with_bootstrap(globals + "    \"bad[\": {}\n"), "mapping.topics.bad[: invalid regular expression");
  EXPECT_LOAD_ERROR(with_bootstrap(globals + "    \"\": {}\n"), "mapping.topics.: a topic name or pattern must not be empty");
  EXPECT_LOAD_ERROR(with_bootstrap(globals + "    orders: 5\n"), "mapping.topics.orders: expected a map, got '5'");
}

TEST(config_mapping, topic_rule_without_global_needs_both_fields) {
  EXPECT_LOAD_ERROR(with_bootstrap("mapping:\n  topics:\n    orders: {virtual_partitions: 8}\n"),
                    "mapping.topics.orders.physical_partitions: required together with the other partition count "
                    "(there is no mapping.physical_partitions to inherit)");
  proxy_config config =
      load_config_string(with_bootstrap("mapping:\n  topics:\n    orders: {virtual_partitions: 8, physical_partitions: 2}\n"));
  EXPECT_EQ(config.mapping.virtual_partitions, 0);
  ASSERT_EQ(config.mapping.topics.size(), 1u);
  EXPECT_EQ(config.mapping.topics[0].virtual_partitions, 8);
}

TEST(config_mapping, offset_range_is_accepted_and_warned_once) {
  proxy_config config = load_config_string("listen: {address: \"127.0.0.1:9092\"}\n" + std::string(bootstrap_only) + R"(
mapping:
  virtual_partitions: 100
  physical_partitions: 10
  offset_range: 1099511627776
  topics:
    "metrics.*": {offset_range: 1073741824}
)");
  EXPECT_TRUE(config.mapping.offset_range_given);
  ASSERT_EQ(config.warnings.size(), 1u);
  EXPECT_NE(config.warnings[0].find("offset_range is ignored"), std::string::npos);
  EXPECT_LOAD_ERROR(with_bootstrap("mapping: {offset_range: lots}\n"), "mapping.offset_range: expected a non-negative");
}

TEST(config_mapping, tag_header_must_not_be_empty) {
  EXPECT_LOAD_ERROR(with_bootstrap("mapping: {tag_header: \"\"}\n"), "mapping.tag_header: must not be empty");
}

TEST(config_offset_store, values_are_validated) {
  EXPECT_LOAD_ERROR(with_bootstrap("offset_store: {topic: offsets}\n"), "offset_store.topic: must start with '__'");
  EXPECT_LOAD_ERROR(with_bootstrap("offset_store: {topic: \"__bad name\"}\n"),
                    "offset_store.topic: expected a Kafka topic name");
  EXPECT_LOAD_ERROR(with_bootstrap("offset_store: {partitions: 0}\n"), "offset_store.partitions:");
  EXPECT_LOAD_ERROR(with_bootstrap("offset_store: {replication_factor: 0}\n"),
                    "offset_store.replication_factor: expected -1");
  EXPECT_LOAD_ERROR(with_bootstrap("offset_store: {replication_factor: 40000}\n"),
                    "offset_store.replication_factor: expected an integer from -1 to 32767");
  EXPECT_LOAD_ERROR(with_bootstrap("offset_store: {cache_entries: 10}\n"), "offset_store.cache_entries:");
  EXPECT_EQ(load_config_string(with_bootstrap("offset_store: {cache_entries: 5000}\n")).offset_store.cache_entries,
            5000u);
}

TEST(config_producers, alias_idle_time_and_bound) {
  proxy_config defaults = load_config_string(with_bootstrap(""));
  EXPECT_EQ(defaults.producers.alias_idle_ms, 7ull * 24 * 3600 * 1000);
  EXPECT_EQ(defaults.producers.aliases_max, 1000000u);
  proxy_config set = load_config_string(with_bootstrap("producers: {alias_idle_ms: 86400000, aliases_max: 5000}\n"));
  EXPECT_EQ(set.producers.alias_idle_ms, 86400000u);
  EXPECT_EQ(set.producers.aliases_max, 5000u);
  EXPECT_LOAD_ERROR(with_bootstrap("producers: {alias_idle_ms: 10}\n"), "producers.alias_idle_ms:");
  EXPECT_LOAD_ERROR(with_bootstrap("producers: {aliases_max: 1}\n"), "producers.aliases_max:");
  EXPECT_LOAD_ERROR(with_bootstrap("producers: {alias_ttl: 1}\n"), "producers.alias_ttl");
}

TEST(config_logging, format_and_json_forms) {
  EXPECT_TRUE(load_config_string(with_bootstrap("logging: {format: json}\n")).logging.json);
  EXPECT_FALSE(load_config_string(with_bootstrap("logging: {format: TEXT}\n")).logging.json);
  EXPECT_TRUE(load_config_string(with_bootstrap("logging: {json: true}\n")).logging.json);
  EXPECT_FALSE(load_config_string(with_bootstrap("logging: {json: false}\n")).logging.json);
  EXPECT_TRUE(load_config_string(with_bootstrap("logging: {format: json, json: true}\n")).logging.json);
  EXPECT_LOAD_ERROR(with_bootstrap("logging: {format: json, json: false}\n"),
                    "logging.json: contradicts logging.format");
  EXPECT_LOAD_ERROR(with_bootstrap("logging: {format: xml}\n"), "logging.format: expected json or text, got 'xml'");
}

TEST(config_logging, levels) {
  EXPECT_EQ(load_config_string(with_bootstrap("logging: {level: warning}\n")).logging.level, "warn");
  EXPECT_EQ(load_config_string(with_bootstrap("logging: {level: Trace}\n")).logging.level, "trace");
  EXPECT_EQ(load_config_string(with_bootstrap("logging: {level: error}\n")).logging.level, "error");
  EXPECT_LOAD_ERROR(with_bootstrap("logging: {level: verbose}\n"),
                    "logging.level: expected one of trace, debug, info, warn, error, got 'verbose'");
}

TEST(environment, expands_set_variables_and_defaults) {
  scoped_env set("KPP_TEST_SET", "value");
  scoped_env unset("KPP_TEST_UNSET", nullptr);
  scoped_env empty("KPP_TEST_EMPTY", "");
  EXPECT_EQ(expand_environment("a-${KPP_TEST_SET}-b"), "a-value-b");
  EXPECT_EQ(expand_environment("${KPP_TEST_SET}${KPP_TEST_SET}"), "valuevalue");
  EXPECT_EQ(expand_environment("${KPP_TEST_UNSET:-fallback}"), "fallback");
  EXPECT_EQ(expand_environment("${KPP_TEST_UNSET:-}"), "");
  EXPECT_EQ(expand_environment("${KPP_TEST_EMPTY:-fallback}"), "fallback");
  EXPECT_EQ(expand_environment("${KPP_TEST_EMPTY}"), "");
  EXPECT_EQ(expand_environment("${KPP_TEST_SET:-fallback}"), "value");
  EXPECT_EQ(expand_environment("cost $5 and $HOME"), "cost $5 and $HOME");
  EXPECT_EQ(expand_environment("$${KPP_TEST_SET}"), "${KPP_TEST_SET}");
  EXPECT_EQ(expand_environment("tail$"), "tail$");
}

TEST(environment, unset_variable_and_bad_references_are_errors) {
  scoped_env unset("KPP_TEST_UNSET", nullptr);
  try {
    expand_environment("${KPP_TEST_UNSET}");
    FAIL() << "expected config_error";
  } catch (const config_error& error) {
    EXPECT_NE(std::string(error.what()).find("environment variable 'KPP_TEST_UNSET' is not set"), std::string::npos);
  }
  EXPECT_THROW(expand_environment("${KPP_TEST_UNSET"), config_error);
  EXPECT_THROW(expand_environment("${1ABC}"), config_error);
  EXPECT_THROW(expand_environment("${}"), config_error);
}

TEST(environment, applies_to_values_before_conversion) {
  scoped_env brokers("KPP_TEST_BROKERS", "e1:9092,e2:9093");
  scoped_env timeout("KPP_TEST_TIMEOUT", "1234");
  scoped_env password("KPP_TEST_PASSWORD", "s3cret");
  proxy_config config = load_config_string(R"(
kafka:
  bootstrap_servers: "${KPP_TEST_BROKERS}"
  request_timeout_ms: ${KPP_TEST_TIMEOUT}
  connection_timeout_ms: "${KPP_TEST_UNSET_TIMEOUT:-777}"
  sasl: {username: "user-${KPP_TEST_PASSWORD}", password: "${KPP_TEST_PASSWORD}"}
)");
  EXPECT_EQ(config.kafka.bootstrap_servers, (std::vector<host_port>{{"e1", 9092}, {"e2", 9093}}));
  EXPECT_EQ(config.kafka.request_timeout_ms, 1234u);
  EXPECT_EQ(config.kafka.connection_timeout_ms, 777u);
  EXPECT_EQ(config.kafka.sasl.username, "user-s3cret");
  EXPECT_EQ(config.kafka.sasl.password, "s3cret");
}

TEST(environment, unset_variable_in_config_names_key_and_variable) {
  scoped_env unset("KPP_TEST_UNSET", nullptr);
  EXPECT_LOAD_ERROR(with_bootstrap("  sasl: {password: \"${KPP_TEST_UNSET}\"}\n"),
                    "kafka.sasl.password: environment variable 'KPP_TEST_UNSET' is not set");
  scoped_env bad_number("KPP_TEST_BAD_NUMBER", "ten");
  EXPECT_LOAD_ERROR(with_bootstrap("  request_timeout_ms: ${KPP_TEST_BAD_NUMBER}\n"),
                    "kafka.request_timeout_ms: expected a non-negative integer, got 'ten'");
}

TEST(environment, keys_are_not_expanded) {
  scoped_env name("KPP_TEST_SET", "threads");
  EXPECT_LOAD_ERROR(with_bootstrap("${KPP_TEST_SET}: 1\n"), "unknown key '${KPP_TEST_SET}'");
}

TEST(config_file, loads_from_disk_and_prefixes_errors_with_the_path) {
  std::string path = ::testing::TempDir() + "kpp_config_test.yaml";
  {
    std::ofstream file(path);
    file << bootstrap_only << "threads: 3\n";
  }
  EXPECT_EQ(load_config_file(path).threads, 3u);
  {
    std::ofstream file(path);
    file << bootstrap_only << "threads: many\n";
  }
  try {
    load_config_file(path);
    FAIL() << "expected config_error";
  } catch (const config_error& error) {
    EXPECT_EQ(std::string(error.what()), "config file '" + path + "': threads: expected a non-negative integer, got 'many'");
  }
  std::remove(path.c_str());
}

TEST(config_file, missing_file_is_a_read_error) {
  try {
    load_config_file("/nonexistent/kpp.yaml");
    FAIL() << "expected config_error";
  } catch (const config_error& error) {
    EXPECT_NE(std::string(error.what()).find("config file '/nonexistent/kpp.yaml': cannot read: "), std::string::npos);
  }
}

}  // namespace
}  // namespace kpp

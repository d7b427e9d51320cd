// kpp-mock-cluster: runs librdkafka's built-in mock Kafka cluster as an upstream for the
// end-to-end tests (see DESIGN.md section 5). Test bed only; the proxy never links librdkafka.
//
// Usage: kpp-mock-cluster [--brokers N] [--replication N] [--topic NAME:PARTITIONS]...
//                         [--debug]
// Prints exactly one line "BOOTSTRAP host:port,..." on stdout, then serves commands read from
// stdin, one per line, each answered by one line starting with "OK" or "ERR":
//   down <broker_id> | up <broker_id> | topic <name> <partitions> [replication]
//   rtt <broker_id> <ms> | leader <topic> <partition> <broker_id>
//   coordinator <group|transaction> <key> <broker_id> | bootstrap | quit
// Exits 0 on "quit", stdin EOF, SIGTERM or SIGINT.

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

volatile sig_atomic_t stop_signal_received = 0;

void on_stop_signal(int) { stop_signal_received = 1; }

struct topic_spec {
  std::string name;
  int partitions = 0;
};

struct options {
  int brokers = 3;
  int replication = 0;  // 0: min(brokers, 3)
  bool debug = false;
  std::vector<topic_spec> topics;
};

std::optional<int> parse_int(std::string_view text) {
  int value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<topic_spec> parse_topic_spec(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  const auto partitions = parse_int(text.substr(colon + 1));
  if (!partitions || *partitions <= 0) return std::nullopt;
  return topic_spec{std::string(text.substr(0, colon)), *partitions};
}

[[noreturn]] void usage_exit(const char* message) {
  std::fprintf(stderr,
               "kpp-mock-cluster: %s\n"
               "usage: kpp-mock-cluster [--brokers N] [--replication N] "
               "[--topic NAME:PARTITIONS]... [--debug]\n",
               message);
  std::exit(2);
}

options parse_options(int argc, char** argv) {
  options parsed;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto next = [&]() -> std::string_view {
      if (i + 1 >= argc) usage_exit("missing value after option");
      return argv[++i];
    };
    if (arg == "--brokers") {
      const auto value = parse_int(next());
      if (!value || *value < 1 || *value > 64) usage_exit("--brokers wants 1..64");
      parsed.brokers = *value;
    } else if (arg == "--replication") {
      const auto value = parse_int(next());
      if (!value || *value < 1) usage_exit("--replication wants a positive number");
      parsed.replication = *value;
    } else if (arg == "--topic") {
      const auto spec = parse_topic_spec(next());
      if (!spec) usage_exit("--topic wants NAME:PARTITIONS");
      parsed.topics.push_back(*spec);
    } else if (arg == "--debug") {
      parsed.debug = true;
    } else if (arg == "--help" || arg == "-h") {
      usage_exit("help");
    } else {
      usage_exit("unknown option");
    }
  }
  if (parsed.replication == 0) parsed.replication = parsed.brokers < 3 ? parsed.brokers : 3;
  if (parsed.replication > parsed.brokers) usage_exit("--replication exceeds --brokers");
  return parsed;
}

void reply(const std::string& line) {
  std::fputs(line.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

std::string result_line(rd_kafka_resp_err_t error, const std::string& what) {
  if (error == RD_KAFKA_RESP_ERR_NO_ERROR) return "OK " + what;
  return "ERR " + what + ": " + rd_kafka_err2str(error);
}

// Returns false when the command asks to quit.
bool run_command(rd_kafka_mock_cluster_t* cluster, int replication, const std::string& line) {
  std::istringstream words(line);
  std::vector<std::string> argv;
  for (std::string word; words >> word;) argv.push_back(word);
  if (argv.empty()) return true;
  const std::string& verb = argv[0];
  const auto int_at = [&](std::size_t index) -> std::optional<int> {
    if (index >= argv.size()) return std::nullopt;
    return parse_int(argv[index]);
  };

  if (verb == "quit" || verb == "exit") {
    reply("OK quit");
    return false;
  }
  if (verb == "bootstrap") {
    reply(std::string("OK ") + rd_kafka_mock_cluster_bootstraps(cluster));
    return true;
  }
  if ((verb == "down" || verb == "up") && argv.size() == 2 && int_at(1)) {
    const int broker_id = *int_at(1);
    const auto error = verb == "down" ? rd_kafka_mock_broker_set_down(cluster, broker_id)
                                      : rd_kafka_mock_broker_set_up(cluster, broker_id);
    reply(result_line(error, verb + " " + argv[1]));
    return true;
  }
  if (verb == "topic" && (argv.size() == 3 || argv.size() == 4) && int_at(2) && *int_at(2) > 0) {
    const int topic_replication = argv.size() == 4 && int_at(3) ? *int_at(3) : replication;
    const auto error =
        rd_kafka_mock_topic_create(cluster, argv[1].c_str(), *int_at(2), topic_replication);
    reply(result_line(error, "topic " + argv[1] + " " + argv[2]));
    return true;
  }
  if (verb == "rtt" && argv.size() == 3 && int_at(1) && int_at(2)) {
    const auto error = rd_kafka_mock_broker_set_rtt(cluster, *int_at(1), *int_at(2));
    reply(result_line(error, "rtt " + argv[1] + " " + argv[2]));
    return true;
  }
  if (verb == "leader" && argv.size() == 4 && int_at(2) && int_at(3)) {
    const auto error =
        rd_kafka_mock_partition_set_leader(cluster, argv[1].c_str(), *int_at(2), *int_at(3));
    reply(result_line(error, "leader " + argv[1] + " " + argv[2] + " " + argv[3]));
    return true;
  }
  if (verb == "coordinator" && argv.size() == 4 && int_at(3)) {
    const auto error =
        rd_kafka_mock_coordinator_set(cluster, argv[1].c_str(), argv[2].c_str(), *int_at(3));
    reply(result_line(error, "coordinator " + argv[1] + " " + argv[2] + " " + argv[3]));
    return true;
  }
  reply("ERR unknown or malformed command: " + line);
  return true;
}

// Reads stdin line by line until EOF, "quit" or a stop signal. poll() with a short timeout
// lets a signal that arrives between polls end the loop too.
void serve_commands(rd_kafka_mock_cluster_t* cluster, int replication) {
  std::string pending;
  char chunk[4096];
  constexpr std::size_t line_bytes_max = 64 * 1024;
  while (!stop_signal_received) {
    pollfd input{STDIN_FILENO, POLLIN, 0};
    const int ready = poll(&input, 1, 200);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (ready == 0) continue;
    const ssize_t got = read(STDIN_FILENO, chunk, sizeof chunk);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return;
    }
    if (got == 0) return;  // EOF: the test harness went away.
    pending.append(chunk, static_cast<std::size_t>(got));
    for (auto newline = pending.find('\n'); newline != std::string::npos;
         newline = pending.find('\n')) {
      std::string line = pending.substr(0, newline);
      pending.erase(0, newline + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!run_command(cluster, replication, line)) return;
    }
    if (pending.size() > line_bytes_max) {
      reply("ERR line too long");
      pending.clear();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const options opts = parse_options(argc, argv);

  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: poll() must see EINTR
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);

  char error_text[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // The handle only hosts the mock cluster; it never connects anywhere.
  if (rd_kafka_conf_set(conf, "log_level", opts.debug ? "7" : "4", error_text,
                        sizeof error_text) != RD_KAFKA_CONF_OK ||
      (opts.debug && rd_kafka_conf_set(conf, "debug", "mock,broker", error_text,
                                       sizeof error_text) != RD_KAFKA_CONF_OK)) {
    std::fprintf(stderr, "kpp-mock-cluster: config: %s\n", error_text);
    return 1;
  }
  rd_kafka_t* handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error_text, sizeof error_text);
  if (handle == nullptr) {
    std::fprintf(stderr, "kpp-mock-cluster: rd_kafka_new: %s\n", error_text);
    return 1;
  }
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(handle, opts.brokers);
  if (cluster == nullptr) {
    std::fprintf(stderr, "kpp-mock-cluster: rd_kafka_mock_cluster_new failed\n");
    rd_kafka_destroy(handle);
    return 1;
  }
  for (const topic_spec& topic : opts.topics) {
    const auto error = rd_kafka_mock_topic_create(cluster, topic.name.c_str(), topic.partitions,
                                                  opts.replication);
    if (error != RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::fprintf(stderr, "kpp-mock-cluster: creating topic %s: %s\n", topic.name.c_str(),
                   rd_kafka_err2str(error));
      rd_kafka_mock_cluster_destroy(cluster);
      rd_kafka_destroy(handle);
      return 1;
    }
  }

  std::printf("BOOTSTRAP %s\n", rd_kafka_mock_cluster_bootstraps(cluster));
  std::fflush(stdout);

  serve_commands(cluster, opts.replication);

  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(handle);
  return 0;
}

#include "proxy/cli.h"

#include <stdexcept>
#include <string_view>

namespace kpp {
namespace {

[[noreturn]] void reject(const std::string& what) { throw std::invalid_argument(what + " (see --help)"); }

// Walks argv once; options that take a value accept it as the next argument or,
// for the long form, after '='.
class argument_reader {
 public:
  argument_reader(int argc, const char* const* argv) : argc_(argc), argv_(argv) {}

  bool done() const { return next_ >= argc_; }
  std::string_view take() { return argv_[next_++]; }

  std::string value_for(std::string_view option, std::string_view what) {
    if (done()) reject("option '" + std::string(option) + "' needs a value: " + std::string(what));
    return std::string(take());
  }

 private:
  int argc_;
  const char* const* argv_;
  int next_ = 1;
};

std::string checked_value(std::string_view option, std::string_view value, std::string_view what) {
  if (value.empty()) reject("option '" + std::string(option) + "' needs a value: " + std::string(what));
  return std::string(value);
}

void set_config(cli_options& options, std::string path) {
  options.config_path = checked_value("--config", path, "a config file path");
  options.config_given = true;
}

// "-v", "-vv", "-vvv": every 'v' raises verbosity by one.
bool is_verbosity_cluster(std::string_view arg) {
  return arg.size() >= 2 && arg[0] == '-' && arg.find_first_not_of('v', 1) == std::string_view::npos;
}

void parse_long(cli_options& options, std::string_view arg, argument_reader& reader) {
  std::size_t equals = arg.find('=');
  std::string_view name = arg.substr(0, equals);
  bool inline_value = equals != std::string_view::npos;
  std::string_view value = inline_value ? arg.substr(equals + 1) : std::string_view();
  if (name == "--config") {
    set_config(options, inline_value ? std::string(value) : reader.value_for(name, "a config file path"));
  } else if (name == "--listen") {
    std::string address = inline_value ? std::string(value) : reader.value_for(name, "an address as host:port");
    options.listen_override = checked_value(name, address, "an address as host:port");
  } else if (inline_value && (name == "--verbose" || name == "--help" || name == "--version" ||
                              name == "--check-config")) {
    reject("option '" + std::string(name) + "' takes no value");
  } else if (name == "--verbose") {
    ++options.verbosity;
  } else if (name == "--help") {
    options.show_help = true;
  } else if (name == "--version") {
    options.show_version = true;
  } else if (name == "--check-config") {
    options.check_config = true;
  } else {
    reject("unknown option '" + std::string(arg) + "'");
  }
}

void parse_short(cli_options& options, std::string_view arg, argument_reader& reader) {
  if (is_verbosity_cluster(arg)) {
    options.verbosity += static_cast<int>(arg.size() - 1);
  } else if (arg == "-c") {
    set_config(options, reader.value_for(arg, "a config file path"));
  } else if (arg.starts_with("-c")) {  // -cFILE, as getopt allows
    set_config(options, std::string(arg.substr(arg[2] == '=' ? 3 : 2)));
  } else if (arg == "-h") {
    options.show_help = true;
  } else if (arg == "-V") {
    options.show_version = true;
  } else {
    reject("unknown option '" + std::string(arg) + "'");
  }
}

}  // namespace

cli_options parse_cli(int argc, const char* const* argv) {
  cli_options options;
  argument_reader reader(argc, argv);
  while (!reader.done()) {
    std::string_view arg = reader.take();
    if (arg.starts_with("--") && arg.size() > 2) {
      parse_long(options, arg, reader);
    } else if (arg.starts_with("-") && arg.size() > 1) {
      parse_short(options, arg, reader);
    } else {
      reject("unexpected argument '" + std::string(arg) + "'; the proxy takes options only");
    }
  }
  return options;
}

std::string cli_usage() {
  return "Usage: kafka-partition-proxy [OPTIONS]\n"
         "\n"
         "Kafka protocol proxy that shows clients more (virtual) partitions than the\n"
         "cluster has (physical). Configuration: docs/configuration.md.\n"
         "\n"
         "Options:\n"
         "  -c, --config <FILE>     configuration file [default: config.yaml]\n"
         "      --listen <ADDRESS>  bind the bootstrap listener here (host:port),\n"
         "                          overriding listen.address\n"
         "  -v, --verbose           more logging: once for debug, twice (-vv) for trace;\n"
         "                          overrides logging.level\n"
         "      --check-config      validate the configuration file (and the files it\n"
         "                          names), print the mapping and exit: 0 valid, 2 not\n"
         "  -h, --help              print this help and exit\n"
         "  -V, --version           print the version and exit\n";
}

}  // namespace kpp

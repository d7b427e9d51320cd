// Command line of the proxy binary; the flags match the earlier Rust tool's.
#pragma once

#include <optional>
#include <string>

namespace kpp {

struct cli_options {
  std::string config_path = "config.yaml";
  bool config_given = false;
  std::optional<std::string> listen_override;  // --listen, applied over listen.address by main
  int verbosity = 0;                           // count of -v: 1 debug, 2 or more trace
  bool show_help = false, show_version = false;
  bool check_config = false;  // --check-config: validate the file, print the mapping, exit
};

// argv[0] is the program name and skipped. Throws std::invalid_argument naming the
// offending argument for unknown flags, missing values and stray arguments.
cli_options parse_cli(int argc, const char* const* argv);

std::string cli_usage();

}  // namespace kpp

#include "proxy/cli.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace kpp {
namespace {

cli_options parse(std::vector<const char*> args) {
  args.insert(args.begin(), "kafka-partition-proxy");
  return parse_cli(static_cast<int>(args.size()), args.data());
}

std::string parse_error(std::vector<const char*> args) {
  try {
    parse(std::move(args));
  } catch (const std::invalid_argument& error) {
    return error.what();
  }
  return "<parsed without error>";
}

#define EXPECT_CLI_ERROR(args, fragment) EXPECT_PRED_FORMAT2(::testing::IsSubstring, fragment, parse_error(args))

TEST(cli, no_arguments_gives_defaults) {
  cli_options options = parse({});
  EXPECT_EQ(options.config_path, "config.yaml");
  EXPECT_FALSE(options.config_given);
  EXPECT_FALSE(options.listen_override.has_value());
  EXPECT_EQ(options.verbosity, 0);
  EXPECT_FALSE(options.show_help);
  EXPECT_FALSE(options.show_version);
}

TEST(cli, config_path_in_every_spelling) {
  for (const auto& args : std::vector<std::vector<const char*>>{{"-c", "/etc/p.yaml"},
                                                                {"--config", "/etc/p.yaml"},
                                                                {"--config=/etc/p.yaml"},
                                                                {"-c/etc/p.yaml"},
                                                                {"-c=/etc/p.yaml"}}) {
    cli_options options = parse(args);
    EXPECT_EQ(options.config_path, "/etc/p.yaml") << args[0];
    EXPECT_TRUE(options.config_given);
  }
}

TEST(cli, last_config_wins) { EXPECT_EQ(parse({"-c", "a.yaml", "--config", "b.yaml"}).config_path, "b.yaml"); }

TEST(cli, listen_override_both_spellings) {
  EXPECT_EQ(parse({"--listen", "0.0.0.0:19092"}).listen_override, "0.0.0.0:19092");
  EXPECT_EQ(parse({"--listen=[::1]:19092"}).listen_override, "[::1]:19092");
}

TEST(cli, verbosity_counts) {
  EXPECT_EQ(parse({"-v"}).verbosity, 1);
  EXPECT_EQ(parse({"-vv"}).verbosity, 2);
  EXPECT_EQ(parse({"-v", "-v"}).verbosity, 2);
  EXPECT_EQ(parse({"--verbose"}).verbosity, 1);
  EXPECT_EQ(parse({"--verbose", "-v"}).verbosity, 2);
  EXPECT_EQ(parse({"-vvv"}).verbosity, 3);
}

TEST(cli, help_and_version) {
  EXPECT_TRUE(parse({"-h"}).show_help);
  EXPECT_TRUE(parse({"--help"}).show_help);
  EXPECT_TRUE(parse({"-V"}).show_version);
  EXPECT_TRUE(parse({"--version"}).show_version);
  EXPECT_FALSE(parse({"-V"}).show_help);
}

TEST(cli, flags_combine) {
  cli_options options = parse({"-vv", "--listen", "127.0.0.1:1", "-c", "x.yaml", "--help"});
  EXPECT_EQ(options.verbosity, 2);
  EXPECT_EQ(options.listen_override, "127.0.0.1:1");
  EXPECT_EQ(options.config_path, "x.yaml");
  EXPECT_TRUE(options.show_help);
}

TEST(cli, value_is_taken_verbatim_even_if_it_looks_like_a_flag) {
  EXPECT_EQ(parse({"-c", "-v"}).config_path, "-v");
}

TEST(cli, errors_are_clear) {
  EXPECT_CLI_ERROR({"--bogus"}, "unknown option '--bogus'");
  EXPECT_CLI_ERROR({"-x"}, "unknown option '-x'");
  EXPECT_CLI_ERROR({"-vx"}, "unknown option '-vx'");
  EXPECT_CLI_ERROR({"-c"}, "option '-c' needs a value: a config file path");
  EXPECT_CLI_ERROR({"--config"}, "option '--config' needs a value");
  EXPECT_CLI_ERROR({"--config="}, "option '--config' needs a value");
  EXPECT_CLI_ERROR({"--listen"}, "option '--listen' needs a value: an address as host:port");
  EXPECT_CLI_ERROR({"--listen="}, "option '--listen' needs a value");
  EXPECT_CLI_ERROR({"--help=yes"}, "option '--help' takes no value");
  EXPECT_CLI_ERROR({"config.yaml"}, "unexpected argument 'config.yaml'");
  EXPECT_CLI_ERROR({"-"}, "unexpected argument '-'");
  EXPECT_CLI_ERROR({"--bogus"}, "(see --help)");
}

TEST(cli, usage_mentions_every_flag) {
  std::string usage = cli_usage();
  for (const char* flag : {"-c, --config", "--listen", "-v, --verbose", "-vv", "-h, --help", "-V, --version",
                           "config.yaml"}) {
    EXPECT_NE(usage.find(flag), std::string::npos) << flag;
  }
}

}  // namespace
}  // namespace kpp

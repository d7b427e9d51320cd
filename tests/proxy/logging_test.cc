#include "proxy/logging.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <map>
#include <optional>
#include <sstream>
#include <string>

#include "remap/std_regex.h"

namespace kpp {
namespace {

// A strict reader for the flat objects the JSON format emits: string and integer
// values only, raw control characters rejected, escapes decoded. nullopt on any
// deviation from JSON, so a passing test means the line really parses.
class flat_json_reader {
 public:
  explicit flat_json_reader(std::string_view text) : text_(text) {}

  std::optional<std::map<std::string, std::string>> read_object() {
    std::map<std::string, std::string> fields;
    if (!consume('{')) return std::nullopt;
    if (consume('}')) return at_end() ? std::optional(fields) : std::nullopt;
    do {
      auto key = read_string();
      if (!key || !consume(':')) return std::nullopt;
      auto value = peek() == '"' ? read_string() : read_integer();
      if (!value || !fields.emplace(*key, *value).second) return std::nullopt;
    } while (consume(','));
    if (!consume('}') || !at_end()) return std::nullopt;
    return fields;
  }

 private:
  char peek() const { return at_ < text_.size() ? text_[at_] : '\0'; }
  bool at_end() const { return at_ == text_.size(); }
  bool consume(char c) {
    if (peek() != c) return false;
    ++at_;
    return true;
  }

  std::optional<std::string> read_integer() {
    std::size_t start = at_;
    while (std::isdigit(static_cast<unsigned char>(peek()))) ++at_;
    if (at_ == start) return std::nullopt;
    return std::string(text_.substr(start, at_ - start));
  }

  static void append_utf8(std::string& out, unsigned code_point) {
    if (code_point < 0x80) {
      out.push_back(static_cast<char>(code_point));
    } else if (code_point < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
      out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
      out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    }
  }

  bool read_escape(std::string& out) {
    char c = peek();
    ++at_;
    static const std::map<char, char> simple{{'"', '"'}, {'\\', '\\'}, {'/', '/'}, {'b', '\b'},
                                             {'f', '\f'}, {'n', '\n'},  {'r', '\r'}, {'t', '\t'}};
    if (auto found = simple.find(c); found != simple.end()) {
      out.push_back(found->second);
      return true;
    }
    if (c != 'u' || at_ + 4 > text_.size()) return false;
    unsigned code_point = std::stoul(std::string(text_.substr(at_, 4)), nullptr, 16);
    at_ += 4;
    append_utf8(out, code_point);
    return true;
  }

  std::optional<std::string> read_string() {
    if (!consume('"')) return std::nullopt;
    std::string out;
    while (at_ < text_.size()) {
      char c = text_[at_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) return std::nullopt;
      if (c == '\\') {
        if (!read_escape(out)) return std::nullopt;
      } else {
        out.push_back(c);
      }
    }
    return std::nullopt;
  }

  std::string_view text_;
  std::size_t at_ = 0;
};

class captured_log {
 public:
  captured_log(const logging_settings& settings, int verbosity)
      : logger_(make_logger(settings, verbosity, std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_))) {}

  spdlog::logger& logger() { return *logger_; }

  std::vector<std::string> lines() const {
    std::vector<std::string> result;
    std::istringstream input(stream_.str());
    for (std::string line; std::getline(input, line);) result.push_back(line);
    return result;
  }

 private:
  std::ostringstream stream_;
  std::shared_ptr<spdlog::logger> logger_;
};

logging_settings json_settings(std::string level = "info") { return {std::move(level), true}; }

TEST(logging_json, every_line_is_one_valid_object_with_escaped_message) {
  captured_log log(json_settings(), 0);
  const std::string message = "say \"hi\"\nback\\slash\ttab\r\x01 bell\x1f caf\xC3\xA9 \xE2\x82\xAC";
  log.logger().info("{}", message);
  log.logger().warn("plain");
  auto lines = log.lines();
  ASSERT_EQ(lines.size(), 2u);  // the embedded newline did not split the record

  auto fields = flat_json_reader(lines[0]).read_object();
  ASSERT_TRUE(fields.has_value()) << lines[0];
  EXPECT_EQ(fields->at("msg"), message);
  EXPECT_EQ(fields->at("level"), "info");
  EXPECT_FALSE(fields->at("thread").empty());
  EXPECT_TRUE(std::regex_match(fields->at("ts"), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")))
      << fields->at("ts");
  EXPECT_EQ(fields->size(), 4u);

  auto second = flat_json_reader(lines[1]).read_object();
  ASSERT_TRUE(second.has_value()) << lines[1];
  EXPECT_EQ(second->at("level"), "warn");
  EXPECT_EQ(second->at("msg"), "plain");
}

TEST(logging_json, invalid_utf8_is_replaced_so_the_line_stays_valid) {
  captured_log log(json_settings(), 0);
  log.logger().error("client id {}", std::string("ab\xFF\xC3(cd\xED\xA0\x80"));
  auto lines = log.lines();
  ASSERT_EQ(lines.size(), 1u);
  auto fields = flat_json_reader(lines[0]).read_object();
  ASSERT_TRUE(fields.has_value()) << lines[0];
  EXPECT_EQ(fields->at("msg"), "client id ab\uFFFD\uFFFD(cd\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(fields->at("level"), "error");
}

TEST(json_escape, escapes_exactly_what_json_requires) {
  EXPECT_EQ(json_escape("plain text"), "plain text");
  EXPECT_EQ(json_escape("\"q\" \\ /"), "\\\"q\\\" \\\\ /");
  EXPECT_EQ(json_escape("a\nb\rc\td\be\ff"), "a\\nb\\rc\\td\\be\\ff");
  EXPECT_EQ(json_escape(std::string("\x00\x1f\x7f", 3)), "\\u0000\\u001f\x7f");
  EXPECT_EQ(json_escape("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");  // 4-byte sequence kept
  EXPECT_EQ(json_escape("\xC0\xAF"), "\\ufffd\\ufffd");           // overlong form
  EXPECT_EQ(json_escape("\xE2\x82"), "\\ufffd\\ufffd");           // truncated sequence
}

TEST(logging_text, line_has_utc_timestamp_and_padded_upper_case_level) {
  captured_log log(logging_settings{"info", false}, 0);
  log.logger().info("listening on {}", "0.0.0.0:9092");
  log.logger().error("broken");
  auto lines = log.lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(std::regex_match(lines[0], std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  listening on 0\.0\.0\.0:9092)")))
      << lines[0];
  EXPECT_TRUE(std::regex_match(lines[1], std::regex(R"(\S+Z ERROR broken)"))) << lines[1];
}

TEST(logging_levels, config_level_filters_and_verbosity_overrides) {
  captured_log warn_only(logging_settings{"warn", false}, 0);
  warn_only.logger().info("hidden");
  warn_only.logger().warn("shown");
  ASSERT_EQ(warn_only.lines().size(), 1u);
  EXPECT_NE(warn_only.lines()[0].find("WARN  shown"), std::string::npos);

  captured_log debug(logging_settings{"error", false}, 1);
  debug.logger().debug("debug line");
  debug.logger().trace("trace line");
  ASSERT_EQ(debug.lines().size(), 1u);
  EXPECT_NE(debug.lines()[0].find("DEBUG debug line"), std::string::npos);

  captured_log trace(logging_settings{"info", false}, 2);
  trace.logger().trace("trace line");
  ASSERT_EQ(trace.lines().size(), 1u);
  EXPECT_NE(trace.lines()[0].find("TRACE trace line"), std::string::npos);
}

TEST(logging_levels, effective_level_mapping) {
  EXPECT_EQ(effective_level(logging_settings{"trace", false}, 0), spdlog::level::trace);
  EXPECT_EQ(effective_level(logging_settings{"debug", false}, 0), spdlog::level::debug);
  EXPECT_EQ(effective_level(logging_settings{"info", false}, 0), spdlog::level::info);
  EXPECT_EQ(effective_level(logging_settings{"warn", false}, 0), spdlog::level::warn);
  EXPECT_EQ(effective_level(logging_settings{"warning", false}, 0), spdlog::level::warn);
  EXPECT_EQ(effective_level(logging_settings{"error", false}, 0), spdlog::level::err);
  EXPECT_EQ(effective_level(logging_settings{"error", false}, 1), spdlog::level::debug);
  EXPECT_EQ(effective_level(logging_settings{"error", false}, 2), spdlog::level::trace);
  EXPECT_EQ(effective_level(logging_settings{"info", false}, 5), spdlog::level::trace);
}

TEST(logging_setup, installs_the_default_logger) {
  setup_logging(json_settings("debug"), 0);
  auto logger = spdlog::default_logger();
  ASSERT_NE(logger, nullptr);
  EXPECT_EQ(logger->name(), "kpp");
  EXPECT_EQ(logger->level(), spdlog::level::debug);
}

}  // namespace
}  // namespace kpp

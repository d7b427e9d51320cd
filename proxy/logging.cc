#include "proxy/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace kpp {
namespace {

// Custom pattern flags; both characters are free in spdlog's own flag set.
constexpr char level_flag = '~';
constexpr char json_message_flag = '*';

constexpr std::string_view text_pattern = "%Y-%m-%dT%H:%M:%S.%eZ %^%~%$ %v";
constexpr std::string_view json_pattern =
    R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%~","thread":%t,"msg":"%*"})";

// Length of the well-formed UTF-8 sequence at `at`, or 0 when it is malformed
// (overlong forms, surrogates and code points past U+10FFFF included).
std::size_t utf8_sequence_bytes(std::string_view text, std::size_t at) {
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  unsigned char lead = byte(at);
  std::size_t length = 0;
  unsigned char second_min = 0x80, second_max = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) second_min = 0xA0;
    if (lead == 0xED) second_max = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) second_min = 0x90;
    if (lead == 0xF4) second_max = 0x8F;
  } else {
    return 0;
  }
  if (at + length > text.size()) return 0;
  if (byte(at + 1) < second_min || byte(at + 1) > second_max) return 0;
  for (std::size_t i = 2; i < length; ++i) {
    if (byte(at + i) < 0x80 || byte(at + i) > 0xBF) return 0;
  }
  return length;
}

template <typename Output>
void append(Output& out, std::string_view text) {
  out.append(text.data(), text.data() + text.size());
}

template <typename Output>
void append_escaped_ascii(Output& out, char c) {
  switch (c) {
    case '"': append(out, "\\\""); return;
    case '\\': append(out, "\\\\"); return;
    case '\n': append(out, "\\n"); return;
    case '\r': append(out, "\\r"); return;
    case '\t': append(out, "\\t"); return;
    case '\b': append(out, "\\b"); return;
    case '\f': append(out, "\\f"); return;
    default: break;
  }
  if (static_cast<unsigned char>(c) < 0x20) {
    static constexpr char hex[] = "0123456789abcdef";
    char escaped[] = {'\\', 'u', '0', '0', hex[(c >> 4) & 0xF], hex[c & 0xF]};
    append(out, std::string_view(escaped, sizeof escaped));
    return;
  }
  out.push_back(c);
}

template <typename Output>
void append_json_escaped(Output& out, std::string_view text) {
  std::size_t at = 0;
  while (at < text.size()) {
    if (static_cast<unsigned char>(text[at]) < 0x80) {
      append_escaped_ascii(out, text[at++]);
      continue;
    }
    std::size_t length = utf8_sequence_bytes(text, at);
    if (length == 0) {
      append(out, "\\ufffd");
      ++at;
      continue;
    }
    append(out, text.substr(at, length));
    at += length;
  }
}

std::string_view level_name(spdlog::level::level_enum level, bool upper) {
  switch (level) {
    case spdlog::level::trace: return upper ? "TRACE" : "trace";
    case spdlog::level::debug: return upper ? "DEBUG" : "debug";
    case spdlog::level::info: return upper ? "INFO " : "info";
    case spdlog::level::warn: return upper ? "WARN " : "warn";
    case spdlog::level::err: return upper ? "ERROR" : "error";
    case spdlog::level::critical: return upper ? "CRIT " : "critical";
    default: return upper ? "OFF  " : "off";
  }
}

// Level as "INFO " (text, padded so messages line up) or "info" (JSON).
class level_formatter : public spdlog::custom_flag_formatter {
 public:
  explicit level_formatter(bool upper) : upper_(upper) {}
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    append(dest, level_name(msg.level, upper_));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<level_formatter>(upper_);
  }

 private:
  bool upper_;
};

// The message as the inside of a JSON string, so every line stays one valid object.
class json_message_formatter : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    append_json_escaped(dest, std::string_view(msg.payload.data(), msg.payload.size()));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<json_message_formatter>();
  }
};

std::unique_ptr<spdlog::formatter> make_formatter(bool json) {
  // UTC, so the trailing 'Z' is true wherever the proxy runs.
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  formatter->add_flag<level_formatter>(level_flag, !json);
  if (json) formatter->add_flag<json_message_formatter>(json_message_flag);
  formatter->set_pattern(std::string(json ? json_pattern : text_pattern));
  return formatter;
}

}  // namespace

spdlog::level::level_enum effective_level(const logging_settings& settings, int verbosity) {
  if (verbosity >= 2) return spdlog::level::trace;
  if (verbosity == 1) return spdlog::level::debug;
  const std::string& level = settings.level;
  if (level == "trace") return spdlog::level::trace;
  if (level == "debug") return spdlog::level::debug;
  if (level == "warn" || level == "warning") return spdlog::level::warn;
  if (level == "error") return spdlog::level::err;
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> make_logger(const logging_settings& settings, int verbosity,
                                            spdlog::sink_ptr sink) {
  auto logger = std::make_shared<spdlog::logger>("kpp", std::move(sink));
  logger->set_formatter(make_formatter(settings.json));
  logger->set_level(effective_level(settings, verbosity));
  // Warnings and errors often precede an exit; do not lose them in a buffer.
  logger->flush_on(spdlog::level::warn);
  return logger;
}

void setup_logging(const logging_settings& settings, int verbosity) {
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  spdlog::set_default_logger(make_logger(settings, verbosity, std::move(sink)));
}

std::string json_escape(std::string_view text) {
  std::string escaped;
  escaped.reserve(text.size());
  append_json_escaped(escaped, text);
  return escaped;
}

}  // namespace kpp

// Log set-up: spdlog with one line per event on stderr, as text for people or as
// JSON objects for log shippers (logging.format / logging.json).
#pragma once

#include <spdlog/common.h>
#include <spdlog/logger.h>

#include <memory>
#include <string>
#include <string_view>

#include "proxy/config.h"

namespace kpp {

// Installs the default logger (what spdlog::info() and friends use). Call once at
// start-up, before other threads log. verbosity 1 -> debug, 2+ -> trace, beating
// settings.level.
void setup_logging(const logging_settings& settings, int verbosity);

// The logger setup_logging installs, writing to `sink` instead of stderr; tests pass
// an ostream sink. The sink must be thread-safe (an *_mt sink): reactor threads log.
std::shared_ptr<spdlog::logger> make_logger(const logging_settings& settings, int verbosity,
                                            spdlog::sink_ptr sink);

spdlog::level::level_enum effective_level(const logging_settings& settings, int verbosity);

// `text` as the inside of a JSON string: quotes, backslashes and control characters
// escaped, invalid UTF-8 (peer-supplied names end up in logs) replaced by U+FFFD.
std::string json_escape(std::string_view text);

}  // namespace kpp

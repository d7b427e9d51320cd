// <regex> behind a narrow pragma: GCC 12's libstdc++ <regex> trips -Wmaybe-uninitialized
// under -fsanitize at -O1 and above (a false positive inside the library); this keeps
// sanitizer builds warning-clean. Include this instead of <regex>.
#pragma once

#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <regex>
#pragma GCC diagnostic pop

#include "reactor/errors.h"

#include <cstring>

namespace kpp::reactor {

std::string error_text(int error_number) {
    const char* name = strerrorname_np(error_number);
    std::string text = name ? name : ("errno " + std::to_string(error_number));
    text += ": ";
    text += strerrordesc_np(error_number) ? strerrordesc_np(error_number) : "unknown error";
    return text;
}

}  // namespace kpp::reactor

#pragma once

#include <stdexcept>
#include <string>

namespace kpp::reactor {

// Start-up failures of the reactor (ring creation, probing, registration).
struct reactor_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string error_text(int error_number);  // "ECONNREFUSED: Connection refused"

}  // namespace kpp::reactor

// Helpers shared by the reactor tests: run a loop until a condition holds, with a bound.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>

#include "reactor/event_loop.h"

namespace kpp::reactor::testing {

inline bool run_until(event_loop& loop, const std::function<bool()>& done,
                      std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    timer tick(loop);
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        // A short timer bounds each wait so the deadline is checked.
        tick.arm_after_ms(10, [](timer&, void*) {}, nullptr);
        loop.run_once(true);
    }
    return true;
}

}  // namespace kpp::reactor::testing

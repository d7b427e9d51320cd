// The admin endpoint (metrics.address): GET /metrics, /health, /ready. A plain blocking
// thread: it is off the data plane and serves a scraper, not clients.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "proxy/config.h"

namespace kpp {

class metrics_registry;

class admin_http_server {
public:
    // Binds at construction (throws std::runtime_error naming metrics.address on failure).
    admin_http_server(const host_port& address, const metrics_registry& metrics, std::function<bool()> ready);
    ~admin_http_server();
    uint16_t port() const { return port_; }

private:
    void serve();
    void answer(int fd);

    const metrics_registry& metrics_;
    std::function<bool()> ready_;
    int listen_fd_ = -1;
    uint16_t port_ = 0;
    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

}  // namespace kpp

// The admin endpoint (metrics.address): GET /metrics, /health, /ready and the admin views
// (/admin/mapping, /admin/shards, /admin/store); with metrics.admin_endpoints, POST /reload
// and POST /drain. A plain blocking thread: it is off the data plane and serves a scraper
// and an operator, not clients.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <thread>

#include "proxy/config.h"

namespace kpp {

class metrics_registry;

// What the admin views and actions answer with; set once the proxy has started (until then
// they answer 503).
struct admin_routes {
    std::function<std::string()> mapping, shards, store;  // JSON documents
    std::function<std::pair<bool, std::string>()> reload; // applied?, the message
    std::function<void()> drain;
    bool actions_enabled = false;                          // metrics.admin_endpoints
};

class admin_http_server {
public:
    // Binds at construction (throws std::runtime_error naming metrics.address on failure).
    admin_http_server(const host_port& address, const metrics_registry& metrics, std::function<bool()> ready);
    ~admin_http_server();
    uint16_t port() const { return port_; }
    void set_routes(admin_routes routes);

private:
    void serve();
    void answer(int fd);

    const metrics_registry& metrics_;
    std::function<bool()> ready_;
    std::mutex routes_mutex_;
    admin_routes routes_;
    int listen_fd_ = -1;
    uint16_t port_ = 0;
    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

}  // namespace kpp

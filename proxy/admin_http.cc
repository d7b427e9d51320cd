#include "proxy/admin_http.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

#include "proxy/metrics.h"
#include "reactor/address.h"
#include "reactor/errors.h"

namespace kpp {

admin_http_server::admin_http_server(const host_port& address, const metrics_registry& metrics,
                                     std::function<bool()> ready)
    : metrics_(metrics), ready_(std::move(ready)) {
    reactor::socket_address bind_address = reactor::resolve_address(address.host, address.port, true);
    listen_fd_ = ::socket(bind_address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(listen_fd_, bind_address.get(), bind_address.length) != 0 || ::listen(listen_fd_, 64) != 0) {
        int error = errno;
        ::close(listen_fd_);
        throw std::runtime_error("metrics.address: cannot listen on " + address.to_string() + ": " +
                                 reactor::error_text(error));
    }
    port_ = reactor::local_address_of(listen_fd_).port();
    thread_ = std::thread([this] { serve(); });
}

admin_http_server::~admin_http_server() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
    ::close(listen_fd_);
}

void admin_http_server::serve() {
    pthread_setname_np(pthread_self(), "kpp-admin");
    while (!stopping_) {
        pollfd entry{listen_fd_, POLLIN, 0};
        if (::poll(&entry, 1, 200) <= 0) continue;
        int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        timeval limit{2, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
        answer(fd);
        ::close(fd);
    }
}

void admin_http_server::set_routes(admin_routes routes) {
    std::lock_guard lock(routes_mutex_);
    routes_ = std::move(routes);
}

void admin_http_server::answer(int fd) {
    char request[2048];
    ssize_t length = ::recv(fd, request, sizeof request - 1, 0);
    if (length <= 0) return;
    request[length] = '\0';
    std::string line(request, strcspn(request, "\r\n"));
    std::string status = "200 OK", body, type = "text/plain; charset=utf-8";
    auto path_is = [&](const char* path, const char* method = "GET ") {
        std::string prefix = std::string(method) + path;
        return line.rfind(prefix, 0) == 0 && (line.size() == prefix.size() || line[prefix.size()] == ' ' ||
                                              line[prefix.size()] == '?');
    };
    admin_routes routes;
    {
        std::lock_guard lock(routes_mutex_);
        routes = routes_;
    }
    auto view = [&](const std::function<std::string()>& render) {
        type = "application/json";
        if (render) {
            body = render() + "\n";
        } else {
            status = "503 Service Unavailable";
            body = "{\"error\":\"not started yet\"}\n";
        }
    };
    auto action = [&](auto&& run) {
        if (!routes.actions_enabled) {
            status = "403 Forbidden";
            body = "admin actions are off (metrics.admin_endpoints: false)\n";
        } else if (!routes.reload) {
            status = "503 Service Unavailable";
            body = "not started yet\n";
        } else {
            run();
        }
    };
    if (path_is("/metrics")) {
        body = metrics_.render_text();
        type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (path_is("/health")) {
        body = "ok\n";
    } else if (path_is("/ready")) {
        if (ready_ && ready_()) {
            body = "ready\n";
        } else {
            status = "503 Service Unavailable";
            body = "not ready\n";
        }
    } else if (path_is("/admin/mapping")) {
        view(routes.mapping);
    } else if (path_is("/admin/shards")) {
        view(routes.shards);
    } else if (path_is("/admin/store")) {
        view(routes.store);
    } else if (path_is("/reload", "POST ")) {
        action([&] {
            auto [applied, message] = routes.reload();
            if (!applied) status = "409 Conflict";
            body = message + "\n";
        });
    } else if (path_is("/drain", "POST ")) {
        action([&] {
            routes.drain();
            body = "draining: /ready answers 503 from now on\n";
        });
    } else {
        status = "404 Not Found";
        body = "not found: try /metrics, /health, /ready, /admin/mapping, /admin/shards or /admin/store\n";
    }
    std::string response = "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
                           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    size_t sent = 0;
    while (sent < response.size()) {
        ssize_t n = ::send(fd, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) return;
        sent += size_t(n);
    }
}

}  // namespace kpp

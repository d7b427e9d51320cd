// Socket addresses: parsing "host:port" and resolving to sockaddr. Resolution may block
// (getaddrinfo) and is done off the data path: at start-up or on topology changes.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace kpp::reactor {

struct socket_address {
    sockaddr_storage storage{};
    socklen_t length = 0;

    const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
    int family() const { return storage.ss_family; }
    uint16_t port() const;
    std::string to_string() const;  // "127.0.0.1:9092", "[::1]:9092"
};

// Resolves host (name or literal) and port; throws reactor_error naming the host.
socket_address resolve_address(const std::string& host, uint16_t port, bool passive = false);

// The locally bound address of a socket (used to learn ports chosen by bind(port 0)).
socket_address local_address_of(int fd);
socket_address peer_address_of(int fd);

}  // namespace kpp::reactor

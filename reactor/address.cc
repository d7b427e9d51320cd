#include "reactor/address.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <cstring>

#include "reactor/errors.h"

namespace kpp::reactor {

uint16_t socket_address::port() const {
    if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
    if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
    return 0;
}

std::string socket_address::to_string() const {
    char text[INET6_ADDRSTRLEN] = {};
    if (family() == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr, text, sizeof text);
        return std::string(text) + ":" + std::to_string(port());
    }
    if (family() == AF_INET6) {
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_addr, text, sizeof text);
        return "[" + std::string(text) + "]:" + std::to_string(port());
    }
    return "(unknown address family)";
}

socket_address resolve_address(const std::string& host, uint16_t port, bool passive) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    addrinfo* found = nullptr;
    std::string service = std::to_string(port);
    const char* node = host.empty() ? nullptr : host.c_str();
    int rc = getaddrinfo(node, service.c_str(), &hints, &found);
    if (rc != 0 || !found)
        throw reactor_error("cannot resolve '" + host + "': " + gai_strerror(rc));
    socket_address result;
    // Prefer IPv4 when a name resolves to both: brokers and clients commonly listen on v4 only.
    const addrinfo* chosen = found;
    for (const addrinfo* entry = found; entry; entry = entry->ai_next) {
        if (entry->ai_family == AF_INET) {
            chosen = entry;
            break;
        }
    }
    std::memcpy(&result.storage, chosen->ai_addr, chosen->ai_addrlen);
    result.length = chosen->ai_addrlen;
    freeaddrinfo(found);
    return result;
}

socket_address local_address_of(int fd) {
    socket_address result;
    result.length = sizeof result.storage;
    getsockname(fd, reinterpret_cast<sockaddr*>(&result.storage), &result.length);
    return result;
}

socket_address peer_address_of(int fd) {
    socket_address result;
    result.length = sizeof result.storage;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&result.storage), &result.length) != 0) result.length = 0;
    return result;
}

}  // namespace kpp::reactor

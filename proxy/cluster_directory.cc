#include "proxy/cluster_directory.h"

#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "protocol/header.h"
#include "protocol/wire.h"
#include "reactor/errors.h"

namespace kpp {
namespace {

// A minimal blocking Kafka exchange with a deadline, for discovery only.
class blocking_connection {
public:
    blocking_connection(const reactor::socket_address& address, uint32_t timeout_ms) : timeout_ms_(timeout_ms) {
        fd_ = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd_ < 0) throw std::runtime_error(reactor::error_text(errno));
        if (::connect(fd_, address.get(), address.length) != 0 && errno != EINPROGRESS)
            throw std::runtime_error(reactor::error_text(errno));
        pollfd entry{fd_, POLLOUT, 0};
        if (::poll(&entry, 1, int(timeout_ms)) <= 0) throw std::runtime_error("connect timed out");
        int error = 0;
        socklen_t length = sizeof error;
        getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length);
        if (error != 0) throw std::runtime_error(reactor::error_text(error));
    }
    ~blocking_connection() {
        if (fd_ >= 0) ::close(fd_);
    }

    std::vector<std::byte> exchange(const std::vector<std::byte>& request) {
        std::vector<std::byte> framed(4);
        protocol::store_int32_be(framed.data(), int32_t(request.size()));
        framed.insert(framed.end(), request.begin(), request.end());
        write_all(framed);
        std::vector<std::byte> size(4);
        read_exact(size);
        int32_t body_bytes = protocol::load_int32_be(size.data());
        if (body_bytes < 4 || body_bytes > 64 * 1024 * 1024) throw std::runtime_error("bad response size");
        std::vector<std::byte> body(static_cast<size_t>(body_bytes));
        read_exact(body);
        return body;
    }

private:
    void wait(short events) {
        pollfd entry{fd_, events, 0};
        if (::poll(&entry, 1, int(timeout_ms_)) <= 0) throw std::runtime_error("timed out");
    }
    void write_all(const std::vector<std::byte>& bytes) {
        size_t sent = 0;
        while (sent < bytes.size()) {
            ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
            if (n > 0) {
                sent += size_t(n);
            } else if (n < 0 && errno == EAGAIN) {
                wait(POLLOUT);
            } else {
                throw std::runtime_error(n == 0 ? "closed" : reactor::error_text(errno));
            }
        }
    }
    void read_exact(std::vector<std::byte>& bytes) {
        size_t received = 0;
        while (received < bytes.size()) {
            ssize_t n = ::recv(fd_, bytes.data() + received, bytes.size() - received, 0);
            if (n > 0) {
                received += size_t(n);
            } else if (n < 0 && errno == EAGAIN) {
                wait(POLLIN);
            } else {
                throw std::runtime_error(n == 0 ? "connection closed by the broker" : reactor::error_text(errno));
            }
        }
    }

    int fd_ = -1;
    uint32_t timeout_ms_;
};

int16_t metadata_version_to_use(blocking_connection& connection) {
    auto response = connection.exchange(protocol::encode_api_versions_request(0, 1, "kafka-partition-proxy"));
    protocol::wire_reader reader(response);
    reader.read_int32();
    int16_t error_code = reader.read_int16();
    int32_t count = reader.read_array_length(false, false, 6);
    if (!reader.ok() || error_code != 0) throw std::runtime_error("ApiVersions failed");
    for (int32_t index = 0; index < count && reader.ok(); ++index) {
        int16_t key = reader.read_int16();
        int16_t min_version = reader.read_int16();
        int16_t max_version = reader.read_int16();
        if (key == protocol::api_key::metadata) {
            int16_t chosen = std::min<int16_t>(max_version, 12);
            if (chosen < min_version) throw std::runtime_error("no common Metadata version");
            return chosen;
        }
    }
    throw std::runtime_error("the broker does not offer Metadata");
}

}  // namespace

bool cluster_directory::same_brokers(const cluster_directory& other) const {
    if (brokers.size() != other.brokers.size()) return false;
    for (const auto& [node_id, broker] : brokers) {
        const upstream_broker* twin = other.find(node_id);
        if (!twin || twin->advertised.host != broker.advertised.host || twin->advertised.port != broker.advertised.port)
            return false;
    }
    return true;
}

discovery_result discover_cluster(const proxy_config& config) {
    discovery_result result;
    for (const host_port& server : config.kafka.bootstrap_servers) {
        try {
            reactor::socket_address address = reactor::resolve_address(server.host, server.port);
            blocking_connection connection(address, config.kafka.connection_timeout_ms);
            int16_t version = metadata_version_to_use(connection);
            auto response = connection.exchange(protocol::encode_metadata_request(version, 2, "kafka-partition-proxy"));
            auto parsed = protocol::rewrite_metadata_response(response, version,
                                                              [](int32_t) { return protocol::endpoint{}; });
            if (parsed.error != protocol::wire_error::none)
                throw std::runtime_error(std::string("malformed Metadata response: ") + protocol::to_string(parsed.error));
            if (parsed.upstream.empty()) throw std::runtime_error("the cluster lists no brokers");
            auto directory = std::make_shared<cluster_directory>();
            directory->controller_id = parsed.controller_id;
            for (const protocol::broker_entry& entry : parsed.upstream) {
                upstream_broker broker;
                broker.node_id = entry.node_id;
                broker.advertised = entry.address;
                broker.address = reactor::resolve_address(entry.address.host, uint16_t(entry.address.port));
                auto port = broker_port_of(config.listen, entry.node_id);
                if (!port)
                    throw config_error("listen.broker_port_base: broker node " + std::to_string(entry.node_id) +
                                       " has no port below 65536; set listen.broker_ports for it");
                broker.proxy_port = *port;
                directory->brokers[entry.node_id] = broker;
            }
            result.directory = std::move(directory);
            result.bootstrap_used = server.to_string();
            result.error.clear();
            return result;
        } catch (const config_error&) {
            throw;
        } catch (const std::exception& error) {
            result.error += (result.error.empty() ? "" : "; ") + server.to_string() + ": " + error.what();
        }
    }
    return result;
}

}  // namespace kpp

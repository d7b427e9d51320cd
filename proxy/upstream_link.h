// The connection from one client session to its broker, owned by the same core. The proxy
// numbers upstream correlation ids itself so that it can add requests of its own later;
// responses are matched in order against what is in flight.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "protocol/frame.h"
#include "protocol/header.h"
#include "proxy/config.h"
#include "proxy/metrics.h"
#include "proxy/security.h"
#include "reactor/address.h"
#include "reactor/connector.h"
#include "reactor/event_loop.h"
#include "reactor/stream_socket.h"
#include "reactor/tls.h"

namespace kpp {

struct upstream_endpoint {
    reactor::socket_address address;
    std::string description;  // for log lines: "broker 2 at 10.0.0.5:9092"
    std::string host;         // as configured or advertised: TLS server name (SNI, verification)
};

struct upstream_target {
    int32_t node_id = -1;  // -1: a bootstrap connection, which any broker can serve
    // Tried in turn when a connect fails: one entry for a broker's port; for the bootstrap
    // port every bootstrap server and known broker, so one broker down delays nobody.
    std::vector<upstream_endpoint> endpoints;
    size_t current = 0;
    // kafka.security_protocol SSL: every connection of this target speaks TLS; null: plaintext.
    std::shared_ptr<reactor::tls_context> tls;
    // kafka.security_protocol SASL_*: every connection authenticates first; null: none.
    std::shared_ptr<const broker_sasl> sasl;

    const upstream_endpoint& endpoint() const { return endpoints[current]; }
};

struct in_flight_request {
    int32_t upstream_correlation_id = 0;
    uint64_t sequence = 0;  // the client session's slot
    int16_t api_key = 0;
    int16_t api_version = 0;
    uint64_t sent_ns = 0;
};

class upstream_link final : public reactor::stream_socket::events {
public:
    struct owner {
        virtual void on_upstream_response(protocol::frame&& response, const in_flight_request& request) = 0;
        virtual void on_upstream_failed(const std::string& reason) = 0;
        virtual void on_upstream_closed() = 0;
        virtual void on_upstream_drained() = 0;
        virtual ~owner() = default;
    };

    upstream_link(reactor::event_loop& loop, owner& session, upstream_target target, const proxy_config& config,
                  shard_metrics& metrics);
    ~upstream_link() override;

    // Forwards a request whose body is `request` (header included) with the proxy's own
    // correlation id. `expects_response` is false for Produce with acks=0.
    void send_request(const protocol::request_header& header, const protocol::frame& request, uint64_t sequence,
                      bool expects_response);
    // Sends a request the proxy built: `after_correlation` is everything after the
    // correlation id (client id, header tagged fields, body).
    void send_built(int16_t api_key, int16_t api_version, std::vector<reactor::byte_slice>&& after_correlation,
                    uint64_t sequence, bool expects_response);
    // Final close: nothing more is sent; on_upstream_closed follows when the socket is gone.
    void close();
    void pause_receive();
    void resume_receive();

    // After the broker closed an idle connection, reconnecting silently is only safe when
    // the connection carries no state (no SASL authentication).
    void forbid_silent_reconnect() { silent_reconnect_allowed_ = false; }
    size_t in_flight() const { return in_flight_.size(); }
    uint64_t queued_bytes() const;
    // Send time of the oldest request that must be answered within request_timeout_ms
    // (JoinGroup and SyncGroup legitimately wait for a whole rebalance); 0 when none.
    uint64_t oldest_timed_request_ns() const;
    bool closed() const { return state_ == state::closed; }
    // Times this connection's receive found no free provided buffer (-ENOBUFS).
    uint64_t receive_stalls() const { return socket_ ? socket_->stats().buffer_stalls : 0; }
    const upstream_target& target() const { return target_; }

private:
    // `authenticating`: connected, the SASL exchange (first or re-authentication) in
    // progress; requests wait in `waiting_` until it is done.
    enum class state { idle, connecting, backoff, connected, authenticating, retiring, closing, closed };
    bool live() const { return state_ == state::connected || state_ == state::authenticating; }

    void on_data(reactor::byte_slice chunk) override;
    void on_end(int error) override;
    void on_closed() override;
    void on_send_drained() override;

    void connect();
    void schedule_retry(int error);
    void transmit(std::vector<reactor::byte_slice>&& pieces);
    void fail(const std::string& reason);
    static void on_connected(void* context, int result);
    static void on_retry_timer(reactor::timer& self, void* context);
    static void on_reauth_timer(reactor::timer& self, void* context);
    // SASL toward the broker (DESIGN.md section 6).
    void start_authentication();
    void send_internal(int16_t api_key, int16_t api_version, std::vector<std::byte>&& tail);
    void on_sasl_response(const protocol::frame& response, const in_flight_request& request);
    void release_waiting();

    bool tls_established_ = false;  // this connection's TLS handshake completed
    reactor::event_loop& loop_;
    owner& session_;
    upstream_target target_;
    const proxy_config& config_;
    shard_metrics& metrics_;
    state state_ = state::idle;
    std::unique_ptr<reactor::stream_socket> socket_;
    reactor::connect_attempt* attempt_ = nullptr;
    reactor::timer retry_timer_;
    reactor::timer reauth_timer_;
    std::unique_ptr<sasl::client_mechanism> sasl_mechanism_;
    bool sasl_done_once_ = false;
    int sasl_rounds_ = 0;
    in_flight_request sasl_request_;  // the proxy's own SASL request awaiting its answer  // this connection authenticated before: the next is a re-authentication
    uint64_t connect_started_ns_ = 0;
    uint32_t retry_delay_ms_ = 0;
    size_t endpoints_tried_ = 0;  // in this round of connect attempts
    protocol::frame_assembler assembler_;
    std::deque<in_flight_request> in_flight_;
    std::vector<std::vector<reactor::byte_slice>> waiting_;  // requests queued while connecting
    uint64_t waiting_bytes_ = 0;
    int32_t next_correlation_id_ = 1;
    bool silent_reconnect_allowed_ = true;
    bool receive_paused_ = false;
};

}  // namespace kpp

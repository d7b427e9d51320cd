// One client connection: frames requests out of the receive buffers, forwards them to the
// session's own upstream connection, and returns responses in request order (pipelining),
// rewriting the few APIs that name brokers.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "protocol/conformance.h"
#include "protocol/frame.h"
#include "proxy/client_auth.h"
#include "proxy/exchange.h"
#include "proxy/upstream_link.h"
#include "reactor/stream_socket.h"

namespace kpp {

class shard_server;

class client_session final : public reactor::stream_socket::events,
                             public upstream_link::owner,
                             public scan_link_source {
public:
    client_session(shard_server& server, int fd, upstream_target target);
    ~client_session() override;

    void start();
    // TLS toward the client (listen.security.protocol SSL), before start(): the handshake
    // must finish within listen.security.tls.handshake_timeout_ms.
    void use_tls(std::shared_ptr<reactor::tls_context> context);
    // SASL toward the client (listen.security.protocol SASL_*), before start(): until the
    // client authenticates only ApiVersions, SaslHandshake and SaslAuthenticate are answered,
    // by the proxy itself; nothing goes upstream.
    void use_sasl(std::shared_ptr<const sasl_listener> listener);
    // Graceful stop: read no more requests, answer those in flight, then close.
    void begin_drain();
    // Closes both sides now (with a log line saying why, when given).
    void abort(const std::string& reason);
    // Called by the shard's sweep: fails the session when the broker is too slow.
    void check_timeouts(uint64_t now_ns);
    bool finished() const { return client_closed_ && upstream_closed_ && (!scan_upstream_ || scan_closed_); }
    // The connection for scan-ahead rounds, opened on first use; nullptr where it cannot
    // stand in for the client's own (a bootstrap port, which may reach any broker, or a
    // client authenticating to the broker through the proxy).
    upstream_link* scan_link() override;
    const std::string& peer() const { return peer_; }
    // An exchange_waker fired: lets the request's exchange go on (see request_exchange::on_event).
    void resume_exchange(uint64_t sequence);

private:
    struct response_slot {
        int32_t client_correlation_id = 0;
        int16_t api_key = 0;
        int16_t api_version = 0;
        uint64_t received_ns = 0;
        bool ready = false;
        bool raw = false;  // a bare SASL token (after SaslHandshake v0): no correlation id
        uint64_t due_ns = 0;  // a failed authentication: not sent before this, then the connection closes
        std::vector<reactor::byte_slice> pieces;  // size prefix included
        std::unique_ptr<request_exchange> exchange;  // builds the response from the proxy's own requests
    };

    // Client socket events.
    void on_data(reactor::byte_slice chunk) override;
    void on_end(int error) override;
    void on_closed() override;
    void on_send_drained() override;
    void on_tls_ready(bool kernel) override;
    // Upstream events.
    void on_upstream_response(protocol::frame&& response, const in_flight_request& request) override;
    void on_upstream_failed(const std::string& reason) override;
    void on_upstream_closed() override;
    void on_upstream_drained() override;

    void handle_request(protocol::frame&& request);
    // SASL: true when the request was dealt with here (answered, or the connection closed).
    bool gate_request(const protocol::frame& request, const protocol::request_header& header);
    void handle_raw_token(const protocol::frame& token);
    void note_authentication();  // lifts the frame limit of unauthenticated clients
    void answer_locally(const protocol::request_header& header, std::vector<std::byte>&& body, bool raw,
                        uint64_t due_ns);
    bool produce_expects_response(const protocol::frame& request);
    // True when the request was taken care of by an exchange (or refused).
    bool start_exchange(exchange_starter start, const protocol::frame& request, const protocol::request_header& header);
    exchange_env make_env(uint64_t sequence);
    void finish_exchange_slot(response_slot& slot, std::vector<reactor::byte_slice>&& answer);
    void fill_slot(response_slot& slot, protocol::frame&& response, const in_flight_request& request);
    void flush_ready_responses();
    void report_conformance(const char* direction, const protocol::conformance_problem& problem);
    void close_when_idle();
    void apply_backpressure();
    void close_upstreams();
    size_t upstream_in_flight() const;

    // The scan link's events: answers go to the exchanges like the main link's; a failure
    // fails the session like the main link's.
    class scan_events final : public upstream_link::owner {
    public:
        explicit scan_events(client_session& session) : session_(session) {}
        void on_upstream_response(protocol::frame&& response, const in_flight_request& request) override {
            session_.on_upstream_response(std::move(response), request);
        }
        void on_upstream_failed(const std::string& reason) override { session_.on_upstream_failed(reason); }
        void on_upstream_closed() override;
        void on_upstream_drained() override { session_.apply_backpressure(); }

    private:
        client_session& session_;
    };

    shard_server& server_;
    reactor::stream_socket client_;
    upstream_link upstream_;
    protocol::frame_assembler assembler_;
    std::deque<response_slot> slots_;
    uint64_t first_slot_sequence_ = 0;  // sequence number of slots_.front()
    std::string peer_;
    uint64_t tls_deadline_ns_ = 0;  // 0: no TLS handshake pending
    std::unique_ptr<client_authenticator> auth_;  // null: the listener is not SASL
    bool close_after_answers_ = false;  // a failed authentication: close once it is answered
    bool tls_counted_ = false;
    // Exchange wakers hold it weakly: a session that is gone is never called.
    std::shared_ptr<client_session*> life_ = std::make_shared<client_session*>(this);
    std::deque<uint64_t> held_produces_;  // see exchange_env::held_produces
    bool draining_ = false;
    bool client_closed_ = false;
    bool upstream_closed_ = false;
    scan_events scan_events_{*this};
    std::unique_ptr<upstream_link> scan_upstream_;
    bool scan_closed_ = false;
    bool broker_sasl_forwarded_ = false;  // the client authenticates to the broker itself
    bool client_paused_for_upstream_ = false;
    bool upstream_paused_for_client_ = false;
};

}  // namespace kpp

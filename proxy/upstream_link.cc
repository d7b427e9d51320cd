#include "proxy/upstream_link.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "protocol/api.h"
#include "protocol/wire.h"
#include "reactor/errors.h"

namespace kpp {
namespace {

// Responses are bounded by what clients ask for (fetch.max.bytes); this is a sanity cap.
constexpr uint32_t response_bytes_max = 1u << 30;
constexpr uint32_t retry_delay_ms_first = 50;
constexpr uint32_t retry_delay_ms_max = 1000;
// Marks the proxy's own SASL requests in the in-flight queue: their answers stay here.
constexpr uint64_t internal_sequence = UINT64_MAX;
// SCRAM needs two SaslAuthenticate rounds; a broker asking for many more is not talking SASL.
constexpr int sasl_rounds_max = 8;

}  // namespace

upstream_link::upstream_link(reactor::event_loop& loop, owner& session, upstream_target target,
                             const proxy_config& config, shard_metrics& metrics)
    : loop_(loop), session_(session), target_(std::move(target)), config_(config), metrics_(metrics),
      retry_timer_(loop), reauth_timer_(loop), assembler_(response_bytes_max) {}

upstream_link::~upstream_link() {
    if (attempt_) attempt_->abandon();
}

uint64_t upstream_link::queued_bytes() const {
    return waiting_bytes_ + (socket_ ? socket_->queued_bytes() : 0);
}

uint64_t upstream_link::oldest_timed_request_ns() const {
    for (const in_flight_request& request : in_flight_) {
        if (request.api_key == protocol::api_key::join_group || request.api_key == protocol::api_key::sync_group)
            continue;
        return request.sent_ns;
    }
    return 0;
}

void upstream_link::send_request(const protocol::request_header& header, const protocol::frame& request,
                                 uint64_t sequence, bool expects_response) {
    if (state_ == state::closing || state_ == state::closed) return;
    int32_t correlation_id = next_correlation_id_;
    next_correlation_id_ = next_correlation_id_ == INT32_MAX ? 1 : next_correlation_id_ + 1;
    // New bytes only for the size and the fixed header; the rest goes from the receive buffers.
    reactor::shared_bytes prefix = reactor::shared_bytes::allocate(4 + protocol::request_header_fixed_bytes);
    protocol::store_int32_be(prefix.data(), int32_t(request.size_bytes));
    protocol::store_int16_be(prefix.data() + 4, header.api_key);
    protocol::store_int16_be(prefix.data() + 6, header.api_version);
    protocol::store_int32_be(prefix.data() + 8, correlation_id);
    std::vector<reactor::byte_slice> pieces;
    pieces.reserve(request.pieces.size() + 1);
    pieces.push_back(reactor::byte_slice{std::move(prefix), 0, 12});
    request.slices_from(protocol::request_header_fixed_bytes, pieces);
    if (expects_response)
        in_flight_.push_back({correlation_id, sequence, header.api_key, header.api_version, loop_.now_ns()});
    bump(metrics_.bytes_to_upstream, uint64_t(request.size_bytes) + 4);
    transmit(std::move(pieces));
}

void upstream_link::send_built(int16_t api_key, int16_t api_version,
                               std::vector<reactor::byte_slice>&& after_correlation, uint64_t sequence,
                               bool expects_response) {
    if (state_ == state::closing || state_ == state::closed) return;
    int32_t correlation_id = next_correlation_id_;
    next_correlation_id_ = next_correlation_id_ == INT32_MAX ? 1 : next_correlation_id_ + 1;
    uint64_t size_bytes = protocol::request_header_fixed_bytes;
    for (const auto& piece : after_correlation) size_bytes += piece.length;
    reactor::shared_bytes prefix = reactor::shared_bytes::allocate(4 + protocol::request_header_fixed_bytes);
    protocol::store_int32_be(prefix.data(), int32_t(size_bytes));
    protocol::store_int16_be(prefix.data() + 4, api_key);
    protocol::store_int16_be(prefix.data() + 6, api_version);
    protocol::store_int32_be(prefix.data() + 8, correlation_id);
    std::vector<reactor::byte_slice> pieces;
    pieces.reserve(after_correlation.size() + 1);
    pieces.push_back(reactor::byte_slice{std::move(prefix), 0, 12});
    for (auto& piece : after_correlation)
        if (piece.length > 0) pieces.push_back(std::move(piece));
    if (expects_response) in_flight_.push_back({correlation_id, sequence, api_key, api_version, loop_.now_ns()});
    bump(metrics_.bytes_to_upstream, size_bytes + 4);
    transmit(std::move(pieces));
}

void upstream_link::transmit(std::vector<reactor::byte_slice>&& pieces) {
    if (state_ == state::connected) {
        socket_->send(pieces);
        return;
    }
    for (const auto& piece : pieces) waiting_bytes_ += piece.length;
    waiting_.push_back(std::move(pieces));
    if (state_ == state::idle) {
        connect_started_ns_ = loop_.now_ns();
        retry_delay_ms_ = retry_delay_ms_first;
        connect();
    }
}

void upstream_link::connect() {
    state_ = state::connecting;
    uint64_t elapsed_ms = (loop_.now_ns() - connect_started_ns_) / 1'000'000u;
    uint64_t budget_ms = config_.kafka.connection_timeout_ms > elapsed_ms ? config_.kafka.connection_timeout_ms - elapsed_ms : 1;
    attempt_ = reactor::connect_attempt::start(loop_, target_.endpoint().address, uint32_t(budget_ms), &upstream_link::on_connected, this);
}

void upstream_link::on_connected(void* context, int result) {
    auto& link = *static_cast<upstream_link*>(context);
    link.attempt_ = nullptr;
    if (link.state_ != state::connecting) {
        if (result >= 0) ::close(result);
        return;
    }
    if (result < 0) {
        link.schedule_retry(-result);
        return;
    }
    link.state_ = state::connected;
    link.endpoints_tried_ = 0;
    link.tls_established_ = false;
    link.socket_ = std::make_unique<reactor::stream_socket>(link.loop_, result, link);
    link.socket_->receive_into_upstream_buffers();
    if (link.target_.tls) {
        link.socket_->enable_tls(std::make_unique<reactor::tls_engine>(link.target_.tls, link.target_.endpoint().host));
        bump(link.metrics_.tls_userspace_connections);
    }
    link.socket_->start_receive();
    if (link.receive_paused_) link.socket_->pause_receive();
    link.sasl_done_once_ = false;
    if (link.target_.sasl) {
        link.start_authentication();
        return;
    }
    link.release_waiting();
}

void upstream_link::release_waiting() {
    for (auto& pieces : waiting_) socket_->send(pieces);
    waiting_.clear();
    waiting_bytes_ = 0;
}

void upstream_link::send_internal(int16_t api_key, int16_t api_version, std::vector<std::byte>&& tail) {
    int32_t correlation_id = next_correlation_id_;
    next_correlation_id_ = next_correlation_id_ == INT32_MAX ? 1 : next_correlation_id_ + 1;
    uint32_t length = uint32_t(tail.size());
    reactor::shared_bytes prefix = reactor::shared_bytes::allocate(4 + protocol::request_header_fixed_bytes);
    protocol::store_int32_be(prefix.data(), int32_t(protocol::request_header_fixed_bytes + length));
    protocol::store_int16_be(prefix.data() + 4, api_key);
    protocol::store_int16_be(prefix.data() + 6, api_version);
    protocol::store_int32_be(prefix.data() + 8, correlation_id);
    std::vector<reactor::byte_slice> pieces;
    pieces.push_back(reactor::byte_slice{std::move(prefix), 0, 12});
    pieces.push_back(reactor::byte_slice{reactor::shared_bytes::copy_of(tail), 0, length});
    // Not in in_flight_: on a first authentication, requests queued while connecting are in
    // there already but go out only after this exchange.
    sasl_request_ = {correlation_id, internal_sequence, api_key, api_version, loop_.now_ns()};
    socket_->send(pieces);
}

void upstream_link::start_authentication() {
    // Requests sent before this are answered first (the broker takes them in order); the
    // ones that come now wait until the exchange is done.
    state_ = state::authenticating;
    reauth_timer_.cancel();
    sasl_mechanism_ = target_.sasl->start();
    send_internal(protocol::api_key::sasl_handshake, sasl_handshake_version,
                  sasl_handshake_request_tail(target_.sasl->mechanism));
}

void upstream_link::on_sasl_response(const protocol::frame& response, const in_flight_request& request) {
    const broker_sasl& identity = *target_.sasl;
    reactor::byte_slice whole = response.contiguous();
    auto body = whole.span().subspan(protocol::response_correlation_bytes);
    std::string who = identity.describe() + " to " + target_.endpoint().description;
    auto give_up = [&](const std::string& why) {
        bump(metrics_.sasl_broker_failed);
        fail(who + " failed: " + why);
    };
    if (request.api_key == protocol::api_key::sasl_handshake) {
        sasl_answer answer = parse_sasl_handshake_response(body);
        if (answer.malformed) return give_up("malformed SaslHandshake response");
        if (answer.error_code != 0) return give_up(sasl_handshake_refusal(identity, answer));
        if (!sasl_mechanism_) return give_up("unknown mechanism");
        sasl_rounds_ = 0;
        std::vector<uint8_t> first = sasl_mechanism_->initial();
        if (first.empty()) return give_up(sasl_mechanism_->step({}).reason);
        send_internal(api_key_sasl_authenticate, sasl_authenticate_version, sasl_authenticate_request_tail(first));
        return;
    }
    sasl_answer answer = parse_sasl_authenticate_response(body);
    if (answer.malformed) return give_up("malformed SaslAuthenticate response");
    if (answer.error_code != 0) return give_up(sasl_authenticate_refusal(answer));
    sasl::client_step step = sasl_mechanism_->step(answer.auth_bytes);
    if (step.status == sasl::client_status::failed) return give_up(step.reason);
    if (step.status == sasl::client_status::continue_exchange) {
        if (++sasl_rounds_ > sasl_rounds_max) return give_up("the exchange did not end");
        send_internal(api_key_sasl_authenticate, sasl_authenticate_version,
                      sasl_authenticate_request_tail(step.message));
        return;
    }
    bump(metrics_.sasl_broker_ok);
    spdlog::debug("{} {}", who, sasl_done_once_ ? "renewed" : "succeeded");
    sasl_done_once_ = true;
    sasl_mechanism_.reset();
    state_ = state::connected;
    if (uint64_t delay = reauthentication_delay_ms(answer.session_lifetime_ms))
        reauth_timer_.arm_after_ms(delay, &upstream_link::on_reauth_timer, this);
    release_waiting();
}

void upstream_link::on_reauth_timer(reactor::timer&, void* context) {
    auto& link = *static_cast<upstream_link*>(context);
    if (link.state_ == state::connected && link.target_.sasl) link.start_authentication();
}

void upstream_link::schedule_retry(int error) {
    bump(metrics_.upstream_connect_failures);
    if (++endpoints_tried_ < target_.endpoints.size()) {
        // Another server can answer this connection: try it at once.
        spdlog::debug("connect to {} failed ({}); trying the next server", target_.endpoint().description,
                      reactor::error_text(error));
        target_.current = (target_.current + 1) % target_.endpoints.size();
        connect();
        return;
    }
    endpoints_tried_ = 0;
    uint64_t elapsed_ms = (loop_.now_ns() - connect_started_ns_) / 1'000'000u;
    if (elapsed_ms + retry_delay_ms_ >= config_.kafka.connection_timeout_ms) {
        fail("cannot connect to " + target_.endpoint().description + " within kafka.connection_timeout_ms (" +
             std::to_string(config_.kafka.connection_timeout_ms) + " ms): " + reactor::error_text(error));
        return;
    }
    spdlog::debug("connect to {} failed ({}); retrying in {} ms", target_.endpoint().description, reactor::error_text(error),
                  retry_delay_ms_);
    state_ = state::backoff;
    target_.current = (target_.current + 1) % target_.endpoints.size();
    retry_timer_.arm_after_ms(retry_delay_ms_, &upstream_link::on_retry_timer, this);
    retry_delay_ms_ = std::min(retry_delay_ms_ * 2, retry_delay_ms_max);
}

void upstream_link::on_retry_timer(reactor::timer&, void* context) {
    auto& link = *static_cast<upstream_link*>(context);
    if (link.state_ == state::backoff) link.connect();
}

void upstream_link::on_data(reactor::byte_slice chunk) {
    bump(metrics_.bytes_from_upstream, chunk.length);
    if (!tls_established_ && socket_ && socket_->tls()) {
        tls_established_ = true;  // plaintext comes only after the handshake
        bump(metrics_.tls_broker_handshakes);
    }
    reactor::buffer_pool& pool = loop_.upstream_buffers();
    bool under_pressure = pool.available() < pool.count() / 4;
    // Likewise answers: a slow client must not hold the buffers of every broker connection.
    auto status = assembler_.feed(std::move(chunk), under_pressure ? protocol::copy_policy::all : protocol::copy_policy::reference, [this](protocol::frame&& response) {
        if (!live()) return;
        std::array<std::byte, 4> raw{};
        if (response.copy_out(0, raw) < 4) {
            fail(target_.endpoint().description + " sent a response shorter than its header");
            return;
        }
        int32_t correlation_id = protocol::load_int32_be(raw.data());
        if (sasl_request_.sequence == internal_sequence && sasl_request_.upstream_correlation_id == correlation_id) {
            in_flight_request request = sasl_request_;
            sasl_request_ = {};
            on_sasl_response(response, request);
            return;
        }
        if (in_flight_.empty() || in_flight_.front().upstream_correlation_id != correlation_id) {
            fail(target_.endpoint().description + " answered correlation id " + std::to_string(correlation_id) +
                 ", which is not the oldest request in flight");
            return;
        }
        in_flight_request request = in_flight_.front();
        in_flight_.pop_front();
        session_.on_upstream_response(std::move(response), request);
    });
    if (status != protocol::frame_status::ok && live())
        fail(target_.endpoint().description + " sent a response frame with an invalid size");
}

void upstream_link::on_end(int error) {
    if (!live()) return;
    if (const reactor::tls_engine* tls = socket_->tls(); tls && tls->state() == reactor::tls_state::failed) {
        if (!tls_established_) bump(metrics_.tls_broker_handshake_failures);
        fail("TLS toward " + target_.endpoint().description + " failed: " + tls->error());
        return;
    }
    if (in_flight_.empty() && silent_reconnect_allowed_ && state_ == state::connected) {
        // The broker closed an idle connection (connections.max.idle.ms): reconnect on demand.
        spdlog::debug("{} closed an idle connection; will reconnect on the next request", target_.endpoint().description);
        state_ = state::retiring;
        reauth_timer_.cancel();
        socket_->close();
        return;
    }
    fail(target_.endpoint().description + (error == 0 ? " closed the connection" : " connection failed: " + reactor::error_text(-error)) +
         " with " + std::to_string(in_flight_.size()) + " request(s) in flight");
}

void upstream_link::fail(const std::string& reason) {
    if (state_ == state::closing || state_ == state::closed) return;
    bump(metrics_.upstream_failures);
    close();
    session_.on_upstream_failed(reason);
}

void upstream_link::close() {
    if (state_ == state::closing || state_ == state::closed) return;
    retry_timer_.cancel();
    reauth_timer_.cancel();
    if (attempt_) {
        attempt_->abandon();
        attempt_ = nullptr;
    }
    waiting_.clear();
    waiting_bytes_ = 0;
    in_flight_.clear();
    if (socket_) {
        state_ = state::closing;
        socket_->close();
        return;
    }
    state_ = state::closed;
    session_.on_upstream_closed();
}

void upstream_link::on_closed() {
    if (state_ == state::retiring) {
        // Freed after this callback returns: the socket is still on the stack.
        reactor::stream_socket* finished = socket_.release();
        state_ = state::idle;
        struct deleter {
            static void run(reactor::timer& self, void* context) {
                delete static_cast<reactor::stream_socket*>(context);
                delete &self;
            }
        };
        auto* reaper = new reactor::timer(loop_);
        reaper->arm_after_ms(0, &deleter::run, finished);
        if (!waiting_.empty()) {
            connect_started_ns_ = loop_.now_ns();
            retry_delay_ms_ = retry_delay_ms_first;
            connect();
        }
        return;
    }
    state_ = state::closed;
    session_.on_upstream_closed();
}

void upstream_link::on_send_drained() { session_.on_upstream_drained(); }

void upstream_link::pause_receive() {
    receive_paused_ = true;
    if (socket_ && live()) socket_->pause_receive();
}

void upstream_link::resume_receive() {
    receive_paused_ = false;
    if (socket_ && live()) socket_->resume_receive();
}

}  // namespace kpp

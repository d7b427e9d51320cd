#include "proxy/client_session.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>

#include "protocol/api.h"
#include "protocol/conformance.h"
#include "protocol/header.h"
#include "protocol/wire.h"
#include "proxy/handlers.h"
#include "proxy/shard_server.h"
#include "reactor/address.h"
#include "reactor/errors.h"

namespace kpp {
namespace {

// Bytes queued toward one side before the other side stops being read.
constexpr uint64_t queued_bytes_pause = 8u << 20;
// Enough for any Produce request header, client id and transactional id.
constexpr size_t produce_prefix_bytes_max = 70 * 1024;
// Kafka's sasl.server.max.receive.size default.
constexpr uint32_t unauthenticated_frame_bytes_max = 512 * 1024;

}  // namespace

client_session::client_session(shard_server& server, int fd, upstream_target target)
    : server_(server),
      client_(server.loop(), fd, *this),
      upstream_(server.loop(), *this, std::move(target), server.config(), server.metrics()),
      assembler_(server.config().listen.frame_bytes_max),
      peer_(reactor::peer_address_of(fd).to_string()) {}

client_session::~client_session() = default;

void client_session::start() { client_.start_receive(); }

void client_session::use_tls(std::shared_ptr<reactor::tls_context> context) {
    bool kernel = context->kernel_offload();
    client_.enable_tls(std::make_unique<reactor::tls_engine>(std::move(context)), kernel);
    tls_deadline_ns_ = server_.loop().now_ns() +
                       uint64_t(server_.config().listen.security.tls.handshake_timeout_ms) * 1'000'000u;
}

void client_session::use_sasl(std::shared_ptr<const sasl_listener> listener) {
    auth_ = std::make_unique<client_authenticator>(std::move(listener), peer_, server_.metrics());
    // Before authentication a frame is a SASL token or a small request: like a broker's
    // sasl.server.max.receive.size, nobody unauthenticated makes the proxy hold megabytes.
    assembler_.set_frame_bytes_max(std::min(server_.config().listen.frame_bytes_max, unauthenticated_frame_bytes_max));
}

void client_session::note_authentication() {
    if (auth_->authenticated()) assembler_.set_frame_bytes_max(server_.config().listen.frame_bytes_max);
}

void client_session::on_data(reactor::byte_slice chunk) {
    if (draining_) return;
    bump(server_.metrics().bytes_from_clients, chunk.length);
    // When the client ring runs low, requests are copied out of it: one waiting for a slow
    // broker must not keep a buffer every other connection of this core needs (issue 16).
    reactor::buffer_pool& pool = server_.loop().buffers();
    bool under_pressure = pool.available() < pool.count() / 4;
    auto status = assembler_.feed(std::move(chunk), under_pressure ? protocol::copy_policy::all : protocol::copy_policy::reference,
                                  [this](protocol::frame&& request) { handle_request(std::move(request)); });
    if (status == protocol::frame_status::ok) return;
    bump(server_.metrics().requests_rejected);
    if (status == protocol::frame_status::too_large && auth_ && !auth_->authenticated())
        abort("request frame of " + std::to_string(assembler_.declared_size()) + " bytes before SASL authentication (at most " +
              std::to_string(assembler_.frame_bytes_max()) + " bytes until then)");
    else if (status == protocol::frame_status::too_large)
        abort("request frame of " + std::to_string(assembler_.declared_size()) +
              " bytes exceeds listen.frame_bytes_max (" + std::to_string(server_.config().listen.frame_bytes_max) + ")");
    else
        abort("request frame with a negative size");
}

void client_session::handle_request(protocol::frame&& request) {
    if (client_.closing() || draining_) return;
    if (auth_ && auth_->expects_raw_token()) {
        handle_raw_token(request);
        return;
    }
    auto header = protocol::peek_request_header(request);
    if (!header) {
        bump(server_.metrics().requests_rejected);
        abort("request of " + std::to_string(request.size_bytes) + " bytes is shorter than a request header");
        return;
    }
    server_.metrics().count_request(header->api_key);
    // A request the schema cannot walk never reaches the broker: Kafka has no error code
    // for a body it cannot parse, so, like a broker, the proxy closes that connection.
    if (auto problem = protocol::validate_request(request)) {
        bump(server_.metrics().requests_rejected);
        abort("malformed request: " + *problem);
        return;
    }
    if (server_.verify_protocol()) {
        if (auto problem = protocol::check_request(request.contiguous().span()))
            report_conformance("request from", *problem);
    }
    if (auth_ && gate_request(request, *header)) return;
    if (header->api_key == protocol::api_key::sasl_handshake || header->api_key == 36 /* SaslAuthenticate */) {
        upstream_.forbid_silent_reconnect();
        broker_sasl_forwarded_ = true;
    }
    if (exchange_starter start = find_exchange_starter(server_.remap(), header->api_key, request)) {
        if (start_exchange(start, request, *header)) {
            apply_backpressure();
            return;
        }
    }
    bool expects_response = header->api_key != protocol::api_key::produce || produce_expects_response(request);
    if (client_.closing()) return;  // a malformed Produce closed the session
    uint64_t sequence = first_slot_sequence_ + slots_.size();
    if (expects_response) {
        response_slot slot;
        slot.client_correlation_id = header->correlation_id;
        slot.api_key = header->api_key;
        slot.api_version = header->api_version;
        slot.received_ns = server_.loop().now_ns();
        slots_.push_back(std::move(slot));
    }
    upstream_.send_request(*header, request, sequence, expects_response);
    apply_backpressure();
}

bool client_session::gate_request(const protocol::frame& request, const protocol::request_header& header) {
    int16_t key = header.api_key;
    bool sasl_api = key == protocol::api_key::sasl_handshake || key == 36 /* SaslAuthenticate */;
    uint64_t now = server_.loop().now_ns();
    if (!sasl_api && auth_->authenticated() && !auth_->expired(now)) return false;
    if (!sasl_api && auth_->authenticated()) {
        bump(server_.metrics().sasl_sessions_expired);
        abort("the SASL session of '" + auth_->principal() + "' expired without re-authentication");
        return true;
    }
    if (!sasl_api && key != protocol::api_key::api_versions) {
        bump(server_.metrics().sasl_unauthenticated_closed);
        abort(std::string(protocol::api_name(key)) + " request before SASL authentication");
        return true;
    }
    reactor::byte_slice whole = request.contiguous();
    protocol::wire_error error = protocol::wire_error::none;
    auto parsed = protocol::parse_request_header(whole.span(), error);
    if (!parsed) {
        abort(std::string("malformed request header: ") + protocol::to_string(error));
        return true;
    }
    auto body = whole.span().subspan(parsed->header_bytes);
    if (key == protocol::api_key::api_versions) {
        // Answered from what discovery learnt, so an unauthenticated client never causes an
        // upstream connection.
        static const std::map<int16_t, std::pair<int16_t, int16_t>> none;
        const auto& ranges = server_.directory() ? server_.directory()->api_ranges : none;
        answer_locally(header, api_versions_answer(ranges, header.api_version, &protocol::withheld_under_remapping),
                       false, 0);
        return true;
    }
    client_authenticator::outcome out = key == protocol::api_key::sasl_handshake
                                            ? auth_->handshake(body, header.api_version)
                                            : auth_->authenticate(body, header.api_version, now);
    if (out.close) {
        abort("malformed " + std::string(protocol::api_name(key)) + " request");
        return true;
    }
    note_authentication();
    uint64_t due = 0;
    if (out.delay_then_close) {
        // A failed attempt is answered late and ends the connection: guessing costs time.
        due = now + uint64_t(auth_->failure_delay_ms()) * 1'000'000u;
        draining_ = true;
        client_.pause_receive();
    }
    answer_locally(header, std::move(out.body), false, due);
    return true;
}

void client_session::handle_raw_token(const protocol::frame& token) {
    reactor::byte_slice whole = token.contiguous();
    client_authenticator::outcome out = auth_->raw_token(whole.span(), server_.loop().now_ns());
    if (out.close) {
        bump(server_.metrics().requests_rejected);
        abort("SASL authentication failed (SaslHandshake v0 exchange)");
        return;
    }
    note_authentication();
    protocol::request_header none{};
    answer_locally(none, std::move(out.body), true, 0);
}

void client_session::answer_locally(const protocol::request_header& header, std::vector<std::byte>&& body, bool raw,
                                    uint64_t due_ns) {
    response_slot slot;
    slot.client_correlation_id = header.correlation_id;
    slot.api_key = header.api_key;
    slot.api_version = header.api_version;
    slot.received_ns = server_.loop().now_ns();
    slot.raw = raw;
    slot.due_ns = due_ns;
    slots_.push_back(std::move(slot));
    std::vector<reactor::byte_slice> answer;
    if (raw) {
        uint32_t length = uint32_t(body.size());
        answer.push_back(reactor::byte_slice{reactor::shared_bytes::copy_of(body), 0, length});
    } else {
        answer = exchange_util::response_pieces(header.api_key, header.api_version, std::move(body));
    }
    finish_exchange_slot(slots_.back(), std::move(answer));
    if (due_ns != 0) {
        slots_.back().ready = false;  // released by check_timeouts
        close_after_answers_ = true;
        return;
    }
    flush_ready_responses();
}

exchange_env client_session::make_env(uint64_t sequence) {
    return exchange_env{server_, upstream_, server_.remap(), server_.metrics(), sequence, server_.loop().now_ns(), peer_,
                        life_, held_produces_, this};
}

void client_session::resume_exchange(uint64_t sequence) {
    if (sequence < first_slot_sequence_ || sequence - first_slot_sequence_ >= slots_.size()) return;
    response_slot& slot = slots_[sequence - first_slot_sequence_];
    if (!slot.exchange) return;
    exchange_env env = make_env(sequence);
    if (!slot.exchange->on_event(env)) return;
    std::vector<reactor::byte_slice> answer = std::move(slot.exchange->answer);
    finish_exchange_slot(slot, std::move(answer));
    flush_ready_responses();
}

void exchange_waker::operator()() const {
    if (auto session = session_.lock())
        if (*session) (*session)->resume_exchange(sequence_);
}

bool client_session::start_exchange(exchange_starter start, const protocol::frame& request,
                                     const protocol::request_header& header) {
    reactor::byte_slice whole = request.contiguous();
    protocol::wire_error error = protocol::wire_error::none;
    auto parsed = protocol::parse_request_header(whole.span(), error);
    if (!parsed) {
        bump(server_.metrics().requests_rejected);
        abort(std::string("malformed request header: ") + protocol::to_string(error));
        return true;
    }
    client_request incoming{request, whole, *parsed,
                            reactor::byte_slice{whole.owner, whole.offset + protocol::request_header_fixed_bytes,
                                                parsed->header_bytes - protocol::request_header_fixed_bytes}};
    uint64_t sequence = first_slot_sequence_ + slots_.size();
    exchange_env env = make_env(sequence);
    exchange_start started = start(env, incoming);
    if (started.what == exchange_start::kind::forward) return false;
    if (started.what == exchange_start::kind::refuse) {
        bump(server_.metrics().requests_rejected);
        abort(started.reason);
        return true;
    }
    if (started.what == exchange_start::kind::no_answer) return true;
    response_slot slot;
    slot.client_correlation_id = header.correlation_id;
    slot.api_key = header.api_key;
    slot.api_version = header.api_version;
    slot.received_ns = env.now_ns;
    slots_.push_back(std::move(slot));
    if (started.what == exchange_start::kind::answered) {
        finish_exchange_slot(slots_.back(), std::move(started.answer));
        flush_ready_responses();
    } else {
        slots_.back().exchange = std::move(started.exchange);
    }
    return true;
}

void client_session::finish_exchange_slot(response_slot& slot, std::vector<reactor::byte_slice>&& answer) {
    uint64_t size_bytes = protocol::response_correlation_bytes;
    for (const auto& piece : answer) size_bytes += piece.length;
    if (slot.raw) size_bytes -= protocol::response_correlation_bytes;
    reactor::shared_bytes prefix = reactor::shared_bytes::allocate(8);
    protocol::store_int32_be(prefix.data(), int32_t(size_bytes));
    protocol::store_int32_be(prefix.data() + 4, slot.client_correlation_id);
    slot.pieces.clear();
    slot.pieces.reserve(answer.size() + 1);
    slot.pieces.push_back(reactor::byte_slice{std::move(prefix), 0, slot.raw ? 4u : 8u});
    for (auto& piece : answer)
        if (piece.length > 0) slot.pieces.push_back(std::move(piece));
    slot.ready = true;
    slot.exchange.reset();
    bump(server_.metrics().bytes_to_clients, size_bytes + 4);
    if (server_.verify_protocol() && !slot.raw) {
        // What the proxy built itself is checked against the schema like what it forwards.
        std::vector<std::byte> whole;
        whole.reserve(size_bytes);
        for (size_t index = 0; index < slot.pieces.size(); ++index) {
            auto span = slot.pieces[index].span();
            if (index == 0) span = span.subspan(4);
            whole.insert(whole.end(), span.begin(), span.end());
        }
        if (auto problem = protocol::check_response(whole, slot.api_key, slot.api_version))
            report_conformance("response (built by the proxy) to", *problem);
    }
}

namespace {

// The acks of a Produce whose first bytes are `prefix`; the error when they do not hold it.
std::optional<int16_t> produce_acks(std::span<const std::byte> prefix, protocol::wire_error& error) {
    auto header = protocol::parse_request_header(prefix, error);
    if (!header) return std::nullopt;
    protocol::wire_reader reader(prefix.subspan(header->header_bytes));
    int16_t version = header->fixed.api_version;
    if (version >= 3) reader.read_string(version >= 9, true);  // transactional_id
    int16_t acks = reader.read_int16();
    error = reader.error();
    if (!reader.ok()) return std::nullopt;
    return acks;
}

}  // namespace

bool client_session::produce_expects_response(const protocol::frame& request) {
    // acks=0 Produce requests get no response from the broker, so no slot may wait for one.
    // The client id and transactional id are short in practice: a prefix on the stack holds
    // them, and only when it does not is the longest possible prefix copied (both ids can be
    // 32 KiB). Copying that much of every Produce cost more than forwarding it.
    std::array<std::byte, 512> small;
    protocol::wire_error error = protocol::wire_error::none;
    size_t small_bytes = request.copy_out(0, small);
    std::optional<int16_t> acks = produce_acks(std::span<const std::byte>(small.data(), small_bytes), error);
    if (!acks && error == protocol::wire_error::truncated && small_bytes < request.size_bytes) {
        std::vector<std::byte> prefix(std::min<size_t>(request.size_bytes, produce_prefix_bytes_max));
        request.copy_out(0, prefix);
        acks = produce_acks(prefix, error);
    }
    if (!acks) {
        abort(std::string("malformed Produce request: ") + protocol::to_string(error));
        return false;
    }
    return *acks != 0;
}

void client_session::report_conformance(const char* direction, const protocol::conformance_problem& problem) {
    if (problem.trailing_bytes_only)
        spdlog::debug("protocol check: {} {} has trailing bytes: {}", direction, peer_, problem.text);
    else
        spdlog::warn("protocol check: {} {} does not match the schema: {}", direction, peer_, problem.text);
}

void client_session::on_upstream_response(protocol::frame&& response, const in_flight_request& request) {
    if (request.sequence < first_slot_sequence_ || request.sequence - first_slot_sequence_ >= slots_.size()) return;
    response_slot& slot = slots_[request.sequence - first_slot_sequence_];
    if (slot.exchange) {
        if (server_.verify_protocol()) {
            if (auto problem = protocol::check_response(response.contiguous().span(), request.api_key, request.api_version))
                report_conformance("response from the broker for", *problem);
        }
        exchange_env env = make_env(request.sequence);
        if (!slot.exchange->on_response(env, std::move(response))) return;
        std::vector<reactor::byte_slice> answer = std::move(slot.exchange->answer);
        finish_exchange_slot(slot, std::move(answer));
        flush_ready_responses();
        return;
    }
    fill_slot(slot, std::move(response), request);
    flush_ready_responses();
}

void client_session::fill_slot(response_slot& slot, protocol::frame&& response, const in_flight_request& request) {
    bump(server_.metrics().bytes_to_clients, uint64_t(response.size_bytes) + 4);
    slot.ready = true;
    if (server_.verify_protocol()) {
        if (auto problem = protocol::check_response(response.contiguous().span(), request.api_key, request.api_version))
            report_conformance("response to", *problem);
    }
    reactor::shared_bytes prefix = reactor::shared_bytes::allocate(8);
    protocol::store_int32_be(prefix.data() + 4, slot.client_correlation_id);
    if (response_rewriter rewrite = find_response_rewriter(request.api_key)) {
        reactor::byte_slice whole = response.contiguous();
        handler_context context{server_.config(), server_.advertised(), server_.directory().get(), &server_.remap(),
                                &server_.metrics()};
        rewritten_response rewritten = rewrite(context, whole.span(), request.api_version);
        if (!rewritten.unknown_node_ids.empty()) server_.note_unknown_brokers(rewritten.unknown_node_ids);
        if (!rewritten.message.empty()) {
            protocol::store_int32_be(prefix.data(), int32_t(rewritten.message.size()));
            reactor::shared_bytes body = reactor::shared_bytes::copy_of(rewritten.message);
            slot.pieces.push_back(reactor::byte_slice{std::move(prefix), 0, 8});
            slot.pieces.push_back(reactor::byte_slice{std::move(body), 4, uint32_t(rewritten.message.size() - 4)});
            return;
        }
        spdlog::warn("forwarding {} v{} response to {} unchanged: {}", protocol::api_name(request.api_key),
                     request.api_version, peer_, rewritten.problem);
    }
    protocol::store_int32_be(prefix.data(), int32_t(response.size_bytes));
    slot.pieces.push_back(reactor::byte_slice{std::move(prefix), 0, 8});
    response.slices_from(protocol::response_correlation_bytes, slot.pieces);
}

void client_session::flush_ready_responses() {
    while (!slots_.empty() && slots_.front().ready) {
        response_slot& slot = slots_.front();
        client_.send(slot.pieces);
        // A bare SASL token (SaslHandshake v0) is no request of any API: not timed as one.
        if (!slot.raw) server_.metrics().observe_latency_ns(slot.api_key, server_.loop().now_ns() - slot.received_ns);
        slots_.pop_front();
        ++first_slot_sequence_;
    }
    apply_backpressure();
    if (close_after_answers_ && slots_.empty()) {
        close_upstreams();
        client_.close_after_flush();
        return;
    }
    if (draining_) close_when_idle();
}

void client_session::apply_backpressure() {
    bool upstream_full = upstream_.queued_bytes() > queued_bytes_pause;
    if (upstream_full != client_paused_for_upstream_) {
        client_paused_for_upstream_ = upstream_full;
        if (upstream_full)
            client_.pause_receive();
        else if (!draining_)
            client_.resume_receive();
    }
    bool client_full = client_.queued_bytes() > queued_bytes_pause;
    if (client_full != upstream_paused_for_client_) {
        upstream_paused_for_client_ = client_full;
        for (upstream_link* link : {&upstream_, scan_upstream_.get()}) {
            if (!link) continue;
            if (client_full)
                link->pause_receive();
            else
                link->resume_receive();
        }
    }
}

void client_session::on_send_drained() { apply_backpressure(); }

void client_session::on_tls_ready(bool kernel) {
    // The handshake is done (counted here, so a client that closes right after counts too).
    tls_counted_ = true;
    tls_deadline_ns_ = 0;
    bump(server_.metrics().tls_client_handshakes);
    bump(kernel ? server_.metrics().tls_kernel_connections : server_.metrics().tls_userspace_connections);
    if (const std::string& subject = client_.tls_peer_subject(); !subject.empty())
        // Principals are not forwarded (the proxy is its own principal upstream): logged.
        spdlog::info("client {}: TLS client certificate '{}', principal '{}'", peer_, subject,
                     map_principal(server_.principal_rules(), subject));
    static std::atomic<bool> logged{false};
    if (kernel && !logged.exchange(true))
        spdlog::info("kernel TLS: the first client connection's record layer moved to the kernel ({})", peer_);
}
void client_session::on_upstream_drained() { apply_backpressure(); }

void client_session::on_end(int error) {
    const reactor::tls_engine* tls = client_.tls();
    if (tls && tls->state() == reactor::tls_state::failed) {
        if (!tls_counted_) bump(server_.metrics().tls_client_handshake_failures);
        spdlog::warn("client {}: TLS {}: {}", peer_, tls_counted_ ? "connection failed" : "handshake failed",
                     tls->error());
    } else if (error != 0 && error != -ECONNRESET) {
        spdlog::debug("client {} receive failed: {}", peer_, reactor::error_text(-error));
    }
    // The client is gone (or half-closed): nothing more can be answered.
    close_upstreams();
    client_.close();
}

void client_session::on_upstream_failed(const std::string& reason) {
    spdlog::warn("closing client {}: {}", peer_, reason);
    // Responses already complete still go out; the client retries the rest elsewhere.
    draining_ = true;
    client_.pause_receive();
    slots_.erase(std::find_if(slots_.begin(), slots_.end(), [](const response_slot& s) { return !s.ready; }),
                 slots_.end());
    flush_ready_responses();
    client_.close_after_flush();
}

void client_session::begin_drain() {
    if (draining_) return;
    draining_ = true;
    client_.pause_receive();
    close_when_idle();
}

upstream_link* client_session::scan_link() {
    if (upstream_.target().node_id < 0 || broker_sasl_forwarded_ || draining_ || client_.closing()) return nullptr;
    if (!scan_upstream_) {
        scan_upstream_ = std::make_unique<upstream_link>(server_.loop(), scan_events_, upstream_.target(),
                                                         server_.config(), server_.metrics());
        if (upstream_paused_for_client_) scan_upstream_->pause_receive();
    }
    return scan_upstream_->closed() ? nullptr : scan_upstream_.get();
}

void client_session::close_upstreams() {
    upstream_.close();
    if (scan_upstream_) scan_upstream_->close();
}

size_t client_session::upstream_in_flight() const {
    return upstream_.in_flight() + (scan_upstream_ ? scan_upstream_->in_flight() : 0);
}

void client_session::scan_events::on_upstream_closed() {
    session_.scan_closed_ = true;
    if (session_.finished()) session_.server_.retire(&session_);
}

void client_session::close_when_idle() {
    if (!slots_.empty() || upstream_in_flight() > 0) return;
    close_upstreams();
    client_.close_after_flush();
}

void client_session::abort(const std::string& reason) {
    if (!reason.empty()) spdlog::warn("closing client {}: {}", peer_, reason);
    draining_ = true;
    close_upstreams();
    client_.close();
}

void client_session::check_timeouts(uint64_t now_ns) {
    if (tls_deadline_ns_ != 0 && now_ns > tls_deadline_ns_ && !client_.closing()) {
        tls_deadline_ns_ = 0;
        tls_counted_ = true;  // counted here, not again when the stream ends
        bump(server_.metrics().tls_client_handshake_failures);
        spdlog::warn("closing client {}: the TLS handshake did not finish within "
                     "listen.security.tls.handshake_timeout_ms ({} ms)",
                     peer_, server_.config().listen.security.tls.handshake_timeout_ms);
        close_upstreams();
        client_.close();
        return;
    }
    if (close_after_answers_) {
        for (response_slot& slot : slots_)
            if (slot.due_ns != 0 && now_ns >= slot.due_ns) {
                slot.due_ns = 0;
                slot.ready = true;
            }
        flush_ready_responses();
        return;
    }
    if (auth_ && auth_->authenticated() && auth_->expired(now_ns) && slots_.empty() && !client_.closing()) {
        bump(server_.metrics().sasl_sessions_expired);
        abort("the SASL session of '" + auth_->principal() + "' expired without re-authentication");
        return;
    }
    uint64_t oldest = upstream_.oldest_timed_request_ns();
    if (scan_upstream_)
        if (uint64_t scan_oldest = scan_upstream_->oldest_timed_request_ns(); scan_oldest && (!oldest || scan_oldest < oldest))
            oldest = scan_oldest;
    uint64_t limit_ns = uint64_t(server_.config().kafka.request_timeout_ms) * 1'000'000u;
    if (oldest == 0 || now_ns - oldest < limit_ns) return;
    bump(server_.metrics().upstream_failures);
    std::string reason = upstream_.target().endpoint().description + " did not answer within kafka.request_timeout_ms (" +
                         std::to_string(server_.config().kafka.request_timeout_ms) + " ms)";
    if (uint64_t stalls = upstream_.receive_stalls())
        // Not necessarily the broker's fault: its answers may have been waiting in the socket.
        reason += "; the proxy itself could not always read from it: no free receive buffer on this core " +
                  std::to_string(stalls) + " time(s) (" + std::to_string(server_.loop().upstream_buffers().available()) +
                  " of " + std::to_string(server_.loop().upstream_buffers().count()) + " free now)";
    abort(reason);
}

void client_session::on_closed() {
    client_closed_ = true;
    close_upstreams();
    if (finished()) server_.retire(this);
}

void client_session::on_upstream_closed() {
    upstream_closed_ = true;
    if (!client_closed_ && !client_.closing() && !draining_) {
        // Not a failure we reported (e.g. our own close): finish the client side too.
        client_.close_after_flush();
    }
    if (finished()) server_.retire(this);
}

}  // namespace kpp

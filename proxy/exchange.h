// Requests the proxy cannot simply forward: a client request becomes one or more requests
// of the proxy's own toward the same broker (on the session's upstream connection, in
// order), and the client's response is built from their answers. Produce to virtual
// partitions that share a physical one, Fetch with filtering and scan-ahead, and the
// partition-mapped APIs work this way. One exchange per client request; it lives in the
// request's response slot, so responses still leave in request order.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "protocol/frame.h"
#include "protocol/header.h"
#include "proxy/metrics.h"
#include "proxy/remap_state.h"
#include "reactor/buffer_pool.h"

namespace kpp {

class shard_server;
class upstream_link;
class client_session;
struct handler_context;

// What an exchange may use while it runs; rebuilt by the session for every call.
// Where an exchange's own reading-ahead requests go (mapped Fetch scan-ahead): a second
// connection of the session to the same broker, so that they never queue behind the
// client's other requests (long polls) on its connection. nullptr: use `upstream`.
class scan_link_source {
public:
    virtual upstream_link* scan_link() = 0;

protected:
    ~scan_link_source() = default;
};

struct exchange_env {
    shard_server& server;
    upstream_link& upstream;
    remap_state& remap;
    shard_metrics& metrics;
    uint64_t sequence;  // the client request's slot
    uint64_t now_ns;
    const std::string& peer;  // for log lines
    const std::shared_ptr<client_session*>& session;  // empty when the session is gone
    // Produce exchanges of this session waiting for producer aliases before they send, by
    // slot, in arrival order: later mapped Produce requests queue behind them so that no
    // producer's batches overtake each other (DESIGN.md section 2, "Idempotent producers").
    std::deque<uint64_t>& held_produces;
    scan_link_source* scan = nullptr;
};

// Wakes the exchange of one client request after something other than a broker answer
// (the offset store) finished: calls its on_event. Does nothing once the session is gone.
class exchange_waker {
public:
    explicit exchange_waker(const exchange_env& env) : session_(env.session), sequence_(env.sequence) {}
    exchange_waker(const std::shared_ptr<client_session*>& session, uint64_t sequence)
        : session_(session), sequence_(sequence) {}
    void operator()() const;

private:
    std::weak_ptr<client_session*> session_;
    uint64_t sequence_;
};

// A request of the proxy's own: the client's header tail (client id, tagged fields) is
// reused so brokers see the same client id; `body` follows it.
void send_upstream(exchange_env& env, int16_t api_key, int16_t api_version, const reactor::byte_slice& header_tail,
                   std::vector<reactor::byte_slice>&& body, bool expects_response);
// The same on `link` (the session's scan link, say).
void send_upstream_on(upstream_link& link, exchange_env& env, int16_t api_key, int16_t api_version,
                      const reactor::byte_slice& header_tail, std::vector<reactor::byte_slice>&& body,
                      bool expects_response);

class request_exchange {
public:
    virtual ~request_exchange() = default;
    // One answer to a request this exchange sent (in sending order). Returns true once the
    // client's response is complete in `answer` (everything after the correlation id).
    virtual bool on_response(exchange_env& env, protocol::frame&& response) = 0;
    // Called through an exchange_waker; same contract as on_response.
    virtual bool on_event(exchange_env& env) {
        (void)env;
        return false;
    }

    std::vector<reactor::byte_slice> answer;
};

struct exchange_start {
    enum class kind {
        forward,   // no rewriting needed: forward the client's request unchanged
        answered,  // the proxy answers by itself: `answer` holds the response
        pending,   // requests went upstream; `exchange` completes the response
        no_answer, // requests went upstream and the client expects no response (acks=0)
        refuse     // a request the proxy cannot serve without breaking the illusion: close, log `reason`
    } what = kind::forward;
    std::string reason;
    std::unique_ptr<request_exchange> exchange;
    std::vector<reactor::byte_slice> answer;
};

struct client_request {
    const protocol::frame& frame;
    reactor::byte_slice whole;  // the request contiguous, header included
    protocol::parsed_request_header header;
    reactor::byte_slice header_tail;  // client id and header tagged fields
    std::span<const std::byte> body() const { return whole.span().subspan(header.header_bytes); }
};

using exchange_starter = exchange_start (*)(exchange_env& env, const client_request& request);

// nullptr for APIs whose requests are always forwarded unchanged, and for every API when the
// mapping remaps no topic. For Produce also nullptr when the request names no mapped topic:
// that is read over the receive buffers in place, so large Produce requests to unmapped
// topics are forwarded without ever being made contiguous.
exchange_starter find_exchange_starter(const remap_state& remap, int16_t api_key, const protocol::frame& request);

// Builds a message as scatter pieces: encoded bytes in between slices referencing
// buffers the proxy received (record bytes are never copied).
class piece_builder {
public:
    protocol::wire_writer& writer() { return writer_; }
    void append(const reactor::byte_slice& slice);
    void append(const std::vector<reactor::byte_slice>& slices);
    size_t size() const { return size_ + writer_.size(); }
    std::vector<reactor::byte_slice> finish();

private:
    void flush();
    protocol::wire_writer writer_;
    std::vector<reactor::byte_slice> out_;
    size_t size_ = 0;
};

// Helpers shared by the exchanges.
namespace exchange_util {
// For requests older than the versions the proxy rebuilds (Produce v0-2, Fetch v0-3,
// ListOffsets v0; real clients pick the newest they share with the broker): the topics
// named, read from the old layouts. nullopt when the body does not parse.
std::optional<std::vector<std::string>> old_request_topics(int16_t api_key, int16_t version,
                                                           std::span<const std::byte> body);
// `refuse` when an old-version request names a mapped topic, else `forward`.
exchange_start refuse_old_version_if_mapped(exchange_env& env, const client_request& request);
// Encodes a response header tail (tagged fields for flexible versions) plus `body`.
std::vector<reactor::byte_slice> response_pieces(int16_t api_key, int16_t version, std::vector<std::byte>&& body);
// The body of a response frame, past correlation id and header tagged fields, contiguous.
std::optional<reactor::byte_slice> response_body(const protocol::frame& response, int16_t api_key, int16_t version);
// Appends slices covering [offset, offset + length) of a frame's body.
void slices_of(const protocol::frame& frame, size_t offset, size_t length, std::vector<reactor::byte_slice>& out);
// The same over bytes that lie in `pieces`, one after the other.
void slices_of(std::span<const reactor::byte_slice> pieces, size_t offset, size_t length,
               std::vector<reactor::byte_slice>& out);
// Kafka error codes the exchanges answer with.
inline constexpr int16_t unknown_server_error = -1;
inline constexpr int16_t corrupt_message = 2;
inline constexpr int16_t coordinator_load_in_progress = 14;
inline constexpr int16_t unknown_topic_or_partition = 3;
inline constexpr int16_t invalid_partitions = 37;
inline constexpr int16_t invalid_request = 42;
inline constexpr int16_t policy_violation = 44;
inline constexpr int16_t fetch_session_id_not_found = 70;
inline constexpr int16_t unknown_topic_id = 100;
}  // namespace exchange_util

}  // namespace kpp

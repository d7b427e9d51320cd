// TLS contexts from the configuration (DESIGN.md section 6): the listener's (toward
// clients, listen.security.*) and the one every upstream connection uses (toward brokers,
// kafka.security_protocol and kafka.tls.*: client sessions, discovery, the offset store).
#pragma once

#include <memory>
#include <string>

#include "proxy/config.h"
#include "reactor/tls.h"

namespace kpp {

// nullptr with an empty `error` when the side is not TLS; nullptr with `error` naming the
// key (e.g. "listen.security.tls.key_path: ...") when the context cannot be built.
std::shared_ptr<reactor::tls_context> listener_tls_context(const proxy_config& config, std::string& error);
std::shared_ptr<reactor::tls_context> broker_tls_context(const proxy_config& config, std::string& error);

}  // namespace kpp

// Kafka-style principal mapping rules for TLS client certificates
// (listen.security.tls.principal.mapping_rules, Kafka's ssl.principal.mapping.rules): the
// certificate subject in RFC 2253 form ("CN=alice,OU=apps,O=example") is matched against
// each rule in order; the first that matches gives the principal.
//   RULE:<regex>/<replacement>/[L|U]  replacement with $1..$9 of the whole-subject match,
//                                     then lower- or upper-cased with L or U
//   DEFAULT                           the subject itself
// Without any match the subject itself is the principal, as Kafka does.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "remap/std_regex.h"

namespace kpp {

struct principal_rule {
    bool is_default = false;
    std::regex pattern;
    std::string replacement;
    char case_change = 0;  // 'L', 'U' or 0
};

// nullopt with `error` ("rule 2: ...") for a rule that does not parse.
std::optional<std::vector<principal_rule>> parse_principal_rules(const std::vector<std::string>& rules,
                                                                 std::string& error);
std::string map_principal(const std::vector<principal_rule>& rules, std::string_view subject);

}  // namespace kpp

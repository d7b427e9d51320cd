#include "proxy/principal.h"

#include <algorithm>
#include <cctype>

namespace kpp {

std::optional<std::vector<principal_rule>> parse_principal_rules(const std::vector<std::string>& rules,
                                                                 std::string& error) {
    std::vector<principal_rule> parsed;
    for (size_t index = 0; index < rules.size(); ++index) {
        std::string_view text = rules[index];
        std::string where = "rule " + std::to_string(index + 1) + " ('" + std::string(text) + "'): ";
        principal_rule rule;
        if (text == "DEFAULT") {
            rule.is_default = true;
            parsed.push_back(std::move(rule));
            continue;
        }
        if (!text.starts_with("RULE:")) {
            error = where + "expected DEFAULT or RULE:pattern/replacement/[L|U]";
            return std::nullopt;
        }
        text.remove_prefix(5);
        // The pattern may not hold '/', as in Kafka; the replacement ends at the last '/'.
        size_t first = text.find('/');
        size_t last = text.rfind('/');
        if (first == std::string_view::npos || last == first) {
            error = where + "expected RULE:pattern/replacement/[L|U]";
            return std::nullopt;
        }
        std::string_view flags = text.substr(last + 1);
        if (flags == "L" || flags == "U") {
            rule.case_change = flags[0];
        } else if (!flags.empty()) {
            error = where + "after the last '/' only L or U may follow";
            return std::nullopt;
        }
        rule.replacement = std::string(text.substr(first + 1, last - first - 1));
        try {
            rule.pattern = std::regex(std::string(text.substr(0, first)));
        } catch (const std::regex_error& failure) {
            error = where + "not a regular expression: " + failure.what();
            return std::nullopt;
        }
        parsed.push_back(std::move(rule));
    }
    return parsed;
}

std::string map_principal(const std::vector<principal_rule>& rules, std::string_view subject) {
    std::string text(subject);
    for (const principal_rule& rule : rules) {
        if (rule.is_default) return text;
        std::smatch match;
        if (!std::regex_match(text, match, rule.pattern)) continue;
        std::string out = match.format(rule.replacement);
        if (rule.case_change == 'L')
            std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return char(std::tolower(c)); });
        if (rule.case_change == 'U')
            std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return char(std::toupper(c)); });
        return out;
    }
    return text;
}

}  // namespace kpp

#include "proxy/principal.h"

#include <gtest/gtest.h>

namespace kpp {
namespace {

std::vector<principal_rule> rules_of(const std::vector<std::string>& texts) {
    std::string error;
    auto rules = parse_principal_rules(texts, error);
    EXPECT_TRUE(rules) << error;
    return rules ? std::move(*rules) : std::vector<principal_rule>{};
}

TEST(principal, first_matching_rule_wins_with_groups_and_case) {
    auto rules = rules_of({"RULE:^CN=([^,]+),OU=ops,.*$/$1-admin/U", "RULE:^CN=([^,]+),.*$/$1/L", "DEFAULT"});
    EXPECT_EQ(map_principal(rules, "CN=Alice,OU=apps,O=kpp"), "alice");
    EXPECT_EQ(map_principal(rules, "CN=bob,OU=ops,O=kpp"), "BOB-ADMIN");
    // No CN: the DEFAULT rule gives the subject itself.
    EXPECT_EQ(map_principal(rules, "O=kpp"), "O=kpp");
    // Without any rule matching (and no DEFAULT) the subject itself, as Kafka does.
    EXPECT_EQ(map_principal(rules_of({"RULE:^CN=x$/y/"}), "CN=z"), "CN=z");
    EXPECT_EQ(map_principal(rules_of({"DEFAULT"}), "CN=alice,O=kpp"), "CN=alice,O=kpp");
}

TEST(principal, bad_rules_are_named) {
    std::string error;
    EXPECT_FALSE(parse_principal_rules({"DEFAULT", "CN=x"}, error));
    EXPECT_NE(error.find("rule 2 ('CN=x'): expected DEFAULT or RULE"), std::string::npos) << error;
    EXPECT_FALSE(parse_principal_rules({"RULE:^CN=(x$/y/"}, error));
    EXPECT_NE(error.find("not a regular expression"), std::string::npos) << error;
    EXPECT_FALSE(parse_principal_rules({"RULE:^CN=x$/y/Q"}, error));
    EXPECT_NE(error.find("only L or U"), std::string::npos) << error;
    EXPECT_FALSE(parse_principal_rules({"RULE:nothing"}, error));
}

}  // namespace
}  // namespace kpp

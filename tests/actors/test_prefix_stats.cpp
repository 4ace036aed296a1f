// Per-prefix counts (`stats detail`): actors/prefix_stats.hpp.
#include "actors/prefix_stats.hpp"

#include <boost/test/unit_test.hpp>

#include <string>

using namespace bifrost::actors;
using what = prefix_table::what;

BOOST_AUTO_TEST_SUITE(prefix_stats)

BOOST_AUTO_TEST_CASE(a_key_counts_under_what_comes_before_its_first_delimiter) {
  BOOST_TEST(*key_prefix("user:42:name", ':') == "user");
  BOOST_TEST(*key_prefix(":x", ':') == "");
  BOOST_TEST(*key_prefix("x:", ':') == "x");
  BOOST_TEST(!key_prefix("plain", ':'));
  BOOST_TEST(*key_prefix("a/b:c", '/') == "a");

  prefix_table t;
  t.record("user:1", ':', what::hit);
  t.record("user:2", ':', what::get);
  t.record("user:3", ':', what::set);
  t.record("user:3", ':', what::del);
  t.record("plain", ':', what::set);  // (no delimiter: not counted)
  t.record(":y", ':', what::get);
  std::map<std::string, prefix_counts, std::less<>> all;
  t.merge_into(all);
  t.merge_into(all);  // (two loops' tables add up)
  BOOST_REQUIRE_EQUAL(all.size(), 2u);
  BOOST_TEST(all["user"].get == 4u);  // a hit counts as a get too
  BOOST_TEST(all["user"].hit == 2u);
  BOOST_TEST(all["user"].set == 2u);
  BOOST_TEST(all["user"].del == 2u);
  std::string out;
  compose_prefix_dump(all, out);
  BOOST_TEST(out == "PREFIX  get 2 hit 0 set 0 del 0\r\n"
                    "PREFIX user get 4 hit 2 set 2 del 2\r\n"
                    "END\r\n");
  t.clear();
  all.clear();
  t.merge_into(all);
  BOOST_TEST(all.empty());
}

BOOST_AUTO_TEST_CASE(made_up_prefixes_stop_counting_at_the_bound) {
  prefix_table t;
  for (size_t i = 0; i < prefix_table::max_prefixes + 100; ++i)
    t.record(std::to_string(i) + ":k", ':', what::set);
  t.record("0:k", ':', what::set);  // a prefix it holds still counts
  std::map<std::string, prefix_counts, std::less<>> all;
  t.merge_into(all);
  BOOST_TEST(all.size() == prefix_table::max_prefixes);
  BOOST_TEST(all["0"].set == 2u);
  BOOST_TEST(all.count(std::to_string(prefix_table::max_prefixes + 50)) == 0u);
}

BOOST_AUTO_TEST_SUITE_END()

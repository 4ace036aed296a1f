// A CLI11 validator shared by bifrostd's and bifrostctl's integer options.
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <string>

namespace bifrost::cli {

/// CLI11 (2.1) reads integers with base 0: `011211` is octal, `0x2BCB` hex. memcached, and
/// bifrostd's YAML file, read base 10. Given to an integer option with `->transform()`, this
/// runs on the text before CLI11 converts it: decimal digits with an optional sign, leading
/// zeros dropped; anything else is refused with the value named.
inline const CLI::Validator& decimal() {
  static const CLI::Validator v(
    [](std::string& s) -> std::string {
      const size_t i = !s.empty() && (s[0] == '-' || s[0] == '+') ? 1 : 0;
      if (i == s.size() || s.find_first_not_of("0123456789", i) != std::string::npos)
        return "'" + s + "' is not a decimal integer";
      s.erase(i, std::min(s.find_first_not_of('0', i), s.size() - 1) - i);
      return "";
    },
    "", "decimal");
  return v;
}

} // namespace bifrost::cli

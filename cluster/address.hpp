#pragma once
// Host-address predicates shared by the configuration (default node name), the advertised
// RPC address, the data links' dial address and bifrostctl's --node. Pure; any thread.

#include <cstdint>
#include <string>
#include <string_view>

namespace bifrost::cluster {

/// True for a host that names no one machine: empty, or the IPv4/IPv6 wildcard ("0.0.0.0",
/// "::", "[::]"). Another host cannot dial it; the callers put the host name (or the RPC
/// address's host) in its place.
inline bool is_wildcard_host(std::string_view host) noexcept {
  return host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]";
}

/// A --join seed, an --rpc-advertise address or bifrostctl's --node: "host:port" or
/// "[v6 address]:port", blanks around it trimmed. Returns what is wrong with it ("" =
/// nothing) and leaves `text` trimmed, its port in plain decimal: leading zeros go, since
/// KJ's address parser reads "0123" in octal (the port 83) where bifrostd's -p reads 123.
inline std::string check_host_port(std::string& text) {
  const auto first = text.find_first_not_of(" \t");
  const auto last = text.find_last_not_of(" \t");
  text = first == std::string::npos ? std::string() : text.substr(first, last - first + 1);
  const auto colon = text.rfind(':');
  const std::string bad = "'" + text + "' is not host:port (port 1..65535)";
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    return bad;
  const std::string host = text.substr(0, colon);
  if (host.find(':') != std::string::npos &&
      (host.front() != '[' || host.back() != ']' || host.size() < 3))
    return "'" + text + "': an IPv6 address goes in brackets, as [::1]:22001";
  if (host.find_first_of(" \t,") != std::string::npos)
    return bad;
  uint32_t port = 0;
  for (size_t i = colon + 1; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9')
      return bad;
    port = port * 10 + uint32_t(text[i] - '0');
    if (port > 65535)
      return bad;
  }
  if (port < 1)
    return bad;
  text = host + ":" + std::to_string(port);
  return "";
}

} // namespace bifrost::cluster

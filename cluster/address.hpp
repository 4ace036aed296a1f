#pragma once
// Host-address predicates shared by the configuration (default node name), the advertised
// RPC address and the data links' dial address. Pure; any thread.

#include <string_view>

namespace bifrost::cluster {

/// True for a host that names no one machine: empty, or the IPv4/IPv6 wildcard ("0.0.0.0",
/// "::", "[::]"). Another host cannot dial it; the callers put the host name (or the RPC
/// address's host) in its place.
inline bool is_wildcard_host(std::string_view host) noexcept {
  return host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]";
}

} // namespace bifrost::cluster

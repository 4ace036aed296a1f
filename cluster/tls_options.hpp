// Mutual TLS settings for the Node RPC (see cluster/tls.hpp). Plain data, no KJ: bifrostd's
// configuration and bifrostctl's options carry it.
#pragma once

#include <string>

namespace bifrost::cluster {

struct tls_options {
  std::string cert_file;  ///< this party's certificate chain (PEM)
  std::string key_file;   ///< its private key (PEM, unencrypted)
  std::string ca_file;    ///< the CA certificate(s) peers must be signed by (PEM)
  std::string peer_name;  ///< name peers' certificates must carry; empty = host of the address
  bool enabled() const { return !cert_file.empty() || !key_file.empty() || !ca_file.empty(); }
};

/// What is wrong with `o` as a configuration ("" = nothing): the three files go together.
inline std::string check_tls_options(const tls_options& o) {
  if (o.enabled() && (o.cert_file.empty() || o.key_file.empty() || o.ca_file.empty()))
    return "the TLS certificate, key and CA files go together (all three or none)";
  return "";
}

} // namespace bifrost::cluster

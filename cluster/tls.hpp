// Mutual TLS for the Node RPC (kj-tls over OpenSSL), shared by bifrostd and bifrostctl.
//
// Every party presents a certificate and private key (PEM) and trusts only the cluster's CA
// (PEM), not the system trust store: a node accepts a connection only from a client whose
// certificate that CA signed (members and bifrostctl alike), and a client accepts a node only
// when its certificate was signed by that CA and names the expected peer — `peer_name` when
// set (one name every node's certificate carries as a DNS subjectAltName), else the host part
// of the address dialled. A failed handshake is a failed connection (the caller's usual
// unreachable handling), never a crash.
//
// Thread affinity: a tls_context is used on one thread only (the KJ thread of the cluster
// service, or bifrostctl's main thread), like every KJ object.
#pragma once

#include "cluster/tls_options.hpp"

#include <kj/async-io.h>
#include <kj/compat/tls.h>

#include <memory>
#include <string>

namespace bifrost::cluster {



class tls_context {
public:
  /// Reads and parses the PEM files; nullptr and `error` naming the file when one cannot be
  /// read or parsed. `timer` (optional) bounds a server-side handshake to `accept_timeout_ms`.
  static std::unique_ptr<tls_context> load(const tls_options& o, kj::Timer* timer,
                                           std::string& error, uint32_t accept_timeout_ms = 5000);
  ~tls_context();

  /// Client side: handshake over `stream` to the node at `address` ("host:port").
  kj::Promise<kj::Own<kj::AsyncIoStream>> wrap_client(kj::Own<kj::AsyncIoStream> stream,
                                                       const std::string& address);
  /// Server side: handshake over an accepted stream (the client must present a certificate).
  kj::Promise<kj::Own<kj::AsyncIoStream>> wrap_server(kj::Own<kj::AsyncIoStream> stream);

  /// The name a node at `address` must prove.
  std::string expected_name(const std::string& address) const;

private:
  tls_context() = default;
  tls_options opts_;
  std::unique_ptr<kj::TlsPrivateKey> key_;
  std::unique_ptr<kj::TlsCertificate> cert_;
  std::unique_ptr<kj::TlsKeypair> keypair_;
  std::unique_ptr<kj::TlsCertificate> ca_;
  std::unique_ptr<kj::TlsContext> ctx_;
};

} // namespace bifrost::cluster

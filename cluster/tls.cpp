#include "cluster/tls.hpp"

#include <kj/debug.h>
#include <kj/exception.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>

namespace bifrost::cluster {

namespace {

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return in.good() || in.eof();
}

std::string host_of(const std::string& address) {
  auto colon = address.rfind(':');
  std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return host;
}

// True when the first certificate of `cert_pem` belongs to the private key `key_pem` (OpenSSL
// would otherwise only notice at the first handshake).
bool key_matches(const std::string& cert_pem, const std::string& key_pem) {
  BIO* cb = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  BIO* kb = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  X509* cert = cb ? PEM_read_bio_X509(cb, nullptr, nullptr, nullptr) : nullptr;
  EVP_PKEY* key = kb ? PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr) : nullptr;
  bool ok = cert && key && X509_check_private_key(cert, key) == 1;
  EVP_PKEY_free(key);
  X509_free(cert);
  BIO_free(kb);
  BIO_free(cb);
  return ok;
}

} // namespace

std::unique_ptr<tls_context> tls_context::load(const tls_options& o, kj::Timer* timer,
                                               std::string& error, uint32_t accept_timeout_ms) {
  error = check_tls_options(o);
  if (!error.empty())
    return nullptr;
  std::unique_ptr<tls_context> t(new tls_context());
  t->opts_ = o;
  std::string cert_pem, key_pem, ca_pem;
  struct file {
    const std::string& path;
    std::string& text;
    const char* what;
  };
  for (auto f : {file{o.cert_file, cert_pem, "certificate"}, file{o.key_file, key_pem, "key"},
                 file{o.ca_file, ca_pem, "CA"}}) {
    if (!read_file(f.path, f.text)) {
      error = std::string("cannot read the TLS ") + f.what + " file '" + f.path + "'";
      return nullptr;
    }
  }
  // Each parse throws a kj::Exception on bad PEM: name the file it came from.
  std::string stage;
  auto parsed = kj::runCatchingExceptions([&] {
    stage = "certificate file '" + o.cert_file + "'";
    t->cert_ = std::make_unique<kj::TlsCertificate>(kj::StringPtr(cert_pem.c_str()));
    stage = "key file '" + o.key_file + "'";
    t->key_ = std::make_unique<kj::TlsPrivateKey>(kj::StringPtr(key_pem.c_str()));
    stage = "CA file '" + o.ca_file + "'";
    t->ca_ = std::make_unique<kj::TlsCertificate>(kj::StringPtr(ca_pem.c_str()));
    stage = "certificate and key";
    KJ_REQUIRE(key_matches(cert_pem, key_pem), "the key does not belong to the certificate");
    t->keypair_ = std::make_unique<kj::TlsKeypair>(kj::TlsKeypair{*t->key_, *t->cert_});
    kj::TlsContext::Options opts;
    opts.useSystemTrustStore = false;
    opts.verifyClients = true;
    opts.trustedCertificates = kj::arrayPtr(t->ca_.get(), 1);
    opts.defaultKeypair = *t->keypair_;
    if (timer) {
      opts.timer = *timer;
      opts.acceptTimeout = accept_timeout_ms * kj::MILLISECONDS;
    }
    t->ctx_ = std::make_unique<kj::TlsContext>(kj::mv(opts));
  });
  KJ_IF_MAYBE (e, parsed) {
    error = "invalid TLS " + stage + ": " + std::string(e->getDescription().cStr());
    return nullptr;
  }
  return t;
}

tls_context::~tls_context() = default;

std::string tls_context::expected_name(const std::string& address) const {
  return opts_.peer_name.empty() ? host_of(address) : opts_.peer_name;
}

kj::Promise<kj::Own<kj::AsyncIoStream>> tls_context::wrap_client(
    kj::Own<kj::AsyncIoStream> stream, const std::string& address) {
  auto name = kj::heapString(expected_name(address).c_str());
  auto p = ctx_->wrapClient(kj::mv(stream), name);
  return p.attach(kj::mv(name));
}

kj::Promise<kj::Own<kj::AsyncIoStream>> tls_context::wrap_server(
    kj::Own<kj::AsyncIoStream> stream) {
  return ctx_->wrapServer(kj::mv(stream));
}

} // namespace bifrost::cluster

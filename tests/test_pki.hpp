// Certificates for the mutual-TLS tests, made with the `openssl` command (scripts/setup.sh
// installs it) in a fresh temporary directory that the object removes.
//
//   test_pki pki;                 // throws std::runtime_error when openssl fails
//   pki.cert("node"), pki.key("node"), pki.ca("good")
//
// Two CAs: "good" signs "node" and "client"; "evil" signs "intruder". Every leaf certificate
// carries the DNS names node.bifrost.test and 127.0.0.1 and the IP 127.0.0.1, and may serve
// as server and client.
#pragma once

#include <string>

namespace bifrost::test {

class test_pki {
public:
  test_pki();
  ~test_pki();
  test_pki(const test_pki&) = delete;
  test_pki& operator=(const test_pki&) = delete;

  std::string cert(const std::string& leaf) const { return dir_ + "/" + leaf + ".pem"; }
  std::string key(const std::string& leaf) const { return dir_ + "/" + leaf + ".key"; }
  std::string ca(const std::string& name) const { return dir_ + "/" + name + "-ca.pem"; }
  const std::string& dir() const { return dir_; }

  static constexpr const char* name = "node.bifrost.test";  // DNS name on every leaf

private:
  std::string dir_;
};

} // namespace bifrost::test

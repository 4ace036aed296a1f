#include "test_pki.hpp"

#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include <dirent.h>
#include <unistd.h>

namespace bifrost::test {

namespace {

void run(const std::string& cmd) {
  std::string full = cmd + " >/dev/null 2>&1";
  if (std::system(full.c_str()) != 0)
    throw std::runtime_error("test PKI: command failed: " + cmd);
}

} // namespace

test_pki::test_pki() {
  char tmpl[] = "/tmp/bifrost-pki-XXXXXX";
  if (!::mkdtemp(tmpl))
    throw std::runtime_error("test PKI: mkdtemp failed");
  dir_ = tmpl;
  const std::string d = dir_ + "/";
  {
    std::ofstream ext(d + "leaf.ext");
    ext << "subjectAltName=DNS:" << name << ",DNS:127.0.0.1,IP:127.0.0.1\n"
        << "extendedKeyUsage=serverAuth,clientAuth\n";
  }
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
  for (const char* ca : {"good", "evil"})
    run("openssl req -x509 " + ec + " -keyout " + d + ca + "-ca.key -out " + d + ca +
        "-ca.pem -days 2 -subj '/CN=bifrost test CA " + ca + "'");
  struct leaf {
    const char* name;
    const char* ca;
  };
  for (auto l : {leaf{"node", "good"}, leaf{"client", "good"}, leaf{"intruder", "evil"}}) {
    std::string base = d + l.name;
    run("openssl req " + ec + " -keyout " + base + ".key -out " + base + ".csr -subj '/CN=" +
        l.name + "'");
    run("openssl x509 -req -in " + base + ".csr -CA " + d + l.ca + "-ca.pem -CAkey " + d + l.ca +
        "-ca.key -CAcreateserial -out " + base + ".pem -days 2 -extfile " + d + "leaf.ext");
  }
}

test_pki::~test_pki() {
  if (DIR* dir = ::opendir(dir_.c_str())) {
    while (auto* e = ::readdir(dir)) {
      std::string n = e->d_name;
      if (n != "." && n != "..")
        ::unlink((dir_ + "/" + n).c_str());
    }
    ::closedir(dir);
  }
  ::rmdir(dir_.c_str());
}

} // namespace bifrost::test

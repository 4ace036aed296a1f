#include "cluster_harness.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef BIFROST_BIN_DIR
#define BIFROST_BIN_DIR "build/bin"
#endif

namespace bifrost::it {

using namespace std::chrono_literals;

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit,
                std::chrono::milliseconds step) {
  auto deadline = clock_type::now() + limit;
  while (clock_type::now() < deadline) {
    if (pred())
      return true;
    std::this_thread::sleep_for(step);
  }
  return pred();
}

int free_port() {
  static std::mutex mu;
  static std::set<int> handed_out;
  std::lock_guard<std::mutex> g(mu);
  for (int attempt = 0; attempt < 100; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
      throw std::runtime_error("socket(): " + std::string(std::strerror(errno)));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    int port = -1;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
      port = ntohs(a.sin_port);
    ::close(fd);
    if (port > 0 && handed_out.insert(port).second)
      return port;
  }
  throw std::runtime_error("no free port");
}

std::string bin_dir() {
  if (const char* e = std::getenv("BIFROST_BIN_DIR"); e && *e)
    return e;
  return BIFROST_BIN_DIR;
}

void report(const std::string& msg) {
  std::cout << "[it] " << msg << std::endl;
  BOOST_TEST_MESSAGE(msg);
}

// ---------------------------------------------------------------------------------------------
// Processes

namespace {

std::vector<char*> to_argv(std::vector<std::string>& args) {
  std::vector<char*> v;
  for (auto& a : args)
    v.push_back(a.data());
  v.push_back(nullptr);
  return v;
}

// In the child between fork and exec: only async-signal-safe calls.
[[noreturn]] void exec_child(const char* path, char* const* argv, int out_fd, int err_fd) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGPIPE, SIG_DFL);
  // A node never outlives the test process (a test binary that dies cannot reap it).
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  int devnull = ::open("/dev/null", O_RDONLY);
  if (devnull >= 0)
    ::dup2(devnull, 0);
  if (out_fd >= 0)
    ::dup2(out_fd, 1);
  if (err_fd >= 0)
    ::dup2(err_fd, 2);
  ::execv(path, argv);
  _exit(127);
}

int decode_status(int status) {
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

ctl_result run_ctl(const std::vector<std::string>& args_in, std::chrono::milliseconds limit) {
  ctl_result r;
  auto start = clock_type::now();
  std::vector<std::string> args;
  args.push_back(bin_dir() + "/bifrostctl");
  args.insert(args.end(), args_in.begin(), args_in.end());
  auto argv = to_argv(args);
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe2");
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    throw std::runtime_error("pipe2");
  }
  pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error("fork");
  if (pid == 0)
    exec_child(argv[0], argv.data(), out[1], err[1]);
  ::close(out[1]);
  ::close(err[1]);
  auto deadline = start + limit;
  bool out_open = true, err_open = true;
  char buf[8192];
  while (out_open || err_open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
    if (left.count() <= 0) {
      r.timed_out = true;
      break;
    }
    pollfd p[2] = {{out_open ? out[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0}};
    int n = ::poll(p, 2, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      break;
    for (int i = 0; i < 2; ++i) {
      if (!p[i].revents)
        continue;
      ssize_t got = ::read(p[i].fd, buf, sizeof buf);
      if (got > 0)
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(got));
      else if (got == 0 || (errno != EINTR && errno != EAGAIN))
        (i == 0 ? out_open : err_open) = false;
    }
  }
  ::close(out[0]);
  ::close(err[0]);
  int status = 0;
  if (r.timed_out) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    r.exit_code = -1;
  } else {
    // Both pipes closed: the process is exiting; bounded wait for it all the same.
    bool reaped = false;
    while (clock_type::now() < deadline + 2s) {
      pid_t w = ::waitpid(pid, &status, WNOHANG);
      if (w == pid) {
        reaped = true;
        break;
      }
      std::this_thread::sleep_for(2ms);
    }
    if (!reaped) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      r.timed_out = true;
      r.exit_code = -1;
    } else {
      r.exit_code = decode_status(status);
    }
  }
  r.seconds = seconds_since(start);
  return r;
}

std::optional<nlohmann::json> members(int rpc_port) {
  auto r = run_ctl({"--node", "127.0.0.1:" + std::to_string(rpc_port), "--timeout", "2",
                    "members", "--json"},
                   5s);
  if (r.exit_code != 0)
    return std::nullopt;
  try {
    auto j = nlohmann::json::parse(r.out);
    if (!j.is_array())
      return std::nullopt;
    return j;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::map<std::string, std::string> member_states(int rpc_port) {
  std::map<std::string, std::string> m;
  if (auto j = members(rpc_port))
    for (auto& e : *j)
      m[e.value("name", "")] = e.value("state", "");
  return m;
}

std::map<std::string, std::string> node_stats(int rpc_port) {
  std::map<std::string, std::string> m;
  auto r = run_ctl({"--node", "127.0.0.1:" + std::to_string(rpc_port), "--timeout", "2", "stats"},
                   5s);
  if (r.exit_code != 0)
    return m;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string k, v;
    if (ls >> k >> v && k != "NAME")
      m[k] = v;
  }
  return m;
}

bool all_see_alive(const std::vector<node*>& observers, const std::vector<std::string>& names) {
  std::set<std::string> want(names.begin(), names.end());
  for (auto* o : observers) {
    auto st = member_states(o->rpc_port);
    if (st.empty())
      return false;
    std::set<std::string> alive;
    for (auto& [n, s] : st)
      if (s == "alive")
        alive.insert(n);
    if (alive != want)
      return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// cluster

cluster::cluster() {
  char tmpl[] = "/tmp/bifrost-it-XXXXXX";
  if (!::mkdtemp(tmpl))
    throw std::runtime_error("mkdtemp");
  dir_ = tmpl;
}

cluster::~cluster() {
  for (auto& n : nodes_) {
    if (n->running()) {
      ::kill(n->pid, SIGKILL);
      int status = 0;
      ::waitpid(n->pid, &status, 0);
      n->pid = -1;
    }
    if (n->stdout_fd >= 0) {
      ::close(n->stdout_fd);
      n->stdout_fd = -1;
    }
  }
  if (!std::getenv("BIFROST_IT_KEEP")) {
    for (auto& n : nodes_)
      ::unlink(n->stderr_path.c_str());
    ::rmdir(dir_.c_str());
  }
}

node& cluster::start(const std::string& name, node_options opt) {
  for (auto& n : nodes_)
    if (n->name == name)
      throw std::runtime_error("node " + name + " exists; use restart");
  auto n = std::make_unique<node>();
  n->name = name;
  n->port = opt.port ? opt.port : free_port();
  n->rpc_port = opt.rpc_port ? opt.rpc_port : free_port();
  n->stderr_path = dir_ + "/" + name + ".stderr";
  nodes_.push_back(std::move(n));
  node& added = *nodes_.back();
  // A port free_port() found free can be taken before bifrostd binds it (another test's
  // outgoing connection gets it as its local port): with ports of our choosing, try others.
  for (int attempt = 1;; ++attempt) {
    try {
      return spawn(added, opt);
    } catch (const std::runtime_error& e) {
      if (attempt >= 3 || (opt.port && opt.rpc_port) ||
          std::string(e.what()).find("Address already in use") == std::string::npos)
        throw;
      if (!opt.port)
        added.port = free_port();
      if (!opt.rpc_port)
        added.rpc_port = free_port();
    }
  }
}

node& cluster::start(const std::string& name, std::vector<int> join, int replicas) {
  node_options o;
  o.join = std::move(join);
  o.replicas = replicas;
  return start(name, o);
}

node& cluster::restart(node& n, std::vector<int> join, int replicas) {
  if (n.running())
    throw std::runtime_error("node " + n.name + " still running");
  node_options o;
  o.join = std::move(join);
  o.replicas = replicas;
  return spawn(n, o);
}

node& cluster::restart(node& n, const node_options& opt) {
  if (n.running())
    throw std::runtime_error("node " + n.name + " still running");
  return spawn(n, opt);
}

node& cluster::spawn(node& n, const node_options& opt) {
  std::vector<std::string> args = {bin_dir() + "/bifrostd",
                                   "-l", "127.0.0.1",
                                   "-p", std::to_string(n.port),
                                   "--rpc-port", std::to_string(n.rpc_port),
                                   "--node-name", n.name,
                                   "-t", "1",
                                   "-m", "64"};
  if (!opt.join.empty()) {
    std::string seeds;
    for (int p : opt.join)
      seeds += (seeds.empty() ? "" : ",") + std::string("127.0.0.1:") + std::to_string(p);
    args.push_back("--join");
    args.push_back(seeds);
  }
  if (opt.replicas != 1) {
    args.push_back("--replicas");
    args.push_back(std::to_string(opt.replicas));
  }
  args.insert(args.end(), opt.extra_args.begin(), opt.extra_args.end());
  n.last_args = args;
  auto argv = to_argv(args);
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe2");
  int err_fd = ::open(n.stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (err_fd < 0)
    throw std::runtime_error("open " + n.stderr_path);
  pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error("fork");
  if (pid == 0)
    exec_child(argv[0], argv.data(), out[1], err_fd);
  ::close(out[1]);
  ::close(err_fd);
  if (n.stdout_fd >= 0)
    ::close(n.stdout_fd);
  n.stdout_fd = out[0];  // kept open (never read after the ready line) so writes cannot fail
  n.pid = pid;
  n.exit_status = -1;

  // Wait (bounded) for the ready line.
  auto deadline = clock_type::now() + opt.ready_timeout;
  std::string got;
  bool ready = false;
  while (!ready) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
    if (left.count() <= 0)
      break;
    pollfd p{n.stdout_fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<long>(left.count(), 100)));
    if (r > 0) {
      char buf[1024];
      ssize_t k = ::read(n.stdout_fd, buf, sizeof buf);
      if (k > 0)
        got.append(buf, static_cast<size_t>(k));
      else if (k == 0)
        break;  // stdout closed: the process is gone
    }
    auto nl = got.find('\n');
    if (nl != std::string::npos && got.find("serving memcached") < nl)
      ready = true;
    if (reap(n))
      break;
  }
  if (!ready) {
    std::string why = n.running() ? "no ready line within timeout" : "process exited";
    if (n.running()) {
      ::kill(n.pid, SIGKILL);
      int status = 0;
      ::waitpid(n.pid, &status, 0);
      n.pid = -1;
    }
    throw std::runtime_error("bifrostd " + n.name + ": " + why + "; stdout: " + got +
                             "; stderr: " + stderr_tail(n));
  }
  return n;
}

bool cluster::reap(node& n) {
  if (!n.running())
    return true;
  int status = 0;
  pid_t w = ::waitpid(n.pid, &status, WNOHANG);
  if (w == n.pid) {
    n.exit_status = status;
    n.pid = -1;
    return true;
  }
  return false;
}

int cluster::stop(node& n, std::chrono::milliseconds grace) {
  if (!n.running())
    return n.exit_status >= 0 ? decode_status(n.exit_status) : -1;
  ::kill(n.pid, SIGTERM);
  if (!wait_until([&] { return reap(n); }, grace, 10ms)) {
    report("node " + n.name + " did not exit within the grace period after SIGTERM: SIGKILL");
    ::kill(n.pid, SIGKILL);
    int status = 0;
    ::waitpid(n.pid, &status, 0);
    n.exit_status = status;
    n.pid = -1;
  }
  return decode_status(n.exit_status);
}

void cluster::kill9(node& n) {
  if (!n.running())
    return;
  ::kill(n.pid, SIGKILL);
  int status = 0;
  ::waitpid(n.pid, &status, 0);
  n.exit_status = status;
  n.pid = -1;
}

std::vector<node*> cluster::nodes() {
  std::vector<node*> v;
  for (auto& n : nodes_)
    v.push_back(n.get());
  return v;
}

node& cluster::get(const std::string& name) {
  for (auto& n : nodes_)
    if (n->name == name)
      return *n;
  throw std::runtime_error("no node " + name);
}

std::string cluster::stderr_tail(const node& n, size_t bytes) const {
  std::ifstream f(n.stderr_path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

void cluster::dump_logs() const {
  for (auto& n : nodes_) {
    std::cout << "----- " << n->name << " stderr (" << n->stderr_path << ") -----\n"
              << stderr_tail(*n) << std::endl;
  }
}

// ---------------------------------------------------------------------------------------------
// mc_client

mc_client::mc_client(int port, std::chrono::milliseconds timeout) : timeout_(timeout) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0)
    throw mc_error("socket(): " + std::string(std::strerror(errno)));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  int r = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  if (r != 0 && errno != EINPROGRESS) {
    int e = errno;
    ::close(fd_);
    fd_ = -1;
    throw mc_error("connect(" + std::to_string(port) + "): " + std::strerror(e));
  }
  if (r != 0) {
    pollfd p{fd_, POLLOUT, 0};
    int n = ::poll(&p, 1, static_cast<int>(timeout_.count()));
    int soerr = 0;
    socklen_t len = sizeof soerr;
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &soerr, &len);
    if (n <= 0 || soerr != 0) {
      ::close(fd_);
      fd_ = -1;
      throw mc_error("connect(" + std::to_string(port) +
                     "): " + (n <= 0 ? "timeout" : std::strerror(soerr)));
    }
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

mc_client::~mc_client() {
  if (fd_ >= 0)
    ::close(fd_);
}

void mc_client::send_all(const std::string& data) {
  deadline_ = clock_type::now() + timeout_;
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Drain replies meanwhile? Callers pipeline in bounded batches, so just wait.
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - clock_type::now());
      if (left.count() <= 0)
        throw mc_error("send timeout");
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
      continue;
    }
    throw mc_error("send(): " + std::string(std::strerror(errno)));
  }
  deadline_ = clock_type::now() + timeout_;
}

void mc_client::fill() {
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 65536) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  for (;;) {
    char tmp[16384];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n > 0) {
      buf_.append(tmp, static_cast<size_t>(n));
      deadline_ = clock_type::now() + timeout_;  // progress extends the deadline
      return;
    }
    if (n == 0)
      throw mc_error("connection closed by server");
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      throw mc_error("recv(): " + std::string(std::strerror(errno)));
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - clock_type::now());
    if (left.count() <= 0)
      throw mc_error("recv timeout");
    pollfd p{fd_, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left.count()));
  }
}

std::string mc_client::read_line() {
  for (;;) {
    auto nl = buf_.find("\r\n", pos_);
    if (nl != std::string::npos) {
      std::string line = buf_.substr(pos_, nl - pos_);
      pos_ = nl + 2;
      return line;
    }
    if (buf_.size() - pos_ > (1u << 20))
      throw mc_error("reply line too long");
    fill();
  }
}

std::string mc_client::read_exact(size_t n) {
  while (buf_.size() - pos_ < n)
    fill();
  std::string s = buf_.substr(pos_, n);
  pos_ += n;
  return s;
}

static bool is_error_line(const std::string& l) {
  return l == "ERROR" || l.rfind("SERVER_ERROR", 0) == 0 || l.rfind("CLIENT_ERROR", 0) == 0;
}

void mc_client::read_values(std::vector<std::pair<std::string, std::string>>& out) {
  for (;;) {
    std::string line = read_line();
    if (line == "END")
      return;
    if (is_error_line(line))
      throw mc_error("error reply: " + line);
    if (line.rfind("VALUE ", 0) != 0)
      throw mc_error("unexpected reply: " + line);
    std::istringstream in(line.substr(6));
    std::string key;
    unsigned long flags = 0, bytes = 0;
    if (!(in >> key >> flags >> bytes))
      throw mc_error("bad VALUE line: " + line);
    std::string data = read_exact(bytes + 2);
    if (data.compare(bytes, 2, "\r\n") != 0)
      throw mc_error("value not followed by CRLF for " + key);
    data.resize(bytes);
    out.emplace_back(std::move(key), std::move(data));
  }
}

std::string mc_client::set(const std::string& key, const std::string& value, uint32_t flags,
                           uint32_t exptime) {
  send_all("set " + key + " " + std::to_string(flags) + " " + std::to_string(exptime) + " " +
           std::to_string(value.size()) + "\r\n" + value + "\r\n");
  return read_line();
}

std::optional<std::string> mc_client::get(const std::string& key) {
  send_all("get " + key + "\r\n");
  std::vector<std::pair<std::string, std::string>> v;
  read_values(v);
  if (v.empty())
    return std::nullopt;
  if (v.size() != 1 || v[0].first != key)
    throw mc_error("get " + key + ": unexpected values");
  return v[0].second;
}

std::string mc_client::del(const std::string& key) {
  send_all("delete " + key + "\r\n");
  return read_line();
}

std::vector<std::pair<std::string, std::string>> mc_client::multi_get(
    const std::vector<std::string>& keys) {
  std::string cmd = "get";
  for (auto& k : keys)
    cmd += " " + k;
  send_all(cmd + "\r\n");
  std::vector<std::pair<std::string, std::string>> v;
  read_values(v);
  return v;
}

std::vector<std::string> mc_client::set_pipelined(
    const std::vector<std::pair<std::string, std::string>>& kv) {
  std::string cmd;
  for (auto& [k, v] : kv)
    cmd += "set " + k + " 0 0 " + std::to_string(v.size()) + "\r\n" + v + "\r\n";
  send_all(cmd);
  std::vector<std::string> replies;
  replies.reserve(kv.size());
  for (size_t i = 0; i < kv.size(); ++i)
    replies.push_back(read_line());
  return replies;
}

std::vector<std::optional<std::string>> mc_client::get_pipelined(
    const std::vector<std::string>& keys) {
  std::string cmd;
  for (auto& k : keys)
    cmd += "get " + k + "\r\n";
  send_all(cmd);
  std::vector<std::optional<std::string>> out;
  out.reserve(keys.size());
  for (auto& k : keys) {
    std::vector<std::pair<std::string, std::string>> v;
    read_values(v);
    if (v.empty())
      out.emplace_back(std::nullopt);
    else if (v.size() == 1 && v[0].first == k)
      out.emplace_back(std::move(v[0].second));
    else
      throw mc_error("pipelined get " + k + ": unexpected values");
  }
  return out;
}

}  // namespace bifrost::it

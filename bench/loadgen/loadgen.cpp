// loadgen: closed-loop memcached text-protocol load generator (epoll, one event loop per thread).
//
// Each connection keeps --pipeline requests in flight; a new request is issued as soon as a
// reply completes. Keys "key:<n>" (zero-padded to a fixed width) are drawn uniformly at random
// with a per-connection xorshift generator. Replies are parsed incrementally and fully; a protocol
// desync closes the connection and counts an error. Every latency sample of the measured window is
// kept (per thread), merged and sorted, so the percentiles are exact.
//
// Several servers (--ports P1,P2,... or --port with a comma list): connection i goes to port
// i % n; in a cluster any node accepts any key, so the preload may go through any of them.
//
// Bounded in time: warmup + duration (+ --grace seconds to drain in-flight replies), preload has
// its own timeout. Exit codes: 0 ok, 1 usage / cannot connect, 2 preload failed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

struct Options {
  std::string host = "127.0.0.1";
  int port = 11211;          // the first of ports
  std::vector<int> ports;    // connection i goes to ports[i % ports.size()]
  int connections = 50;
  int threads = 1;
  int pipeline = 1;
  uint64_t keys = 100000;
  uint64_t value_size = 100;
  double get_ratio = 0.9;
  bool preload = false;
  double preload_timeout = 300;
  double warmup = 0;
  double duration = -1;  // required
  uint64_t max_ops = 0;  // 0: unlimited
  double grace = 3;
  bool json = false;
  bool verify = false;
  uint64_t seed = 1;
};

constexpr double kMaxDuration = 600;
constexpr size_t kMaxLine = 4096;        // a reply line longer than this is a desync
constexpr size_t kInBufSize = 256 * 1024;
// Latency samples are stored as uint32 in units of 100 ns (max ~429 s).
constexpr double kSampleUnitNs = 100.0;

inline uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct XorShift {
  uint64_t s;
  explicit XorShift(uint64_t seed) : s(splitmix64(seed) | 1) {}
  uint64_t next() {  // xorshift64*
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  uint64_t below(uint64_t n) { return uint64_t((unsigned __int128)next() * n >> 64); }
  double unit() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }
};

enum class Phase { Preload, Load };
enum class ReqType : uint8_t { Get, Set };

struct Req {
  uint64_t ts;
  uint64_t key;
  ReqType type;
};

// Shared read-only state + cross-thread control.
struct Shared {
  Options opt;
  int key_width = 1;
  std::string value;       // value bytes (B)
  std::string set_suffix;  // " 0 0 <B>\r\n"
  uint64_t t_measure_start = 0, t_end = 0, t_grace_end = 0, t_preload_deadline = 0;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> measured_ops{0};  // used only with --max-ops
  std::atomic<uint64_t> stop_ts{0};
};

struct Stats {
  uint64_t gets = 0, sets = 0, hits = 0, misses = 0, ops = 0;
  uint64_t errors = 0;           // all errors during warmup/measure/drain
  uint64_t desyncs = 0;          // connections closed on a protocol desync / unexpected EOF
  uint64_t timeouts = 0;         // requests still unanswered at the end of the grace period
  uint64_t preload_stored = 0, preload_errors = 0;
  std::vector<uint32_t> lat;     // 100 ns units
};

class Worker;

struct Conn {
  int fd = -1;
  uint64_t id = 0;
  XorShift rng{0};
  std::string out;
  size_t out_off = 0;
  bool want_out = false;
  std::vector<char> in;
  size_t rpos = 0, wpos = 0;
  // pending requests (ring)
  std::vector<Req> pend;
  size_t ph = 0, pn = 0;
  // parser state
  enum class PS { Line, Data, DataCrlf, EndLine } ps = PS::Line;
  uint64_t data_left = 0;   // payload bytes still to consume
  uint64_t data_off = 0;    // offset into the payload (for --verify)
  bool data_ok = true;
  bool closed = false;

  void push(const Req& r) {
    if (pn == pend.size()) {  // grow
      std::vector<Req> n(std::max<size_t>(8, pend.size() * 2));
      for (size_t i = 0; i < pn; i++) n[i] = pend[(ph + i) % pend.size()];
      pend.swap(n);
      ph = 0;
    }
    pend[(ph + pn) % pend.size()] = r;
    pn++;
  }
  Req& front() { return pend[ph]; }
  void pop() {
    ph = (ph + 1) % pend.size();
    pn--;
  }
};

class Worker {
 public:
  Worker(Shared& sh, int tid) : sh_(sh), o_(sh.opt), tid_(tid) {}
  ~Worker() {
    for (auto& c : conns_)
      if (c->fd >= 0) close(c->fd);
    if (ep_ >= 0) close(ep_);
  }

  void add_conn(int fd, uint64_t id) {
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    c->id = id;
    c->rng = XorShift(o_.seed * 0x100000001b3ull + id);
    c->in.resize(kInBufSize);
    conns_.push_back(std::move(c));
  }

  bool init_epoll() {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) return false;
    for (auto& c : conns_) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = c.get();
      if (epoll_ctl(ep_, EPOLL_CTL_ADD, c->fd, &ev) < 0) return false;
    }
    return true;
  }

  void run(Phase ph) {
    phase_ = ph;
    stopping_ = false;
    if (ph == Phase::Preload) {
      next_preload_key_ = uint64_t(tid_);
      preload_depth_ = size_t(std::clamp<uint64_t>((4u << 20) / (o_.value_size + 64), 1, 64));
      preload_depth_ = std::max<size_t>(preload_depth_, size_t(o_.pipeline));
    }
    uint64_t now = now_ns();
    for (auto& c : conns_) {
      if (c->closed) continue;
      fill(*c, now);
      flush(*c);
    }
    std::vector<epoll_event> evs(std::max<size_t>(16, conns_.size()));
    for (;;) {
      now = now_ns();
      uint64_t deadline;
      if (ph == Phase::Load) {
        if (!stopping_ && (now >= sh_.t_end || sh_.stop.load(std::memory_order_relaxed))) stopping_ = true;
        if (stopping_ && (in_flight() == 0 || now >= sh_.t_grace_end)) break;
        deadline = stopping_ ? sh_.t_grace_end : sh_.t_end;
      } else {
        if (next_preload_key_ >= o_.keys && in_flight() == 0) break;
        if (now >= sh_.t_preload_deadline) {
          preload_timed_out_ = true;
          break;
        }
        deadline = sh_.t_preload_deadline;
      }
      if (live_conns() == 0) break;
      int timeout_ms = int(std::min<uint64_t>(100, (deadline > now ? (deadline - now) / 1000000 : 0) + 1));
      int n = epoll_wait(ep_, evs.data(), int(evs.size()), timeout_ms);
      if (n < 0) {
        if (errno == EINTR) continue;
        perror("epoll_wait");
        break;
      }
      for (int i = 0; i < n; i++) {
        Conn& c = *static_cast<Conn*>(evs[i].data.ptr);
        if (c.closed) continue;
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
        if (!c.closed && (evs[i].events & EPOLLOUT)) flush(c);
      }
    }
    if (ph == Phase::Load) {  // replies still missing after the grace period count as errors
      stats.timeouts += in_flight();
      stats.errors += in_flight();
    }
  }

  Stats stats;
  bool preload_timed_out_ = false;

 private:
  size_t in_flight() const {
    size_t n = 0;
    for (auto& c : conns_)
      if (!c->closed) n += c->pn;
    return n;
  }
  size_t live_conns() const {
    size_t n = 0;
    for (auto& c : conns_) n += !c->closed;
    return n;
  }

  void close_conn(Conn& c) {
    if (c.closed) return;
    epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    c.fd = -1;
    c.closed = true;
    c.pn = 0;
  }

  void error(Conn& c, bool fatal, const char* what) {
    if (phase_ == Phase::Preload)
      stats.preload_errors++;
    else
      stats.errors++;
    if (fatal) {
      stats.desyncs++;
      if (desync_reports_++ < 5) fprintf(stderr, "loadgen: connection %" PRIu64 ": %s, closing it\n", c.id, what);
      close_conn(c);
    }
  }

  void append_key(std::string& s, uint64_t k) {
    char buf[32] = {'k', 'e', 'y', ':'};
    int w = sh_.key_width;
    for (int i = w - 1; i >= 0; i--, k /= 10) buf[4 + i] = char('0' + k % 10);
    s.append(buf, size_t(4 + w));
  }

  void issue(Conn& c, ReqType t, uint64_t k, uint64_t now) {
    if (t == ReqType::Get) {
      c.out.append("get ", 4);
      append_key(c.out, k);
      c.out.append("\r\n", 2);
    } else {
      c.out.append("set ", 4);
      append_key(c.out, k);
      c.out.append(sh_.set_suffix);
      c.out.append(sh_.value);
      c.out.append("\r\n", 2);
    }
    c.push(Req{now, k, t});
  }

  void fill(Conn& c, uint64_t now) {
    if (phase_ == Phase::Preload) {
      while (c.pn < preload_depth_ && next_preload_key_ < o_.keys) {
        issue(c, ReqType::Set, next_preload_key_, now);
        next_preload_key_ += uint64_t(o_.threads);
      }
      return;
    }
    if (stopping_) return;
    while (c.pn < size_t(o_.pipeline)) {
      bool get = c.rng.unit() < o_.get_ratio;
      uint64_t k = c.rng.below(o_.keys);
      issue(c, get ? ReqType::Get : ReqType::Set, k, now);
    }
  }

  void flush(Conn& c) {
    while (c.out_off < c.out.size()) {
      ssize_t w = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (w > 0) {
        c.out_off += size_t(w);
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      error(c, true, "send failed");
      return;
    }
    if (c.out_off == c.out.size()) {
      c.out.clear();
      c.out_off = 0;
    } else if (c.out_off > (1u << 20)) {
      c.out.erase(0, c.out_off);
      c.out_off = 0;
    }
    bool want = c.out_off < c.out.size();
    if (want != c.want_out) {
      epoll_event ev{};
      ev.events = want ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
      ev.data.ptr = &c;
      epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
      c.want_out = want;
    }
  }

  void on_readable(Conn& c) {
    for (int iter = 0; iter < 16; iter++) {
      if (c.rpos == c.wpos) c.rpos = c.wpos = 0;
      if (c.wpos == c.in.size()) {
        if (c.rpos == 0) {  // buffer full of one unterminated line (cannot happen below kMaxLine)
          error(c, true, "reply line too long");
          return;
        }
        memmove(c.in.data(), c.in.data() + c.rpos, c.wpos - c.rpos);
        c.wpos -= c.rpos;
        c.rpos = 0;
      }
      ssize_t r = ::recv(c.fd, c.in.data() + c.wpos, c.in.size() - c.wpos, 0);
      if (r > 0) {
        c.wpos += size_t(r);
        uint64_t now = now_ns();
        parse(c, now);
        if (c.closed) return;
        fill(c, now);
        if (size_t(r) < c.in.size() / 2) break;  // probably drained the socket
        continue;
      }
      if (r == 0) {
        if (c.pn > 0 || (phase_ == Phase::Load && !stopping_))
          error(c, true, "server closed the connection");
        else
          close_conn(c);
        return;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      error(c, true, "recv failed");
      return;
    }
    flush(c);
  }

  // One request completed (reply fully consumed).
  void complete(Conn& c, uint64_t now, int outcome /*0 ok-set,1 hit,2 miss,3 error*/) {
    Req r = c.front();
    c.pop();
    if (phase_ == Phase::Preload) {
      if (outcome == 0)
        stats.preload_stored++;
      else
        stats.preload_errors++;
      return;
    }
    if (outcome == 3) stats.errors++;
    if (now < sh_.t_measure_start || now >= sh_.t_end) return;
    if (sh_.stop.load(std::memory_order_relaxed)) return;
    if (o_.max_ops) {
      uint64_t n = sh_.measured_ops.fetch_add(1, std::memory_order_relaxed);
      if (n >= o_.max_ops) return;
      if (n + 1 == o_.max_ops) {
        sh_.stop_ts.store(now);
        sh_.stop.store(true);
      }
    }
    stats.ops++;
    if (r.type == ReqType::Get) {
      stats.gets++;
      if (outcome == 1) stats.hits++;
      if (outcome == 2) stats.misses++;
    } else {
      stats.sets++;
    }
    double units = double(now - r.ts) / kSampleUnitNs;
    stats.lat.push_back(units >= 4294967295.0 ? 0xffffffffu : uint32_t(units));
  }

  void report_error_reply(Conn& c, const char* p, size_t n) {
    if (error_reports_++ < 5)
      fprintf(stderr, "loadgen: connection %" PRIu64 ": error reply: %.*s\n", c.id, int(std::min<size_t>(n, 200)), p);
  }

  static bool line_is(const char* p, size_t n, const char* lit) {
    size_t l = strlen(lit);
    return n == l && memcmp(p, lit, l) == 0;
  }
  static bool line_starts(const char* p, size_t n, const char* lit) {
    size_t l = strlen(lit);
    return n >= l && memcmp(p, lit, l) == 0;
  }
  static bool is_error_line(const char* p, size_t n) {
    return line_is(p, n, "ERROR") || line_starts(p, n, "SERVER_ERROR") || line_starts(p, n, "CLIENT_ERROR");
  }

  // Parse "VALUE <key> <flags> <bytes>[ <cas>]"; returns false on a malformed header.
  bool parse_value_header(Conn& c, const char* p, size_t n, uint64_t& bytes) {
    std::string line(p, n);
    char key[300];
    unsigned long flags = 0;
    unsigned long long b = 0;
    if (line.size() > 290 + 40) return false;
    if (sscanf(line.c_str(), "VALUE %250s %lu %llu", key, &flags, &b) != 3) return false;
    std::string expect;
    append_key(expect, c.front().key);
    if (expect != key) return false;
    bytes = b;
    return true;
  }

  void parse(Conn& c, uint64_t now) {
    while (!c.closed) {
      char* buf = c.in.data();
      size_t avail = c.wpos - c.rpos;
      switch (c.ps) {
        case Conn::PS::Line:
        case Conn::PS::EndLine: {
          if (avail == 0) return;
          char* start = buf + c.rpos;
          char* nl = static_cast<char*>(memchr(start, '\n', avail));
          if (!nl) {
            if (avail > kMaxLine) error(c, true, "reply line too long");
            return;
          }
          size_t len = size_t(nl - start) + 1;
          if (len < 2 || nl[-1] != '\r') {
            error(c, true, "reply line not terminated by \\r\\n");
            return;
          }
          size_t n = len - 2;
          c.rpos += len;
          if (c.pn == 0) {
            error(c, true, "unsolicited reply");
            return;
          }
          if (c.ps == Conn::PS::EndLine) {
            if (!line_is(start, n, "END")) {
              error(c, true, "VALUE not followed by END");
              return;
            }
            c.ps = Conn::PS::Line;
            complete(c, now, c.data_ok ? 1 : 3);
            break;
          }
          ReqType t = c.front().type;
          if (t == ReqType::Set) {
            if (line_is(start, n, "STORED")) {
              complete(c, now, 0);
            } else if (line_is(start, n, "NOT_STORED") || line_is(start, n, "EXISTS") ||
                       line_is(start, n, "NOT_FOUND") || is_error_line(start, n)) {
              report_error_reply(c, start, n);
              complete(c, now, 3);
            } else {
              error(c, true, "unexpected reply to set");
              return;
            }
          } else {
            if (line_is(start, n, "END")) {
              complete(c, now, 2);
            } else if (line_starts(start, n, "VALUE ")) {
              uint64_t bytes = 0;
              if (!parse_value_header(c, start, n, bytes)) {
                error(c, true, "malformed VALUE header");
                return;
              }
              c.data_ok = bytes == o_.value_size;
              c.data_left = bytes;
              c.data_off = 0;
              c.ps = Conn::PS::Data;
            } else if (is_error_line(start, n)) {
              report_error_reply(c, start, n);
              complete(c, now, 3);
            } else {
              error(c, true, "unexpected reply to get");
              return;
            }
          }
          break;
        }
        case Conn::PS::Data: {
          if (c.data_left == 0) {
            c.ps = Conn::PS::DataCrlf;
            break;
          }
          if (avail == 0) return;
          size_t take = size_t(std::min<uint64_t>(avail, c.data_left));
          if (o_.verify && c.data_ok &&
              memcmp(buf + c.rpos, sh_.value.data() + c.data_off, take) != 0)
            c.data_ok = false;
          c.rpos += take;
          c.data_left -= take;
          c.data_off += take;
          break;
        }
        case Conn::PS::DataCrlf: {
          if (avail < 2) return;
          if (buf[c.rpos] != '\r' || buf[c.rpos + 1] != '\n') {
            error(c, true, "value data not terminated by \\r\\n");
            return;
          }
          c.rpos += 2;
          c.ps = Conn::PS::EndLine;
          break;
        }
      }
    }
  }

  Shared& sh_;
  const Options& o_;
  int tid_;
  int ep_ = -1;
  Phase phase_ = Phase::Load;
  bool stopping_ = false;
  uint64_t next_preload_key_ = 0;
  size_t preload_depth_ = 1;
  int desync_reports_ = 0;
  int error_reports_ = 0;
  std::vector<std::unique_ptr<Conn>> conns_;
};

void usage(FILE* f) {
  fprintf(f,
          "usage: loadgen --duration S [options]\n"
          "  --host H            server address, loopback only (default 127.0.0.1)\n"
          "  --port P[,P2,...]   server port (default 11211); with a comma list, connection i\n"
          "                      goes to port i %% n (a cluster: any node accepts any key)\n"
          "  --ports P1,P2,...   the same as --port with a list\n"
          "  --connections C     connections (default 50)\n"
          "  --threads T         event-loop threads (default 1)\n"
          "  --pipeline D        requests in flight per connection (default 1)\n"
          "  --keys K            key space, keys key:<n> zero-padded (default 100000)\n"
          "  --value-size B      value bytes (default 100)\n"
          "  --get-ratio R       fraction of gets, 0..1 (default 0.9)\n"
          "  --preload           set every key once before measuring (each must answer STORED)\n"
          "  --preload-timeout S preload time bound (default 300)\n"
          "  --warmup S          seconds run but not measured (default 0)\n"
          "  --duration S        measured seconds (required, 0..600)\n"
          "  --max-ops N         stop after N measured ops\n"
          "  --grace S           seconds allowed to drain in-flight replies at the end (default 3)\n"
          "  --verify            compare every returned value byte with the expected value\n"
          "  --json              print one JSON object on stdout (the text line goes to stderr)\n"
          "  --seed N            random seed (default 1)\n");
}

bool parse_double(const char* s, double& out) {
  char* end = nullptr;
  errno = 0;
  out = strtod(s, &end);
  return errno == 0 && end != s && *end == 0 && std::isfinite(out);
}
bool parse_u64(const char* s, uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  if (*s == '-') return false;
  unsigned long long v = strtoull(s, &end, 10);
  out = v;
  return errno == 0 && end != s && *end == 0;
}

int connect_one(const sockaddr_in& sa) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

double pct(const std::vector<uint32_t>& v, double p) {
  if (v.empty()) return 0;
  size_t rank = size_t(std::ceil(p * double(v.size())));
  if (rank < 1) rank = 1;
  if (rank > v.size()) rank = v.size();
  return double(v[rank - 1]) * kSampleUnitNs / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  auto sh = std::make_unique<Shared>();
  Options& o = sh->opt;
  enum {
    OHost = 1000, OPort, OPorts, OConn, OThreads, OPipe, OKeys, OVsize, OGetRatio, OPreload, OPreloadTimeout,
    OWarmup, ODuration, OMaxOps, OGrace, OJson, OSeed, OVerify, OHelp
  };
  static const option longopts[] = {
      {"host", required_argument, nullptr, OHost},
      {"port", required_argument, nullptr, OPort},
      {"ports", required_argument, nullptr, OPorts},
      {"connections", required_argument, nullptr, OConn},
      {"threads", required_argument, nullptr, OThreads},
      {"pipeline", required_argument, nullptr, OPipe},
      {"keys", required_argument, nullptr, OKeys},
      {"value-size", required_argument, nullptr, OVsize},
      {"get-ratio", required_argument, nullptr, OGetRatio},
      {"preload", no_argument, nullptr, OPreload},
      {"preload-timeout", required_argument, nullptr, OPreloadTimeout},
      {"warmup", required_argument, nullptr, OWarmup},
      {"duration", required_argument, nullptr, ODuration},
      {"max-ops", required_argument, nullptr, OMaxOps},
      {"grace", required_argument, nullptr, OGrace},
      {"json", no_argument, nullptr, OJson},
      {"verify", no_argument, nullptr, OVerify},
      {"seed", required_argument, nullptr, OSeed},
      {"help", no_argument, nullptr, OHelp},
      {nullptr, 0, nullptr, 0}};
  auto bad = [&](const char* what) {
    fprintf(stderr, "loadgen: invalid %s\n", what);
    usage(stderr);
    exit(1);
  };
  int ch;
  while ((ch = getopt_long(argc, argv, "", longopts, nullptr)) != -1) {
    uint64_t u = 0;
    double d = 0;
    switch (ch) {
      case OHost: o.host = optarg; break;
      case OPort:
      case OPorts: {
        const char* what = ch == OPort ? "--port" : "--ports";
        std::vector<int> ps;
        std::string arg = optarg, item;
        size_t start = 0;
        for (;;) {
          size_t comma = arg.find(',', start);
          item = arg.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
          if (!parse_u64(item.c_str(), u) || u == 0 || u > 65535) bad(what);
          ps.push_back(int(u));
          if (comma == std::string::npos) break;
          start = comma + 1;
        }
        if (ps.size() > 1024) bad(what);
        o.ports = ps;
        o.port = ps[0];
        break;
      }
      case OConn:
        if (!parse_u64(optarg, u) || u == 0 || u > 10000) bad("--connections");
        o.connections = int(u);
        break;
      case OThreads:
        if (!parse_u64(optarg, u) || u == 0 || u > 256) bad("--threads");
        o.threads = int(u);
        break;
      case OPipe:
        if (!parse_u64(optarg, u) || u == 0 || u > 4096) bad("--pipeline");
        o.pipeline = int(u);
        break;
      case OKeys:
        if (!parse_u64(optarg, u) || u == 0 || u > 1000000000000ull) bad("--keys");
        o.keys = u;
        break;
      case OVsize:
        if (!parse_u64(optarg, u) || u > (1ull << 30)) bad("--value-size");
        o.value_size = u;
        break;
      case OGetRatio:
        if (!parse_double(optarg, d) || d < 0 || d > 1) bad("--get-ratio");
        o.get_ratio = d;
        break;
      case OPreload: o.preload = true; break;
      case OPreloadTimeout:
        if (!parse_double(optarg, d) || d <= 0 || d > 3600) bad("--preload-timeout");
        o.preload_timeout = d;
        break;
      case OWarmup:
        if (!parse_double(optarg, d) || d < 0 || d > kMaxDuration) bad("--warmup");
        o.warmup = d;
        break;
      case ODuration:
        if (!parse_double(optarg, d) || d < 0 || d > kMaxDuration) bad("--duration (0..600)");
        o.duration = d;
        break;
      case OMaxOps:
        if (!parse_u64(optarg, u)) bad("--max-ops");
        o.max_ops = u;
        break;
      case OGrace:
        if (!parse_double(optarg, d) || d < 0 || d > 60) bad("--grace");
        o.grace = d;
        break;
      case OJson: o.json = true; break;
      case OVerify: o.verify = true; break;
      case OSeed:
        if (!parse_u64(optarg, u)) bad("--seed");
        o.seed = u;
        break;
      case OHelp: usage(stdout); return 0;
      default: usage(stderr); return 1;
    }
  }
  if (optind < argc) bad("argument");
  if (o.duration < 0) bad("--duration: it is required");
  if (o.threads > o.connections) o.threads = o.connections;

  if (o.ports.empty()) o.ports.push_back(o.port);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(o.port));
  if (o.host == "localhost") o.host = "127.0.0.1";
  if (inet_pton(AF_INET, o.host.c_str(), &sa.sin_addr) != 1) bad("--host (IPv4 loopback address expected)");
  if ((ntohl(sa.sin_addr.s_addr) >> 24) != 127) {
    fprintf(stderr, "loadgen: refusing non-loopback host %s (only 127.0.0.0/8 is allowed)\n", o.host.c_str());
    return 1;
  }

  {
    uint64_t m = o.keys - 1;
    int w = 1;
    while (m >= 10) m /= 10, w++;
    sh->key_width = w;
  }
  sh->set_suffix = " 0 0 " + std::to_string(o.value_size) + "\r\n";
  sh->value.resize(size_t(o.value_size));
  for (size_t i = 0; i < sh->value.size(); i++) sh->value[i] = char('a' + (i * 7 + i / 26) % 26);

  // Connect everything up front; connection i goes to ports[i % n].
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < o.threads; t++) workers.push_back(std::make_unique<Worker>(*sh, t));
  for (int i = 0; i < o.connections; i++) {
    int port = o.ports[size_t(i) % o.ports.size()];
    sa.sin_port = htons(uint16_t(port));
    int fd = connect_one(sa);
    if (fd < 0) {
      fprintf(stderr, "loadgen: cannot connect to %s:%d (connection %d): %s\n", o.host.c_str(), port, i,
              strerror(errno));
      return 1;
    }
    workers[size_t(i % o.threads)]->add_conn(fd, uint64_t(i));
  }
  for (auto& w : workers)
    if (!w->init_epoll()) {
      perror("loadgen: epoll");
      return 1;
    }

  auto run_all = [&](Phase ph) {
    std::vector<std::thread> ts;
    for (auto& w : workers) ts.emplace_back([&w, ph] { w->run(ph); });
    for (auto& t : ts) t.join();
  };

  nlohmann::json jpre = nullptr;
  if (o.preload) {
    uint64_t t0 = now_ns();
    sh->t_preload_deadline = t0 + uint64_t(o.preload_timeout * 1e9);
    run_all(Phase::Preload);
    double secs = double(now_ns() - t0) / 1e9;
    uint64_t stored = 0, errs = 0;
    bool timed_out = false;
    for (auto& w : workers) {
      stored += w->stats.preload_stored;
      errs += w->stats.preload_errors;
      timed_out |= w->preload_timed_out_;
    }
    jpre = {{"keys", o.keys}, {"stored", stored}, {"errors", errs}, {"seconds", secs}};
    if (stored != o.keys || errs || timed_out) {
      fprintf(stderr, "loadgen: preload failed: %" PRIu64 " of %" PRIu64 " keys STORED, %" PRIu64
              " errors%s\n", stored, o.keys, errs, timed_out ? ", timed out" : "");
      if (o.json) {
        nlohmann::json j = {{"error", "preload failed"}, {"preload", jpre}};
        printf("%s\n", j.dump().c_str());
      }
      return 2;
    }
    fprintf(stderr, "loadgen: preloaded %" PRIu64 " keys of %" PRIu64 " B in %.2f s\n", stored, o.value_size, secs);
  }

  double measured_s = 0;
  if (o.warmup + o.duration > 0) {
    uint64_t t0 = now_ns();
    sh->t_measure_start = t0 + uint64_t(o.warmup * 1e9);
    sh->t_end = sh->t_measure_start + uint64_t(o.duration * 1e9);
    sh->t_grace_end = sh->t_end + uint64_t(o.grace * 1e9);
    run_all(Phase::Load);
    uint64_t stop = sh->stop_ts.load();
    uint64_t end = (stop && stop < sh->t_end) ? stop : sh->t_end;
    measured_s = end > sh->t_measure_start ? double(end - sh->t_measure_start) / 1e9 : 0;
  }

  Stats tot;
  size_t nsamples = 0;
  for (auto& w : workers) nsamples += w->stats.lat.size();
  tot.lat.reserve(nsamples);
  for (auto& w : workers) {
    Stats& s = w->stats;
    tot.gets += s.gets, tot.sets += s.sets, tot.hits += s.hits, tot.misses += s.misses, tot.ops += s.ops;
    tot.errors += s.errors, tot.desyncs += s.desyncs, tot.timeouts += s.timeouts;
    tot.lat.insert(tot.lat.end(), s.lat.begin(), s.lat.end());
    std::vector<uint32_t>().swap(s.lat);
  }
  std::sort(tot.lat.begin(), tot.lat.end());
  double ops_s = measured_s > 0 ? double(tot.ops) / measured_s : 0;
  double p50 = pct(tot.lat, 0.50), p90 = pct(tot.lat, 0.90), p99 = pct(tot.lat, 0.99),
         p999 = pct(tot.lat, 0.999), pmax = tot.lat.empty() ? 0 : double(tot.lat.back()) * kSampleUnitNs / 1000.0;

  char line[1024];
  snprintf(line, sizeof line,
           "ops/s=%.0f ops=%" PRIu64 " gets=%" PRIu64 " sets=%" PRIu64 " hits=%" PRIu64 " misses=%" PRIu64
           " errors=%" PRIu64 " p50=%.1fus p90=%.1fus p99=%.1fus p99.9=%.1fus max=%.1fus",
           ops_s, tot.ops, tot.gets, tot.sets, tot.hits, tot.misses, tot.errors, p50, p90, p99, p999, pmax);
  if (o.json) {
    nlohmann::json j = {
        {"ops_per_sec", ops_s},
        {"ops", tot.ops},
        {"gets", tot.gets},
        {"sets", tot.sets},
        {"hits", tot.hits},
        {"misses", tot.misses},
        {"errors", tot.errors},
        {"closed_connections", tot.desyncs},
        {"timeouts", tot.timeouts},
        {"measured_seconds", measured_s},
        {"latency_us", {{"p50", p50}, {"p90", p90}, {"p99", p99}, {"p99_9", p999}, {"max", pmax}}},
        {"preload", jpre},
        {"config",
         {{"host", o.host}, {"port", o.port}, {"ports", o.ports}, {"connections", o.connections}, {"threads", o.threads},
          {"pipeline", o.pipeline}, {"keys", o.keys}, {"value_size", o.value_size}, {"get_ratio", o.get_ratio},
          {"warmup", o.warmup}, {"duration", o.duration}, {"max_ops", o.max_ops}, {"seed", o.seed}}}};
    fprintf(stderr, "%s\n", line);
    printf("%s\n", j.dump().c_str());
  } else {
    printf("%s\n", line);
  }
  return 0;
}

// Data-directory recovery: restart, kill -9 (with torn and corrupt records), garbage files.
#include "storage_test_util.hpp"

#include "storage/record.hpp"
#include "storage/segment.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <random>
#include <sched.h>
#include <sstream>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <thread>
#include <vector>

using namespace bifrost::storage;
using namespace bifrost::storage::test;
namespace fs = std::filesystem;

namespace {

shard_config disk_config(const std::string& dir) {
  shard_config c = small_config();
  c.data_dir = dir;
  c.id = 3;
  return c;
}

std::string shard_dir(const shard_config& c) { return c.data_dir + "/shard-" + std::to_string(c.id); }

std::vector<std::string> segment_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("seg-", 0) == 0) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

/// Offset just past the last valid-magic record of a segment file image.
size_t records_end(const std::string& img) {
  size_t off = 0;
  while (off + sizeof(record_header) <= img.size()) {
    record_header h;
    std::memcpy(&h, img.data() + off, sizeof h);
    if (h.magic != k_record_magic) break;
    off += record_size(h.key_len, h.value_len);
  }
  return off;
}

/// Finds the live record of `key` in the segment files: (path, offset) or ("", 0).
std::pair<std::string, size_t> find_record(const std::string& dir, const std::string& key) {
  for (const auto& path : segment_files(dir)) {
    const std::string img = read_file(path);
    size_t off = 0;
    while (off + sizeof(record_header) <= img.size()) {
      record_header h;
      std::memcpy(&h, img.data() + off, sizeof h);
      if (h.magic != k_record_magic) break;
      if (!h.dead() && img.compare(off + sizeof h, h.key_len, key) == 0 && h.key_len == key.size())
        return {path, off};
      off += record_size(h.key_len, h.value_len);
    }
  }
  return {"", 0};
}

std::string record_image(std::string_view key, std::string_view value, uint64_t cas = 1000,
                         uint32_t exptime = 0) {
  std::string buf(record_size(key.size(), value.size()), '\0');
  write_record(buf.data(), key, value, 0, exptime, cas, 0);
  return buf;
}

// Forks a child that runs `body(fd)`, fd being the write end of a pipe, and exits with what
// it returns. Returns the child's pid and the pipe's read end.
template <class Body>
std::pair<pid_t, int> fork_child(Body body) {
  int fds[2];
  BOOST_REQUIRE_EQUAL(::pipe(fds), 0);
  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    ::_exit(body(fds[1]));
  }
  ::close(fds[1]);
  return {pid, fds[0]};
}

// Forks a child (an earlier run of the node) that opens `cfg`'s shard and runs
// `body(shard, fd)` (see fork_child); it exits 2 if the shard does not open, else 0 when
// body returns.
template <class Body>
std::pair<pid_t, int> fork_shard_child(const shard_config& cfg, const fake_clock& clk, Body body) {
  return fork_child([&](int fd) {
    std::string err;
    auto s = shard::open(cfg, clk.fn(), err);
    if (!s) return 2;
    body(*s, fd);
    return 0;
  });
}

std::string val(int i) { return "value-" + std::to_string(i) + std::string(size_t(i % 300), '.'); }
std::string new_val(int i) { return "new-" + std::to_string(i); }
std::string key(int i) { return "key-" + std::to_string(i); }

} // namespace

BOOST_AUTO_TEST_SUITE(storage_recovery)

BOOST_AUTO_TEST_CASE(restart_rebuilds_index) {
  temp_dir tmp;
  fake_clock clk;
  const shard_config cfg = disk_config(tmp.path);
  const int n = 3000;
  uint64_t max_cas = 0;
  {
    auto s = open_shard(cfg, clk);
    for (int i = 0; i < n; ++i) max_cas = std::max(max_cas, do_set(*s, key(i), val(i), 0, i).cas);
    for (int i = 0; i < n; i += 7) do_delete(*s, key(i));
    for (int i = 0; i < n; i += 5) max_cas = std::max(max_cas, do_set(*s, key(i), new_val(i)).cas);
    do_set(*s, "ttl", "short", 100);
    BOOST_CHECK(s->stats().segments > 5u);
  }
  BOOST_CHECK(!segment_files(shard_dir(cfg)).empty());
  {
    auto s = open_shard(cfg, clk);
    const shard_stats& st = s->stats();
    BOOST_CHECK_EQUAL(st.recovery_skipped, 0u);
    int expected = 1;  // "ttl"
    for (int i = 0; i < n; ++i) {
      const std::string v = value_of(*s, key(i));
      if (i % 5 == 0) {
        BOOST_REQUIRE_EQUAL(v, new_val(i));
      } else if (i % 7 == 0) {
        BOOST_REQUIRE_EQUAL(v, "<miss>");
        continue;
      } else {
        BOOST_REQUIRE_EQUAL(v, val(i));
        BOOST_REQUIRE_EQUAL(do_get(*s, key(i)).flags, uint32_t(i));
      }
      ++expected;
    }
    BOOST_CHECK_EQUAL(st.recovered_items, uint64_t(expected));
    BOOST_CHECK_EQUAL(value_of(*s, "ttl"), "short");
    BOOST_CHECK(next_cas() > max_cas);
    // appending resumes in a fresh segment, and new data survives the next restart too
    do_set(*s, "post", "restart");
  }
  clk.advance(200);  // "ttl" has expired by the next start
  {
    auto s = open_shard(cfg, clk);
    BOOST_CHECK_EQUAL(value_of(*s, "post"), "restart");
    BOOST_CHECK_EQUAL(value_of(*s, "ttl"), "<miss>");
    BOOST_CHECK_EQUAL(value_of(*s, key(1)), val(1));
    // flush removes the files: nothing comes back
    do_flush(*s, 0);
  }
  {
    auto s = open_shard(cfg, clk);
    BOOST_CHECK_EQUAL(s->stats().recovered_items, 0u);
    BOOST_CHECK_EQUAL(value_of(*s, key(1)), "<miss>");
  }
}

BOOST_AUTO_TEST_CASE(kill9_with_torn_and_corrupt_records) {
  temp_dir tmp;
  fake_clock clk;
  const shard_config cfg = disk_config(tmp.path);
  const int n = 2000;
  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    // Child: no Boost.Test here; failures are exit codes.
    std::string err;
    auto s = shard::open(cfg, clk.fn(), err);
    if (!s) ::_exit(2);
    for (int i = 0; i < n; ++i)
      if (do_set(*s, key(i), val(i)).st != status::stored) ::_exit(3);
    for (int i = 0; i < n; i += 7)
      if (do_delete(*s, key(i)).st != status::deleted) ::_exit(4);
    for (int i = 0; i < n; i += 5)
      if (do_set(*s, key(i), new_val(i)).st != status::stored) ::_exit(5);
    // Corrupt an acknowledged record's value (a bad checksum with plausible lengths).
    const auto [cpath, coff] = find_record(shard_dir(cfg), key(1));
    if (cpath.empty()) ::_exit(6);
    int fd = ::open(cpath.c_str(), O_RDWR);
    const char flip = 'X';
    if (::pwrite(fd, &flip, 1, off_t(coff + sizeof(record_header) + key(1).size() + 2)) != 1)
      ::_exit(7);
    ::close(fd);
    // A torn last record: header and part of the key written, magic never published.
    const std::string last = segment_files(shard_dir(cfg)).back();
    const std::string img = read_file(last);
    const size_t end = records_end(img);
    std::string torn = record_image("torn-key", std::string(500, 't'));
    std::memset(torn.data(), 0, 4);
    torn.resize(sizeof(record_header) + 4);
    fd = ::open(last.c_str(), O_RDWR);
    if (::pwrite(fd, torn.data(), torn.size(), off_t(end)) != ssize_t(torn.size())) ::_exit(8);
    ::close(fd);
    ::raise(SIGKILL);
    ::_exit(9);
  }
  int wstatus = 0;
  BOOST_REQUIRE_EQUAL(::waitpid(pid, &wstatus, 0), pid);
  BOOST_REQUIRE_MESSAGE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL,
                        "child exit status " << (WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1));

  auto s = open_shard(cfg, clk);
  const shard_stats& st = s->stats();
  BOOST_CHECK_EQUAL(st.recovery_skipped, 2u);  // the corrupt record and the torn tail
  uint64_t max_cas = 0;
  for (int i = 0; i < n; ++i) {
    const result r = do_get(*s, key(i));
    const std::string v = r.st == status::hit ? std::string(r.value.view()) : "<miss>";
    max_cas = std::max(max_cas, r.cas);
    if (i == 1) BOOST_CHECK_EQUAL(v, "<miss>");  // never served corrupt
    else if (i % 5 == 0) BOOST_REQUIRE_EQUAL(v, new_val(i));
    else if (i % 7 == 0) BOOST_REQUIRE_EQUAL(v, "<miss>");
    else BOOST_REQUIRE_EQUAL(v, val(i));
  }
  BOOST_CHECK_EQUAL(value_of(*s, "torn-key"), "<miss>");
  BOOST_CHECK(next_cas() > max_cas);
  // the shard keeps working, and a second restart is clean
  do_set(*s, key(1), "rewritten");
  s.reset();
  s = open_shard(cfg, clk);
  BOOST_CHECK_EQUAL(value_of(*s, key(1)), "rewritten");
  BOOST_CHECK_EQUAL(value_of(*s, key(2)), val(2));
}

BOOST_AUTO_TEST_CASE(kill9_mid_stream_keeps_acknowledged_items) {
  temp_dir tmp;
  fake_clock clk;
  const shard_config cfg = disk_config(tmp.path);
  const auto [pid, acks] = fork_shard_child(cfg, clk, [](shard& s, int fd) {
    for (int i = 0; i < 20000; ++i) {
      if (do_set(s, key(i), val(i)).st != status::stored) ::_exit(3);
      if (::write(fd, &i, sizeof i) != sizeof i) ::_exit(4);  // acknowledged
    }
    for (;;) ::pause();
  });
  int last = -1, i = 0;
  while (last < 3000 && ::read(acks, &i, sizeof i) == sizeof i) last = i;
  ::kill(pid, SIGKILL);
  while (::read(acks, &i, sizeof i) == sizeof i) last = i;  // acks sent before the kill
  ::close(acks);
  int wstatus = 0;
  BOOST_REQUIRE_EQUAL(::waitpid(pid, &wstatus, 0), pid);
  BOOST_REQUIRE(WIFSIGNALED(wstatus));
  BOOST_REQUIRE(last >= 3000);

  auto s = open_shard(cfg, clk);
  BOOST_CHECK_LE(s->stats().recovery_skipped, 1u);
  for (int k = 0; k <= last; ++k) BOOST_REQUIRE_EQUAL(value_of(*s, key(k)), val(k));
  BOOST_CHECK(s->stats().recovered_items >= uint64_t(last + 1));
}

// A kill -9 while a key is overwritten leaves its old value or the new one, never a miss:
// the record replaced used to be marked dead before the new one was copied, so a kill during
// the copy of a large value (a torn record, skipped at recovery) lost the key's acknowledged
// value (an audit's 16 trials of four writers: a key missing after 6 of them). Each trial
// kills a child overwriting one key with values of 900 KB (their copy is most of its time).
BOOST_AUTO_TEST_CASE(kill9_during_an_overwrite_keeps_the_old_or_the_new_value) {
  constexpr size_t size = 900000;
  auto version_value = [](int v) {
    std::string s = "version-" + std::to_string(v) + ":";
    s.resize(size, char('a' + v % 26));
    return s;
  };
  std::mt19937 rng(7);
  int missing = 0, trials = 0;
  for (; trials < 12; ++trials) {
    temp_dir tmp;
    fake_clock clk;
    const shard_config cfg = disk_config(tmp.path);
    const auto [pid, acks] = fork_shard_child(cfg, clk, [&](shard& s, int fd) {
      for (int v = 0;; ++v) {
        if (do_set(s, "k", version_value(v)).st != status::stored) ::_exit(3);
        if (v == 0 && ::write(fd, &v, sizeof v) != sizeof v) ::_exit(4);  // acknowledged
      }
    });
    int first = -1;
    BOOST_REQUIRE_EQUAL(::read(acks, &first, sizeof first), ssize_t(sizeof first));
    std::this_thread::sleep_for(std::chrono::microseconds(1000 + rng() % 20000));
    ::kill(pid, SIGKILL);
    ::close(acks);
    int wstatus = 0;
    BOOST_REQUIRE_EQUAL(::waitpid(pid, &wstatus, 0), pid);
    BOOST_REQUIRE(WIFSIGNALED(wstatus));
    auto s = open_shard(cfg, clk);
    const result r = do_get(*s, "k");
    if (r.st != status::hit) {
      ++missing;
      continue;
    }
    const std::string v(r.value.view());
    const size_t colon = v.find(':');
    BOOST_REQUIRE(v.rfind("version-", 0) == 0 && colon != std::string::npos);
    BOOST_REQUIRE_EQUAL(v, version_value(std::stoi(v.substr(8, colon - 8))));  // whole
  }
  BOOST_CHECK_MESSAGE(missing == 0, "the key was missing after " << missing << " of " << trials
                                                                 << " kills");
}

// A restart of a full shard keeps every item: recovery made room for a fresh active segment
// under -m, evicting the oldest segment at every restart (an audit: 60 items before a clean
// SIGTERM, 40 after the restart on a full disk); now records go on after the newest segment's
// last one when its tail is unwritten.
BOOST_AUTO_TEST_CASE(a_restart_of_a_full_shard_evicts_nothing) {
  temp_dir tmp;
  fake_clock clk;
  const shard_config cfg = disk_config(tmp.path);  // 64 KiB segments, 16 MiB
  std::vector<std::string> held;
  {
    auto s = open_shard(cfg, clk);
    const auto big = [](int i) { return std::string(2000, 'b') + std::to_string(i); };
    for (int i = 0; i < 12000; ++i)
      BOOST_REQUIRE(do_set(*s, key(i), big(i)).st == status::stored);
    BOOST_REQUIRE(s->stats().evictions > 0);  // full
    for (int i = 0; i < 12000; ++i)
      if (value_of(*s, key(i)) == big(i)) held.push_back(key(i));
  }
  for (int round = 0; round < 3; ++round) {
    auto s = open_shard(cfg, clk);
    BOOST_CHECK_EQUAL(s->stats().evictions, 0u);
    BOOST_CHECK_EQUAL(s->stats().recovered_items, held.size());
    size_t kept = 0;
    for (const auto& k : held) kept += value_of(*s, k) != "<miss>";
    BOOST_CHECK_EQUAL(kept, held.size());
    // A write goes on after the last recovered record (or takes a segment as any write at
    // the limit does) and survives the next restart with everything else then present.
    const std::string after = "after-" + std::to_string(round);
    BOOST_REQUIRE(do_set(*s, after, "x").st == status::stored);
    held.push_back(after);
    std::vector<std::string> present;
    for (const auto& k : held)
      if (value_of(*s, k) != "<miss>") present.push_back(k);
    held = present;
  }
}

// A win token handed out (meta W) stays handed out across a restart: it lived in the index
// only, so the next client after a restart won the recache again (a second W for one item).
BOOST_AUTO_TEST_CASE(a_win_token_handed_out_survives_a_restart) {
  temp_dir tmp;
  fake_clock clk;
  const shard_config cfg = disk_config(tmp.path);
  auto recache = [](shard& s) {
    op o;
    o.kind = op_kind::get;
    o.key = "k";
    o.recache = true;
    o.recache_ttl = 30;
    return s.execute(o);
  };
  {
    auto s = open_shard(cfg, clk);
    do_set(*s, "k", "value", 100);
    do_set(*s, "other", "value", 100);
    clk.advance(80);  // 20 s left under a 30 s recache: the first asker wins
    BOOST_REQUIRE(recache(*s).win);
    BOOST_REQUIRE(!recache(*s).win);
  }
  auto s = open_shard(cfg, clk);
  const result again = recache(*s);
  BOOST_CHECK(!again.win);
  BOOST_CHECK(again.already_won);
  // A new write of the key is a new item: no token out.
  do_set(*s, "k", "fresh", 10);
  s.reset();
  s = open_shard(cfg, clk);
  BOOST_CHECK(recache(*s).win);
}

BOOST_AUTO_TEST_CASE(cas_values_after_a_restart_exceed_those_of_items_gone_from_disk) {
  // A client may still hold the CAS of an item deleted or flushed before a restart; the
  // restarted process must not hand that value to a new item (its `cas` would then succeed
  // against data it never saw). A child process stands for the earlier run: its counter
  // starts where this process's counter is, as a new process's would start from the disk.
  temp_dir tmp;
  fake_clock clk;
  const shard_config cfg = disk_config(tmp.path);
  const auto [pid, out] = fork_shard_child(cfg, clk, [](shard& s, int fd) {
    uint64_t top = 0;
    for (int i = 0; i < 100; ++i) top = std::max(top, do_set(s, key(i), val(i)).cas);
    for (int i = 50; i < 100; ++i) do_delete(s, key(i));
    top = std::max(top, do_set(s, "flushed-later", "x").cas);
    do_flush(s, 0);  // every file goes: nothing on disk remembers these values
    if (::write(fd, &top, sizeof top) != sizeof top) ::_exit(4);
  });
  uint64_t child_top = 0;
  BOOST_REQUIRE_EQUAL(::read(out, &child_top, sizeof child_top), ssize_t(sizeof child_top));
  ::close(out);
  int wstatus = 0;
  BOOST_REQUIRE_EQUAL(::waitpid(pid, &wstatus, 0), pid);
  BOOST_REQUIRE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  auto s = open_shard(cfg, clk);
  BOOST_REQUIRE_EQUAL(s->stats().recovered_items, 0u);
  const result r = do_set(*s, "new", "v");
  BOOST_CHECK_MESSAGE(r.cas > child_top, "CAS " << r.cas << " after the restart, the earlier run "
                                                  "handed out up to " << child_top);
}

BOOST_AUTO_TEST_CASE(a_recovered_client_chosen_cas_does_not_wrap_the_counter) {
  // Meta `ms ... E<n>` stores a CAS the client chose; 2^64-1 on disk must not set the counter
  // to its last value (the next CAS would wrap to 0, "no CAS", and then repeat old values).
  temp_dir tmp;
  fake_clock clk;
  const shard_config cfg = disk_config(tmp.path);
  uint64_t before = 0;
  {
    auto s = open_shard(cfg, clk);
    before = do_set(*s, "plain", "v").cas;
  }
  fs::create_directories(shard_dir(cfg));
  write_file(shard_dir(cfg) + "/seg-900.dat", record_image("chosen", "v", UINT64_MAX) +
                                                 std::string(4096, '\0'));
  write_file(shard_dir(cfg) + "/seg-901.dat", record_image("ordinary", "v", before + 100) +
                                                 std::string(4096, '\0'));
  auto s = open_shard(cfg, clk);
  BOOST_CHECK_EQUAL(do_get(*s, "chosen").cas, UINT64_MAX);
  const uint64_t after = do_set(*s, "next", "v").cas;
  BOOST_CHECK_MESSAGE(after > before + 100, "CAS " << after << " after recovering 2^64-1 and "
                                                     << before + 100);
  BOOST_CHECK(after < UINT64_MAX / 2);
}

BOOST_AUTO_TEST_CASE(a_file_the_system_cannot_open_now_is_kept) {
  // Too many open files (or no memory) is the system's fault, not the file's: recovery fails
  // with an error naming the file and deletes nothing (once, such files were unlinked).
  temp_dir tmp;
  fake_clock clk;
  const shard_config cfg = disk_config(tmp.path);
  {
    auto s = open_shard(cfg, clk);
    for (int i = 0; i < 400; ++i) do_set(*s, key(i), std::string(1000, 'v'));  // > 2 segments
  }
  const auto files = segment_files(shard_dir(cfg));
  BOOST_REQUIRE_GE(files.size(), 3u);
  size_t open_fds = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) ++open_fds;
  rlimit old{};
  BOOST_REQUIRE_EQUAL(::getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = open_fds + 1;  // the directory listing, then one segment file: no more
  BOOST_REQUIRE_EQUAL(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::string err;
  auto s = shard::open(cfg, clk.fn(), err);
  BOOST_REQUIRE_EQUAL(::setrlimit(RLIMIT_NOFILE, &old), 0);
  BOOST_CHECK(s == nullptr);
  BOOST_CHECK_MESSAGE(err.find("cannot recover") != std::string::npos, err);
  BOOST_CHECK(segment_files(shard_dir(cfg)) == files);  // every file still there
  s.reset();
  auto again = open_shard(cfg, clk);  // with file descriptors to spare, all comes back
  BOOST_CHECK_EQUAL(value_of(*again, key(0)), std::string(1000, 'v'));
  BOOST_CHECK_EQUAL(again->stats().recovery_skipped, 0u);
}

// A data directory on a full file system: a segment file's blocks are allocated when it is
// made (once, the first store into a page of a sparse file raised SIGBUS and the node died).
// The shard evicts its oldest segments to make room, as for its memory limit, and answers
// no_memory when evicting everything does not make room. The file system is a tmpfs mount of
// 512 KiB in a mount namespace of a child process (root only).
BOOST_AUTO_TEST_CASE(a_full_data_directory_evicts_instead_of_crashing) {
  temp_dir tmp;
  const std::string big = tmp.path + "/big";
  fs::create_directories(big);
  const auto [pid, from_child] = fork_child([&](int to_parent) {
    std::signal(SIGBUS, SIG_DFL);  // (Boost.Test's handler would turn it into an exit code)
    if (::unshare(CLONE_NEWNS) != 0 || ::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("bifrost-test", big.c_str(), "tmpfs", 0, "size=512k") != 0)
      return 77;
    fake_clock clk;
    std::ostringstream out;
    shard_config cfg = disk_config(big);  // 64 KiB segments, 16 MiB of memory: the disk binds
    std::vector<std::string> warnings;
    cfg.warn = [&](const std::string& line) { warnings.push_back(line); };
    int stored = 0, last_ok = 0;
    {
      std::string err;
      auto s = shard::open(cfg, clk.fn(), err);
      if (!s) return 2;
      for (int i = 0; i < 1000; ++i) {  // 2 MB of values through 512 KiB
        if (do_set(*s, key(i), std::string(2000, char('a' + i % 26))).st == status::stored) ++stored;
        if (i == 499) clk.advance(59);  // (still within the minute of the first line)
      }
      for (int i = 999; i >= 0 && value_of(*s, key(i)) == std::string(2000, char('a' + i % 26)); --i)
        ++last_ok;
      out << stored << ' ' << last_ok << ' ' << s->stats().disk_full_evictions << ' '
          << s->stats().evictions << ' ';
      // One line for the first disk-full eviction, none more within the minute; a minute
      // later the next one brings a line with the count of every one not reported yet.
      auto count_in = [&](const std::string& line) -> long {
        const std::string at = " is full: ";  // ("the data directory <big>/<shard's> is ...")
        const size_t p = line.find(at);
        if (line.find(big + "/") == std::string::npos || p == std::string::npos) return -1;
        return std::atol(line.c_str() + p + at.size());
      };
      const long before = long(s->stats().disk_full_evictions);
      const long first = warnings.size() == 1 ? count_in(warnings[0]) : -1;
      clk.advance(1);
      for (int i = 0; i < 200; ++i) do_set(*s, key(i), std::string(2000, 'b'));
      const long total = long(s->stats().disk_full_evictions);
      const long second = warnings.size() == 2 ? count_in(warnings[1]) : -1;
      out << (first >= 1 && before > first) << ' '
          << (second > before - first && first + second <= total) << ' ';
      {  // the rest of the disk, to the last block
        std::ofstream junk(big + "/junk", std::ios::binary);
        const std::string block(4096, 'j');
        for (int i = 0; i < 1024 && junk.write(block.data(), std::streamsize(block.size())); ++i)
          junk.flush();
      }
      std::string err2;
      out << (segment::create(1, 4096, big + "/probe", nullptr, err2) == nullptr) << ' ';
      // a delayed flush on the full disk still outlives the restart below (kept in place)
      do_flush(*s, 600);
    }
    fs::remove(big + "/junk");
    clk.advance(601);
    {
      std::string err;
      auto s = shard::open(cfg, clk.fn(), err);  // after the flush's deadline: nothing back
      if (!s) return 3;
      out << s->stats().recovered_items << ' ';
      for (int i = 0; i < 300; ++i)  // fill it again for the test below
        do_set(*s, key(i + 700), std::string(2000, char('a' + (i + 700) % 26)));
    }
    {
      std::string err;  // a value larger than the whole disk: nothing to evict makes room
      auto s = shard::open(cfg, clk.fn(), err);
      if (!s) return 4;
      out << int(do_set(*s, "huge", std::string(900000, 'x')).st) << ' '
          << (value_of(*s, "huge") == "<miss>") << ' '
          << (value_of(*s, key(999)) == std::string(2000, char('a' + 999 % 26))) << ' '
          << (do_set(*s, "after", "v").st == status::stored && value_of(*s, "after") == "v");
    }
    const std::string line = out.str();
    return ::write(to_parent, line.data(), line.size()) == ssize_t(line.size()) ? 0 : 5;
  });
  std::string line;
  char buf[256];
  for (ssize_t n; (n = ::read(from_child, buf, sizeof buf)) > 0;) line.append(buf, size_t(n));
  ::close(from_child);
  int wst = 0;
  BOOST_REQUIRE_EQUAL(::waitpid(pid, &wst, 0), pid);
  BOOST_REQUIRE_MESSAGE(!WIFSIGNALED(wst), "the child died of signal " << WTERMSIG(wst));
  if (WEXITSTATUS(wst) == 77) {
    BOOST_WARN_MESSAGE(false, "not run: cannot mount a tmpfs in a new mount namespace (not root?)");
    return;
  }
  BOOST_REQUIRE_EQUAL(WEXITSTATUS(wst), 0);
  std::istringstream in(line);
  int stored = -1, last_ok = -1, full_evictions = -1, evictions = -1, disk_was_full = -1, recovered = -1;
  int huge_status = -1, huge_missed = -1, kept = -1, after_ok = -1, one_line = -1, next_line = -1;
  in >> stored >> last_ok >> full_evictions >> evictions >> one_line >> next_line >>
      disk_was_full >> recovered >> huge_status >> huge_missed >> kept >> after_ok;
  BOOST_TEST_MESSAGE("full disk: " << line);
  BOOST_CHECK_EQUAL(stored, 1000);       // every store made room by evicting
  BOOST_CHECK_GE(last_ok, 100);          // the newest items read back
  BOOST_CHECK_LT(last_ok, 1000);         // (the oldest went: 512 KiB hold about 230)
  BOOST_CHECK_GT(full_evictions, 0);
  BOOST_CHECK_GT(evictions, 0);
  BOOST_CHECK_EQUAL(one_line, 1);   // one warning for many disk-full evictions in a minute
  BOOST_CHECK_EQUAL(next_line, 1);  // the next, a minute on, counts those not reported
  BOOST_CHECK_EQUAL(disk_was_full, 1);   // (not even a page left)
  BOOST_CHECK_EQUAL(recovered, 0);       // the flush given on the full disk was kept
  BOOST_CHECK_EQUAL(huge_status, int(status::no_memory));
  BOOST_CHECK_EQUAL(huge_missed, 1);
  BOOST_CHECK_EQUAL(kept, 1);      // nothing was evicted for a value the disk cannot hold
  BOOST_CHECK_EQUAL(after_ok, 1);  // the shard goes on
}

// A delayed flush_all outlives a restart: before its deadline it is still pending (and
// flushes what was recovered and what came since), after it the recovered items are gone.
// Once, it lived only in memory: a restart before the deadline brought the items back for good.
BOOST_AUTO_TEST_CASE(a_delayed_flush_survives_a_restart) {
  temp_dir tmp;
  fake_clock clk;
  const shard_config cfg = disk_config(tmp.path);
  const std::string flag = shard_dir(cfg) + "/flush_at";
  auto pending_at = [&] { return read_file(flag); };  // the deadline kept, 0 = none
  const std::string none = "0000000000\n";
  {
    auto s = open_shard(cfg, clk);
    for (int i = 0; i < 50; ++i) do_set(*s, key(i), val(i));
    BOOST_CHECK(do_flush(*s, 600).st == status::ok);
    BOOST_CHECK_EQUAL(pending_at(), std::to_string(clk.now() + 600) + "\n");
  }
  {  // restarted before the deadline: pending still
    auto s = open_shard(cfg, clk);
    BOOST_CHECK_EQUAL(s->stats().recovered_items, 50u);
    BOOST_CHECK_EQUAL(value_of(*s, key(7)), val(7));
    do_set(*s, "since", "v");  // stored before the deadline: flushed too (memcached)
    clk.advance(601);
    BOOST_CHECK_EQUAL(value_of(*s, key(7)), "<miss>");
    BOOST_CHECK_EQUAL(value_of(*s, "since"), "<miss>");
    BOOST_CHECK_EQUAL(pending_at(), none);
    do_set(*s, "after", "v");  // after the deadline: stays
  }
  {
    auto s = open_shard(cfg, clk);
    BOOST_CHECK_EQUAL(s->stats().recovered_items, 1u);
    BOOST_CHECK_EQUAL(value_of(*s, "after"), "v");
    BOOST_CHECK(do_flush(*s, 600).st == status::ok);
  }
  clk.advance(700);
  {  // restarted after the deadline: what it recovers predates it
    auto s = open_shard(cfg, clk);
    BOOST_CHECK_EQUAL(s->stats().recovered_items, 0u);
    BOOST_CHECK_EQUAL(value_of(*s, "after"), "<miss>");
    BOOST_CHECK_EQUAL(pending_at(), none);
    do_set(*s, "new", "v");
  }
  {  // applied once only
    auto s = open_shard(cfg, clk);
    BOOST_CHECK_EQUAL(value_of(*s, "new"), "v");
    // a later flush replaces a pending one; an immediate one cancels it
    BOOST_CHECK(do_flush(*s, 600).st == status::ok);
    BOOST_CHECK(do_flush(*s, 1200).st == status::ok);
  }
  clk.advance(700);
  {
    auto s = open_shard(cfg, clk);
    BOOST_CHECK_EQUAL(value_of(*s, "new"), "v");  // 700 < 1200
    do_flush(*s, 0);
    BOOST_CHECK_EQUAL(pending_at(), none);
    do_set(*s, "kept", "v");
  }
  clk.advance(600);
  {
    auto s = open_shard(cfg, clk);
    BOOST_CHECK_EQUAL(value_of(*s, "kept"), "v");
  }
  for (const char* garbage : {"garbage", "", "12345", "99999999999\n"}) {  // no deadline
    write_file(flag, garbage);
    auto s = open_shard(cfg, clk);
    BOOST_CHECK_EQUAL(value_of(*s, "kept"), "v");
    BOOST_CHECK_EQUAL(pending_at(), none);
  }
}

// An immediate flush_all releases its segments one file at a time; a kill -9 on the way
// leaves the rest. Recovery flushes them all the same (the flush is due in flush_at until
// the last file is gone): all the items or none come back, never the part not unlinked yet,
// as they did before. The kills land at delays spread over one whole flush's duration.
BOOST_AUTO_TEST_CASE(a_flush_cut_short_by_kill9_is_done_at_recovery) {
  fake_clock clk;
  const int n = 3000;  // ~12 MiB in 64 KiB segments: ~190 files to unlink
  const std::string value(4000, 'f');
  // One run: fills a fresh shard, says so, flushes, says so again and waits to be killed.
  auto run = [&](const shard_config& cfg) {
    return fork_shard_child(cfg, clk, [&](shard& s, int fd) {
      for (int i = 0; i < n; ++i)
        if (do_set(s, key(i), value).st != status::stored) return;
      char c = 'f';
      if (::write(fd, &c, 1) != 1) return;
      do_flush(s, 0);
      if (::write(fd, &c, 1) != 1) return;
      ::pause();
    });
  };
  auto wait_byte = [](int fd) {
    char c;
    return ::read(fd, &c, 1) == 1;
  };
  // One whole flush, timed.
  std::chrono::microseconds whole{0};
  {
    temp_dir tmp;
    const auto [pid, fd] = run(disk_config(tmp.path));
    BOOST_REQUIRE(wait_byte(fd));
    const auto t0 = std::chrono::steady_clock::now();
    BOOST_REQUIRE(wait_byte(fd));
    whole = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - t0);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::close(fd);
  }
  BOOST_TEST_MESSAGE("one flush of " << n << " items took " << whole.count() << " us");
  int none = 0, all = 0;
  const int trials = 12;
  for (int t = 0; t < trials; ++t) {
    temp_dir tmp;
    const shard_config cfg = disk_config(tmp.path);
    const auto [pid, fd] = run(cfg);
    BOOST_REQUIRE(wait_byte(fd));
    std::this_thread::sleep_for(whole * t / trials);
    ::kill(pid, SIGKILL);
    int wstatus = 0;
    BOOST_REQUIRE_EQUAL(::waitpid(pid, &wstatus, 0), pid);
    ::close(fd);
    auto s = open_shard(cfg, clk);
    const uint64_t back = s->stats().recovered_items;
    BOOST_CHECK_MESSAGE(back == 0 || back == uint64_t(n),
                        "killed " << (whole * t / trials).count() << " us into the flush: "
                                  << back << " of " << n << " items came back");
    none += back == 0;
    all += back == uint64_t(n);
    if (back == 0) {  // done for good: a later restart keeps what came since
      do_set(*s, "since", "v");
      s.reset();
      s = open_shard(cfg, clk);
      BOOST_CHECK_EQUAL(value_of(*s, "since"), "v");
    }
  }
  BOOST_TEST_MESSAGE("kills that found the flush done: " << none << ", not begun: " << all);
}

BOOST_AUTO_TEST_CASE(garbage_files_are_skipped) {
  temp_dir tmp;
  fake_clock clk;
  shard_config cfg = disk_config(tmp.path);
  const std::string dir = shard_dir(cfg);
  fs::create_directories(dir);
  std::mt19937_64 rng(42);
  auto random_bytes = [&](size_t n) {
    std::string s(n, '\0');
    for (auto& c : s) c = char(rng());
    return s;
  };
  write_file(dir + "/seg-1.dat", random_bytes(64 << 10));
  std::string trunc = record_image("trunc", std::string(1000, 'x'));
  trunc.resize(500);
  write_file(dir + "/seg-2.dat", record_image("a", "1") + trunc);  // "a" survives
  write_file(dir + "/seg-3.dat", "");
  fs::create_directories(dir + "/seg-4.dat");
  {
    std::string huge = record_image("huge", "v");
    record_header h;
    std::memcpy(&h, huge.data(), sizeof h);
    h.value_len = 0x7fffffff;
    std::memcpy(huge.data(), &h, sizeof h);
    write_file(dir + "/seg-5.dat", huge);
  }
  write_file(dir + "/seg-6.dat", record_image("good", "good value") + random_bytes(3000));
  {
    std::string zero_key = record_image("z", "v");
    zero_key[6] = 0;  // key_len 0
    write_file(dir + "/seg-7.dat", zero_key);
  }
  write_file(dir + "/seg-8.dat", "short junk");
  write_file(dir + "/seg-999999999999999999999999.dat", random_bytes(100));
  write_file(dir + "/notes.txt", "not a segment");
  {
    std::string expired = record_image("expired", "v", 5, k_t0 - 10);
    std::string bad_version = record_image("badver", "v");
    bad_version[4] = 9;
    write_file(dir + "/seg-9.dat", expired + bad_version);
  }

  auto s = open_shard(cfg, clk);
  const shard_stats& st = s->stats();
  BOOST_CHECK_EQUAL(value_of(*s, "good"), "good value");
  BOOST_CHECK_EQUAL(value_of(*s, "a"), "1");
  BOOST_CHECK_EQUAL(value_of(*s, "expired"), "<miss>");
  BOOST_CHECK_EQUAL(value_of(*s, "badver"), "<miss>");
  BOOST_CHECK_EQUAL(value_of(*s, "huge"), "<miss>");
  BOOST_CHECK_EQUAL(st.recovered_items, 2u);
  // seg-1 random, seg-2 torn tail, seg-3 empty, seg-4 dir, seg-5 huge, seg-6 garbage tail,
  // seg-7 zero key, seg-8 junk, seg-9 bad version
  BOOST_CHECK_EQUAL(st.recovery_skipped, 9u);
  BOOST_CHECK_EQUAL(do_set(*s, "new", "works").st, status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "new"), "works");
  BOOST_CHECK(next_cas() > 1000u);
}

BOOST_AUTO_TEST_CASE(random_and_mutated_files_never_crash) {
  std::mt19937_64 rng(7);
  fake_clock clk;
  for (int iter = 0; iter < 300; ++iter) {
    temp_dir tmp;
    shard_config cfg = disk_config(tmp.path);
    const std::string dir = shard_dir(cfg);
    fs::create_directories(dir);
    const int files = 1 + int(rng() % 3);
    for (int f = 0; f < files; ++f) {
      std::string img;
      const int records = int(rng() % 20);
      for (int r = 0; r < records; ++r)
        img += record_image("k" + std::to_string(rng() % 10), std::string(rng() % 300, 'v'),
                            rng() % 100000 + 1);
      img.resize(img.size() + rng() % 2000, '\0');
      const int flips = int(rng() % 8);
      for (int k = 0; k < flips && !img.empty(); ++k) img[rng() % img.size()] = char(rng());
      if (rng() % 4 == 0 && !img.empty()) img.resize(rng() % img.size());
      if (rng() % 8 == 0) {  // pure noise with sprinkled magics
        img.assign(rng() % 8192, '\0');
        for (auto& c : img) c = char(rng());
        for (size_t off = 0; off + 8 <= img.size(); off += 8)
          if (rng() % 3 == 0) {
            const uint32_t m = k_record_magic;
            std::memcpy(img.data() + off, &m, 4);
            img[off + 4] = char(k_record_version);
          }
      }
      write_file(dir + "/seg-" + std::to_string(f + 1) + ".dat", img);
    }
    std::string err;
    auto s = shard::open(cfg, clk.fn(), err);
    BOOST_REQUIRE_MESSAGE(s != nullptr, err);
    for (int k = 0; k < 10; ++k) do_get(*s, "k" + std::to_string(k));  // whatever survived
    BOOST_REQUIRE_EQUAL(do_set(*s, "fresh", "v").st, status::stored);
    BOOST_REQUIRE_EQUAL(value_of(*s, "fresh"), "v");
  }
}

BOOST_AUTO_TEST_CASE(open_reports_errors) {
  fake_clock clk;
  shard_config cfg = small_config();
  cfg.data_dir = "/proc/self/definitely/not/writable";
  std::string err;
  auto s = shard::open(cfg, clk.fn(), err);
  BOOST_CHECK(s == nullptr);
  BOOST_CHECK(!err.empty());
  BOOST_TEST_MESSAGE("open error: " << err);
}

BOOST_AUTO_TEST_CASE(pruned_items_do_not_come_back_after_a_restart) {
  temp_dir d;
  fake_clock clk;
  const auto cfg = disk_config(d.path);
  auto key = [](int i) { return "p" + std::to_string(i); };
  {
    auto s = open_shard(cfg, clk);
    for (int i = 0; i < 400; ++i) do_set(*s, key(i), "v");
    s->begin_prune();
    while (!s->prune([](std::string_view k) { return k.back() == '7'; }, clk.now() + 1, 50).done) {}
    BOOST_CHECK_EQUAL(s->stats().pruned, 40u);
  }
  auto s = open_shard(cfg, clk);
  BOOST_CHECK_EQUAL(s->stats().curr_items, 360u);
  BOOST_CHECK_EQUAL(value_of(*s, key(17)), "<miss>");
  BOOST_CHECK_EQUAL(value_of(*s, key(18)), "v");
}

BOOST_AUTO_TEST_SUITE_END()

// Log lines on stderr (actors/log.hpp): each stamped with the UTC time to the millisecond,
// whole (a long line too), and lines of several threads never interleaved.
#include "actors/log.hpp"

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

// Runs `fn` with stderr sent to a temporary file; returns what was written.
template <class F>
std::string captured_stderr(F fn) {
  std::fflush(stderr);
  char path[] = "/tmp/bifrost-test-log-XXXXXX";
  int fd = ::mkstemp(path);
  BOOST_REQUIRE(fd >= 0);
  ::unlink(path);
  int saved = ::dup(STDERR_FILENO);
  ::dup2(fd, STDERR_FILENO);
  fn();
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::string out;
  char buf[65536];
  ::lseek(fd, 0, SEEK_SET);
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
    out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(log_tests)

BOOST_AUTO_TEST_CASE(a_line_starts_with_the_utc_time_to_the_millisecond) {
  auto realtime = [] {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);  // (log_line's clock: time() may lag it by a tick)
    return ts.tv_sec;
  };
  const std::time_t before = realtime();
  auto out =
    captured_stderr([] { bifrost::log_line("bifrost cluster: member '%s' %d\n", "n2", 7); });
  const std::time_t after = realtime();
  std::smatch m;
  BOOST_REQUIRE_MESSAGE(
    std::regex_match(out, m,
                     std::regex(R"((\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.\d{3}Z )"
                                R"(bifrost cluster: member 'n2' 7\n)")),
    out);
  std::tm t{};
  t.tm_year = std::stoi(m[1]) - 1900;
  t.tm_mon = std::stoi(m[2]) - 1;
  t.tm_mday = std::stoi(m[3]);
  t.tm_hour = std::stoi(m[4]);
  t.tm_min = std::stoi(m[5]);
  t.tm_sec = std::stoi(m[6]);
  const std::time_t stamped = ::timegm(&t);  // (UTC, not the local zone)
  BOOST_TEST(stamped >= before);
  BOOST_TEST(stamped <= after);
}

BOOST_AUTO_TEST_CASE(long_lines_stay_whole_and_threads_do_not_interleave) {
  const std::string long_text(5000, 'x');
  auto out = captured_stderr([&] {
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < 50; ++i)
          bifrost::log_line("thread %d line %d %s\n", t, i, long_text.c_str());
      });
    for (auto& th : ts)
      th.join();
  });
  std::istringstream in(out);
  std::string line;
  int lines = 0;
  const std::regex shape(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z thread [0-3] line \d+ )");
  while (std::getline(in, line)) {
    ++lines;
    const size_t head = line.size() >= long_text.size() ? line.size() - long_text.size() : 0;
    BOOST_TEST((std::regex_match(line.substr(0, head), shape) &&
                line.compare(head, std::string::npos, long_text) == 0),
               "line " << lines << " is mixed");
  }
  BOOST_TEST(lines == 200);
}

BOOST_AUTO_TEST_SUITE_END()

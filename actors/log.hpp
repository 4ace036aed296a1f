// What a running node says on stderr (membership, links, signals, warnings): one line per
// call, stamped with the UTC time to the millisecond (RFC 3339, as `2026-12-07T23:12:01.123Z`),
// so that an operator can line a member's death up with a client's errors without journald.
// Errors in the command line or the configuration and failures to start, printed before the
// node serves, are not stamped (bifrostd.cpp): they answer the one who started it.
//
// Thread affinity: any thread. Each line is formatted first and handed to stderr in one
// write, so lines of different threads never interleave.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <string>

namespace bifrost {

/// vprintf-style: log_line's body, for a logger of its own (`fmt` ends with a newline).
[[gnu::format(printf, 1, 0)]] inline void log_linev(const char* fmt, va_list ap) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char stamp[40];
  size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &t);
  std::snprintf(stamp + n, sizeof stamp - n, ".%03ldZ ", ts.tv_nsec / 1000000);
  std::string line = stamp;
  va_list again;
  va_copy(again, ap);
  int len = std::vsnprintf(nullptr, 0, fmt, ap);
  if (len > 0) {
    size_t at = line.size();
    line.resize(at + static_cast<size_t>(len) + 1);
    std::vsnprintf(&line[at], static_cast<size_t>(len) + 1, fmt, again);
    line.resize(at + static_cast<size_t>(len));
  } else if (len < 0) {
    line += "(a log line that could not be formatted)\n";
  }
  va_end(again);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

/// printf-style; `fmt` ends with its own newline, as an fprintf(stderr, …) did.
[[gnu::format(printf, 1, 2)]] inline void log_line(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_linev(fmt, ap);
  va_end(ap);
}

} // namespace bifrost

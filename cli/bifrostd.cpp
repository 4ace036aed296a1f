// bifrostd: wiring only. Parses the configuration, starts a node, waits for SIGINT/SIGTERM,
// stops the node in order (see actors/node.hpp) and exits 0.
#include "actors/node.hpp"
#include "cli/config.hpp"

#include <csignal>
#include <cstdio>
#include <iostream>

int main(int argc, char** argv) {
  bifrost::actors::node_config cfg;
  auto outcome = bifrost::cli::parse_args(argc, argv, cfg);
  if (outcome.what == bifrost::cli::parse_outcome::action::exit) {
    (outcome.exit_code == 0 ? std::cout : std::cerr) << outcome.message;
    return outcome.exit_code;
  }
  // Block the stop signals before any thread starts, so that only sigwait() below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  std::string error;
  auto node = bifrost::actors::node::start(cfg, error);
  if (!node) {
    std::cerr << "bifrostd: " << error << "\n";
    return 1;
  }
  std::printf("bifrostd: serving memcached on %s:%u\n", cfg.listen.c_str(), node->port());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop_signals, &sig);
  if (cfg.verbosity > 0)
    std::fprintf(stderr, "bifrostd: signal %d, draining\n", sig);
  node->stop();
  return 0;
}

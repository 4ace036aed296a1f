// bifrostctl: wiring only. The command-line client of a Bifrost cluster; see cli/ctl.hpp.
#include "cli/ctl.hpp"

#include <iostream>

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);  // `get` may write a large value to stdout
  return bifrost::ctl::main(argc, argv, std::cout, std::cerr);
}

# The two commands of the README: `make run` and `make test`. Each installs what it needs.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo
ARGS ?=

.PHONY: setup build run test test-asan fuzz bench clean

setup:
	@bash scripts/setup.sh

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null

build: setup $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/bin/bifrostd $(ARGS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j 1

# Unit tests and black-box tests under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: setup
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DBIFROST_SANITIZE=ON >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j 1

# libFuzzer over every parser for FUZZ_SECONDS each (clang): the memcached parser and the data
# link's wire, each from its corpus (tests/<suite>/corpus/<target>).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = protocol/fuzz_memcache cluster/fuzz_link_wire
fuzz: setup
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -DBIFROST_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	set -e; for t in $(FUZZ_TARGETS); do \
	  suite=$${t%%/*}; name=$${t##*/}; \
	  cmake --build build-fuzz -j $(JOBS) --target $$name; \
	  mkdir -p build-fuzz/corpus/$$name; \
	  cp -n tests/$$suite/corpus/$$name/* build-fuzz/corpus/$$name/ 2>/dev/null || true; \
	  build-fuzz/bin/$$name -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus/$$name; \
	done

bench: build
	bench/compare

clean:
	rm -rf $(BUILD) build-asan build-fuzz

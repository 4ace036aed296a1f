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

# libFuzzer over every parser for FUZZ_SECONDS each (clang).
FUZZ_SECONDS ?= 60
fuzz: setup
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -DBIFROST_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build-fuzz -j $(JOBS) --target fuzz_memcache
	mkdir -p build-fuzz/corpus && cp -n tests/protocol/corpus/fuzz_memcache/* build-fuzz/corpus/ 2>/dev/null || true
	build-fuzz/bin/fuzz_memcache -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus

bench: build
	bench/compare

clean:
	rm -rf $(BUILD) build-asan build-fuzz

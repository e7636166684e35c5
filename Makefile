# The two commands of the README. Both install what is missing and build first.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: run test test-asan test-tsan build setup clean

setup:
	bash scripts/setup.sh

# -g1: line tables and function names (backtraces), no variables: a third less
# compile time than -g, which CI's budget feels.
build: setup
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/bin/kiln devices
	./$(BUILD)/bin/kiln demo
	./$(BUILD)/bin/kiln generate --model models/support-teacher --device best --temperature 0 \
	  --max-tokens 60 --prompt "$$(printf 'Customer: Hello, I forgot my password.\nAgent:')"

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	bash fuzz/run.sh 60
	$(MAKE) test-asan
	$(MAKE) test-tsan

# The suite again under AddressSanitizer and UndefinedBehaviorSanitizer
# (docs/testing.md), without the 2000-graph fuzz runs (200 graphs instead) and
# the every-op sweeps on lavapipe and the systolic simulator (10 minutes under
# ASan; their backends' own tests still run). Suppressions, each with its
# reason, are in scripts/sanitizers/. intercept_tls_get_addr=0: LLVM 16's
# __tls_get_addr interceptor takes a dynamic TLS block that happens to start 16
# bytes into a page for a pre-2.25 glibc header and reads the words before it,
# which crashed LeakSanitizer's tracer at the exit of tests that load NVRTC
# (docs/testing.md, 2026-12-06).
SAN_ENV = ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:intercept_tls_get_addr=0 \
  LSAN_OPTIONS=suppressions=$(CURDIR)/scripts/sanitizers/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  TSAN_OPTIONS=suppressions=$(CURDIR)/scripts/sanitizers/tsan.supp:halt_on_error=1:second_deadlock_stack=1
SAN_FLAGS = -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1"

test-asan: setup
	cmake -S . -B build-asan $(SAN_FLAGS) -DKILN_SANITIZE=address,undefined
	$(SAN_ENV) cmake --build build-asan -j $(JOBS)
	cd build-asan && $(SAN_ENV) ctest --output-on-failure -j $(JOBS) -LE fuzz -E '^EveryOp/(Vulkan|Systolic)Ops'
	$(SAN_ENV) ./build-asan/bin/kiln fuzz --graphs 200 --seed 1 --device cpu --device vulkan --out build-asan/fuzz-failures

# The runtime's concurrent parts (thread pool, kernel and disk caches, tuner)
# under ThreadSanitizer, on the CPU backend: the GPU backends are left out of
# this build (2 minutes on 2 cores, the tests 35 s).
test-tsan: setup
	cmake -S . -B build-tsan $(SAN_FLAGS) -DKILN_SANITIZE=thread -DKILN_WITH_VULKAN=OFF -DKILN_WITH_CUDA=OFF
	$(SAN_ENV) cmake --build build-tsan -j $(JOBS) --target test_runtime
	$(SAN_ENV) ./build-tsan/bin/test_runtime

clean:
	rm -rf $(BUILD)

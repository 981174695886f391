# kiln's front door. CMake does the building; this file names the jobs.
#   make            build the library, the CLI (build/kiln) and the tests
#   make test       set up what is missing, run the CPU suite, then the same
#                   suite built with AddressSanitizer + UBSan, then the
#                   conformance kernels compiled for sm_90a by NVRTC
#   make test-gpu   the suite on the first GPU (KILN_TEST_DEVICE=gpu)
#   make demo       the main job on the best device present
#   make bench      the benchmarks (bench/), printed with their baselines
BUILD      ?= build
BUILD_SAN  ?= build-san
BUILD_CLANG ?= build-clang
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=

.PHONY: all build build-san build-clang deps test test-fast test-gpu demo bench clean

all: build

deps:
	@sh scripts/setup-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(BUILD_SAN)/CMakeCache.txt:
	cmake -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON $(CMAKE_ARGS)

build-san: $(BUILD_SAN)/CMakeCache.txt
	cmake --build $(BUILD_SAN) -j $(JOBS)

# kiln must build warning-free under clang as well as gcc: when clang is
# installed, `make test` also compiles everything with it (no second run).
build-clang:
	@if command -v clang >/dev/null 2>&1; then \
	  cmake -S . -B $(BUILD_CLANG) -DCMAKE_C_COMPILER=clang \
	    -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) >/dev/null && \
	  cmake --build $(BUILD_CLANG) -j $(JOBS) >/dev/null && \
	  echo "clang build: clean"; \
	else echo "clang build: skipped (clang is not installed)"; fi

# The plain suite, then the sanitizer suite, then (when NVRTC is installed;
# no GPU needed) the conformance and doc tests again with every kernel also
# compiled for sm_90a; scripts/run-tests.sh adds the counts of all and
# prints the closing "N passed, N failed" line.
NVRTC_TARGET ?= sm_90a
test: deps build build-san build-clang
	@sh scripts/run-tests.sh --nvrtc $(NVRTC_TARGET) $(BUILD) $(BUILD_SAN)

test-fast: deps build
	@sh scripts/run-tests.sh $(BUILD)

test-gpu: deps build
	@KILN_TEST_DEVICE=gpu sh scripts/run-tests.sh $(BUILD)

demo: deps build
	@$(BUILD)/kiln_demo

bench: deps build
	@sh scripts/run-bench.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_CLANG) build-cache

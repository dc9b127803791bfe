# versync - the README's commands. CMake does the building; this file installs what is
# missing on a Debian machine, configures, builds and runs.
#   make demo    install missing packages, build into build/, run 'versync demo'
#   make test    the same set-up plus valgrind and PostgreSQL (the benchmark smoke test),
#                then the whole ctest suite
#   make test-sanitize   the suite again under AddressSanitizer + UndefinedBehaviorSanitizer
#   make memcheck        the unit tests under valgrind
#   make bench   the benchmark (bench/README.md); QUICK=1 for tiny sizes
#   make fuzz    the fuzz targets under libFuzzer, FUZZ_SECONDS each (tests/fuzz/README.md)

BUILD ?= build
SANITIZE_BUILD ?= build-sanitize
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PACKAGES = build-essential cmake pkg-config libzmq3-dev libczmq-dev libsqlite3-dev \
           libsodium-dev libmsgpack-dev sqlite3
# The test suite also smoke-tests the benchmark (PostgreSQL) and offers valgrind.
TEST_PACKAGES = $(PACKAGES) valgrind postgresql libpq-dev
# make fuzz builds with clang and its libFuzzer runtime.
FUZZ_PACKAGES = $(PACKAGES) clang libclang-rt-dev

.PHONY: all deps test-deps fuzz-deps build demo test test-sanitize memcheck bench fuzz clean

all: build

deps test-deps fuzz-deps:
	@missing=""; for p in $(if $(filter test-deps,$@),$(TEST_PACKAGES),$(if $(filter fuzz-deps,$@),$(FUZZ_PACKAGES),$(PACKAGES))); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" \
	        || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then \
	        echo "installing:$$missing"; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    else \
	        echo "missing Debian packages:$$missing"; \
	        echo "run: sudo apt-get install$$missing"; exit 1; \
	    fi; \
	fi

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	./$(BUILD)/versync demo

test: test-deps build
	cd $(BUILD) && ctest --output-on-failure -j 2

test-sanitize: test-deps
	cmake -S . -B $(SANITIZE_BUILD) -DCMAKE_BUILD_TYPE=Debug -DVS_SANITIZE=address,undefined
	cmake --build $(SANITIZE_BUILD) -j $(JOBS)
	cd $(SANITIZE_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    ctest --output-on-failure -j 2

memcheck: test-deps build
	cd $(BUILD) && ctest -T memcheck -L unit --output-on-failure

bench: test-deps build
	bash bench/run.sh $(if $(QUICK),--quick,)

# Each target runs FUZZ_SECONDS from the committed corpus plus what earlier runs found
# ($(FUZZ_BUILD)/corpus); a crash leaves its input in $(FUZZ_BUILD) and fails the run.
# fuzz_apply's stores end czmq actor threads that free their last bytes after the input
# returns, which libFuzzer's leak check between inputs takes for leaks: leaks are checked
# once, when the run ends (tests/fuzz/README.md).
fuzz: fuzz-deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DVS_FUZZ=ON \
	    -DVS_SANITIZE=address,undefined
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_proto fuzz_apply
	for target in proto apply; do \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$target && \
	    (cd $(FUZZ_BUILD) && ./tests/fuzz_$$target -max_total_time=$(FUZZ_SECONDS) \
	        -max_len=65536 -timeout=10 $$([ $$target = apply ] && echo -detect_leaks=0) \
	        corpus/$$target $(CURDIR)/tests/fuzz/corpus/$$target) \
	    || exit 1; \
	done

clean:
	rm -rf $(BUILD) $(SANITIZE_BUILD) $(FUZZ_BUILD)

# OpenData for SQLite — build.
#
#   make                 build the core library, the loadable extension build/opendata.so
#   make run             build and open the demo store in sqlite3 with the extension loaded
#   make test            install deps, build, run every test (normal build, then ASan+UBSan)
#   make test-quick      run the tests of the normal build only
#   make SANITIZE=1 ...  build into build-asan/ with -fsanitize=address,undefined
#   make bench           every benchmark; make bench-<area> for one
#
# Sources are found by wildcard: core/<module>/*.c go into libodcore.a (no SQLite there),
# vtab/*.c into the extension, tests/unit/test_*.c each become a test binary.

CC       ?= gcc
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
  B        ?= build-asan
  OPT      := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDSAN    := -fsanitize=address,undefined
else
  B        ?= build
  OPT      := -O2 -g
  LDSAN    :=
endif

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter -Werror
CFLAGS   += -std=c17 -D_GNU_SOURCE $(OPT) $(WARN) -fPIC -pthread -Icore -Icore/util -Icore/objstore
LDLIBS   := -lcurl -lmbedcrypto -llz4 -lcjson -lpcre2-8 -lm -lpthread
TESTLIBS := -lcmocka -lsqlite3

CORE_SRC  := $(sort $(wildcard core/*/*.c))
CORE_OBJ  := $(CORE_SRC:%.c=$(B)/%.o)
VTAB_SRC  := $(sort $(wildcard vtab/*.c))
VTAB_OBJ  := $(VTAB_SRC:%.c=$(B)/%.o)
TEST_SRC  := $(sort $(wildcard tests/unit/test_*.c))
TEST_BIN  := $(TEST_SRC:tests/unit/%.c=$(B)/tests/%)
TSUP_SRC  := $(sort $(wildcard tests/support/*.c))
TSUP_OBJ  := $(TSUP_SRC:%.c=$(B)/%.o)
TOOL_SRC  := $(sort $(wildcard tests/tools/*.c))
TOOL_BIN  := $(TOOL_SRC:tests/tools/%.c=$(B)/tools/%)
BENCH_SRC := $(sort $(wildcard bench/bench_*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(B)/bench/%)

.PHONY: all lib loadable tests tools benches run test test-quick deps clean bench
all: lib loadable

lib: $(B)/libodcore.a
loadable: $(B)/opendata.so
tests: $(TEST_BIN) $(TOOL_BIN)
tools: $(TOOL_BIN)
benches: $(BENCH_BIN)

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(B)/libodcore.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(B)/opendata.so: $(VTAB_OBJ) $(B)/libodcore.a
	$(CC) -shared $(LDSAN) -o $@ $(VTAB_OBJ) $(B)/libodcore.a $(LDLIBS)

$(B)/tests/%: tests/unit/%.c $(TSUP_OBJ) $(B)/libodcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/support -o $@ $< $(TSUP_OBJ) $(B)/libodcore.a $(LDSAN) $(LDLIBS) $(TESTLIBS)

$(B)/tools/%: tests/tools/%.c $(TSUP_OBJ) $(B)/libodcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/support -o $@ $< $(TSUP_OBJ) $(B)/libodcore.a $(LDSAN) $(LDLIBS) $(TESTLIBS)

$(B)/bench/%: bench/%.c $(TSUP_OBJ) $(B)/libodcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/support -o $@ $< $(TSUP_OBJ) $(B)/libodcore.a $(LDSAN) $(LDLIBS) $(TESTLIBS)

deps:
	@./scripts/deps.sh

# The README's test command: installs what is missing, builds, and runs every test twice —
# with the normal build and with ASan+UBSan. Ends with "N passed, N failed".
test: deps
	@./scripts/test.sh

test-quick: all tests
	@./scripts/test.sh --quick

run: deps all
	@./scripts/run.sh

bench: deps
	@./scripts/bench.sh all
bench-%: deps
	@./scripts/bench.sh $*

clean:
	rm -rf build/*.a build/*.so build/core build/vtab build/tests build/tools build/bench build-asan

-include $(CORE_OBJ:.o=.d) $(VTAB_OBJ:.o=.d) $(TSUP_OBJ:.o=.d)

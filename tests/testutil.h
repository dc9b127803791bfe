/*  testutil.h - a tiny assertion harness shared by the unit test programs.

    VS_CHECK (cond) records a failure with file and line and goes on; VS_REQUIRE (cond) also
    returns from the current test. vs_test_run runs one test function and counts results.
    Tests write only below vs_test_dir (), the build tree's tests/tmp.                        */
#ifndef VS_TESTUTIL_H_INCLUDED
#define VS_TESTUTIL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

extern int vs_test_failures;

void vs_test_fail(const char *file, int line, const char *expression);

#define VS_CHECK(cond)                                                                         \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            vs_test_fail(__FILE__, __LINE__, #cond);                                           \
        }                                                                                      \
    } while (0)

#define VS_REQUIRE(cond)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            vs_test_fail(__FILE__, __LINE__, #cond);                                           \
            return;                                                                            \
        }                                                                                      \
    } while (0)

/*  Runs one test, printing its name and result.                                               */
void vs_test_run(const char *name, void (*test)(void));

/*  Prints "N passed, N failed" and returns the process exit code.                            */
int vs_test_summary(void);

/*  A fresh empty directory for this test under $VS_TEST_TMP (or /tmp); returns a static
    path valid until the next call.                                                            */
const char *vs_test_dir(const char *name);

/*  A free TCP port on 127.0.0.1 (bound then released), or 0.                                 */
int vs_test_free_port(void);

#endif

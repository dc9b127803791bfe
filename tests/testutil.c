/*  testutil.c - the shared assertion harness of the unit test programs.                      */
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int vs_test_failures = 0;
static int s_passed = 0;
static int s_failed = 0;

void vs_test_fail(const char *file, int line, const char *expression)
{
    fprintf(stderr, "  FAIL %s:%d: %s\n", file, line, expression);
    vs_test_failures++;
}

void vs_test_run(const char *name, void (*test)(void))
{
    const char *only = getenv("VS_TEST_ONLY"); /* run just this test (when debugging one) */
    if (only && *only && strcmp(only, name) != 0) {
        return;
    }
    int before = vs_test_failures;
    fprintf(stderr, "test %s ...\n", name);
    test();
    if (vs_test_failures == before) {
        s_passed++;
        fprintf(stderr, "test %s: ok\n", name);
    } else {
        s_failed++;
        fprintf(stderr, "test %s: FAILED\n", name);
    }
}

int vs_test_summary(void)
{
    printf("%d passed, %d failed\n", s_passed, s_failed);
    return s_failed == 0 ? 0 : 1;
}

const char *vs_test_dir(const char *name)
{
    static char path[4096];
    const char *root = getenv("VS_TEST_TMP");
    if (!root || !*root) {
        root = "/tmp/versync-test";
    }
    mkdir(root, 0700);
    snprintf(path, sizeof path, "%s/%s.%ld", root, name, (long) getpid());
    char command[4200];
    snprintf(command, sizeof command, "rm -rf '%s'", path);
    if (system(command) != 0) {
        fprintf(stderr, "cannot clean %s\n", path);
    }
    mkdir(path, 0700);
    return path;
}

int vs_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return 0;
    }
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof address;
    int port = 0;
    if (bind(fd, (struct sockaddr *) &address, sizeof address) == 0
        && getsockname(fd, (struct sockaddr *) &address, &length) == 0) {
        port = ntohs(address.sin_port);
    }
    close(fd);
    return port;
}

/*  broker_memory_test.c - the broker's history when memory runs out while it stages a set.
    Linked with -Wl,--wrap=zhashx_new (tests/CMakeLists.txt), so the test can make the next
    hash table allocation fail: the one a new stream needs for its publishers.                */
#include <czmq.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "history.h"
#include "testutil.h"
#include "vs_proto.h"

zhashx_t *__real_zhashx_new(void);
zhashx_t *__wrap_zhashx_new(void);

static atomic_int s_fail_next;

zhashx_t *__wrap_zhashx_new(void)
{
    if (atomic_exchange(&s_fail_next, 0)) {
        return NULL;
    }
    return __real_zhashx_new();
}

static vs_bytes_t s_text(const char *text)
{
    return (vs_bytes_t){text, strlen(text)};
}

/*  A new stream that cannot be created dooms the batch: the commit fails, so the broker
    answers ESTORE. It used to commit the batch without the set, and the broker ACKed (seq 0)
    and published a set it never stored (found by a review).                                  */
static void test_new_stream_out_of_memory(void)
{
    const char *data = vs_test_dir("history_memory");
    vs_history_t *history = NULL;
    char why[256];
    VS_REQUIRE(vs_history_open(data, NULL, &history, why, sizeof why) == VS_OK);
    vs_history_receipt_t receipt;
    VS_CHECK(vs_history_append(history, s_text("kept"), s_text("p"), 1, 1, "a", 1, &receipt) ==
             VS_OK);
    atomic_store(&s_fail_next, 1);
    VS_CHECK(vs_history_append(history, s_text("fresh"), s_text("p"), 1, 3, "abc", 3, &receipt) ==
             VS_ENOMEM);
    VS_CHECK(vs_history_pending(history));
    VS_CHECK(vs_history_commit(history) == VS_ESTORE);
    VS_CHECK(strstr(vs_history_error(history), "out of memory") != NULL);
    VS_CHECK(vs_history_stream_count(history) == 0);
    /* the next batch works, and stores both */
    VS_CHECK(vs_history_append(history, s_text("kept"), s_text("p"), 1, 1, "a", 1, &receipt) ==
                 VS_OK &&
             receipt.seq == 1);
    VS_CHECK(vs_history_append(history, s_text("fresh"), s_text("p"), 1, 3, "abc", 3, &receipt) ==
                 VS_OK &&
             receipt.seq == 1);
    VS_CHECK(vs_history_commit(history) == VS_OK);
    VS_CHECK(vs_history_stream_count(history) == 2);
    vs_history_destroy(&history);
}

int main(void)
{
    vs_test_run("new_stream_out_of_memory", test_new_stream_out_of_memory);
    return vs_test_summary();
}

/* Status codes, names and sentences from the one table in clbn.h, OpenCL codes passed through by
 * name, the per-thread detail message of the last failed call, and the version numbers. */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct status_row {
    clbn_status status;
    int value;
    const char *name;
    const char *text;
} status_row;

static const status_row status_rows[] = {
#define ROW_(name, value, text) {name, value, #name, text},
    CLBN_STATUS_TABLE(ROW_)
#undef ROW_
};
#define N_STATUS (sizeof status_rows / sizeof status_rows[0])

/* Every OpenCL 1.2 error code, by the macros of CL/cl.h, so the expected names come from the
 * OpenCL headers and not from clbn. */
typedef struct cl_row {
    int code;
    const char *name;
} cl_row;

#define CL_ROW_(name)                                                                              \
    { name, #name }
static const cl_row cl_rows[] = {
    CL_ROW_(CL_DEVICE_NOT_FOUND),
    CL_ROW_(CL_DEVICE_NOT_AVAILABLE),
    CL_ROW_(CL_COMPILER_NOT_AVAILABLE),
    CL_ROW_(CL_MEM_OBJECT_ALLOCATION_FAILURE),
    CL_ROW_(CL_OUT_OF_RESOURCES),
    CL_ROW_(CL_OUT_OF_HOST_MEMORY),
    CL_ROW_(CL_PROFILING_INFO_NOT_AVAILABLE),
    CL_ROW_(CL_MEM_COPY_OVERLAP),
    CL_ROW_(CL_IMAGE_FORMAT_MISMATCH),
    CL_ROW_(CL_IMAGE_FORMAT_NOT_SUPPORTED),
    CL_ROW_(CL_BUILD_PROGRAM_FAILURE),
    CL_ROW_(CL_MAP_FAILURE),
    CL_ROW_(CL_MISALIGNED_SUB_BUFFER_OFFSET),
    CL_ROW_(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST),
    CL_ROW_(CL_COMPILE_PROGRAM_FAILURE),
    CL_ROW_(CL_LINKER_NOT_AVAILABLE),
    CL_ROW_(CL_LINK_PROGRAM_FAILURE),
    CL_ROW_(CL_DEVICE_PARTITION_FAILED),
    CL_ROW_(CL_KERNEL_ARG_INFO_NOT_AVAILABLE),
    CL_ROW_(CL_INVALID_VALUE),
    CL_ROW_(CL_INVALID_DEVICE_TYPE),
    CL_ROW_(CL_INVALID_PLATFORM),
    CL_ROW_(CL_INVALID_DEVICE),
    CL_ROW_(CL_INVALID_CONTEXT),
    CL_ROW_(CL_INVALID_QUEUE_PROPERTIES),
    CL_ROW_(CL_INVALID_COMMAND_QUEUE),
    CL_ROW_(CL_INVALID_HOST_PTR),
    CL_ROW_(CL_INVALID_MEM_OBJECT),
    CL_ROW_(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR),
    CL_ROW_(CL_INVALID_IMAGE_SIZE),
    CL_ROW_(CL_INVALID_SAMPLER),
    CL_ROW_(CL_INVALID_BINARY),
    CL_ROW_(CL_INVALID_BUILD_OPTIONS),
    CL_ROW_(CL_INVALID_PROGRAM),
    CL_ROW_(CL_INVALID_PROGRAM_EXECUTABLE),
    CL_ROW_(CL_INVALID_KERNEL_NAME),
    CL_ROW_(CL_INVALID_KERNEL_DEFINITION),
    CL_ROW_(CL_INVALID_KERNEL),
    CL_ROW_(CL_INVALID_ARG_INDEX),
    CL_ROW_(CL_INVALID_ARG_VALUE),
    CL_ROW_(CL_INVALID_ARG_SIZE),
    CL_ROW_(CL_INVALID_KERNEL_ARGS),
    CL_ROW_(CL_INVALID_WORK_DIMENSION),
    CL_ROW_(CL_INVALID_WORK_GROUP_SIZE),
    CL_ROW_(CL_INVALID_WORK_ITEM_SIZE),
    CL_ROW_(CL_INVALID_GLOBAL_OFFSET),
    CL_ROW_(CL_INVALID_EVENT_WAIT_LIST),
    CL_ROW_(CL_INVALID_EVENT),
    CL_ROW_(CL_INVALID_OPERATION),
    CL_ROW_(CL_INVALID_GL_OBJECT),
    CL_ROW_(CL_INVALID_BUFFER_SIZE),
    CL_ROW_(CL_INVALID_MIP_LEVEL),
    CL_ROW_(CL_INVALID_GLOBAL_WORK_SIZE),
    CL_ROW_(CL_INVALID_PROPERTY),
    CL_ROW_(CL_INVALID_IMAGE_DESCRIPTOR),
    CL_ROW_(CL_INVALID_COMPILER_OPTIONS),
    CL_ROW_(CL_INVALID_LINKER_OPTIONS),
    CL_ROW_(CL_INVALID_DEVICE_PARTITION_COUNT),
};
#undef CL_ROW_
#define N_CL (sizeof cl_rows / sizeof cl_rows[0])

static void table_names_match_enum(void **state) {
    (void)state;
    for (size_t i = 0; i < N_STATUS; i++) {
        const char *name = clbn_status_name(status_rows[i].status);
        assert_non_null(name);
        if (strcmp(name, status_rows[i].name) != 0)
            fail_msg("clbn_status_name(%d) = \"%s\", expected \"%s\"", status_rows[i].value, name,
                     status_rows[i].name);
    }
}

static void table_strings_match_sentences(void **state) {
    (void)state;
    for (size_t i = 0; i < N_STATUS; i++) {
        const char *text = clbn_status_string(status_rows[i].status);
        assert_non_null(text);
        if (strcmp(text, status_rows[i].text) != 0)
            fail_msg("clbn_status_string(%s) = \"%s\", expected \"%s\"", status_rows[i].name, text,
                     status_rows[i].text);
    }
}

/* clbn's own codes live in a range OpenCL never uses (-4000 and below), are distinct, and the
 * enum constant has the value written in the table. */
static void table_values_distinct_and_in_clbn_range(void **state) {
    (void)state;
    assert_int_equal(CLBN_SUCCESS, 0);
    for (size_t i = 0; i < N_STATUS; i++) {
        assert_int_equal((int)status_rows[i].status, status_rows[i].value);
        if (status_rows[i].value != 0 && status_rows[i].value > -4000)
            fail_msg("%s = %d is in OpenCL's range", status_rows[i].name, status_rows[i].value);
        for (size_t j = i + 1; j < N_STATUS; j++) {
            if (status_rows[i].value == status_rows[j].value)
                fail_msg("%s and %s share the value %d", status_rows[i].name, status_rows[j].name,
                         status_rows[i].value);
            if (strcmp(clbn_status_string(status_rows[i].status),
                       clbn_status_string(status_rows[j].status)) == 0)
                fail_msg("%s and %s share a sentence", status_rows[i].name, status_rows[j].name);
        }
    }
}

static void opencl_codes_pass_through_with_their_names(void **state) {
    (void)state;
    /* The two the brief names explicitly, by value, so a wrong CL header cannot hide a bug. */
    assert_string_equal(clbn_status_name((clbn_status)-30), "CL_INVALID_VALUE");
    assert_string_equal(clbn_status_name((clbn_status)-5), "CL_OUT_OF_RESOURCES");
    for (size_t i = 0; i < N_CL; i++) {
        const char *name = clbn_status_name((clbn_status)cl_rows[i].code);
        const char *text = clbn_status_string((clbn_status)cl_rows[i].code);
        assert_non_null(name);
        assert_non_null(text);
        if (strcmp(name, cl_rows[i].name) != 0)
            fail_msg("clbn_status_name(%d) = \"%s\", expected \"%s\"", cl_rows[i].code, name,
                     cl_rows[i].name);
        if (text[0] == '\0')
            fail_msg("clbn_status_string(%s) is empty", cl_rows[i].name);
        /* An OpenCL code must not be described as one of clbn's statuses. */
        for (size_t j = 0; j < N_STATUS; j++)
            if (strcmp(text, status_rows[j].text) == 0)
                fail_msg("clbn_status_string(%s) is the sentence of %s", cl_rows[i].name,
                         status_rows[j].name);
    }
}

static void unknown_codes_get_non_null_strings(void **state) {
    (void)state;
    const int unknown[] = {1,     42,    -20,     -29,        -999,       -3999,
                           -4018, -4999, -100000, 2147483647, -2147483647};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *name = clbn_status_name((clbn_status)unknown[i]);
        const char *text = clbn_status_string((clbn_status)unknown[i]);
        if (name == NULL || text == NULL)
            fail_msg("status %d: name %p, string %p", unknown[i], (const void *)name,
                     (const void *)text);
        if (text[0] == '\0' || name[0] == '\0')
            fail_msg("status %d: empty name or string", unknown[i]);
        /* It must not borrow the name of a real status. */
        for (size_t j = 0; j < N_STATUS; j++)
            if (strcmp(name, status_rows[j].name) == 0)
                fail_msg("unknown status %d is named %s", unknown[i], name);
        for (size_t j = 0; j < N_CL; j++)
            if (strcmp(name, cl_rows[j].name) == 0)
                fail_msg("unknown status %d is named %s", unknown[i], name);
    }
}

/* True when `word` occurs in `text` with no letter or digit right before or after it. */
static int names_word(const char *text, const char *word) {
    size_t n = strlen(word);
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) {
        int before_ok =
            p == text || !((p[-1] >= 'a' && p[-1] <= 'z') || (p[-1] >= 'A' && p[-1] <= 'Z') ||
                           (p[-1] >= '0' && p[-1] <= '9'));
        char a = p[n];
        int after_ok =
            !((a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z') || (a >= '0' && a <= '9'));
        if (before_ok && after_ok)
            return 1;
    }
    return 0;
}

static void last_error_names_the_argument(void **state) {
    (void)state;
    clbn_bn_options o;
    assert_int_equal(clbn_bn_get_options(NULL, &o), CLBN_ERROR_NULL_ARGUMENT);
    const char *msg = clbn_last_error_message();
    assert_non_null(msg);
    if (!names_word(msg, "bn"))
        fail_msg("message after clbn_bn_get_options(NULL, ...) does not name bn: \"%s\"", msg);

    assert_int_equal(clbn_device_list(NULL, 0, NULL), CLBN_ERROR_NULL_ARGUMENT);
    msg = clbn_last_error_message();
    if (!names_word(msg, "count"))
        fail_msg("message after clbn_device_list(NULL, 0, NULL) does not name count: \"%s\"", msg);

    clbn_limits limits;
    assert_int_equal(clbn_context_get_limits(NULL, &limits), CLBN_ERROR_NULL_ARGUMENT);
    msg = clbn_last_error_message();
    if (!names_word(msg, "context"))
        fail_msg("message after clbn_context_get_limits(NULL, ...) does not name context: \"%s\"",
                 msg);
}

static void last_error_cleared_by_a_successful_call(void **state) {
    (void)state;
    assert_int_equal(clbn_device_list(NULL, 0, NULL), CLBN_ERROR_NULL_ARGUMENT);
    assert_true(clbn_last_error_message()[0] != '\0');
    size_t count = 0;
    clbn_status st = clbn_device_list(NULL, 0, &count);
    if (st != CLBN_SUCCESS)
        skip(); /* no OpenCL platform: no call that can succeed without one */
    assert_string_equal(clbn_last_error_message(), "");
}

/* Two threads each make a different bad call, wait for each other, then read their own message:
 * each must see its own, and a fresh thread must see none. Results are collected and asserted on
 * the main thread (cmocka's assertions are not thread-safe). */
typedef struct thread_probe {
    pthread_barrier_t *barrier;
    int which;
    clbn_status status;
    char fresh[256]; /* the message before the thread's first call */
    char mine[1024]; /* after its bad call and the barrier */
} thread_probe;

static void *probe_thread(void *arg) {
    thread_probe *p = arg;
    snprintf(p->fresh, sizeof p->fresh, "%s", clbn_last_error_message());
    if (p->which == 0) {
        p->status = clbn_device_list(NULL, 0, NULL); /* names "count" */
    } else {
        uint64_t t;
        p->status = clbn_bn_get_batches_tracked(NULL, &t); /* names "bn" */
    }
    /* Both errors now exist at once; whichever thread wrote last must not win for the other. */
    pthread_barrier_wait(p->barrier);
    snprintf(p->mine, sizeof p->mine, "%s", clbn_last_error_message());
    pthread_barrier_wait(p->barrier);
    return NULL;
}

static void last_error_is_per_thread(void **state) {
    (void)state;
    /* An error on the main thread first: it must not show on the new threads either. */
    clbn_limits limits;
    assert_int_equal(clbn_context_get_limits(NULL, &limits), CLBN_ERROR_NULL_ARGUMENT);
    char main_msg[1024];
    snprintf(main_msg, sizeof main_msg, "%s", clbn_last_error_message());
    assert_true(names_word(main_msg, "context"));

    pthread_barrier_t barrier;
    assert_int_equal(pthread_barrier_init(&barrier, NULL, 2), 0);
    thread_probe probes[2];
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) {
        memset(&probes[i], 0, sizeof probes[i]);
        probes[i].barrier = &barrier;
        probes[i].which = i;
        assert_int_equal(pthread_create(&threads[i], NULL, probe_thread, &probes[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    pthread_barrier_destroy(&barrier);

    for (int i = 0; i < 2; i++) {
        if (probes[i].fresh[0] != '\0')
            fail_msg("thread %d saw a message before its first call: \"%s\"", i, probes[i].fresh);
        assert_int_equal(probes[i].status, CLBN_ERROR_NULL_ARGUMENT);
    }
    if (!names_word(probes[0].mine, "count") || names_word(probes[0].mine, "bn"))
        fail_msg("thread 0 (bad clbn_device_list) reads \"%s\"", probes[0].mine);
    if (!names_word(probes[1].mine, "bn") || names_word(probes[1].mine, "count"))
        fail_msg("thread 1 (bad clbn_bn_get_batches_tracked) reads \"%s\"", probes[1].mine);
    /* The main thread still has its own message. */
    assert_string_equal(clbn_last_error_message(), main_msg);
}

static void version_matches_macros(void **state) {
    (void)state;
    assert_int_equal(clbn_version_number(), CLBN_VERSION_NUMBER);
    assert_int_equal(CLBN_VERSION_NUMBER,
                     CLBN_VERSION_MAJOR * 10000 + CLBN_VERSION_MINOR * 100 + CLBN_VERSION_PATCH);
    char expected[64];
    snprintf(expected, sizeof expected, "%d.%d.%d", CLBN_VERSION_MAJOR, CLBN_VERSION_MINOR,
             CLBN_VERSION_PATCH);
    assert_non_null(clbn_version_string());
    assert_string_equal(clbn_version_string(), expected);
}

static void vector_and_strategy_names_distinct(void **state) {
    (void)state;
    for (int i = 0; i < CLBN_VECTOR_COUNT; i++) {
        const char *a = clbn_vector_name((clbn_vector)i);
        assert_non_null(a);
        assert_true(a[0] != '\0');
        for (int j = i + 1; j < CLBN_VECTOR_COUNT; j++)
            if (strcmp(a, clbn_vector_name((clbn_vector)j)) == 0)
                fail_msg("vectors %d and %d are both named \"%s\"", i, j, a);
    }
    for (int i = 0; i <= CLBN_STRATEGY_SINGLE_READ; i++) {
        const char *a = clbn_strategy_name((clbn_strategy)i);
        assert_non_null(a);
        assert_true(a[0] != '\0');
        for (int j = i + 1; j <= CLBN_STRATEGY_SINGLE_READ; j++)
            if (strcmp(a, clbn_strategy_name((clbn_strategy)j)) == 0)
                fail_msg("strategies %d and %d are both named \"%s\"", i, j, a);
    }
    assert_non_null(clbn_vector_name((clbn_vector)99));
    assert_non_null(clbn_strategy_name((clbn_strategy)99));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(table_names_match_enum),
        cmocka_unit_test(table_strings_match_sentences),
        cmocka_unit_test(table_values_distinct_and_in_clbn_range),
        cmocka_unit_test(opencl_codes_pass_through_with_their_names),
        cmocka_unit_test(unknown_codes_get_non_null_strings),
        cmocka_unit_test(last_error_names_the_argument),
        cmocka_unit_test(last_error_cleared_by_a_successful_call),
        cmocka_unit_test(last_error_is_per_thread),
        cmocka_unit_test(version_matches_macros),
        cmocka_unit_test(vector_and_strategy_names_distinct),
    };
    return cmocka_run_group_tests_name("status", tests, NULL, NULL);
}

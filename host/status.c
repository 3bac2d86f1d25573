/* status.c — status names and sentences from the one table in clbn.h, OpenCL code names, and
 * the per-thread detail message of the last failed call. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define CLBN_MESSAGE_MAX 16384
static _Thread_local char last_message[CLBN_MESSAGE_MAX];

clbn_status clbn_fail(clbn_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, ap);
    va_end(ap);
    return st;
}

void clbn_fail_append(const char *text) {
    size_t used = strlen(last_message);
    if (used + 1 < sizeof last_message)
        snprintf(last_message + used, sizeof last_message - used, "%s", text);
}

void clbn_clear_error(void) {
    last_message[0] = '\0';
}

const char *clbn_last_error_message(void) {
    return last_message;
}

/* OpenCL 1.2-3.0 error codes, so a passed-through code still prints by name. */
// clang-format off
#define CLBN_CL_CODES(X) \
    X(CL_DEVICE_NOT_FOUND, -1) \
    X(CL_DEVICE_NOT_AVAILABLE, -2) \
    X(CL_COMPILER_NOT_AVAILABLE, -3) \
    X(CL_MEM_OBJECT_ALLOCATION_FAILURE, -4) \
    X(CL_OUT_OF_RESOURCES, -5) \
    X(CL_OUT_OF_HOST_MEMORY, -6) \
    X(CL_PROFILING_INFO_NOT_AVAILABLE, -7) \
    X(CL_MEM_COPY_OVERLAP, -8) \
    X(CL_IMAGE_FORMAT_MISMATCH, -9) \
    X(CL_IMAGE_FORMAT_NOT_SUPPORTED, -10) \
    X(CL_BUILD_PROGRAM_FAILURE, -11) \
    X(CL_MAP_FAILURE, -12) \
    X(CL_MISALIGNED_SUB_BUFFER_OFFSET, -13) \
    X(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST, -14) \
    X(CL_COMPILE_PROGRAM_FAILURE, -15) \
    X(CL_LINKER_NOT_AVAILABLE, -16) \
    X(CL_LINK_PROGRAM_FAILURE, -17) \
    X(CL_DEVICE_PARTITION_FAILED, -18) \
    X(CL_KERNEL_ARG_INFO_NOT_AVAILABLE, -19) \
    X(CL_INVALID_VALUE, -30) \
    X(CL_INVALID_DEVICE_TYPE, -31) \
    X(CL_INVALID_PLATFORM, -32) \
    X(CL_INVALID_DEVICE, -33) \
    X(CL_INVALID_CONTEXT, -34) \
    X(CL_INVALID_QUEUE_PROPERTIES, -35) \
    X(CL_INVALID_COMMAND_QUEUE, -36) \
    X(CL_INVALID_HOST_PTR, -37) \
    X(CL_INVALID_MEM_OBJECT, -38) \
    X(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR, -39) \
    X(CL_INVALID_IMAGE_SIZE, -40) \
    X(CL_INVALID_SAMPLER, -41) \
    X(CL_INVALID_BINARY, -42) \
    X(CL_INVALID_BUILD_OPTIONS, -43) \
    X(CL_INVALID_PROGRAM, -44) \
    X(CL_INVALID_PROGRAM_EXECUTABLE, -45) \
    X(CL_INVALID_KERNEL_NAME, -46) \
    X(CL_INVALID_KERNEL_DEFINITION, -47) \
    X(CL_INVALID_KERNEL, -48) \
    X(CL_INVALID_ARG_INDEX, -49) \
    X(CL_INVALID_ARG_VALUE, -50) \
    X(CL_INVALID_ARG_SIZE, -51) \
    X(CL_INVALID_KERNEL_ARGS, -52) \
    X(CL_INVALID_WORK_DIMENSION, -53) \
    X(CL_INVALID_WORK_GROUP_SIZE, -54) \
    X(CL_INVALID_WORK_ITEM_SIZE, -55) \
    X(CL_INVALID_GLOBAL_OFFSET, -56) \
    X(CL_INVALID_EVENT_WAIT_LIST, -57) \
    X(CL_INVALID_EVENT, -58) \
    X(CL_INVALID_OPERATION, -59) \
    X(CL_INVALID_GL_OBJECT, -60) \
    X(CL_INVALID_BUFFER_SIZE, -61) \
    X(CL_INVALID_MIP_LEVEL, -62) \
    X(CL_INVALID_GLOBAL_WORK_SIZE, -63) \
    X(CL_INVALID_PROPERTY, -64) \
    X(CL_INVALID_IMAGE_DESCRIPTOR, -65) \
    X(CL_INVALID_COMPILER_OPTIONS, -66) \
    X(CL_INVALID_LINKER_OPTIONS, -67) \
    X(CL_INVALID_DEVICE_PARTITION_COUNT, -68) \
    X(CL_INVALID_PIPE_SIZE, -69) \
    X(CL_INVALID_DEVICE_QUEUE, -70) \
    X(CL_INVALID_SPEC_ID, -71) \
    X(CL_MAX_SIZE_RESTRICTION_EXCEEDED, -72) \
    X(CL_PLATFORM_NOT_FOUND_KHR, -1001)
// clang-format on

const char *clbn_status_name(clbn_status status) {
    switch ((int)status) {
#define CLBN_NAME_CASE_(name, value, text)                                                         \
    case value:                                                                                    \
        return #name;
        CLBN_STATUS_TABLE(CLBN_NAME_CASE_)
#undef CLBN_NAME_CASE_
#define CLBN_CL_NAME_CASE_(name, value)                                                            \
    case value:                                                                                    \
        return #name;
        CLBN_CL_CODES(CLBN_CL_NAME_CASE_)
#undef CLBN_CL_NAME_CASE_
    default:
        return "CLBN_UNKNOWN_STATUS";
    }
}

const char *clbn_status_string(clbn_status status) {
    switch ((int)status) {
#define CLBN_TEXT_CASE_(name, value, text)                                                         \
    case value:                                                                                    \
        return text;
        CLBN_STATUS_TABLE(CLBN_TEXT_CASE_)
#undef CLBN_TEXT_CASE_
    default:
        break;
    }
    if ((int)status < 0 && (int)status > -4000)
        return strcmp(clbn_status_name(status), "CLBN_UNKNOWN_STATUS")
                   ? "an OpenCL call failed with this code"
                   : "an OpenCL call failed with an unrecognized code";
    return "unknown status code";
}

unsigned clbn_version_number(void) {
    return CLBN_VERSION_NUMBER;
}

#define CLBN_STR2_(x) #x
#define CLBN_STR_(x) CLBN_STR2_(x)
const char *clbn_version_string(void) {
    return CLBN_STR_(CLBN_VERSION_MAJOR) "." CLBN_STR_(CLBN_VERSION_MINOR) "." CLBN_STR_(
        CLBN_VERSION_PATCH);
}

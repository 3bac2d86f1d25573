/* `clbn devices`: every OpenCL platform and device with the limits clbn plans its kernels with,
 * and the P:D selector that picks each one. */
#include "tools.h"

#include <clbn.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *device_type_name(cl_device_type type) {
    if (type & CL_DEVICE_TYPE_GPU)
        return "gpu";
    if (type & CL_DEVICE_TYPE_CPU)
        return "cpu";
    if (type & CL_DEVICE_TYPE_ACCELERATOR)
        return "accelerator";
    return "other";
}

/* The whole string from the device: the fixed-size fields of clbn_device_info may hold a
 * truncated (or, for a long CL_DEVICE_VERSION, an empty) copy. */
static void print_device_string(const char *label, cl_device_id device, cl_device_info what,
                                const char *fallback) {
    size_t size = 0;
    char *text = NULL;
    if (clGetDeviceInfo(device, what, 0, NULL, &size) == CL_SUCCESS && size > 0 &&
        (text = malloc(size + 1)) != NULL &&
        clGetDeviceInfo(device, what, size, text, NULL) == CL_SUCCESS) {
        text[size] = '\0';
        printf("    %-17s %s\n", label, text);
    } else {
        printf("    %-17s %s\n", label, fallback);
    }
    free(text);
}

/* Bytes in the largest unit that keeps the figure readable. */
static const char *human_bytes(uint64_t bytes, char *buf, size_t size) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    if (u == 0 || v >= 100.0 || v == (double)(uint64_t)v)
        snprintf(buf, size, "%.0f %s", v, units[u]);
    else
        snprintf(buf, size, "%.1f %s", v, units[u]);
    return buf;
}

static void devices_usage(FILE *out) {
    fprintf(out, "usage: clbn devices\n"
                 "\n"
                 "Lists every OpenCL platform and device with the limits clbn plans with. The\n"
                 "P:D before each device selects it (--device P:D or CLBN_DEVICE=P:D).\n");
}

int clbn_cmd_devices(int argc, char **argv) {
    if (argc > 1) {
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
            devices_usage(stdout);
            return CLBN_EXIT_OK;
        }
        fprintf(stderr, "clbn devices: unexpected argument '%s' (clbn devices --help)\n", argv[1]);
        return CLBN_EXIT_USAGE;
    }
    size_t count = 0;
    clbn_status st = clbn_device_list(NULL, 0, &count);
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "clbn devices: cannot list OpenCL devices: %s: %s\n", clbn_status_name(st),
                clbn_last_error_message());
        return CLBN_EXIT_FAILURE;
    }
    if (count == 0) {
        fprintf(stderr, "clbn devices: no OpenCL device found (is an ICD such as PoCL "
                        "installed?)\n");
        return CLBN_EXIT_FAILURE;
    }
    clbn_device_info *infos = calloc(count, sizeof *infos);
    if (!infos) {
        fprintf(stderr, "clbn devices: out of host memory\n");
        return CLBN_EXIT_FAILURE;
    }
    size_t filled = count;
    st = clbn_device_list(infos, count, &filled);
    if (st != CLBN_SUCCESS) {
        fprintf(stderr, "clbn devices: cannot list OpenCL devices: %s: %s\n", clbn_status_name(st),
                clbn_last_error_message());
        free(infos);
        return CLBN_EXIT_FAILURE;
    }
    /* The list may have shrunk between the two calls (a device went away). */
    if (filled < count)
        count = filled;

    uint32_t last_platform = UINT32_MAX;
    for (size_t i = 0; i < count; i++) {
        const clbn_device_info *d = &infos[i];
        char b1[32], b2[32], b3[32], b4[32];
        if (d->platform_index != last_platform) {
            printf("%splatform %" PRIu32 ": %s\n", i ? "\n" : "", d->platform_index,
                   d->platform_name);
            last_platform = d->platform_index;
        }
        printf("  device %" PRIu32 ":%" PRIu32 "  %s  %s%s\n", d->platform_index, d->device_index,
               d->is_simulator ? "simulator" : device_type_name(d->type), d->device_name,
               d->is_simulator ? "  (chosen only by name or P:D)" : "");
        printf("    vendor            %s\n", d->vendor);
        print_device_string("device version", d->device, CL_DEVICE_VERSION, d->device_version);
        print_device_string("driver version", d->device, CL_DRIVER_VERSION, d->driver_version);
        print_device_string("OpenCL C", d->device, CL_DEVICE_OPENCL_C_VERSION, d->opencl_c_version);
        printf("    compute units     %" PRIu32 "\n", d->compute_units);
        printf("    max work-group    %zu\n", d->max_work_group_size);
        printf("    local memory      %s\n", human_bytes(d->local_mem_size, b1, sizeof b1));
        printf("    global memory     %s (cache %s, largest allocation %s)\n",
               human_bytes(d->global_mem_size, b2, sizeof b2),
               human_bytes(d->global_mem_cache_size, b3, sizeof b3),
               human_bytes(d->max_mem_alloc_size, b4, sizeof b4));
        printf("    float vector      %" PRIu32 " (preferred width)\n",
               d->preferred_vector_width_float);
        printf("    fp64              %s\n", d->has_fp64 ? "yes" : "no");
        printf("    fp16              %s\n", d->has_fp16 ? "yes" : "no");
    }
    free(infos);
    return CLBN_EXIT_OK;
}

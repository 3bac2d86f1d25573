/* device.c — OpenCL device enumeration and the selector ("gpu", "cpu", "P:D", a name). */
#define _DEFAULT_SOURCE /* sysconf's cache figures */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A device string, truncated to cap if longer (clGetDeviceInfo itself refuses a short buffer,
 * and PoCL's CL_DEVICE_VERSION is longer than 64 bytes). */
static void get_string(cl_device_id d, cl_device_info what, char *out, size_t cap) {
    out[0] = '\0';
    size_t need = 0;
    if (clbn_cl.clGetDeviceInfo(d, what, 0, NULL, &need) != CL_SUCCESS || need == 0)
        return;
    char *full = malloc(need + 1);
    if (!full)
        return;
    if (clbn_cl.clGetDeviceInfo(d, what, need, full, NULL) == CL_SUCCESS) {
        full[need] = '\0';
        snprintf(out, cap, "%s", full);
    }
    free(full);
}

/* The largest data or unified cache of cpu0 in sysfs (its last level), else sysconf's level 3
 * or 2. Some virtual machines expose no cache directory in sysfs. */
static void host_llc(clbn_device_info *info) {
    uint64_t best = 0;
    for (int i = 0; i < 16; i++) {
        char path[96], buf[64];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
        FILE *f = fopen(path, "r");
        if (!f)
            break;
        int data = fgets(buf, sizeof buf, f) && strncmp(buf, "Instruction", 11) != 0;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        f = fopen(path, "r");
        if (!f)
            continue;
        unsigned long long v = 0;
        char unit = 0;
        int got = fscanf(f, "%llu%c", &v, &unit);
        fclose(f);
        if (got < 1 || !data)
            continue;
        uint64_t bytes = v * (unit == 'K' ? 1024ull : unit == 'M' ? 1048576ull : 1ull);
        if (bytes > best)
            best = bytes;
    }
    if (best) {
        info->host_llc_size = best;
        snprintf(info->host_llc_source, sizeof info->host_llc_source, "sysfs");
        return;
    }
    long v = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
    v = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
#ifdef _SC_LEVEL2_CACHE_SIZE
    if (v <= 0)
        v = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    if (v > 0) {
        info->host_llc_size = (uint64_t)v;
        snprintf(info->host_llc_source, sizeof info->host_llc_source, "sysconf");
    }
}

clbn_status clbn_fill_device_info(cl_platform_id platform, cl_device_id device,
                                  uint32_t platform_index, uint32_t device_index,
                                  clbn_device_info *info) {
    memset(info, 0, sizeof *info);
    info->platform_index = platform_index;
    info->device_index = device_index;
    info->platform = platform;
    info->device = device;
    if (clbn_cl.clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof info->platform_name,
                                  info->platform_name, NULL) != CL_SUCCESS)
        info->platform_name[0] = '\0';
    info->platform_name[sizeof info->platform_name - 1] = '\0';
    get_string(device, CL_DEVICE_NAME, info->device_name, sizeof info->device_name);
    get_string(device, CL_DEVICE_VENDOR, info->vendor, sizeof info->vendor);
    get_string(device, CL_DRIVER_VERSION, info->driver_version, sizeof info->driver_version);
    get_string(device, CL_DEVICE_VERSION, info->device_version, sizeof info->device_version);
    get_string(device, CL_DEVICE_OPENCL_C_VERSION, info->opencl_c_version,
               sizeof info->opencl_c_version);
    cl_int err =
        clbn_cl.clGetDeviceInfo(device, CL_DEVICE_TYPE, sizeof info->type, &info->type, NULL);
    cl_ulong u = 0;
    cl_uint v = 0;
    size_t s = 0;
    if (clbn_cl.clGetDeviceInfo(device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof u, &u, NULL) ==
        CL_SUCCESS)
        info->global_mem_size = u;
    if (clbn_cl.clGetDeviceInfo(device, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE, sizeof u, &u, NULL) ==
        CL_SUCCESS)
        info->global_mem_cache_size = u;
    if (clbn_cl.clGetDeviceInfo(device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof u, &u, NULL) == CL_SUCCESS)
        info->local_mem_size = u;
    if (clbn_cl.clGetDeviceInfo(device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof u, &u, NULL) ==
        CL_SUCCESS)
        info->max_mem_alloc_size = u;
    if (clbn_cl.clGetDeviceInfo(device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof s, &s, NULL) ==
        CL_SUCCESS)
        info->max_work_group_size = s;
    if (clbn_cl.clGetDeviceInfo(device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof v, &v, NULL) ==
        CL_SUCCESS)
        info->compute_units = v;
    if (clbn_cl.clGetDeviceInfo(device, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT, sizeof v, &v,
                                NULL) == CL_SUCCESS)
        info->preferred_vector_width_float = v;
    char ext[8192];
    get_string(device, CL_DEVICE_EXTENSIONS, ext, sizeof ext);
    info->has_fp64 = strstr(ext, "cl_khr_fp64") != NULL;
    info->has_fp16 = strstr(ext, "cl_khr_fp16") != NULL;
    /* A simulator claims several device types at once (Oclgrind: CPU, GPU, accelerator). */
    const cl_device_type kinds =
        CL_DEVICE_TYPE_CPU | CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR;
    cl_device_type k = info->type & kinds;
    info->is_simulator = (k & (k - 1)) != 0 || strstr(info->platform_name, "Oclgrind") != NULL;
    if ((info->type & CL_DEVICE_TYPE_CPU) && !info->is_simulator)
        host_llc(info);
    if (err != CL_SUCCESS)
        return clbn_fail((clbn_status)err, "clGetDeviceInfo(CL_DEVICE_TYPE) failed");
    return CLBN_SUCCESS;
}

/* Calls fn on each device in platform order until it returns nonzero. */
static clbn_status for_each_device(int (*fn)(const clbn_device_info *, void *), void *user,
                                   size_t *count) {
    cl_uint np = 0;
    cl_int err = clbn_cl.clGetPlatformIDs(0, NULL, &np);
    if (count)
        *count = 0;
    if (err == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */ || np == 0)
        return CLBN_SUCCESS;
    if (err != CL_SUCCESS)
        return clbn_fail((clbn_status)err, "clGetPlatformIDs failed");
    cl_platform_id *plats = malloc(np * sizeof *plats);
    if (!plats)
        return clbn_fail(CLBN_ERROR_OUT_OF_HOST_MEMORY, "out of memory listing platforms");
    err = clbn_cl.clGetPlatformIDs(np, plats, NULL);
    size_t total = 0;
    int stop = 0;
    for (cl_uint p = 0; err == CL_SUCCESS && p < np && !stop; p++) {
        cl_uint nd = 0;
        if (clbn_cl.clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS ||
            nd == 0)
            continue;
        cl_device_id *devs = malloc(nd * sizeof *devs);
        if (!devs)
            break;
        if (clbn_cl.clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, devs, NULL) == CL_SUCCESS) {
            for (cl_uint d = 0; d < nd && !stop; d++) {
                clbn_device_info info;
                if (clbn_fill_device_info(plats[p], devs[d], p, d, &info) != CLBN_SUCCESS)
                    continue;
                total++;
                if (fn)
                    stop = fn(&info, user);
            }
        }
        free(devs);
    }
    free(plats);
    if (count)
        *count = total;
    return CLBN_SUCCESS;
}

typedef struct {
    clbn_device_info *infos;
    size_t capacity, used;
} list_ctx;

static int list_one(const clbn_device_info *info, void *user) {
    list_ctx *l = user;
    if (l->infos && l->used < l->capacity)
        l->infos[l->used] = *info;
    l->used++;
    return 0;
}

clbn_status clbn_device_list(clbn_device_info *infos, size_t capacity, size_t *count) {
    clbn_clear_error();
    if (!count)
        return clbn_fail(CLBN_ERROR_NULL_ARGUMENT, "count is NULL");
    list_ctx l = {infos, capacity, 0};
    return for_each_device(list_one, &l, count);
}

static int contains_nocase(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return 1;
    }
    return n == 0;
}

typedef struct {
    const char *sel;
    int kind; /* 0 name, 1 gpu, 2 cpu, 3 indices, 4 default */
    unsigned long p, d;
    int found;
    clbn_device_info match;
} select_ctx;

/* "gpu", "cpu" and the default take the first GPU, else (cpu, default) the CPU device with the
 * most compute units (PoCL lists its one-core "basic" device before "pthread"), and never a
 * simulator; a name or P:D takes the first match, simulator or not. */
static int select_one(const clbn_device_info *info, void *user) {
    select_ctx *s = user;
    const int gpu = (info->type & (CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR)) != 0;
    switch (s->kind) {
    case 0:
        if (contains_nocase(info->device_name, s->sel))
            goto take;
        return 0;
    case 3:
        if (info->platform_index == s->p && info->device_index == s->d)
            goto take;
        return 0;
    default:
        break;
    }
    if (info->is_simulator)
        return 0;
    if (gpu && s->kind != 2) {
        /* the first GPU wins over any CPU found before it */
        if (!s->found || !(s->match.type & (CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR)))
            goto take;
        return 0;
    }
    if ((info->type & CL_DEVICE_TYPE_CPU) && s->kind != 1 &&
        (!s->found || (!(s->match.type & (CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR)) &&
                       info->compute_units > s->match.compute_units)))
        goto take;
    return 0;
take:
    s->match = *info;
    s->found = 1;
    return s->kind == 0 || s->kind == 3;
}

clbn_status clbn_select_device(const char *selector, clbn_device_info *info) {
    if (!selector || !*selector)
        selector = getenv("CLBN_DEVICE");
    select_ctx s;
    memset(&s, 0, sizeof s);
    s.sel = selector ? selector : "";
    char *end = NULL;
    if (!selector || !*selector) {
        s.kind = 4;
    } else if (!strcmp(selector, "gpu") || !strcmp(selector, "GPU")) {
        s.kind = 1;
    } else if (!strcmp(selector, "cpu") || !strcmp(selector, "CPU")) {
        s.kind = 2;
    } else if (isdigit((unsigned char)selector[0])) {
        s.p = strtoul(selector, &end, 10);
        if (*end == ':' && isdigit((unsigned char)end[1])) {
            s.d = strtoul(end + 1, &end, 10);
            s.kind = *end == '\0' ? 3 : 0;
        }
    }
    size_t count = 0;
    clbn_status st = for_each_device(select_one, &s, &count);
    if (st != CLBN_SUCCESS)
        return st;
    if (count == 0)
        return clbn_fail(CLBN_ERROR_DEVICE_NOT_FOUND,
                         "no OpenCL platform or device found (is an ICD such as "
                         "pocl-opencl-icd installed?)");
    if (s.found) {
        *info = s.match;
        return CLBN_SUCCESS;
    }
    if (s.kind == 1 || s.kind == 2 || s.kind == 4)
        return clbn_fail(CLBN_ERROR_DEVICE_NOT_FOUND,
                         "no %s OpenCL device found (simulators such as Oclgrind are chosen only "
                         "by name or P:D; `clbn devices` lists them)",
                         s.kind == 1   ? "GPU"
                         : s.kind == 2 ? "CPU"
                                       : "non-simulator");
    return clbn_fail(CLBN_ERROR_DEVICE_NOT_FOUND,
                     "device selector \"%s\" matches no device (use gpu, cpu, P:D indices or part "
                     "of a device name; `clbn devices` lists them)",
                     s.sel);
}

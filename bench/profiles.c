/* profiles.c — the device-profile table (see profiles.h). Figures: NVIDIA H100/H200 class
 * (1024 work-items, 48 KiB of local memory per group without opt-in, 132 SMs, 50 MiB L2,
 * 65,535 groups in grid dimensions 1 and 2), AMD GCN/CDNA (256-item groups by default,
 * 64 KiB LDS, 60 CUs, 4 MiB L2), Intel Xe integrated graphics (512 items, 64 KiB SLM, 24 EUs
 * as compute units, 1 MiB L3 slice), and a small embedded GPU (Mali/Adreno class: 64 items,
 * 16 KiB, 2 cores, 128 KiB cache). */
#include "profiles.h"

#include <stdio.h>
#include <string.h>

#define KIB(x) ((uint64_t)(x) << 10)
#define MIB(x) ((uint64_t)(x) << 20)

/* Field order of clbn_limits: max_work_group_size, local_mem_size, cache_size, compute_units,
 * vector_width, device_type, max_groups_per_dim, kernel_work_group_size, private_mem_size. */
const bench_profile bench_profiles[] = {
    {"nvidia",
     "NVIDIA data-centre GPU",
     {1024, KIB(48), MIB(50), 132, 1, CLBN_DEVICE_KIND_GPU, 65535, 0, 0}},
    {"amd", "AMD GPU", {256, KIB(64), MIB(4), 60, 4, CLBN_DEVICE_KIND_GPU, 4294967296ull, 0, 0}},
    {"intel-igpu",
     "Intel integrated graphics",
     {512, KIB(64), MIB(1), 24, 1, CLBN_DEVICE_KIND_GPU, 4294967296ull, 0, 0}},
    {"embedded",
     "small embedded GPU",
     {64, KIB(16), KIB(128), 2, 4, CLBN_DEVICE_KIND_GPU, 65535, 0, 0}},
    {"cpu",
     "the device's own limits, planned as a CPU",
     {0, 0, 0, 0, 0, CLBN_DEVICE_KIND_CPU, 0, 0, 0}},
};
const size_t bench_profile_count = sizeof bench_profiles / sizeof bench_profiles[0];

const bench_profile *bench_profile_find(const char *name) {
    for (size_t i = 0; name && i < bench_profile_count; i++)
        if (!strcmp(bench_profiles[i].name, name))
            return &bench_profiles[i];
    return NULL;
}

const char *bench_profile_names(void) {
    static char names[256];
    if (!names[0])
        for (size_t i = 0; i < bench_profile_count; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     bench_profiles[i].name);
    return names;
}

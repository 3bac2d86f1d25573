/* profiles.h — device profiles: the limits of real GPUs, imposed on any device through
 * clbn_limits so their code paths run (and Oclgrind enforces them) on a machine without those
 * GPUs. Shared by the tests, `clbn bench --profile` and `clbn validate`. */
#ifndef CLBN_BENCH_PROFILES_H
#define CLBN_BENCH_PROFILES_H

#include <clbn.h>
#include <stddef.h>

typedef struct bench_profile {
    const char *name;
    const char *about;  /* what it stands for, one line */
    clbn_limits limits; /* zeros: the device's own */
} bench_profile;

extern const bench_profile bench_profiles[];
extern const size_t bench_profile_count;

/* The profile called name, or NULL. */
const bench_profile *bench_profile_find(const char *name);
/* "nvidia, amd, intel-igpu, embedded, cpu" for messages. */
const char *bench_profile_names(void);

#endif

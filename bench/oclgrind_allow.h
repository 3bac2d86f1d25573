/* oclgrind_allow.h — the reviewed Oclgrind reports that `clbn validate` does not count as
 * failures: each entry names a report kind (a prefix of the report's first line), a kernel (or
 * "*" for any) and why it is not a bug in clbn. Every other report fails its check. */
#ifndef CLBN_BENCH_OCLGRIND_ALLOW_H
#define CLBN_BENCH_OCLGRIND_ALLOW_H

#include <stddef.h>

typedef struct oclgrind_allow_entry {
    const char *kind_prefix; /* e.g. "Uninitialized value written to" */
    const char *kernel;      /* the kernel's name, or "*" */
    const char *reason;      /* why it is not a clbn bug (a known simulator false positive...) */
} oclgrind_allow_entry;

/* The table, oclgrind_allow_count entries. */
extern const oclgrind_allow_entry oclgrind_allow[];
extern const size_t oclgrind_allow_count;

/* The first entry matching a report whose first line is kind, raised in kernel (NULL or "" when
 * the report names none: only "*" entries match it), or NULL. */
const oclgrind_allow_entry *oclgrind_allow_find(const char *kind, const char *kernel);

#endif

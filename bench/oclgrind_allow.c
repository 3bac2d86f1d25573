/* oclgrind_allow.c — the allowlist of reviewed Oclgrind reports (see oclgrind_allow.h). An entry
 * is added only after a person has read the report and the kernel and decided it is not a clbn
 * bug; the reason says what was found. It starts empty: every report is a failure. */
#include "oclgrind_allow.h"

#include <string.h>

/* A last, empty row keeps the array valid C while the table has no entries. */
const oclgrind_allow_entry oclgrind_allow[] = {
    {NULL, NULL, NULL},
};
const size_t oclgrind_allow_count = sizeof oclgrind_allow / sizeof oclgrind_allow[0] - 1;

const oclgrind_allow_entry *oclgrind_allow_find(const char *kind, const char *kernel) {
    if (!kind)
        return NULL;
    for (size_t i = 0; i < oclgrind_allow_count; i++) {
        const oclgrind_allow_entry *e = &oclgrind_allow[i];
        if (strncmp(kind, e->kind_prefix, strlen(e->kind_prefix)) != 0)
            continue;
        if (!strcmp(e->kernel, "*") || (kernel && !strcmp(e->kernel, kernel)))
            return e;
    }
    return NULL;
}

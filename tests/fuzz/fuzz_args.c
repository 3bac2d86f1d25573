/* fuzz_args.c - libFuzzer target for the argument checks of every entry point: random shapes,
 * layouts, flags, sizes, offsets, queues, wait lists and NULLs against fake buffers, on real
 * contexts and state objects (PoCL), with every enqueue faked so nothing ever runs.
 *
 * Set-up (once): three contexts on the first device (the device's limits, a GPU's imposed, a
 * tiny device's), every program variant built (through the kernel cache, $CLBN_CACHE_DIR),
 * state objects of a few channel counts and flag sets. Then clbn_cl's entries that touch
 * buffers, queues and kernels are replaced: fake cl_mem and cl_command_queue handles answer
 * the sizes and contexts the input chose; clCreateBuffer hands out a sentinel (refusing what a
 * device would); clSetKernelArg, the enqueues and clFinish do nothing but check what they are
 * given. Programs, kernels and kernel queries stay real (built before the fakes).
 *
 * Properties: no crash, no undefined behaviour, no leak; each call succeeds with an empty
 * message or fails with a non-empty one, and a failed call changes nothing (t, the state's
 * buffers, no event returned); every launch the checks let through is valid OpenCL within the
 * limits in force (global a multiple of local, work-group size, local memory, groups per grid
 * dimension); the library never releases a caller's buffer or event, and releases every event
 * it creates. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_util.h"
#include "internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ------------------------------------------------------------------------------------------
 * Fake handles
 * ------------------------------------------------------------------------------------------ */
#define NFAKE_MEM 4
#define NFAKE_QUEUE 3
#define FAKE_MAX_ALLOC ((size_t)1 << 20) /* clCreateBuffer refuses more, as a device would */

typedef struct fake_mem {
    size_t size;
    cl_context ctx;
    int valid; /* 0: clGetMemObjectInfo says CL_INVALID_MEM_OBJECT */
} fake_mem;

typedef struct fake_queue {
    cl_context ctx;
    cl_command_queue_properties props;
    int valid;
} fake_queue;

static unsigned char mem_space[NFAKE_MEM + 1]; /* the last: what clCreateBuffer hands out */
static unsigned char queue_space[NFAKE_QUEUE];
static fake_mem g_mem[NFAKE_MEM];
static fake_queue g_queue[NFAKE_QUEUE];
static cl_context g_foreign_ctx = (cl_context)(uintptr_t)0x40; /* no real context's address */

#define SENTINEL_MEM ((cl_mem)(void *)&mem_space[NFAKE_MEM])

static int fake_mem_index(cl_mem m) {
    const unsigned char *p = (const unsigned char *)(void *)m;
    return p >= mem_space && p < mem_space + NFAKE_MEM ? (int)(p - mem_space) : -1;
}
static int fake_queue_index(cl_command_queue q) {
    const unsigned char *p = (const unsigned char *)(void *)q;
    return p >= queue_space && p < queue_space + NFAKE_QUEUE ? (int)(p - queue_space) : -1;
}

/* Events: malloc'd, so ASan reports a double release and the count catches a missing one. */
#define EVENT_MAGIC 0xe7e7e7e7u
typedef struct fake_event {
    uint32_t magic;
    int by_library; /* created by a fake enqueue (else the harness's wait-list event) */
} fake_event;
static long g_live_events; /* created by the library's enqueues, not yet released */

static cl_event new_event(int by_library) {
    fake_event *e = malloc(sizeof *e);
    FUZZ_CHECK(e != NULL, "out of memory");
    e->magic = EVENT_MAGIC;
    e->by_library = by_library;
    if (by_library)
        g_live_events++;
    return (cl_event)(void *)e;
}

static void check_event(cl_event ev) {
    FUZZ_CHECK(ev && ((fake_event *)(void *)ev)->magic == EVENT_MAGIC, "not an event: %p",
               (void *)ev);
}

static int g_verbose; /* $FUZZ_ARGS_VERBOSE: print every call's status (to write seeds) */

/* What the call under test runs against: its context's limits, for the launch checks. */
static const clbn_context *g_cur;

/* ------------------------------------------------------------------------------------------
 * The fakes
 * ------------------------------------------------------------------------------------------ */
/* A clGet*Info answer: len bytes of src into v (n bytes), as OpenCL specifies. */
static cl_int answer_info(const void *src, size_t len, size_t n, void *v, size_t *r) {
    if (v && n < len)
        return CL_INVALID_VALUE;
    if (v)
        memcpy(v, src, len);
    if (r)
        *r = len;
    return CL_SUCCESS;
}

static cl_int CL_API_CALL fake_get_mem_info(cl_mem m, cl_mem_info w, size_t n, void *v, size_t *r) {
    if (m == SENTINEL_MEM)
        FUZZ_CHECK(0, "the library asked for the size of its own scratch buffer");
    int i = fake_mem_index(m);
    if (i < 0)
        return clbn_cl_real.clGetMemObjectInfo(m, w, n, v, r);
    if (!g_mem[i].valid)
        return CL_INVALID_MEM_OBJECT;
    const void *src;
    size_t len;
    if (w == CL_MEM_SIZE) {
        src = &g_mem[i].size;
        len = sizeof g_mem[i].size;
    } else if (w == CL_MEM_CONTEXT) {
        src = &g_mem[i].ctx;
        len = sizeof g_mem[i].ctx;
    } else {
        return CL_INVALID_VALUE;
    }
    return answer_info(src, len, n, v, r);
}

static cl_int CL_API_CALL fake_get_queue_info(cl_command_queue q, cl_command_queue_info w, size_t n,
                                              void *v, size_t *r) {
    int i = fake_queue_index(q);
    if (i < 0)
        return clbn_cl_real.clGetCommandQueueInfo(q, w, n, v, r);
    if (!g_queue[i].valid)
        return CL_INVALID_COMMAND_QUEUE;
    const void *src;
    size_t len;
    if (w == CL_QUEUE_CONTEXT) {
        src = &g_queue[i].ctx;
        len = sizeof g_queue[i].ctx;
    } else if (w == CL_QUEUE_PROPERTIES) {
        src = &g_queue[i].props;
        len = sizeof g_queue[i].props;
    } else {
        return CL_INVALID_VALUE; /* the device of a fake queue: never asked by the entry points */
    }
    return answer_info(src, len, n, v, r);
}

static cl_mem CL_API_CALL fake_create_buffer(cl_context c, cl_mem_flags f, size_t n, void *h,
                                             cl_int *err) {
    (void)f;
    (void)h;
    FUZZ_CHECK(c != NULL, "clCreateBuffer on a NULL context");
    if (n == 0 || n > FAKE_MAX_ALLOC) {
        *err = CL_INVALID_BUFFER_SIZE;
        return NULL;
    }
    *err = CL_SUCCESS;
    return SENTINEL_MEM;
}

static cl_int CL_API_CALL fake_release_mem(cl_mem m) {
    FUZZ_CHECK(fake_mem_index(m) < 0, "the library released a caller's buffer");
    if (m == SENTINEL_MEM)
        return CL_SUCCESS;
    return clbn_cl_real.clReleaseMemObject(m);
}

/* The local memory asked through clSetKernelArg(k, i, bytes, NULL) of the kernel being set
 * up: the library sets a kernel's arguments from index 0 and enqueues it before the next. */
static cl_kernel g_karg_kernel;
static uint64_t g_karg_local[64];

static cl_int CL_API_CALL fake_set_kernel_arg(cl_kernel k, cl_uint i, size_t n, const void *v) {
    FUZZ_CHECK(k != NULL, "clSetKernelArg on a NULL kernel");
    FUZZ_CHECK(i < 64, "argument index %u", i);
    FUZZ_CHECK(n > 0, "argument %u of size 0", i); /* CL_INVALID_ARG_SIZE on a device */
    if (i == 0) {
        g_karg_kernel = k;
        memset(g_karg_local, 0, sizeof g_karg_local);
    }
    FUZZ_CHECK(k == g_karg_kernel, "arguments of two kernels set in turn");
    g_karg_local[i] = v ? 0 : n;
    if (v && n == sizeof(cl_mem)) {
        cl_mem m;
        memcpy(&m, v, sizeof m);
        int f = fake_mem_index(m);
        FUZZ_CHECK(f < 0 || g_mem[f].valid, "an invalid buffer reached a kernel argument");
    }
    return CL_SUCCESS;
}

static cl_int CL_API_CALL fake_enqueue_kernel(cl_command_queue q, cl_kernel k, cl_uint dim,
                                              const size_t *off, const size_t *g, const size_t *l,
                                              cl_uint nw, const cl_event *w, cl_event *e) {
    FUZZ_CHECK(q != NULL && k != NULL && g != NULL && l != NULL, "NULL queue, kernel or range");
    FUZZ_CHECK(off == NULL, "a global offset");
    FUZZ_CHECK(dim >= 1 && dim <= 3, "dimension %u", dim);
    FUZZ_CHECK((nw > 0) == (w != NULL), "wait list and count disagree");
    for (cl_uint i = 0; i < nw; i++)
        check_event(w[i]);
    const clbn_limits *lim = &g_cur->limits;
    size_t wg = 1;
    for (cl_uint d = 0; d < dim; d++) {
        FUZZ_CHECK(g[d] > 0 && l[d] > 0, "an empty range in dimension %u", d);
        FUZZ_CHECK(g[d] % l[d] == 0, "global %zu is not a multiple of local %zu (dimension %u)",
                   g[d], l[d], d);
        wg *= l[d];
        uint64_t groups = g[d] / l[d];
        uint64_t most = d == 0 ? CLBN_MAX_GROUPS_DIM0
                               : (lim->max_groups_per_dim ? lim->max_groups_per_dim : 65535);
        FUZZ_CHECK(groups <= most, "%llu groups in dimension %u, at most %llu",
                   (unsigned long long)groups, d, (unsigned long long)most);
    }
    size_t kwg = 0;
    cl_ulong own = 0;
    FUZZ_CHECK(clbn_cl_real.clGetKernelWorkGroupInfo(k, g_cur->device, CL_KERNEL_WORK_GROUP_SIZE,
                                                     sizeof kwg, &kwg, NULL) == CL_SUCCESS &&
                   clbn_cl_real.clGetKernelWorkGroupInfo(k, g_cur->device, CL_KERNEL_LOCAL_MEM_SIZE,
                                                         sizeof own, &own, NULL) == CL_SUCCESS,
               "asking the kernel for its limits");
    FUZZ_CHECK(wg <= kwg && wg <= lim->max_work_group_size &&
                   (!lim->kernel_work_group_size || wg <= lim->kernel_work_group_size),
               "a work-group of %zu items (kernel %zu, limit %zu, override %zu)", wg, kwg,
               lim->max_work_group_size, lim->kernel_work_group_size);
    FUZZ_CHECK(k == g_karg_kernel, "a kernel enqueued without its arguments set");
    uint64_t local = 0;
    for (int i = 0; i < 64; i++)
        local += g_karg_local[i];
    /* the kernel's own local memory counts as the planner counts it: rounded to 16 bytes */
    own = (own + 15) & ~(cl_ulong)15;
    FUZZ_CHECK(local + own <= lim->local_mem_size,
               "%llu bytes of local memory and %llu of the kernel's own, limit %llu",
               (unsigned long long)local, (unsigned long long)own,
               (unsigned long long)lim->local_mem_size);
    if (e)
        *e = new_event(1);
    return CL_SUCCESS;
}

/* The bytes a blocking copy moves must lie inside the buffer (a real one: the state's vector)
 * and inside the host memory (ASan checks: the fake reads or writes every byte). */
static void check_copy(cl_mem m, size_t o, size_t n) {
    FUZZ_CHECK(m != NULL, "a copy from a NULL buffer");
    if (m == SENTINEL_MEM)
        return;
    FUZZ_CHECK(fake_mem_index(m) < 0, "the library copied from a caller's buffer");
    size_t size = 0;
    FUZZ_CHECK(clbn_cl_real.clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL) ==
                   CL_SUCCESS,
               "a copy from an invalid buffer");
    FUZZ_CHECK(o <= size && n <= size - o, "a copy of %zu bytes at %zu from a %zu-byte buffer", n,
               o, size);
}

static cl_int CL_API_CALL fake_read_buffer(cl_command_queue q, cl_mem m, cl_bool b, size_t o,
                                           size_t n, void *h, cl_uint nw, const cl_event *w,
                                           cl_event *e) {
    (void)q;
    (void)b;
    (void)nw;
    (void)w;
    check_copy(m, o, n);
    memset(h, 0x3f, n);
    if (e)
        *e = new_event(1);
    return CL_SUCCESS;
}

static cl_int CL_API_CALL fake_write_buffer(cl_command_queue q, cl_mem m, cl_bool b, size_t o,
                                            size_t n, const void *h, cl_uint nw, const cl_event *w,
                                            cl_event *e) {
    (void)q;
    (void)b;
    (void)nw;
    (void)w;
    check_copy(m, o, n);
    volatile unsigned char sink = 0;
    const unsigned char *p = h;
    for (size_t i = 0; i < n; i++)
        sink ^= p[i];
    (void)sink;
    if (e)
        *e = new_event(1);
    return CL_SUCCESS;
}

static cl_int CL_API_CALL fake_finish(cl_command_queue q) {
    FUZZ_CHECK(q != NULL, "clFinish on a NULL queue");
    return CL_SUCCESS;
}

static cl_int CL_API_CALL fake_release_event(cl_event ev) {
    check_event(ev);
    fake_event *e = (fake_event *)(void *)ev;
    FUZZ_CHECK(e->by_library, "the library released a caller's event");
    e->magic = 0;
    free(e);
    g_live_events--;
    return CL_SUCCESS;
}

/* ------------------------------------------------------------------------------------------
 * Set-up
 * ------------------------------------------------------------------------------------------ */
#define NCTX 3
#define NSTATES 6
static clbn_context *g_ctx[NCTX];
static clbn_bn *g_bn[NCTX][NSTATES];

static void die(const char *what) {
    fprintf(stderr, "fuzz_args: %s: %s (%s)\n", what, clbn_last_error_message(),
            "is there an OpenCL device? POCL_DEVICES=pthread");
    exit(1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    g_verbose = getenv("FUZZ_ARGS_VERBOSE") && *getenv("FUZZ_ARGS_VERBOSE");
    setenv("POCL_DEVICES", "pthread", 0);
    setenv("CLBN_CACHE_DIR", "/tmp/clbn-fuzz-kernel-cache", 0);
    clbn_context_options o[NCTX];
    for (int i = 0; i < NCTX; i++)
        clbn_context_options_init(&o[i]);
    /* a GPU's limits imposed: the GPU planner */
    o[1].limits = (clbn_limits){.max_work_group_size = 256,
                                .local_mem_size = 32768,
                                .compute_units = 16,
                                .vector_width = 4,
                                .device_type = CLBN_DEVICE_KIND_GPU};
    /* a tiny device: small groups, little local memory, a low grid ceiling */
    o[2].limits = (clbn_limits){.max_work_group_size = 8,
                                .local_mem_size = 1024,
                                .compute_units = 1,
                                .vector_width = 2,
                                .max_groups_per_dim = 3,
                                .kernel_work_group_size = 4};
    for (int i = 0; i < NCTX; i++) {
        if (clbn_context_create(&o[i], &g_ctx[i]) != CLBN_SUCCESS)
            die("clbn_context_create");
        if (clbn_context_build_all(g_ctx[i]) != CLBN_SUCCESS)
            die("clbn_context_build_all");
    }
    static const uint64_t channels[NSTATES] = {1, 2, 3, 16, 64, 1000};
    static const uint32_t flags[NSTATES] = {CLBN_BN_FLAGS_DEFAULT,
                                            0,
                                            CLBN_BN_FLAGS_DEFAULT | CLBN_ACCUMULATE_GRADIENTS,
                                            CLBN_BN_FLAGS_ALL,
                                            CLBN_USE_SCALE,
                                            CLBN_BN_FLAGS_DEFAULT | CLBN_CUMULATIVE_AVERAGE};
    for (int i = 0; i < NCTX; i++)
        for (int s = 0; s < NSTATES; s++) {
            clbn_bn_options bo;
            clbn_bn_options_init(&bo);
            bo.channels = channels[s];
            bo.flags = flags[s];
            bo.activation = (clbn_activation)(s % 3);
            if (clbn_bn_create(g_ctx[i], &bo, &g_bn[i][s]) != CLBN_SUCCESS)
                die("clbn_bn_create");
        }
    /* From here on nothing is enqueued and no buffer is allocated. */
    clbn_cl.clGetMemObjectInfo = fake_get_mem_info;
    clbn_cl.clGetCommandQueueInfo = fake_get_queue_info;
    clbn_cl.clCreateBuffer = fake_create_buffer;
    clbn_cl.clReleaseMemObject = fake_release_mem;
    clbn_cl.clSetKernelArg = fake_set_kernel_arg;
    clbn_cl.clEnqueueNDRangeKernel = fake_enqueue_kernel;
    clbn_cl.clEnqueueReadBuffer = fake_read_buffer;
    clbn_cl.clEnqueueWriteBuffer = fake_write_buffer;
    clbn_cl.clFinish = fake_finish;
    clbn_cl.clReleaseEvent = fake_release_event;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Decoding the input
 * ------------------------------------------------------------------------------------------ */
typedef struct run {
    fuzz_in in;
    int ci;           /* context of the current state */
    clbn_bn *bn;      /* the current state (may be one created by this input, or NULL) */
    clbn_bn *created; /* created by this input: released at the end */
} run;

static cl_context ctx_choice(run *r, uint8_t sel) {
    switch (sel % 4) {
    case 0:
    case 1:
        return g_ctx[r->ci]->cl_ctx; /* mostly the right one */
    case 2:
        return g_ctx[(r->ci + 1) % NCTX]->cl_ctx; /* another real context */
    default:
        return g_foreign_ctx;
    }
}

/* A buffer argument: NULL, a fake buffer of a chosen size and context, or a real buffer. */
static cl_mem pick_mem(run *r) {
    uint8_t sel = fuzz_u8(&r->in);
    switch (sel % 8) {
    case 0:
        return NULL;
    case 1: /* a real buffer: one of a state's vectors (C floats), in its context */
        return g_bn[sel / 8 % NCTX][sel / 32 % NSTATES]->vec[CLBN_VECTOR_GAMMA];
    default: {
        int i = (sel >> 3) % NFAKE_MEM;
        fake_mem *m = &g_mem[i];
        uint8_t how = fuzz_u8(&r->in);
        m->valid = how % 16 != 0;
        m->ctx = ctx_choice(r, how >> 4);
        /* sizes in floats of the shape mostly: the caller chose the shape first */
        m->size = (size_t)fuzz_u64(&r->in);
        if (how & 8)
            m->size *= 4;
        return (cl_mem)(void *)&mem_space[i];
    }
    }
}

static cl_command_queue pick_queue(run *r) {
    uint8_t sel = fuzz_u8(&r->in);
    switch (sel % 8) {
    case 0:
    case 1:
    case 2:
        return NULL;
    case 3:
        return g_ctx[r->ci]->queue;
    case 4:
        return g_ctx[(r->ci + 1) % NCTX]->queue; /* another context's */
    default: {
        int i = (sel >> 3) % NFAKE_QUEUE;
        uint8_t how = fuzz_u8(&r->in);
        g_queue[i].valid = how % 8 != 0;
        g_queue[i].ctx = ctx_choice(r, how >> 3);
        g_queue[i].props = (how & 0x40) ? CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE : 0;
        if (how & 0x80)
            g_queue[i].props |= CL_QUEUE_PROFILING_ENABLE;
        return (cl_command_queue)(void *)&queue_space[i];
    }
    }
}

static clbn_shape pick_shape(run *r) {
    clbn_shape s;
    uint8_t sel = fuzz_u8(&r->in);
    s.layout = (clbn_layout)(sel % 4 == 3 ? (int)(int8_t)fuzz_u8(&r->in) : sel % 4);
    uint64_t C = r->bn ? r->bn->opt.channels : 1;
    s.c = (sel & 4) ? fuzz_u64(&r->in) : C;
    s.n = fuzz_u64(&r->in);
    s.h = (sel & 8) ? fuzz_u64(&r->in) : 1 + (sel >> 4) % 4;
    s.w = (sel & 8) ? fuzz_u64(&r->in) : 1 + (sel >> 6);
    return s;
}

/* The element count of a shape, saturated (for buffer sizes that fit it exactly). */
static uint64_t shape_elems(const clbn_shape *s) {
    uint64_t h = s->layout == CLBN_LAYOUT_NC ? 1 : s->h, w = s->layout == CLBN_LAYOUT_NC ? 1 : s->w;
    long double e = (long double)s->n * (long double)s->c * (long double)h * (long double)w;
    return e > (long double)UINT64_MAX / 8 ? UINT64_MAX / 8 : (uint64_t)e;
}

/* A buffer for a shape: mostly exactly its size plus the offset (so the calls get past the
 * checks to the plan and the launches), sometimes anything pick_mem gives. */
static cl_mem pick_data(run *r, const clbn_shape *s, uint64_t *offset) {
    uint8_t sel = fuzz_u8(&r->in);
    *offset = (sel & 1) ? fuzz_u64(&r->in) : 0;
    if (sel & 2)
        return pick_mem(r);
    int i = (sel >> 2) % NFAKE_MEM;
    fake_mem *m = &g_mem[i];
    m->valid = 1;
    m->ctx = g_ctx[r->ci]->cl_ctx;
    uint64_t need = shape_elems(s) + *offset;
    uint64_t bytes = need > SIZE_MAX / 4 ? SIZE_MAX : need * 4;
    if (sel & 0x40) /* one float short, or one more */
        bytes = (sel & 0x80) ? bytes + 4 : bytes - (bytes >= 4 ? 4 : 0);
    m->size = (size_t)bytes;
    return (cl_mem)(void *)&mem_space[i];
}

/* A wait list: none, a consistent one of harness events, or one that disagrees with its count. */
typedef struct waits {
    cl_uint n;
    cl_event list[3];
    const cl_event *ptr;
} waits;

static void pick_waits(run *r, waits *w) {
    uint8_t sel = fuzz_u8(&r->in);
    w->n = 0;
    w->ptr = NULL;
    for (int i = 0; i < 3; i++)
        w->list[i] = NULL;
    switch (sel % 4) {
    case 0:
    case 1:
        return;
    case 2:
        w->n = 1 + (sel >> 2) % 3;
        for (cl_uint i = 0; i < w->n; i++)
            w->list[i] = new_event(0);
        w->ptr = w->list;
        return;
    default:
        if (sel & 4)
            w->n = 1 + (sel >> 3) % 3; /* a count without a list */
        else
            w->ptr = w->list; /* a list without a count */
        return;
    }
}

static void free_waits(waits *w) {
    for (int i = 0; i < 3; i++)
        if (w->list[i]) {
            fake_event *e = (fake_event *)(void *)w->list[i];
            FUZZ_CHECK(e->magic == EVENT_MAGIC, "a wait-list event was damaged");
            free(e);
        }
}

/* ------------------------------------------------------------------------------------------
 * The property every call is held to
 * ------------------------------------------------------------------------------------------ */
static void check_result(const char *what, clbn_status st) {
    const char *msg = clbn_last_error_message();
    if (g_verbose)
        fprintf(stderr, "%s: %s %s\n", what, clbn_status_name(st), msg ? msg : "(null)");
    FUZZ_CHECK(msg != NULL, "%s: no message", what);
    if (st == CLBN_SUCCESS)
        FUZZ_CHECK(msg[0] == '\0', "%s succeeded with the message \"%s\"", what, msg);
    else
        FUZZ_CHECK(msg[0] != '\0', "%s failed (%s) without a message", what, clbn_status_name(st));
    FUZZ_CHECK(clbn_status_name(st) && clbn_status_string(st), "%s: no status name", what);
}

typedef struct snapshot {
    uint64_t t;
    cl_mem vec[CLBN_VECTOR_COUNT];
} snapshot;

static snapshot take(const clbn_bn *bn) {
    snapshot s;
    memset(&s, 0, sizeof s);
    if (bn) {
        s.t = bn->t;
        memcpy(s.vec, bn->vec, sizeof s.vec);
    }
    return s;
}

static void check_unchanged(const char *what, const clbn_bn *bn, const snapshot *s) {
    if (!bn)
        return;
    FUZZ_CHECK(bn->t == s->t, "a failed %s changed t", what);
    FUZZ_CHECK(!memcmp(bn->vec, s->vec, sizeof s->vec), "a failed %s swapped the state's buffers",
               what);
}

/* After an enqueueing call: its event (when asked) is released; no event is left alive. */
static void end_enqueue(const char *what, clbn_status st, cl_event *ev, const clbn_bn *bn,
                        const snapshot *s) {
    check_result(what, st);
    if (st != CLBN_SUCCESS) {
        check_unchanged(what, bn, s);
        FUZZ_CHECK(!ev || *ev == NULL, "a failed %s returned an event", what);
    } else if (ev) {
        FUZZ_CHECK(*ev != NULL, "%s returned no event", what);
        fake_release_event(*ev);
    }
    FUZZ_CHECK(g_live_events == 0, "%s leaked %ld events", what, g_live_events);
}

/* ------------------------------------------------------------------------------------------
 * The calls
 * ------------------------------------------------------------------------------------------ */
static void call_op(run *r, int which) {
    clbn_bn *bn = r->bn;
    clbn_shape shape = pick_shape(r);
    uint8_t nulls = fuzz_u8(&r->in);
    const clbn_shape *sp = (nulls & 1) ? NULL : &shape;
    uint64_t xo = 0, yo = 0, dyo = 0, dxo = 0;
    cl_mem x = pick_data(r, &shape, &xo);
    cl_mem y = pick_data(r, &shape, &yo);
    cl_mem dy = which >= 3 ? pick_data(r, &shape, &dyo) : NULL;
    cl_mem dx = which >= 3 ? pick_data(r, &shape, &dxo) : NULL;
    clbn_saved_stats saved;
    const clbn_saved_stats *savedp = NULL;
    if (nulls & 2) {
        /* fake buffers 0 and 1 may already be x and y: the saved buffers reuse them */
        uint64_t C = bn ? bn->opt.channels : 1;
        clbn_shape cs = {CLBN_LAYOUT_NC, 1, C, 1, 1};
        saved.mean = pick_data(r, &cs, &saved.mean_offset);
        saved.invstd = pick_data(r, &cs, &saved.invstd_offset);
        savedp = &saved;
    }
    cl_command_queue q = pick_queue(r);
    waits w;
    pick_waits(r, &w);
    cl_event ev = NULL, *evp = (nulls & 4) ? NULL : &ev;
    if (nulls & 8)
        bn = NULL;
    g_cur = g_ctx[r->ci];
    snapshot s = take(bn);
    clbn_status st;
    const char *what;
    switch (which) {
    case 0:
        what = "clbn_bn_forward_train";
        st = clbn_bn_forward_train(bn, sp, x, xo, y, yo, savedp, q, w.n, w.ptr, evp);
        if (st == CLBN_SUCCESS && (bn->opt.flags & CLBN_TRACK_RUNNING_STATS))
            FUZZ_CHECK(bn->t == s.t + 1, "a tracked training forward did not advance t");
        break;
    case 1:
        what = "clbn_bn_forward_infer";
        st = clbn_bn_forward_infer(bn, sp, x, xo, y, yo, q, w.n, w.ptr, evp);
        break;
    case 2:
        what = "clbn_bn_forward_frozen";
        st = clbn_bn_forward_frozen(bn, sp, x, xo, y, yo, q, w.n, w.ptr, evp);
        break;
    case 3:
        what = "clbn_bn_backward";
        st = clbn_bn_backward(bn, sp, x, xo, (nulls & 16) ? NULL : y, yo, dy, dyo, dx, dxo, savedp,
                              q, w.n, w.ptr, evp);
        break;
    default:
        what = "clbn_bn_backward_frozen";
        st = clbn_bn_backward_frozen(bn, sp, x, xo, (nulls & 16) ? NULL : y, yo, dy, dyo, dx, dxo,
                                     q, w.n, w.ptr, evp);
        break;
    }
    if (which != 0 && bn && st == CLBN_SUCCESS)
        FUZZ_CHECK(bn->t == s.t, "%s changed t", what);
    end_enqueue(what, st, evp, bn, &s);
    free_waits(&w);
}

static void call_plan(run *r, int scratch) {
    clbn_shape shape = pick_shape(r);
    uint8_t sel = fuzz_u8(&r->in);
    clbn_bn *bn = (sel & 1) ? NULL : r->bn;
    const clbn_shape *sp = (sel & 2) ? NULL : &shape;
    g_cur = g_ctx[r->ci];
    if (scratch) {
        uint64_t bytes = 0;
        clbn_status st = clbn_bn_scratch_size(bn, sp, (sel & 4) ? NULL : &bytes);
        check_result("clbn_bn_scratch_size", st);
        return;
    }
    clbn_op op = (clbn_op)((sel >> 3) % 6 == 5 ? (int)(int8_t)fuzz_u8(&r->in) : (sel >> 3) % 6);
    clbn_plan p;
    clbn_status st = clbn_bn_query_plan(bn, op, sp, (sel & 4) ? NULL : &p);
    check_result("clbn_bn_query_plan", st);
    if (st == CLBN_SUCCESS) {
        const clbn_limits *lim = &g_cur->limits;
        FUZZ_CHECK(p.work_group_size >= 1 && p.work_group_size <= lim->max_work_group_size,
                   "plan work-group %zu", p.work_group_size);
        FUZZ_CHECK(p.local_bytes <= lim->local_mem_size, "plan local %llu > %llu",
                   (unsigned long long)p.local_bytes, (unsigned long long)lim->local_mem_size);
        FUZZ_CHECK(p.split >= 1 && p.kernels >= 1 && p.kernels <= 3, "plan split %llu kernels %u",
                   (unsigned long long)p.split, p.kernels);
        FUZZ_CHECK(strcmp(clbn_strategy_name(p.strategy), "unknown") != 0, "strategy %d",
                   (int)p.strategy);
    }
}

static void call_vector(run *r, int write) {
    uint8_t sel = fuzz_u8(&r->in);
    clbn_bn *bn = (sel & 1) ? NULL : r->bn;
    clbn_vector v =
        (clbn_vector)((sel >> 1) % 10 == 9 ? (int)(int8_t)fuzz_u8(&r->in) : (int)((sel >> 1) % 10));
    uint64_t C = r->bn ? r->bn->opt.channels : 1;
    uint64_t count = (sel & 0x80) ? fuzz_u64(&r->in) : C;
    /* exactly count floats when that is small, else C: the library copies C or refuses */
    size_t cap = count <= 4096 ? (size_t)count : (size_t)C;
    float *host = (sel & 0x40) ? NULL : malloc((cap ? cap : 1) * sizeof *host);
    if (host && write)
        for (size_t i = 0; i < cap; i++)
            host[i] = (float)i;
    g_cur = g_ctx[r->ci];
    snapshot s = take(bn);
    clbn_status st =
        write ? clbn_bn_write_vector(bn, v, host, count) : clbn_bn_read_vector(bn, v, host, count);
    check_result(write ? "clbn_bn_write_vector" : "clbn_bn_read_vector", st);
    if (st != CLBN_SUCCESS)
        check_unchanged("vector copy", bn, &s);
    cl_mem buf = NULL;
    st = clbn_bn_get_buffer(bn, v, (sel & 0x20) ? NULL : &buf);
    check_result("clbn_bn_get_buffer", st);
    FUZZ_CHECK(clbn_vector_name(v) != NULL, "no vector name");
    free(host);
}

static void call_misc(run *r) {
    uint8_t sel = fuzz_u8(&r->in);
    clbn_bn *bn = (sel & 1) ? NULL : r->bn;
    g_cur = g_ctx[r->ci];
    switch ((sel >> 1) % 5) {
    case 0: {
        uint64_t C = r->bn ? r->bn->opt.channels : 1;
        float *a = (sel & 0x40) ? NULL : calloc((size_t)C, sizeof *a);
        float *b = (sel & 0x80) ? NULL : calloc((size_t)C, sizeof *b);
        check_result("clbn_bn_export_folded", clbn_bn_export_folded(bn, a, b));
        free(a);
        free(b);
        break;
    }
    case 1: {
        uint64_t t = fuzz_u64(&r->in), back = 0;
        check_result("clbn_bn_set_batches_tracked", clbn_bn_set_batches_tracked(bn, t));
        clbn_status st = clbn_bn_get_batches_tracked(bn, (sel & 0x40) ? NULL : &back);
        check_result("clbn_bn_get_batches_tracked", st);
        FUZZ_CHECK(st != CLBN_SUCCESS || back == t, "t %llu came back %llu", (unsigned long long)t,
                   (unsigned long long)back);
        break;
    }
    case 2:
        check_result("clbn_bn_reset_running_stats", clbn_bn_reset_running_stats(bn));
        break;
    case 3: {
        clbn_bn_options o;
        check_result("clbn_bn_get_options", clbn_bn_get_options(bn, (sel & 0x40) ? NULL : &o));
        break;
    }
    default: {
        clbn_tuning t = {(uint32_t)fuzz_u64(&r->in), (uint32_t)fuzz_u64(&r->in),
                         (uint32_t)fuzz_u64(&r->in), (uint32_t)fuzz_u64(&r->in)};
        clbn_context *ctx = (sel & 0x40) ? NULL : g_ctx[r->ci];
        check_result("clbn_context_set_tuning",
                     clbn_context_set_tuning(ctx, (sel & 0x80) ? NULL : &t));
        clbn_tuning back;
        int source = 0;
        check_result("clbn_context_get_tuning", clbn_context_get_tuning(ctx, &back, &source));
        break;
    }
    }
}

/* clbn_bn_create with fuzzed options; the new state becomes the current one for the rest of
 * the input (its buffers are the fake allocator's sentinel). */
static void call_create(run *r) {
    uint8_t sel = fuzz_u8(&r->in);
    clbn_bn_options o;
    clbn_bn_options_init(&o);
    o.channels = fuzz_u64(&r->in);
    if (sel & 1) {
        uint32_t u = (uint32_t)fuzz_bytes(&r->in, 4);
        memcpy(&o.eps, &u, 4);
    }
    if (sel & 2) {
        uint32_t u = (uint32_t)fuzz_bytes(&r->in, 4);
        memcpy(&o.factor, &u, 4);
    }
    o.flags = (sel & 4) ? (uint32_t)fuzz_bytes(&r->in, 4) : fuzz_u8(&r->in) & CLBN_BN_FLAGS_ALL;
    o.activation = (clbn_activation)((sel & 8) ? (int)(int8_t)fuzz_u8(&r->in) : (sel >> 4) % 3);
    clbn_context *ctx = (sel & 0x40) ? NULL : g_ctx[r->ci];
    clbn_bn *bn = (clbn_bn *)(uintptr_t)1; /* must be set to NULL on failure */
    g_cur = g_ctx[r->ci];
    clbn_status st =
        clbn_bn_create(ctx, (sel & 0x80) ? NULL : &o, (sel & 0x40) && (sel & 0x20) ? NULL : &bn);
    check_result("clbn_bn_create", st);
    if (st != CLBN_SUCCESS) {
        if (!((sel & 0x40) && (sel & 0x20)))
            FUZZ_CHECK(bn == NULL, "a failed clbn_bn_create left a state");
        return;
    }
    FUZZ_CHECK(clbn_check_options(&o) == CLBN_SUCCESS, "created with invalid options");
    clbn_bn_release(r->created);
    r->created = r->bn = bn;
}

/* What the calls of one input change in a set-up state, put back after it, so each input runs
 * against the same states (a reproducible run). Kernels made on first use stay: a cache. */
typedef struct state_mut {
    uint64_t t;
    cl_mem vec[CLBN_VECTOR_COUNT], run_alt[2], saved_alt[2];
    cl_mem scratch_n, scratch_a, scratch_b;
    uint64_t scratch_n_len, scratch_a_len, scratch_b_len;
} state_mut;

static void save_state(const clbn_bn *bn, state_mut *m) {
    m->t = bn->t;
    memcpy(m->vec, bn->vec, sizeof m->vec);
    memcpy(m->run_alt, bn->run_alt, sizeof m->run_alt);
    memcpy(m->saved_alt, bn->saved_alt, sizeof m->saved_alt);
    m->scratch_n = bn->scratch_n;
    m->scratch_a = bn->scratch_a;
    m->scratch_b = bn->scratch_b;
    m->scratch_n_len = bn->scratch_n_len;
    m->scratch_a_len = bn->scratch_a_len;
    m->scratch_b_len = bn->scratch_b_len;
}

static void restore_state(clbn_bn *bn, const state_mut *m) {
    /* scratch made during the input is the fake allocator's sentinel: nothing to release */
    bn->t = m->t;
    memcpy(bn->vec, m->vec, sizeof m->vec);
    memcpy(bn->run_alt, m->run_alt, sizeof m->run_alt);
    memcpy(bn->saved_alt, m->saved_alt, sizeof m->saved_alt);
    bn->scratch_n = m->scratch_n;
    bn->scratch_a = m->scratch_a;
    bn->scratch_b = m->scratch_b;
    bn->scratch_n_len = m->scratch_n_len;
    bn->scratch_a_len = m->scratch_a_len;
    bn->scratch_b_len = m->scratch_b_len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    run r = {{data, size}, 0, NULL, NULL};
    uint8_t head = fuzz_u8(&r.in);
    r.ci = head % NCTX;
    r.bn = g_bn[r.ci][(head / NCTX) % NSTATES];
    /* the tuned parameters in force are part of the input; put back afterwards */
    clbn_tuning saved_tuning[NCTX];
    int saved_source[NCTX];
    for (int i = 0; i < NCTX; i++) {
        saved_tuning[i] = g_ctx[i]->tuning;
        saved_source[i] = g_ctx[i]->tuning_source;
    }
    /* and so are t, the double buffers and the scratch a call swaps or grows */
    static state_mut saved_state[NCTX][NSTATES];
    for (int i = 0; i < NCTX; i++)
        for (int s = 0; s < NSTATES; s++)
            save_state(g_bn[i][s], &saved_state[i][s]);
    for (int calls = 0; calls < 8 && r.in.n > 0; calls++) {
        uint8_t which = fuzz_u8(&r.in);
        switch (which % 12) {
        case 0:
        case 1:
        case 2:
        case 3:
        case 4:
            call_op(&r, which % 12);
            break;
        case 5:
            call_op(&r, 0);
            break;
        case 6:
            call_plan(&r, 0);
            break;
        case 7:
            call_plan(&r, 1);
            break;
        case 8:
            call_vector(&r, which & 0x10);
            break;
        case 9:
            call_misc(&r);
            break;
        case 10:
            call_create(&r);
            break;
        default: /* switch to another state */
            r.ci = (which >> 4) % NCTX;
            r.bn = g_bn[r.ci][fuzz_u8(&r.in) % NSTATES];
            break;
        }
    }
    clbn_bn_release(r.created);
    for (int i = 0; i < NCTX; i++) {
        g_ctx[i]->tuning = saved_tuning[i];
        g_ctx[i]->tuning_source = saved_source[i];
        for (int s = 0; s < NSTATES; s++)
            restore_state(g_bn[i][s], &saved_state[i][s]);
    }
    return 0;
}

/* clbn.h — the public API of clbn, a portable batch-normalization backend for OpenCL.
 * This is the only header a user includes. It is valid C11 and C++. */
#ifndef CLBN_H
#define CLBN_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#ifdef __APPLE__
#include <OpenCL/cl.h>
#else
#include <CL/cl.h>
#endif
#include <stddef.h>
#include <stdint.h>

#if defined(CLBN_STATIC)
#define CLBN_API
#elif defined(_WIN32)
#ifdef CLBN_BUILDING
#define CLBN_API __declspec(dllexport)
#else
#define CLBN_API __declspec(dllimport)
#endif
#elif defined(__GNUC__)
#define CLBN_API __attribute__((visibility("default")))
#else
#define CLBN_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------
 * Version: compile-time numbers here, run-time ones from clbn_version_number().
 * ------------------------------------------------------------------------------------------ */
#define CLBN_VERSION_MAJOR 0
#define CLBN_VERSION_MINOR 1
#define CLBN_VERSION_PATCH 0
#define CLBN_VERSION_NUMBER                                                                        \
    (CLBN_VERSION_MAJOR * 10000 + CLBN_VERSION_MINOR * 100 + CLBN_VERSION_PATCH)

CLBN_API unsigned clbn_version_number(void);
CLBN_API const char *clbn_version_string(void);
/* FNV-1a 64 of the kernel sources built into this library: two builds with the same hash run
 * the same kernels (`clbn validate` records it next to each result). */
CLBN_API uint64_t clbn_kernel_source_hash(void);

/* ------------------------------------------------------------------------------------------
 * Status. One table gives the enum, clbn_status_name() and clbn_status_string().
 * OpenCL error codes (-1 .. -999 and extension codes) pass through unchanged; clbn's own codes
 * start at -4000, a range OpenCL does not use.
 * ------------------------------------------------------------------------------------------ */
#define CLBN_STATUS_TABLE(X)                                                                       \
    X(CLBN_SUCCESS, 0, "success")                                                                  \
    X(CLBN_ERROR_INVALID_ARGUMENT, -4000, "an argument has an invalid value")                      \
    X(CLBN_ERROR_NULL_ARGUMENT, -4001, "a required handle, buffer or pointer is NULL")             \
    X(CLBN_ERROR_INVALID_SHAPE, -4002, "the shape is zero, overflows, or does not fit the layout") \
    X(CLBN_ERROR_CHANNEL_MISMATCH, -4003, "the channel count does not match the state object")     \
    X(CLBN_ERROR_BUFFER_TOO_SMALL, -4004, "a buffer is smaller than the shape plus its offset")    \
    X(CLBN_ERROR_INVALID_LAYOUT, -4005, "the layout is not one of NCHW, NHWC, NC")                 \
    X(CLBN_ERROR_INVALID_OPTION, -4006, "an option or flag is unknown or out of range")            \
    X(CLBN_ERROR_EMPTY_BATCH, -4007, "there are no values per channel (m = 0)")                    \
    X(CLBN_ERROR_TOO_FEW_VALUES, -4008, "expected more than 1 value per channel when training")    \
    X(CLBN_ERROR_DEVICE_NOT_FOUND, -4009, "no OpenCL device matches the selector")                 \
    X(CLBN_ERROR_BUILD_FAILED, -4010, "the OpenCL program failed to build (see the build log)")    \
    X(CLBN_ERROR_OUT_OF_HOST_MEMORY, -4011, "a host memory allocation failed")                     \
    X(CLBN_ERROR_IO, -4012, "a file could not be opened, read, written or renamed")                \
    X(CLBN_ERROR_FILE_CORRUPT, -4013, "the file is truncated or its checksum does not match")      \
    X(CLBN_ERROR_FILE_VERSION, -4014, "the file was written by a newer, unknown format version")   \
    X(CLBN_ERROR_FILE_MISMATCH, -4015, "the file is not a clbn state file or does not match")      \
    X(CLBN_ERROR_UNSUPPORTED, -4016, "the device or build does not support this")                  \
    X(CLBN_ERROR_INTERNAL, -4017, "internal error (a bug in clbn)")

typedef enum clbn_status {
#define CLBN_STATUS_ENUM_(name, value, text) name = value,
    CLBN_STATUS_TABLE(CLBN_STATUS_ENUM_)
#undef CLBN_STATUS_ENUM_
        CLBN_STATUS_MIN_ = -2147483647 /* keeps OpenCL codes representable */
} clbn_status;

/* The enum's name ("CLBN_ERROR_INVALID_SHAPE", or "CL_INVALID_VALUE" for an OpenCL code). */
CLBN_API const char *clbn_status_name(clbn_status status);
/* A sentence saying what the status means. */
CLBN_API const char *clbn_status_string(clbn_status status);
/* The detail message of the last failed call on this thread (names the argument, holds the
 * build log, ...). "" when the last call succeeded. Each thread has its own: a call changes
 * only the message of the thread that made it. The pointer is the calling thread's; it is valid
 * until that thread's next clbn call or its exit (copy it to keep it or hand it on). */
CLBN_API const char *clbn_last_error_message(void);

/* ------------------------------------------------------------------------------------------
 * Threads. clbn keeps no global state and needs no set-up, so any thread may call it. The
 * rules, tested under ThreadSanitizer by tests/threads/test_threads.c:
 * - Anywhere, at any time: calls that take neither a context nor a state object
 *   (clbn_device_list, clbn_status_name/_string, clbn_last_error_message, the version calls,
 *   the *_options_init and *_name functions).
 * - A context may be shared by threads. At the same time, on different threads: its getters,
 *   clbn_context_save_tuning, clbn_context_build_all, clbn_bn_create and clbn_bn_load on it,
 *   and every call on its different state objects. A program variant is built once, on first
 *   use, under the context's lock: a thread that needs a variant another thread is building
 *   waits for it. Separate contexts share nothing but the cache folder, whose entries are
 *   written atomically.
 * - The caller serializes: clbn_context_set_tuning (no other call on that context meanwhile);
 *   clbn_context_release (after every other thread is done with the context and every state
 *   object created on it is released).
 * - A state object is used by one thread at a time: every call that takes it, clbn_bn_release
 *   included. Threads may share one by holding a lock of their own around each call, or
 *   around calls that belong together (a training forward and the backward that reads the
 *   statistics it saved). The lock orders the host side only; the calls must also run on the
 *   device in the order they were made (the ordering rule of the state object, below).
 * - Queues: the context's queue may be used by several threads at once (OpenCL queues are
 *   thread-safe); commands run in the order they were enqueued, whichever thread enqueued
 *   them, and a blocking clbn call (the vector copies, create, reset, folding, save) also waits
 *   for whatever other threads enqueued there before it. A thread may pass a queue of its own
 *   (on the context's cl_context) instead; calls on different state objects need no ordering
 *   between them. Kernel objects are per state object, so threads never set the arguments of
 *   one cl_kernel at once.
 * - The caller's buffers follow OpenCL's rules: one buffer may be an input of calls in flight
 *   at once, but the output of one call at a time, and work on other queues that touches it is
 *   ordered with events. Events clbn returns are the caller's, to wait on or release from any
 *   thread.
 * ------------------------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------------------------
 * Devices
 * ------------------------------------------------------------------------------------------ */
typedef struct clbn_device_info {
    uint32_t platform_index; /* index among clGetPlatformIDs */
    uint32_t device_index;   /* index among the platform's devices (all types) */
    cl_platform_id platform;
    cl_device_id device;
    cl_device_type type;
    char platform_name[128];
    char device_name[128];
    char vendor[128];
    char driver_version[64];
    char device_version[64];
    char opencl_c_version[64];
    uint64_t global_mem_size;
    uint64_t global_mem_cache_size;
    uint64_t local_mem_size;
    uint64_t max_mem_alloc_size;
    size_t max_work_group_size;
    uint32_t compute_units;
    uint32_t preferred_vector_width_float;
    uint32_t has_fp64;     /* cl_khr_fp64 reported (the kernels never use it) */
    uint32_t has_fp16;     /* cl_khr_fp16 reported */
    uint32_t is_simulator; /* a simulator such as Oclgrind: the "gpu" and "cpu" selectors and
                              the default choice skip it; a name or P:D selects it */
    /* A CPU device only: the host's last-level cache as the operating system reports it
     * (sysfs, else sysconf), 0 when it reports none. clbn_limits.cache_size uses it when the
     * driver reports no global memory cache (PoCL reports none). */
    uint64_t host_llc_size;
    char host_llc_source[16]; /* "sysfs", "sysconf" or "" */
} clbn_device_info;

/* Lists every device of every platform. With infos == NULL only *count is set; otherwise up to
 * capacity entries are filled and *count is the total number of devices. */
CLBN_API clbn_status clbn_device_list(clbn_device_info *infos, size_t capacity, size_t *count);

/* ------------------------------------------------------------------------------------------
 * Context: a device, a default in-order command queue, the built programs and the tuned
 * parameters for that device.
 * Thread rule: a context may be shared by threads (program builds are serialized inside), except
 * for clbn_context_set_tuning and clbn_context_release; see "Threads" above.
 * ------------------------------------------------------------------------------------------ */
typedef struct clbn_context_s clbn_context;

/* Device limits the kernels plan with. A zero field means "the device's own value". Setting
 * them imposes a smaller device's limits (say a GPU's work-group of 64 and 32 KiB of local
 * memory) on a bigger one, so those code paths can be tested on any device. Work-group size,
 * local memory and the kernel work-group limit can only shrink what the device offers. */
typedef struct clbn_limits {
    size_t max_work_group_size;
    uint64_t local_mem_size;
    /* Global memory cache, used to choose the single-read path: the driver's figure, or for a
     * CPU device whose driver reports none, clbn_device_info.host_llc_size. */
    uint64_t cache_size;
    uint32_t compute_units;
    uint32_t vector_width; /* widest float vector the kernels may use: 1, 2, 4, 8 or 16 */
    uint32_t device_type;  /* 0: the device's; CLBN_DEVICE_KIND_GPU or _CPU: plan as one */
    /* Most work-groups a grid may hold in dimensions 1 and 2. OpenCL cannot report it; NVIDIA's
     * driver allows 65,535, the smallest ceiling known, which is the default (0). Dimension 0
     * is held to 2^31 - 1 groups, NVIDIA's ceiling there. */
    uint64_t max_groups_per_dim;
    /* Caps every kernel's work-group size below its CL_KERNEL_WORK_GROUP_SIZE (which register
     * pressure can set below the device's maximum); 0: the kernels' own limits. */
    size_t kernel_work_group_size;
    /* Bytes of private arrays a work-item may hold. OpenCL cannot report it: the default (0)
     * is 65,536 for PoCL on a CPU (an item runs on its thread's stack) and 16,384 elsewhere,
     * under the 32 KiB that Intel's CPU runtime gives an item by default. It sizes the CPU
     * NHWC kernels' tile of channels: as many as it holds at 32 bytes a channel, a power of
     * two from 16 to 2048 (those kernels hold up to 4 KiB more, for a row of up to 8 channel
     * vectors in registers). It can only shrink. */
    uint64_t private_mem_size;
} clbn_limits;

#define CLBN_DEVICE_KIND_CPU 1u
#define CLBN_DEVICE_KIND_GPU 2u

typedef struct clbn_context_options {
    /* Device selector: "gpu", "cpu", "P:D" (platform and device indices) or a substring of the
     * device name (case-insensitive). NULL or "": $CLBN_DEVICE, else the first GPU, else the
     * first device. */
    const char *device;
    clbn_limits limits;    /* zeros: the device's own */
    const char *cache_dir; /* NULL: $CLBN_CACHE_DIR, else $XDG_CACHE_HOME/clbn, ~/.cache/clbn */
    int disable_cache;     /* nonzero: never read or write the on-disk program cache */
    int ignore_tuning;     /* nonzero: the default parameters, not a tuned set from the cache */
} clbn_context_options;

CLBN_API void clbn_context_options_init(clbn_context_options *options);

/* Creates a context (and its own cl_context and queue) on the selected device.
 * @param[in] options NULL for the defaults.
 * @param[out] context released with clbn_context_release(). */
CLBN_API clbn_status clbn_context_create(const clbn_context_options *options,
                                         clbn_context **context);

/* Wraps the caller's cl_context and in-order cl_command_queue (retained, released again by
 * clbn_context_release), so CLBlast or the caller's own kernels share the queue. The device
 * is the queue's. options->device is ignored. An out-of-order queue is refused
 * (CLBN_ERROR_INVALID_ARGUMENT): the kernels of one call, and the calls on one state object,
 * rely on the queue's order. Both calls refuse a device whose OpenCL C version is below 1.2
 * (CLBN_ERROR_UNSUPPORTED), the version the kernels are written in. */
CLBN_API clbn_status clbn_context_wrap(cl_context cl_ctx, cl_command_queue queue,
                                       const clbn_context_options *options, clbn_context **context);

/* Accepts NULL. Waits for the context's queue to finish. Release the context's state objects
 * first, and only when no other thread uses the context. */
CLBN_API void clbn_context_release(clbn_context *context);

CLBN_API clbn_status clbn_context_get_device_info(const clbn_context *context,
                                                  clbn_device_info *info);
/* The limits in force (the device's, with the overrides applied). */
CLBN_API clbn_status clbn_context_get_limits(const clbn_context *context, clbn_limits *limits);
/* Borrowed handles: valid while the context lives; do not release them. */
CLBN_API clbn_status clbn_context_get_cl(const clbn_context *context, cl_context *cl_ctx,
                                         cl_command_queue *queue);
/* Tuned parameters: the targets the planner aims for, within the limits in force (a plan
 * never exceeds the device's, a profile's or a kernel's limits, whatever the set asks). Zero
 * fields mean the default. `clbn tune` measures candidates on the device and stores the
 * winners in the cache folder, keyed by platform, device, driver version and the limits in
 * force; a context created later with the same key loads them (unless ignore_tuning or
 * disable_cache is set, or the file is damaged, which is then ignored). */
typedef struct clbn_tuning {
    uint32_t cpu_reduce_items_per_cu;      /* CPU reductions: work-items per compute unit (2) */
    uint32_t cpu_elementwise_items_per_cu; /* CPU elementwise passes: items per unit (2) */
    uint32_t gpu_work_group;               /* GPU reductions: work-group size target (256) */
    uint32_t gpu_groups_per_cu;            /* GPU: work-groups per compute unit to aim for (4) */
} clbn_tuning;

#define CLBN_TUNING_DEFAULT 0 /* the defaults */
#define CLBN_TUNING_FILE 1    /* loaded from the cache folder */
#define CLBN_TUNING_SET 2     /* set by clbn_context_set_tuning */

/* The parameters in force, every field filled in; *source (may be NULL) tells where they
 * came from (CLBN_TUNING_*). */
CLBN_API clbn_status clbn_context_get_tuning(const clbn_context *context, clbn_tuning *tuning,
                                             int *source);
/* Sets the parameters for the plans made from now on (NULL: the defaults); fields out of range
 * (items 1-64, work-group 1-4096, groups per unit 1-64) are refused with
 * CLBN_ERROR_INVALID_OPTION and nothing changes. Not concurrent with any other call on the
 * context or its state objects (plans read the parameters without a lock): set them before
 * threads start using the context, or while they are stopped. */
CLBN_API clbn_status clbn_context_set_tuning(clbn_context *context, const clbn_tuning *tuning);
/* Writes the parameters in force to the cache folder (atomically) for later contexts with the
 * same device, driver and limits; the file's path goes to path (if not NULL, cap bytes).
 * CLBN_ERROR_IO when the context has no cache folder or the write fails. */
CLBN_API clbn_status clbn_context_save_tuning(const clbn_context *context, char *path, size_t cap);

/* Builds every kernel variant now (otherwise programs are built on first use). Returns
 * CLBN_ERROR_BUILD_FAILED with the build log in clbn_last_error_message() on failure. */
CLBN_API clbn_status clbn_context_build_all(clbn_context *context);

/* ------------------------------------------------------------------------------------------
 * Batch-norm state object.
 * Thread rule: a state object is used by one thread at a time (every call on it, release
 * included); threads that share one hold a lock of their own around each call. See "Threads".
 * Ordering rule: the calls on one state object share its scratch memory and its double
 * buffers, so they must run on the device in the order they were made: enqueue them on one
 * in-order queue, or, when they use different queues, make each call wait (wait_list) for the
 * previous call's event, and flush the previous call's queue (clFlush) before another queue
 * waits for its event (OpenCL requires it). Two calls of one state object in flight at once,
 * unordered, race. The blocking accessors (vector copies, reset, folding, save) run on the
 * context's queue: after calls on another queue, wait for the last one's event (or finish that
 * queue) first. Out-of-order queues are refused.
 * ------------------------------------------------------------------------------------------ */
typedef struct clbn_bn_s clbn_bn;

typedef enum clbn_layout {
    CLBN_LAYOUT_NCHW = 0, /* [N, C, H, W], W fastest */
    CLBN_LAYOUT_NHWC = 1, /* [N, H, W, C], C fastest */
    CLBN_LAYOUT_NC = 2    /* [N, C] (dense layers); h and w must be 0 or 1 */
} clbn_layout;

typedef enum clbn_activation {
    CLBN_ACTIVATION_NONE = 0,
    CLBN_ACTIVATION_RELU = 1,
    CLBN_ACTIVATION_SIGMOID = 2
} clbn_activation;

/* Flags of clbn_bn_options.flags. */
#define CLBN_USE_SCALE (1u << 0)            /* gamma (else gamma = 1) */
#define CLBN_USE_SHIFT (1u << 1)            /* beta (else beta = 0) */
#define CLBN_TRACK_RUNNING_STATS (1u << 2)  /* training forward updates running mean/var */
#define CLBN_CUMULATIVE_AVERAGE (1u << 3)   /* factor = 1/(1+t): plain average over batches */
#define CLBN_ACCUMULATE_GRADIENTS (1u << 4) /* backward adds into dgamma/dbeta */
#define CLBN_BN_FLAGS_ALL (0x1fu)
#define CLBN_BN_FLAGS_DEFAULT (CLBN_USE_SCALE | CLBN_USE_SHIFT | CLBN_TRACK_RUNNING_STATS)

typedef struct clbn_bn_options {
    uint64_t channels;          /* C, required (> 0) */
    float eps;                  /* default 1e-5 (PyTorch, cuDNN's minimum is 1e-5) */
    float factor;               /* weight of the new batch in (0, 1]: PyTorch momentum, cuDNN
                                   exponentialAverageFactor; Keras momentum 0.99 is 0.01. Default 0.1 */
    uint32_t flags;             /* CLBN_BN_FLAGS_DEFAULT */
    clbn_activation activation; /* fused after the affine step; default none */
} clbn_bn_options;

CLBN_API void clbn_bn_options_init(clbn_bn_options *options);

/* Creates a state object: gamma = 1, beta = 0, running mean 0, var 1, t = 0, gradients 0. */
CLBN_API clbn_status clbn_bn_create(clbn_context *context, const clbn_bn_options *options,
                                    clbn_bn **bn);
/* Accepts NULL. */
CLBN_API void clbn_bn_release(clbn_bn *bn);
CLBN_API clbn_status clbn_bn_get_options(const clbn_bn *bn, clbn_bn_options *options);

typedef enum clbn_vector {
    CLBN_VECTOR_GAMMA = 0,
    CLBN_VECTOR_BETA = 1,
    CLBN_VECTOR_RUNNING_MEAN = 2,
    CLBN_VECTOR_RUNNING_VAR = 3, /* unbiased */
    CLBN_VECTOR_SAVED_MEAN = 4,  /* of the last training forward without caller buffers */
    CLBN_VECTOR_SAVED_INVSTD = 5,
    CLBN_VECTOR_DGAMMA = 6,
    CLBN_VECTOR_DBETA = 7,
    CLBN_VECTOR_COUNT = 8
} clbn_vector;

CLBN_API const char *clbn_vector_name(clbn_vector vector);

/* The device buffer (C floats, owned by the state object) holding a vector. Running mean and
 * var, and saved mean and invstd, are double-buffered so a failed call leaves them as they
 * were: their cl_mem changes after each training forward that writes them, so get it again
 * after one. */
CLBN_API clbn_status clbn_bn_get_buffer(clbn_bn *bn, clbn_vector vector, cl_mem *buffer);
/* Blocking copies between a vector and host memory (count must equal C). They run on the
 * context's queue after the work already enqueued there. */
CLBN_API clbn_status clbn_bn_read_vector(clbn_bn *bn, clbn_vector vector, float *host,
                                         uint64_t count);
CLBN_API clbn_status clbn_bn_write_vector(clbn_bn *bn, clbn_vector vector, const float *host,
                                          uint64_t count);
/* t, the number of batches tracked (drives the cumulative average). */
CLBN_API clbn_status clbn_bn_get_batches_tracked(const clbn_bn *bn, uint64_t *t);
CLBN_API clbn_status clbn_bn_set_batches_tracked(clbn_bn *bn, uint64_t t);
/* Running mean 0, running var 1, t = 0 (blocking). */
CLBN_API clbn_status clbn_bn_reset_running_stats(clbn_bn *bn);
/* Folding for inference, per channel: a = gamma / sqrt(running_var + eps),
 * b = beta - a * running_mean, so y = a*x + b (blocking; a and b hold C floats). */
CLBN_API clbn_status clbn_bn_export_folded(clbn_bn *bn, float *a, float *b);

/* Saves the whole object (options, every vector, t) to path: versioned header and checksum,
 * written to a temporary file, synced and renamed (blocking). */
CLBN_API clbn_status clbn_bn_save(clbn_bn *bn, const char *path);
/* Creates a state object from a file written by clbn_bn_save. Truncated, corrupt,
 * newer-version and foreign files are refused (CLBN_ERROR_FILE_*). */
CLBN_API clbn_status clbn_bn_load(clbn_context *context, const char *path, clbn_bn **bn);

/* ------------------------------------------------------------------------------------------
 * Operations. Buffers are the caller's; offsets count elements (floats), not bytes. Each call
 * checks every argument before it enqueues anything, and a failed call changes nothing.
 * Calls enqueue on `queue` (NULL: the context's), after the events of wait_list, and return
 * without blocking; `event` (may be NULL) receives an event for the last command enqueued.
 * ------------------------------------------------------------------------------------------ */
typedef struct clbn_shape {
    clbn_layout layout;
    uint64_t n, c, h, w;
} clbn_shape;

/* Where a training forward writes its saved statistics (C floats each) and where a backward
 * reads them. NULL in place of a clbn_saved_stats*: the state object's own buffers. */
typedef struct clbn_saved_stats {
    cl_mem mean;
    uint64_t mean_offset;
    cl_mem invstd;
    uint64_t invstd_offset;
} clbn_saved_stats;

/* Training forward with this batch's statistics; updates the running statistics (when
 * tracking) and t. y may be x (in place). m = N*H*W must be > 0, and > 1 when tracking. */
CLBN_API clbn_status clbn_bn_forward_train(clbn_bn *bn, const clbn_shape *shape, cl_mem x,
                                           uint64_t x_offset, cl_mem y, uint64_t y_offset,
                                           const clbn_saved_stats *saved, cl_command_queue queue,
                                           cl_uint num_wait, const cl_event *wait_list,
                                           cl_event *event);

/* Inference forward with the running statistics. When the state does not track running
 * statistics, it normalizes with the batch's statistics (as PyTorch does with
 * track_running_stats=False) and updates nothing. y may be x. */
CLBN_API clbn_status clbn_bn_forward_infer(clbn_bn *bn, const clbn_shape *shape, cl_mem x,
                                           uint64_t x_offset, cl_mem y, uint64_t y_offset,
                                           cl_command_queue queue, cl_uint num_wait,
                                           const cl_event *wait_list, cl_event *event);

/* Training forward with frozen statistics: the running statistics act as constants (the output
 * equals the inference forward's; nothing is updated, t does not advance). Pair it with
 * clbn_bn_backward_frozen. Requires tracking on. */
CLBN_API clbn_status clbn_bn_forward_frozen(clbn_bn *bn, const clbn_shape *shape, cl_mem x,
                                            uint64_t x_offset, cl_mem y, uint64_t y_offset,
                                            cl_command_queue queue, cl_uint num_wait,
                                            const cl_event *wait_list, cl_event *event);

/* Backward of the training forward: dx, and dgamma, dbeta into the state's buffers (written,
 * or added to with CLBN_ACCUMULATE_GRADIENTS). With a fused activation, y is the forward's
 * output (required); without one, y is ignored and may be NULL. saved: the statistics the
 * forward saved (NULL: the state's own). dx may be dy (in place). dgamma and dbeta are written
 * even when scale or shift is off: they are then the gradients gamma and beta would have. */
CLBN_API clbn_status clbn_bn_backward(clbn_bn *bn, const clbn_shape *shape, cl_mem x,
                                      uint64_t x_offset, cl_mem y, uint64_t y_offset, cl_mem dy,
                                      uint64_t dy_offset, cl_mem dx, uint64_t dx_offset,
                                      const clbn_saved_stats *saved, cl_command_queue queue,
                                      cl_uint num_wait, const cl_event *wait_list, cl_event *event);

/* Backward of the frozen forward: dx = gamma * invstd_running * dz, dgamma and dbeta as above
 * with x̂ from the running statistics. */
CLBN_API clbn_status clbn_bn_backward_frozen(clbn_bn *bn, const clbn_shape *shape, cl_mem x,
                                             uint64_t x_offset, cl_mem y, uint64_t y_offset,
                                             cl_mem dy, uint64_t dy_offset, cl_mem dx,
                                             uint64_t dx_offset, cl_command_queue queue,
                                             cl_uint num_wait, const cl_event *wait_list,
                                             cl_event *event);

/* ------------------------------------------------------------------------------------------
 * Plans: what a call will run, so tests can assert which path ran.
 * ------------------------------------------------------------------------------------------ */
typedef enum clbn_op {
    CLBN_OP_FORWARD_TRAIN = 0,
    CLBN_OP_FORWARD_INFER = 1,
    CLBN_OP_FORWARD_FROZEN = 2,
    CLBN_OP_BACKWARD = 3,
    CLBN_OP_BACKWARD_FROZEN = 4
} clbn_op;

typedef enum clbn_strategy {
    CLBN_STRATEGY_ELEMENTWISE = 0,       /* no reduction (inference, frozen forward) */
    CLBN_STRATEGY_GROUP_PER_CHANNEL = 1, /* one work-group reduces a whole channel */
    CLBN_STRATEGY_SPLIT = 2,             /* several work-groups per channel, then a merge */
    CLBN_STRATEGY_SINGLE_READ = 3        /* one group per channel reduces, then normalizes its
                                            slice while it is still in cache: one kernel */
} clbn_strategy;

CLBN_API const char *clbn_strategy_name(clbn_strategy strategy);

typedef struct clbn_plan {
    clbn_strategy strategy;
    size_t work_group_size;     /* of the reduction kernel (of the elementwise one without) */
    uint64_t split;             /* work-groups per channel in the reduction (1 unless SPLIT) */
    uint32_t vector_width;      /* floats per load */
    uint32_t kernels;           /* kernel launches per call */
    uint64_t scratch_bytes;     /* device scratch the call needs (owned by the state object) */
    uint32_t channels_per_item; /* NHWC/NC: channel vectors per work-item (a program variant;
                                   1 on a GPU, so its per-channel arrays stay in registers) */
    uint64_t local_bytes;       /* local memory of the call's largest kernel: what the call
                                   asks for plus the kernel's own, never above the limit */
    uint64_t private_bytes;     /* the most private memory per work-item any kernel of the call
                                   uses, as the driver reports it (large: spilled arrays) */
    uint64_t groups[2];         /* the most work-groups any kernel of the call launches in grid
                                   dimensions 0 and 1 */
} clbn_plan;

/* Builds the program variant the plan needs, if it is not built yet (its kernels' own limits
 * shape the plan). */
CLBN_API clbn_status clbn_bn_query_plan(const clbn_bn *bn, clbn_op op, const clbn_shape *shape,
                                        clbn_plan *plan);
/* The scratch memory (bytes) the state object keeps for this shape: the largest over ops. It
 * is allocated once, on the first call that needs more than the state holds. */
CLBN_API clbn_status clbn_bn_scratch_size(const clbn_bn *bn, const clbn_shape *shape,
                                          uint64_t *bytes);

#ifdef __cplusplus
}
#endif

#endif /* CLBN_H */

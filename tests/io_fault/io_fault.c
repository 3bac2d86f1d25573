/* io_fault.c — the file-I/O hook of the tests: fails the file calls that save a file with the
 * errno a full disk (ENOSPC), a read-only file system (EROFS) or a permission error (EACCES)
 * gives, for paths that contain a given text. Tests run as root, where permissions stop no
 * write, so the failures are injected rather than arranged.
 *
 * Built as a preload library for the command-line tool (LD_PRELOAD) and linked into test
 * binaries: a symbol of the executable or of a preloaded library comes before libc's for every
 * caller, libclbn.so included. Controlled by the environment, read at each call:
 *   CLBN_IO_FAULT       ENOSPC, EROFS or EACCES; unset or empty: everything passes through
 *   CLBN_IO_FAULT_PATH  only paths containing this text fail (required: the drivers write
 *                       their own caches through the same calls)
 * ENOSPC fails write() and fsync() on descriptors opened for a matching path (stdio's buffered
 * writes reach the disk inside libc, so a tool sees the error at fflush, fsync or fclose);
 * EROFS and EACCES fail creating a matching file (mkstemp, open with O_CREAT, fopen for
 * writing) and renaming onto one. Every injected failure is counted in CLBN_IO_FAULT_LOG's
 * file, one line per failure, when that is set. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { MAX_FDS = 1024 };
static unsigned char g_matched[MAX_FDS]; /* descriptors opened for a matching path */

static void *next_symbol(const char *name) {
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        static const char msg[] = "io_fault: a libc symbol is missing\n";
        (void)!write(2, msg, sizeof msg - 1);
        abort();
    }
    return p;
}
/* The next definition of a function (libc's, or a sanitizer's in front of it), looked up once;
 * POSIX's way of turning dlsym's object pointer into a function pointer. */
typedef int (*open_fn)(const char *, int, ...);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef int (*fd_fn)(int);
typedef int (*mkstemp_fn)(char *);
typedef FILE *(*fopen_fn)(const char *, const char *);
typedef int (*rename_fn)(const char *, const char *);
#define NEXT(name, type)                                                                           \
    static type next_##name;                                                                       \
    if (!next_##name)                                                                              \
    *(void **)&next_##name = next_symbol(#name)

/* The errno to inject (0: none) for a call of this kind. */
static int fault_errno(int creating) {
    const char *e = getenv("CLBN_IO_FAULT");
    if (!e || !*e)
        return 0;
    if (!strcmp(e, "ENOSPC"))
        return creating ? 0 : ENOSPC;
    if (!strcmp(e, "EROFS"))
        return creating ? EROFS : 0;
    if (!strcmp(e, "EACCES"))
        return creating ? EACCES : 0;
    return 0;
}

static int path_matches(const char *path) {
    const char *want = getenv("CLBN_IO_FAULT_PATH");
    return path && want && *want && strstr(path, want) != NULL;
}

static void log_failure(const char *call, const char *path, int err) {
    const char *log = getenv("CLBN_IO_FAULT_LOG");
    if (!log || !*log)
        return;
    NEXT(open, open_fn);
    int fd = next_open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0)
        return;
    char line[512];
    int n = snprintf(line, sizeof line, "%s %s %s\n", call, strerrorname_np(err),
                     path ? path : "(descriptor)");
    NEXT(write, write_fn);
    if (n > 0)
        (void)!next_write(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    close(fd);
}

/* Creating a file: fail with EROFS or EACCES for a matching path. */
static int create_fails(const char *call, const char *path) {
    int err = path_matches(path) ? fault_errno(1) : 0;
    if (err) {
        log_failure(call, path, err);
        errno = err;
    }
    return err;
}

static void remember(int fd, const char *path) {
    if (fd >= 0 && fd < MAX_FDS)
        g_matched[fd] = (unsigned char)path_matches(path);
}

/* Writing to a descriptor: fail with ENOSPC when it was opened for a matching path. */
static int write_fails(const char *call, int fd) {
    int err = fd >= 0 && fd < MAX_FDS && g_matched[fd] ? fault_errno(0) : 0;
    if (err) {
        log_failure(call, NULL, err);
        errno = err;
    }
    return err;
}

int mkstemp(char *template) {
    NEXT(mkstemp, mkstemp_fn);
    if (create_fails("mkstemp", template))
        return -1;
    int fd = next_mkstemp(template);
    remember(fd, template);
    return fd;
}

int mkstemp64(char *template) {
    NEXT(mkstemp64, mkstemp_fn);
    if (create_fails("mkstemp", template))
        return -1;
    int fd = next_mkstemp64(template);
    remember(fd, template);
    return fd;
}

static int open_common(const char *call, open_fn next, const char *path, int flags, mode_t mode) {
    if ((flags & O_CREAT) && create_fails(call, path))
        return -1;
    int fd = next(path, flags, mode);
    if ((flags & O_ACCMODE) != O_RDONLY)
        remember(fd, path);
    return fd;
}

int open(const char *path, int flags, ...) {
    NEXT(open, open_fn);
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    return open_common("open", next_open, path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    NEXT(open64, open_fn);
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    return open_common("open", next_open64, path, flags, mode);
}

static FILE *fopen_common(fopen_fn next, const char *path, const char *mode) {
    int writing = strpbrk(mode, "wa+") != NULL;
    if (writing && create_fails("fopen", path))
        return NULL;
    FILE *f = next(path, mode);
    if (f && writing)
        remember(fileno(f), path);
    return f;
}

FILE *fopen(const char *path, const char *mode) {
    NEXT(fopen, fopen_fn);
    return fopen_common(next_fopen, path, mode);
}

FILE *fopen64(const char *path, const char *mode) {
    NEXT(fopen64, fopen_fn);
    return fopen_common(next_fopen64, path, mode);
}

ssize_t write(int fd, const void *buf, size_t n) {
    NEXT(write, write_fn);
    if (write_fails("write", fd))
        return -1;
    return next_write(fd, buf, n);
}

int fsync(int fd) {
    NEXT(fsync, fd_fn);
    if (write_fails("fsync", fd))
        return -1;
    return next_fsync(fd);
}

int fdatasync(int fd) {
    NEXT(fdatasync, fd_fn);
    if (write_fails("fdatasync", fd))
        return -1;
    return next_fdatasync(fd);
}

int close(int fd) {
    NEXT(close, fd_fn);
    if (fd >= 0 && fd < MAX_FDS)
        g_matched[fd] = 0;
    return next_close(fd);
}

int rename(const char *from, const char *to) {
    NEXT(rename, rename_fn);
    if (create_fails("rename", to))
        return -1;
    return next_rename(from, to);
}

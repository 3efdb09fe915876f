/* atomic_file.c: write to a temporary name, fsync, rename, fsync the folder. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "atomic_file.h"

char *atomic_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);  /* "/x" lives in "/" */
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

lomo_status atomic_file_begin(lomo_ctx *ctx, atomic_file *f, const char *path) {
    f->fd = -1;
    f->tmp = NULL;
    f->path = path ? strdup(path) : NULL;
    if (!f->path) return lomo_fail(ctx, path ? LOMO_ERR_OOM : LOMO_ERR_INVALID_ARG, "atomic_file_begin: no path");
    size_t n = strlen(path) + 64;
    f->tmp = malloc(n);
    if (!f->tmp) {
        atomic_file_discard(f);
        return lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory", path);
    }
    /* "<path>.tmp.<pid>.<nonce>": the pid and clock keep concurrent writers apart,
     * O_EXCL makes a collision a retry rather than a clobber. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long nonce = (unsigned long)ts.tv_nsec ^ ((unsigned long)ts.tv_sec << 20) ^ (unsigned long)(size_t)f;
    int err = 0;
    for (int attempt = 0; attempt < 100; attempt++) {
        snprintf(f->tmp, n, "%s.tmp.%ld.%lx", path, (long)getpid(), nonce + (unsigned long)attempt * 7919u);
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (f->fd >= 0) return LOMO_OK;
        err = errno;
        if (err != EEXIST) break;
    }
    free(f->tmp);
    f->tmp = NULL;  /* nothing was created */
    atomic_file_discard(f);
    return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot create a temporary file next to it: %s", path, strerror(err));
}

lomo_status atomic_file_write(lomo_ctx *ctx, atomic_file *f, const void *buf, size_t n) {
    if (f->fd < 0) return lomo_fail(ctx, LOMO_ERR_STATE, "%s: write after the file was closed", f->path);
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n > ((size_t)1 << 30) ? (size_t)1 << 30 : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return lomo_fail(ctx, LOMO_ERR_IO, "%s: write failed: %s", f->path,
                             w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return LOMO_OK;
}

lomo_status atomic_file_finish(lomo_ctx *ctx, atomic_file *f) {
    if (f->fd < 0) return lomo_fail(ctx, LOMO_ERR_STATE, "%s: finish after the file was closed", f->path);
    int bad = fsync(f->fd) != 0, e = errno;
    if (close(f->fd) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    f->fd = -1;
    if (bad) return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot flush to disk: %s", f->path, strerror(e));
    return LOMO_OK;
}

lomo_status atomic_file_publish(lomo_ctx *ctx, atomic_file *f) {
    if (f->fd >= 0 || !f->tmp) return lomo_fail(ctx, LOMO_ERR_STATE, "%s: publish before finish", f->path);
    if (rename(f->tmp, f->path) != 0)
        return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot rename %s over it: %s", f->path, f->tmp, strerror(errno));
    free(f->tmp);
    f->tmp = NULL;
    return LOMO_OK;
}

void atomic_file_discard(atomic_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    if (f->tmp) unlink(f->tmp);
    free(f->tmp);
    free(f->path);
    f->tmp = f->path = NULL;
}

lomo_status atomic_dir_sync(lomo_ctx *ctx, const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot open folder to sync it: %s", dir, strerror(errno));
    /* some filesystems cannot fsync a folder (EINVAL); the rename is still done */
    int bad = fsync(fd) != 0 && errno != EINVAL, e = errno;
    close(fd);
    if (bad) return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot sync folder: %s", dir, strerror(e));
    return LOMO_OK;
}

lomo_status atomic_write_file(lomo_ctx *ctx, const char *path, const void *buf, size_t n) {
    atomic_file f;
    lomo_status st = atomic_file_begin(ctx, &f, path);
    if (st) return st;
    st = atomic_file_write(ctx, &f, buf, n);
    if (!st) st = atomic_file_finish(ctx, &f);
    if (!st) st = atomic_file_publish(ctx, &f);
    atomic_file_discard(&f);
    if (!st) {
        char *dir = atomic_dirname(path);
        st = dir ? atomic_dir_sync(ctx, dir) : lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory", path);
        free(dir);
    }
    return st;
}

lomo_status atomic_make_dirs(lomo_ctx *ctx, const char *dir, const char *who) {
    if (!*dir) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "%s: empty folder name", who);
    char *p = strdup(dir);
    if (!p) return lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory", dir);
    for (char *s = p + 1; ; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            lomo_status st = lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot create folder: %s", p, strerror(errno));
            free(p);
            return st;
        }
        *s = c;
        if (!c) break;
    }
    free(p);
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return lomo_fail(ctx, LOMO_ERR_IO, "%s: not a folder", dir);
    return LOMO_OK;
}

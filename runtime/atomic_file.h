/*
 * atomic_file.h: files that appear whole or not at all.
 *
 * A file is written under a temporary name in its own folder (so rename
 * stays on one filesystem), fsync'd, then renamed over the target, and the
 * folder is fsync'd so the rename itself is durable. Until the rename the
 * old file is untouched; on any error the temporary file is removed. To
 * replace several files together (a sharded checkpoint), write and finish
 * all of them first, then publish them one after the other: a failure
 * before publishing leaves every old file as it was.
 *
 *   atomic_file f;
 *   if (atomic_file_begin(ctx, &f, path)) return ...;
 *   st = atomic_file_write(ctx, &f, buf, n);   (as often as needed)
 *   if (!st) st = atomic_file_finish(ctx, &f);
 *   if (!st) st = atomic_file_publish(ctx, &f);
 *   atomic_file_discard(&f);                   (always: frees, removes a leftover temp)
 *   if (!st) st = atomic_dir_sync(ctx, dir);
 */
#ifndef LOMO_ATOMIC_FILE_H
#define LOMO_ATOMIC_FILE_H

#include <stddef.h>
#include "internal.h"

typedef struct atomic_file {
    int fd;         /* -1 once closed */
    char *path;     /* the target */
    char *tmp;      /* the temporary file; NULL once renamed or removed */
} atomic_file;

/* Creates the temporary file next to path (mode 0666 less the umask). */
lomo_status atomic_file_begin(lomo_ctx *ctx, atomic_file *f, const char *path);
/* Appends buf[n], retrying short writes. */
lomo_status atomic_file_write(lomo_ctx *ctx, atomic_file *f, const void *buf, size_t n);
/* fsync and close: the data is on disk, still under the temporary name. */
lomo_status atomic_file_finish(lomo_ctx *ctx, atomic_file *f);
/* Renames the finished temporary file over the target. */
lomo_status atomic_file_publish(lomo_ctx *ctx, atomic_file *f);
/* Closes and removes the temporary file if it is still there, frees names. Idempotent. */
void atomic_file_discard(atomic_file *f);

/* fsync of a folder, making renames and removals in it durable. */
lomo_status atomic_dir_sync(lomo_ctx *ctx, const char *dir);
/* The folder of path ("." when it has none), malloc'd; NULL when out of memory. */
char *atomic_dirname(const char *path);

/* Creates dir and its missing parents (mkdir -p); who names the caller in an empty-name error. */
lomo_status atomic_make_dirs(lomo_ctx *ctx, const char *dir, const char *who);

/* Replaces path with buf[n] in one step: begin, write, finish, publish, folder sync. */
lomo_status atomic_write_file(lomo_ctx *ctx, const char *path, const void *buf, size_t n);

#endif

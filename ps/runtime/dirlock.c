/* dirlock.c: see dirlock.h. */
#include "dirlock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "util.h"

#define DIRLOCK_PATH_MAX 4096

struct ps_dirlock {
    int fd; /* the open lock file; closing it drops the lock */
};

/* The pid the holder wrote, or 0 when it cannot be read. */
static long holder_pid(int fd) {
    char buf[32] = "";
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    long pid = strtol(buf, NULL, 10);
    return pid > 0 ? pid : 0;
}

ps_status ps_dirlock_create(const char *dir, ps_dirlock **ret_lock, char *err, size_t err_len) {
    char path[DIRLOCK_PATH_MAX];
    if (!dir || !*dir ||
        snprintf(path, sizeof path, "%s/%s", dir, PS_DIRLOCK_FILE) >= (int)sizeof path) {
        ps_set_err(err, err_len, "no directory to lock, or its path is too long");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_dirlock *lock = calloc(1, sizeof *lock);
    if (!lock) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    ps_status st = PS_STATUS_IO;
    lock->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock->fd < 0) {
        ps_set_err(err, err_len, "cannot open %s: %s", path, strerror(errno));
        goto fail_free;
    }
    if (flock(lock->fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            long pid = holder_pid(lock->fd);
            char who[64] = "another process";
            if (pid)
                snprintf(who, sizeof who, "another process (pid %ld)", pid);
            ps_set_err(err, err_len,
                       "%s already uses %s (it holds %s): stop it first, or give this one a "
                       "directory of its own",
                       who, dir, path);
            st = PS_STATUS_FAILED_PRECONDITION;
        } else {
            ps_set_err(err, err_len, "cannot lock %s: %s", path, strerror(errno));
        }
        goto fail_close;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(lock->fd, 0) != 0 || pwrite(lock->fd, pid, (size_t)len, 0) != len) {
        /* only the message of a later process loses the pid: the lock holds */
    }
    *ret_lock = lock;
    return PS_STATUS_OK;
fail_close:
    close(lock->fd);
fail_free:
    free(lock);
    return st;
}

void ps_dirlock_destroy(ps_dirlock *lock) {
    if (!lock)
        return;
    close(lock->fd);
    free(lock);
}

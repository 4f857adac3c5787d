/* snapshot_files.c: the snapshot files of a data directory: their names, the listing
 * (which may delete unfinished .tmp files) and the newest one's header (see snapshot.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snapshot.h"
#include "snapshot_internal.h"
#include "util.h"

void snapshot_file_name(uint64_t lsn, char *name) {
    snprintf(name, SNAPSHOT_NAME_LEN + 1, "snap-%020llu.snap", (unsigned long long)lsn);
}

/* True when name is a snapshot's (tmp: with ".tmp" after it); its LSN to ret_lsn. */
static bool name_parse(const char *name, bool tmp, uint64_t *ret_lsn) {
    size_t len = strlen(name);
    if (len != SNAPSHOT_NAME_LEN + (tmp ? 4u : 0u) || strncmp(name, "snap-", 5) != 0 ||
        strncmp(name + 25, tmp ? ".snap.tmp" : ".snap", tmp ? 9 : 5) != 0)
        return false;
    uint64_t lsn = 0;
    for (int i = 5; i < 25; i++) {
        if (name[i] < '0' || name[i] > '9' || lsn > (UINT64_MAX - 9) / 10)
            return false;
        lsn = lsn * 10 + (uint64_t)(name[i] - '0');
    }
    *ret_lsn = lsn;
    return true;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

ps_status snapshot_dir_list(const char *dir, bool delete_tmp, uint64_t **ret_lsns,
                            size_t *ret_count) {
    ps_status st = PS_STATUS_OK;
    uint64_t *lsns = malloc(SNAPSHOT_MAX_FILES * sizeof *lsns);
    size_t n = 0;
    DIR *d = lsns ? opendir(dir) : NULL;
    if (!d && lsns && errno == ENOENT) { /* a new data directory: none yet */
        *ret_lsns = lsns;
        *ret_count = 0;
        return PS_STATUS_OK;
    }
    if (!d) {
        free(lsns);
        return lsns ? PS_STATUS_IO : PS_STATUS_NO_MEMORY;
    }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            st = errno ? PS_STATUS_IO : PS_STATUS_OK;
            break;
        }
        uint64_t lsn;
        if (name_parse(e->d_name, true, &lsn)) { /* never finished: a crash while writing */
            if (delete_tmp && unlinkat(dirfd(d), e->d_name, 0) != 0 && errno != ENOENT) {
                st = PS_STATUS_IO;
                break;
            }
            continue;
        }
        if (!name_parse(e->d_name, false, &lsn))
            continue;
        if (n == SNAPSHOT_MAX_FILES) {
            st = PS_STATUS_RESOURCE_EXHAUSTED;
            break;
        }
        lsns[n++] = lsn;
    }
    closedir(d);
    if (st != PS_STATUS_OK) {
        free(lsns);
        return st;
    }
    qsort(lsns, n, sizeof *lsns, cmp_u64);
    *ret_lsns = lsns;
    *ret_count = n;
    return PS_STATUS_OK;
}

int snapshot_dir_sync(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int e = fsync(fd) != 0 ? errno : 0;
    close(fd);
    return e;
}

ps_status snapshot_newest(const char *dir, bool *ret_found, snapshot_info *ret_info, char *err,
                          size_t err_len) {
    uint64_t *lsns = NULL;
    size_t n = 0;
    ps_status st = snapshot_dir_list(dir, false, &lsns, &n);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "cannot list the snapshots in %s: %s", dir,
                   st == PS_STATUS_RESOURCE_EXHAUSTED ? "too many files" : strerror(errno));
        return st;
    }
    if (n == 0) {
        free(lsns);
        *ret_found = false;
        return PS_STATUS_OK;
    }
    char name[SNAPSHOT_NAME_LEN + 1];
    snapshot_file_name(lsns[n - 1], name);
    free(lsns);
    snapshot_info info = {0};
    snprintf(info.path, sizeof info.path, "%s/%s", dir, name);
    int fd = open(info.path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ps_set_err(err, err_len, "cannot open snapshot %s: %s", info.path, strerror(errno));
        return PS_STATUS_IO;
    }
    st = snapshot_header_read(fd, &info, err, err_len);
    close(fd);
    if (st != PS_STATUS_OK)
        return st;
    *ret_found = true;
    *ret_info = info;
    return PS_STATUS_OK;
}

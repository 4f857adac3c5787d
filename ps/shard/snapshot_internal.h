/* snapshot_internal.h: what the snapshot files' writer (snapshot_write.c), reader
 * (snapshot_load.c), recovery (snapshot_recover.c) and thread (snapshot_taker.c) share:
 * file names and the format's constants (see snapshot.h). */
#ifndef PS_SHARD_SNAPSHOT_INTERNAL_H
#define PS_SHARD_SNAPSHOT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define SNAPSHOT_MAGIC "PSSNAP01"
#define SNAPSHOT_FRAME_MAGIC 0x46535350u /* bytes 'P' 'S' 'S' 'F' */
#define SNAPSHOT_FRAME_IMAGE 1u
#define SNAPSHOT_FRAME_END 2u
#define SNAPSHOT_FRAME_DEDUP 3u /* format 2 on */
#define SNAPSHOT_NAME_LEN 30    /* "snap-" + 20 digits + ".snap" */
#define SNAPSHOT_MAX_FILES 4096 /* snapshot files one listing considers */

/* "snap-%020llu.snap" into name (at least SNAPSHOT_NAME_LEN + 1 bytes). */
void snapshot_file_name(uint64_t lsn, char *name);

/* The LSNs of the complete snapshots in dir, ascending (malloc'd; none when dir does not
 * exist). With delete_tmp (only the process that holds the log: it alone writes
 * snapshots), every .tmp one is deleted first. IO, RESOURCE_EXHAUSTED past
 * SNAPSHOT_MAX_FILES, NO_MEMORY. */
ps_status snapshot_dir_list(const char *dir, bool delete_tmp, uint64_t **ret_lsns,
                            size_t *ret_count);

/* Reads and checks the header of the snapshot open as fd (info->path names it) into
 * info (lsn, seq, max_version, chunks, wall_ms). PARSE or IO, err naming the file. */
struct snapshot_info;
ps_status snapshot_header_read(int fd, struct snapshot_info *info, char *err, size_t err_len);

/* fsyncs the directory: 0 or an errno. */
int snapshot_dir_sync(const char *dir);

#endif

/* wal_format.h: the write-ahead log's on-disk format (records and segment names), in
 * one place, for the log (wal.c, wal_flush.c) and its recovery (wal_recover.c).
 *
 * Why it is built this way: the format must be read back by a later build, so it is
 * written with explicit byte order, never a struct dump; the checksum comes first in a
 * record so that what it covers (the rest of the header, then the payload) is one
 * contiguous range, hashed in one pass right after the record is copied in.
 *
 * A record, little-endian, WAL_RECORD_HEADER_BYTES + len bytes, no padding:
 *   offset  size  field
 *        0     8  checksum: XXH3-64 (seed 0) of bytes 8 .. 32 + len
 *        8     4  magic WAL_RECORD_MAGIC ("PSWL" in file order)
 *       12     4  len: payload bytes, at most WAL_MAX_PAYLOAD_BYTES
 *       16     8  lsn
 *       24     1  type (the caller's)
 *       25     7  reserved, zero
 *       32   len  payload
 * A segment is a plain sequence of records (no file header): wal-<LSN of its first
 * record as 20 decimal digits>.log; an empty segment names the next LSN to be written.
 */
#ifndef PS_SHARD_WAL_FORMAT_H
#define PS_SHARD_WAL_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define WAL_RECORD_HEADER_BYTES 32u
#define WAL_RECORD_MAGIC 0x4c575350u /* bytes 'P' 'S' 'W' 'L' */
#define WAL_SEGMENT_NAME_LEN 28      /* "wal-" + 20 digits + ".log" */
#define WAL_MAX_SEGMENTS (1u << 20)  /* files one recovery or drop considers */

/* A record header as decoded (the checksum is checked separately). */
typedef struct wal_record_header {
    uint64_t checksum;
    uint32_t magic;
    uint32_t len;
    uint64_t lsn;
    uint8_t type;
    bool reserved_zero; /* all 7 reserved bytes are zero */
} wal_record_header;

/* Writes a record's header fields (checksum 0) at `dst` (WAL_RECORD_HEADER_BYTES). */
void wal_format_header_put(uint8_t *dst, uint8_t type, uint64_t lsn, uint32_t len);
/* Computes the checksum of the whole record at `rec` (header then payload, contiguous)
 * and stores it in its first 8 bytes. */
void wal_format_checksum_put(uint8_t *rec);
/* The checksum a record at `rec` with payload length `len` should carry. */
uint64_t wal_format_checksum(const uint8_t *rec, uint32_t len);

void wal_format_header_get(const uint8_t *src, wal_record_header *ret_header);
/* The payload length of the (complete, well-formed) record at `rec`, and its LSN. */
uint32_t wal_format_len_get(const uint8_t *rec);
uint64_t wal_format_lsn_get(const uint8_t *rec);

/* Why the record at `rec` (`avail` bytes left in the file) is not a good record, or
 * NULL when it is: complete, right magic, zero reserved bytes, length within limits,
 * checksum matching. The LSN is the caller's business. */
const char *wal_format_record_check(const uint8_t *rec, uint64_t avail);

/* "wal-%020llu.log" into name (at least WAL_SEGMENT_NAME_LEN + 1 bytes). */
void wal_format_segment_name(uint64_t first_lsn, char *name);
/* True when `name` is exactly a segment's name; its first LSN goes to ret_lsn. */
bool wal_format_segment_parse(const char *name, uint64_t *ret_lsn);

/* The first LSNs of the segments in `dir`, ascending (malloc'd; the caller frees).
 * Other files are ignored. IO when the directory cannot be read, RESOURCE_EXHAUSTED
 * past WAL_MAX_SEGMENTS, NO_MEMORY. */
ps_status wal_format_segments_list(const char *dir, uint64_t **ret_lsns, size_t *ret_count);

/* Writes every byte (retrying short writes and EINTR): 0, or the errno of the write
 * that failed (ENOSPC when the disk filled up after part of it). */
int wal_format_write_all(int fd, const void *data, size_t len);
/* The same with pwrite at offset off (the file position does not move). */
int wal_format_pwrite_all(int fd, const void *data, size_t len, uint64_t off);

#endif

/* util.h: small helpers of the base layer, shared by libraries and programs: clocks,
 * the key of a dense chunk, strict number parsing, whole-file reads and atomic writes,
 * error texts, the check that a name is text. Nothing here knows of the network or of processes
 * (ps/runtime does). */
#ifndef PS_COMMON_UTIL_H
#define PS_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "status.h"

#define PS_DEFAULT_CHUNK_FLOATS (64u * 1024u) /* 256 KiB of float32 per chunk */

/* Monotonic and wall clocks in milliseconds / microseconds. */
int64_t ps_now_ms(void);
int64_t ps_now_us(void);
int64_t ps_wall_ms(void);
/* The CLOCK_REALTIME time `ms` from now, for pthread_cond_timedwait. */
struct timespec ps_abstime_after_ms(int64_t ms);

/* The key of chunk `chunk` of dense tensor `tensor` of version `version` of `model`:
 * XXH3-64 over "model" NUL, the version as 8 little-endian bytes, "tensor" NUL and the
 * chunk index as 4 little-endian bytes. Versions of a model live side by side on the
 * shards under different keys. Every process computes the same key
 * (tests/unit/test_agreement.c pins it). */
uint64_t ps_key_dense(const char *model, uint64_t version, const char *tensor, uint32_t chunk);
/* The key of row `id` of sparse table `table` of `model` (tables belong to a model, not
 * to one of its versions): XXH3-64 of id as 8 little-endian bytes, seeded with the
 * table's key, XXH3-64 of "model\0" "table\0". The seeded 8-byte hash is XXH3's
 * fastest path: clients and shards compute a key for every row they move, so the
 * table's key is computed once (ps_key_table) and each row's from it (ps_key_row_in). */
uint64_t ps_key_row(const char *model, const char *table, uint64_t id);
uint64_t ps_key_table(const char *model, const char *table);
uint64_t ps_key_row_in(uint64_t table_key, uint64_t id);
/* ret_keys[i] = ps_key_row_in(table_key, ids[i]) for i < n. */
void ps_keys_rows(uint64_t table_key, size_t n, const uint64_t *ids, uint64_t *ret_keys);

/* Strict number parsing for flags: the whole string must be a number in range. */
/* Room for `need` elements of `elem` bytes in the growable array *arr of *cap (doubled
 * from `first` until it fits; realloc keeps what it held). false when out of memory:
 * *arr and *cap are then as they were. */
bool ps_reserve(void **arr, size_t *cap, size_t need, size_t elem, size_t first);

bool ps_parse_u64(const char *s, uint64_t *ret);
/* ps_parse_u64 within [min, max]. */
bool ps_parse_u64_range(const char *s, uint64_t min, uint64_t max, uint64_t *ret);
bool ps_parse_int(const char *s, int min, int max, int *ret);

/* Writes `len` bytes to `path` atomically and durably (temp file, fsync, rename, fsync
 * of the directory, so the new file survives a crash once this returns OK). */
ps_status ps_write_file_atomic(const char *path, const void *data, size_t len);
/* Reads a whole file (NUL-terminated, malloc'd). NOT_FOUND when it does not exist. */
ps_status ps_read_file(const char *path, char **ret_data, size_t *ret_len);

/* Whether s[0..len) is text a name may be: strict UTF-8 (no overlong forms, no
 * surrogates, nothing past U+10FFFF) with no control character (U+0000..U+001F,
 * U+007F..U+009F).
 * Strings a server keeps and writes out (JSON state, logs) pass it first: JSON encoders
 * refuse other bytes, and a newline in a name could forge a log line. */
bool ps_text_valid(const char *s, size_t len);

/* Formats a message into err (NUL-terminated, truncated to fit); does nothing when err
 * is NULL or err_len 0. For library functions that take `char *err, size_t err_len`. */
void ps_set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Creates a directory and its parents (like mkdir -p). */
ps_status ps_mkdir_p(const char *path);

#endif

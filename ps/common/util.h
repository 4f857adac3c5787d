/* util.h: small helpers shared by the programs and libraries: clocks, the key of a
 * dense chunk, finding the coordinator, parsing numbers from flags. */
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

/* The key of chunk `chunk` of dense tensor `tensor` of `model`: XXH3-64 over
 * "model" NUL "tensor" NUL and the chunk index as 4 little-endian bytes. Every
 * process computes the same key. */
uint64_t ps_key_dense(const char *model, const char *tensor, uint32_t chunk);

/* Finds the coordinator's address: `flag` if non-empty, else $PS_COORDINATOR, else the
 * COORDINATOR= line of run/cluster.env in the current directory. NOT_FOUND with none. */
ps_status ps_coordinator_addr(const char *flag, char *buf, size_t cap);

/* Reads `key=value` from a KEY=VALUE file (e.g. run/cluster.env); NOT_FOUND if absent. */
ps_status ps_env_file_get(const char *path, const char *key, char *buf, size_t cap);

/* Strict number parsing for flags: the whole string must be a number in range. */
bool ps_parse_u64(const char *s, uint64_t *ret);
bool ps_parse_int(const char *s, int min, int max, int *ret);

/* For programs' flag parsing (these two print to stderr, so libraries do not use them):
 * ps_flag_int parses an integer flag value in [min, max], saying on failure
 * "PROG: --FLAG wants MIN..MAX, got 'VALUE'"; ps_flag_coordinator is
 * ps_coordinator_addr that says how to name a coordinator when none is found. */
bool ps_flag_int(const char *prog, const char *flag, const char *value, int min, int max, int *ret);
bool ps_flag_coordinator(const char *prog, const char *flag, char *buf, size_t cap);

/* Writes `len` bytes to `path` atomically (temp file, fsync, rename). */
ps_status ps_write_file_atomic(const char *path, const void *data, size_t len);
/* Reads a whole file (NUL-terminated, malloc'd). NOT_FOUND when it does not exist. */
ps_status ps_read_file(const char *path, char **ret_data, size_t *ret_len);

/* The address a server tells others: the host it listens on (127.0.0.1 for a wildcard
 * or empty host) with the port it got. */
void ps_advertise_addr(const char *listen, int port, char *buf, size_t cap);
/* Writes "<port>\n" to path atomically, for scripts that wait for a server to start. */
ps_status ps_write_port_file(const char *path, int port);

/* Formats a message into err (NUL-terminated, truncated to fit); does nothing when err
 * is NULL or err_len 0. For library functions that take `char *err, size_t err_len`. */
void ps_set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Creates a directory and its parents (like mkdir -p). */
ps_status ps_mkdir_p(const char *path);

#endif

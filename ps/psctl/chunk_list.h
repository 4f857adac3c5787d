/* chunk_list.h: sets of chunk indices as people type them ("0-3,7,9-11").
 *
 * psctl push --chunks takes such a list to push only some chunks of a tensor, and a
 * push that failed on some shards prints the chunks it left unapplied in the same form,
 * so the operator can retry exactly those (an ADD retried whole would apply twice
 * where it had succeeded). A set is an array of one flag per chunk.
 */
#ifndef PS_PSCTL_CHUNK_LIST_H
#define PS_PSCTL_CHUNK_LIST_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Parses `text` into ret_flags (n_chunks entries, set to 1 for listed chunks, 0 for
 * the others). INVALID_ARGUMENT, with err saying why, for syntax errors, reversed
 * ranges, indices >= n_chunks and an empty list; ret_flags is untouched then. */
ps_status chunk_list_parse(const char *text, uint32_t n_chunks, uint8_t *ret_flags, char *err,
                           size_t err_len);

/* Writes the chunks whose flag equals `want` as a list ("0-3,7"; "" for none) and
 * returns how many there are. Truncates with "..." when buf is too small. */
uint32_t chunk_list_format(const uint8_t *flags, uint32_t n_chunks, uint8_t want, char *buf,
                           size_t cap);

#endif

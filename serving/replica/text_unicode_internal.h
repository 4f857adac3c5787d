/* text_unicode_internal.h: the generated tables (text_unicode_tables.c, written by
 * scripts/gen_unicode_tables.py) that text_unicode.c reads. Private to that module. */
#ifndef PS_SERVING_REPLICA_TEXT_UNICODE_INTERNAL_H
#define PS_SERVING_REPLICA_TEXT_UNICODE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define TEXT_UNICODE_BLOCK_SHIFT 7 /* stage 2 blocks of 128 code points */

extern const char text_unicode_table_version_str[];
extern const uint8_t text_unicode_table_stage1[];  /* block number of each cp >> 7 */
extern const uint8_t text_unicode_table_stage2[];  /* flag bytes, 128 per block */
extern const size_t text_unicode_table_n_ccc;      /* entries below */
extern const uint32_t text_unicode_table_ccc_cp[]; /* code points of class != 0, ascending */
extern const uint8_t text_unicode_table_ccc[];     /* their classes */
extern const size_t text_unicode_table_n_maps;     /* entries below */
extern const uint32_t
    text_unicode_table_map_cp[]; /* code points with NFD(lower(c)) != c, ascending */
extern const uint16_t text_unicode_table_map_off[]; /* where the sequence starts in the pool */
extern const uint8_t text_unicode_table_map_len[];  /* its length (1..TEXT_UNICODE_MAX_EXPANSION) */
extern const uint32_t text_unicode_table_pool[];    /* the sequences */

#endif

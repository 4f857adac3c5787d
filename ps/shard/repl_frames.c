/* repl_frames.c: a Replicate batch's records walked in the pieces gRPC received (see
 * repl_frames.h). */
#include "repl_frames.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replicator.h"
#include "util.h"

struct repl_frames {
    ps_bytes_cursor cur;  /* at the next record's head */
    uint32_t count, next; /* records in all, the next one's index */
    ps_bytes *out;        /* the current record's pieces (the batch's count at most) */
};

ps_status repl_frames_create(const ps_bytes *pieces, size_t n_pieces, uint32_t count,
                             size_t max_frame, repl_frames **ret_frames, char *err,
                             size_t err_len) {
    size_t total = 0;
    for (size_t i = 0; i < n_pieces; i++)
        total += pieces[i].len;
    ps_bytes_cursor cur = {pieces, n_pieces, 0, 0};
    size_t at = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint8_t head[REPLICATOR_FRAME_HEAD];
        if (!ps_bytes_take(&cur, head, sizeof head)) {
            ps_set_err(err, err_len, "replicate: record %u of %u is cut short", i + 1, count);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        uint32_t n;
        memcpy(&n, head + 4, 4);
        at += REPLICATOR_FRAME_HEAD;
        if (n > max_frame || n > total - at) {
            ps_set_err(err, err_len, "replicate: record %u of %u claims %u bytes, more than %s",
                       i + 1, count, n, n > max_frame ? "a record may hold" : "were sent");
            return PS_STATUS_INVALID_ARGUMENT;
        }
        (void)ps_bytes_take(&cur, NULL, n); /* in bounds: checked */
        at += n;
    }
    if (at != total) {
        ps_set_err(err, err_len, "replicate: %zu bytes follow the %u records announced", total - at,
                   count);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    repl_frames *f = calloc(1, sizeof *f);
    if (!f || !(f->out = calloc(n_pieces + 1, sizeof *f->out))) {
        free(f);
        ps_set_err(err, err_len, "replicate: out of memory for %zu pieces", n_pieces);
        return PS_STATUS_NO_MEMORY;
    }
    f->cur = (ps_bytes_cursor){pieces, n_pieces, 0, 0};
    f->count = count;
    *ret_frames = f;
    return PS_STATUS_OK;
}

void repl_frames_destroy(repl_frames *f) {
    if (!f)
        return;
    free(f->out);
    free(f);
}

bool repl_frames_next(repl_frames *f, repl_frame *ret) {
    if (f->next == f->count)
        return false;
    uint8_t head[REPLICATOR_FRAME_HEAD];
    (void)ps_bytes_take(&f->cur, head, sizeof head); /* checked */
    uint32_t len;
    memcpy(&len, head + 4, 4);
    size_t k = 0, left = len;
    const uint8_t *run = NULL;
    for (size_t got; left > 0; left -= got) { /* the payload's runs, piece by piece */
        got = ps_bytes_next(&f->cur, left, &run);
        f->out[k++] = (ps_bytes){run, got};
    }
    f->next++;
    *ret = (repl_frame){.type = head[0], .len = len, .pieces = f->out, .n_pieces = k};
    return true;
}

ps_status repl_frame_flat(const repl_frame *fr, const uint8_t **ret_data, uint8_t **ret_owned) {
    *ret_owned = NULL;
    if (fr->n_pieces <= 1) {
        *ret_data = fr->n_pieces ? fr->pieces[0].data : (const uint8_t *)"";
        return PS_STATUS_OK;
    }
    uint8_t *copy = malloc(fr->len);
    if (!copy)
        return PS_STATUS_NO_MEMORY;
    size_t at = 0;
    for (size_t i = 0; i < fr->n_pieces; i++) {
        memcpy(copy + at, fr->pieces[i].data, fr->pieces[i].len);
        at += fr->pieces[i].len;
    }
    *ret_owned = copy;
    *ret_data = copy;
    return PS_STATUS_OK;
}

/* snapshot_load.c: reads a snapshot file back (see snapshot.h for the format): checks
 * the header, every frame's length and checksum, every record (image_decode, or a
 * request-id record), the end frame's counts and that nothing follows it, installing
 * each record as it goes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "journal.h"
#include "snapshot.h"
#include "snapshot_internal.h"
#include "util.h"

ps_status snapshot_header_read(int fd, snapshot_info *info, char *err, size_t err_len) {
    uint8_t h[SNAPSHOT_HEADER_BYTES];
    ssize_t got = pread(fd, h, sizeof h, 0);
    if (got < 0) {
        ps_set_err(err, err_len, "cannot read snapshot %s: %s", info->path, strerror(errno));
        return PS_STATUS_IO;
    }
    uint32_t format, reserved;
    uint64_t sum;
    memcpy(&format, h + 8, 4);
    memcpy(&reserved, h + 12, 4);
    memcpy(&sum, h + 56, 8);
    if (got != (ssize_t)sizeof h || memcmp(h, SNAPSHOT_MAGIC, 8) != 0 ||
        format < SNAPSHOT_FORMAT_OLDEST || format > SNAPSHOT_FORMAT || reserved != 0 ||
        sum != XXH3_64bits(h, 56)) {
        ps_set_err(err, err_len,
                   "snapshot %s: its %u-byte header is %s (format %u; this build reads %u to %u)",
                   info->path, SNAPSHOT_HEADER_BYTES,
                   got != (ssize_t)sizeof h ? "cut short" : "corrupt", format,
                   SNAPSHOT_FORMAT_OLDEST, SNAPSHOT_FORMAT);
        return PS_STATUS_PARSE;
    }
    info->format = format;
    memcpy(&info->lsn, h + 16, 8);
    memcpy(&info->seq, h + 24, 8);
    memcpy(&info->max_version, h + 32, 8);
    memcpy(&info->chunks, h + 40, 8);
    memcpy(&info->wall_ms, h + 48, 8);
    return PS_STATUS_OK;
}

typedef struct snap_reader {
    FILE *f;
    const char *path;
    uint32_t format; /* the header's */
    uint64_t size;   /* the file's */
    uint64_t off;    /* of the frame being read */
    uint8_t *payload;
    size_t payload_cap;
    uint64_t frames, chunks, rows;
    char *err;
    size_t err_len;
} snap_reader;

static ps_status bad(snap_reader *r, const char *what) {
    ps_set_err(r->err, r->err_len, "snapshot %s: %s at offset %llu", r->path, what,
               (unsigned long long)r->off);
    return PS_STATUS_PARSE;
}

/* Reads the next frame into r->payload: its kind and length. */
static ps_status read_frame(snap_reader *r, uint32_t *ret_kind, uint64_t *ret_len) {
    uint8_t head[SNAPSHOT_FRAME_HEAD_BYTES];
    size_t got = fread(head, 1, sizeof head, r->f);
    if (got != sizeof head)
        return bad(r, ferror(r->f) ? "a read failed" : "the file ends without its end frame");
    uint32_t magic, kind;
    uint64_t len, sum;
    memcpy(&magic, head, 4);
    memcpy(&kind, head + 4, 4);
    memcpy(&len, head + 8, 8);
    memcpy(&sum, head + 16, 8);
    if (magic != SNAPSHOT_FRAME_MAGIC ||
        (kind != SNAPSHOT_FRAME_IMAGE && kind != SNAPSHOT_FRAME_END &&
         (kind != SNAPSHOT_FRAME_DEDUP || r->format < 2)))
        return bad(r, "a frame with a bad magic or kind");
    if (len > IMAGE_MAX_RECORD_BYTES || len > r->size - r->off - sizeof head)
        return bad(r, "a frame whose length runs past the file or its limit");
    if (len > r->payload_cap) {
        free(r->payload);
        r->payload_cap = 0;
        if (!(r->payload = malloc(len))) {
            ps_set_err(r->err, r->err_len, "out of memory reading snapshot %s", r->path);
            return PS_STATUS_NO_MEMORY;
        }
        r->payload_cap = len;
    }
    if (fread(r->payload, 1, len, r->f) != len)
        return bad(r, ferror(r->f) ? "a read failed" : "a frame cut short");
    XXH3_state_t *h = XXH3_createState();
    if (!h)
        return PS_STATUS_NO_MEMORY;
    XXH3_64bits_reset(h);
    XXH3_64bits_update(h, head + 4, 12);
    XXH3_64bits_update(h, r->payload, len);
    uint64_t want = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    if (want != sum)
        return bad(r, "a frame whose checksum does not match");
    *ret_kind = kind;
    *ret_len = len;
    return PS_STATUS_OK;
}

/* Decodes and installs one image frame. */
static ps_status take_image(snap_reader *r, const image_target *t, uint64_t len,
                            image_record *rec) {
    char why[400];
    if (image_decode(r->payload, len, rec, why, sizeof why) != PS_STATUS_OK) {
        ps_set_err(r->err, r->err_len, "snapshot %s: a bad record at offset %llu: %s", r->path,
                   (unsigned long long)r->off, why);
        return PS_STATUS_PARSE;
    }
    r->frames++;
    r->chunks += rec->kind == IMAGE_KIND_CHUNK;
    r->rows += rec->kind == IMAGE_KIND_ROWS ? rec->rows.n : 0;
    /* nobody is told what the images replaced: the snapshot's own request ids are
       what its values hold */
    image_target quiet =
        t ? (image_target){.chunks = t->chunks, .rows = t->rows} : (image_target){0};
    ps_status st = t ? image_install_record(&quiet, rec, NULL, why, sizeof why) : PS_STATUS_OK;
    if (st != PS_STATUS_OK)
        ps_set_err(r->err, r->err_len,
                   "snapshot %s: the record at offset %llu cannot be loaded: %s", r->path,
                   (unsigned long long)r->off, why);
    return st;
}

/* Decodes one request-id frame and remembers it in requests (may be NULL). */
static ps_status take_requests(snap_reader *r, dedup *requests, uint64_t len) {
    uint64_t id = 0, *keys = NULL;
    size_t n = 0;
    ps_status st = journal_request_of(JOURNAL_TYPE_DEDUP, r->payload, len, &id, &keys, &n);
    if (st == PS_STATUS_NO_MEMORY) {
        ps_set_err(r->err, r->err_len, "out of memory reading snapshot %s", r->path);
        return st;
    }
    if (st != PS_STATUS_OK)
        return bad(r, "a bad request-id record");
    r->frames++;
    if (requests && id)
        st = dedup_record(requests, id, n, keys, 0);
    free(keys);
    if (st != PS_STATUS_OK)
        ps_set_err(r->err, r->err_len, "out of memory loading the request ids of snapshot %s",
                   r->path);
    return st;
}

/* Checks the end frame's counts (the last frame of the file). */
static ps_status take_end(snap_reader *r, uint64_t len, snapshot_info *info) {
    uint64_t end[4];
    if (len != SNAPSHOT_END_BYTES)
        return bad(r, "an end frame of the wrong size");
    memcpy(end, r->payload, sizeof end);
    if (end[0] != r->frames || end[1] != r->chunks || end[2] != r->rows ||
        r->chunks != info->chunks)
        return bad(r, "an end frame whose counts differ from the frames before it");
    if (r->off + SNAPSHOT_FRAME_HEAD_BYTES + len != r->size)
        return bad(r, "bytes after the end frame");
    info->tables = end[3];
    info->rows = r->rows;
    return PS_STATUS_OK;
}

ps_status snapshot_load(const char *path, const image_target *t, dedup *requests,
                        snapshot_info *ret_info, char *err, size_t err_len) {
    int64_t t0 = ps_now_ms();
    snapshot_info info = {0};
    snprintf(info.path, sizeof info.path, "%s", path);
    snap_reader r = {.path = path, .off = SNAPSHOT_HEADER_BYTES, .err = err, .err_len = err_len};
    image_record *rec = malloc(sizeof *rec);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    ps_status st = PS_STATUS_IO;
    if (!rec) {
        st = PS_STATUS_NO_MEMORY;
        goto out;
    }
    if (fd < 0 || fstat(fd, &sb) != 0) {
        ps_set_err(err, err_len, "cannot open snapshot %s: %s", path, strerror(errno));
        goto out;
    }
    if ((st = snapshot_header_read(fd, &info, err, err_len)) != PS_STATUS_OK)
        goto out;
    r.format = info.format;
    r.size = (uint64_t)sb.st_size;
    if (!(r.f = fdopen(fd, "rb"))) {
        ps_set_err(err, err_len, "cannot read snapshot %s: %s", path, strerror(errno));
        st = PS_STATUS_IO;
        goto out;
    }
    fd = -1; /* the FILE has it */
    setvbuf(r.f, NULL, _IOFBF, SNAPSHOT_BUFFER_BYTES);
    if (fseeko(r.f, SNAPSHOT_HEADER_BYTES, SEEK_SET) != 0) {
        ps_set_err(err, err_len, "cannot read snapshot %s: %s", path, strerror(errno));
        st = PS_STATUS_IO;
        goto out;
    }
    for (;;) {
        uint32_t kind;
        uint64_t len;
        if ((st = read_frame(&r, &kind, &len)) != PS_STATUS_OK)
            break;
        if (kind == SNAPSHOT_FRAME_END) {
            st = take_end(&r, len, &info);
            break;
        }
        st = kind == SNAPSHOT_FRAME_DEDUP ? take_requests(&r, requests, len)
                                          : take_image(&r, t, len, rec);
        if (st != PS_STATUS_OK)
            break;
        r.off += SNAPSHOT_FRAME_HEAD_BYTES + len;
    }
out:
    if (r.f)
        fclose(r.f);
    if (fd >= 0)
        close(fd);
    free(r.payload);
    free(rec);
    if (st != PS_STATUS_OK)
        return st;
    info.bytes = r.size;
    info.elapsed_ms = ps_now_ms() - t0;
    if (ret_info)
        *ret_info = info;
    return PS_STATUS_OK;
}

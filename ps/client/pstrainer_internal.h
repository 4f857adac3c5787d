/* pstrainer_internal.h: what the trainer's files share (pstrainer.c: the queue, the
 * operations; pstrainer_worker.c: the worker's clock on the coordinator). Private to
 * ps/client. */
#ifndef PS_CLIENT_PSTRAINER_INTERNAL_H
#define PS_CLIENT_PSTRAINER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "psclient.h"
#include "pstrainer.h"
#include "train_config.h"

#define HISTORY 1024 /* statuses kept for ps_trainer_wait */

typedef enum job_kind { JOB_PULL, JOB_PUSH, JOB_PULL_ROWS, JOB_PUSH_ROWS, JOB_CLOCK } job_kind;

typedef struct job {
    job_kind kind;
    char name[256]; /* tensor or table */
    float *dense;   /* pull: the caller's buffer; push: a copy (owned) */
    uint64_t count; /* floats, or rows */
    uint64_t *ids;  /* rows: a copy (owned) */
    bool owned;     /* dense (and ids) are copies to free */
    uint64_t ts;
} job;

struct ps_trainer {
    ps_trainer_opts o;
    char *coordinator, *model, *name;
    ps_client *client;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    job queue[PS_TRAINER_MAX_QUEUE];
    size_t head, n;
    uint64_t next_ts, done_ts;
    ps_status status[HISTORY];
    char errors[HISTORY][256];
    bool stopping;
    char err[512]; /* the last failure a call returned */
    /* the trainer's thread alone: */
    Ps__ModelInfo *info;
    train_config *training;
    int64_t info_ms;
    uint64_t worker_id, clock, waited;
    bool registered, waited_valid;
    uint32_t worker_timeout_ms;
    char consistency[8];
};

/* Writes a message (printf format) into err (256 bytes) and returns st. */
ps_status pstrainer_fail(char *err, ps_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A unary call to the coordinator; on failure err names the method and the reason. */
ps_status pstrainer_coord_call(ps_trainer *t, const char *method, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *type, int64_t timeout_ms,
                               ProtobufCMessage **ret, char *err);
/* The worker's side (trainer's thread only): register, send a clock (the same clock: a
 * heartbeat; registers again once when the coordinator forgot the worker), and the
 * wait before a pull (registers first for bsp/ssp or consistent models). */
ps_status pstrainer_worker_register(ps_trainer *t, char *err);
ps_status pstrainer_worker_clock(ps_trainer *t, uint64_t clock, char *err);
ps_status pstrainer_worker_wait(ps_trainer *t, char *err);

#endif

/* models.h: the set of model versions a replica serves, and what the registry wants.
 *
 * Loading lists a model version first (so updates that race with its initial pull
 * reach it), pulls every chunk, pulls again what updates made stale meanwhile, then
 * marks it ready and retires older versions of the same model. Requests take a
 * reference to a ready version (models_acquire), so a version retired meanwhile stays
 * valid until they release it. Updates, re-pull marks and stale fixes go to every
 * listed version.
 *
 * The parameter memory of the listed versions is bounded (models_opts.max_bytes): a
 * registry entry, which any client can write, never makes a replica allocate more.
 * The set is small (a few models and versions): an array under a mutex. It does no
 * I/O of its own: chunks come through the served_source the caller passes.
 */
#ifndef PS_SERVING_REPLICA_MODELS_H
#define PS_SERVING_REPLICA_MODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator.pb-c.h"
#include "ps.pb-c.h"
#include "served.h"
#include "status.h"

#define MODELS_DEFAULT_MAX_LISTED 256 /* model versions listed at once */

typedef struct models_opts {
    size_t max_listed;  /* 0 = MODELS_DEFAULT_MAX_LISTED; past it a load is RESOURCE_EXHAUSTED */
    uint64_t max_bytes; /* parameter bytes of every listed version together (a version
                           switch holds both); a load past it is RESOURCE_EXHAUSTED before
                           anything is allocated. 0 = no limit */
    served_rows rows;   /* where models with tables read their rows (no pull: they fail
                           FAILED_PRECONDITION); rows.arg must outlive the set */
    kernels_backend *backend; /* what forward passes run on (borrowed: it outlives the set);
                                 NULL: each model instance makes a CPU backend */
} models_opts;

typedef struct models models;

ps_status models_create(const models_opts *opts, models **ret_models); /* opts may be NULL */
void models_destroy(models *m); /* accepts NULL; no other thread may use m */

/* Consistent propagation (served_frozen): an entry whose `publishing` is set makes a
 * new instance of that cut, pulled whole, listed but not ready (prepared: the caller
 * tells the coordinator); the entry that then says `published` = that cut makes it
 * ready at once and retires the cut it replaces (the switch). An entry whose
 * publishing went back to 0 without publishing it drops the prepared cut.
 *
 * Loads one registry entry (see above). OK at once when that version is ready. On
 * failure it is unlisted again and err says why (e.g. a chunk no shard holds). One
 * thread loads at a time (the loader). */
ps_status models_load(models *m, const Ps__ModelInfo *info, const served_source *src, char *err,
                      size_t err_len);
/* Applies a streamed update to every listed version holding its key. */
void models_update_apply(models *m, const Ps__Update *u);
/* Marks for a re-pull every chunk whose key pred accepts (NULL: all); returns how many. */
size_t models_repull_mark(models *m, bool (*pred)(uint64_t key, void *arg), void *arg);
/* Pulls the stale chunks of every listed version; *ret_left (may be NULL) gets how many
 * are still stale after it. */
ps_status models_stale_fix(models *m, const served_source *src, size_t *ret_left, char *err,
                           size_t err_len);

/* The registry's latest list (names and versions: the latest of each model, or several
 * under a version policy), for models_ready; a loaded version retires older versions of
 * its model that the list does not name. On failure the previous list stays. */
ps_status models_expect(models *m, size_t n, const char *const *names, const uint64_t *versions);
/* True when every expected model has a ready version at least as new. */
bool models_ready(models *m);

/* A ready version by name and version (0: the newest ready), with a reference
 * (served_release it); NULL when none. */
served *models_acquire(models *m, const char *name, uint64_t version);
/* Names and versions of the ready models ("a v1,b v3" or "none"), for messages. */
void models_names_list(models *m, char *buf, size_t cap);

#define MODELS_REF_NAME_MAX 256 /* bytes of a model name in a models_ref (NUL included) */

/* A ready version, as the replica reports it in heartbeats (the coordinator refuses to
 * delete a version a live replica serves). */
typedef struct models_ref {
    char name[MODELS_REF_NAME_MAX];
    uint64_t version;
} models_ref;

/* Writes up to cap ready versions; returns how many. */
size_t models_ready_refs(models *m, models_ref *ret_refs, size_t cap);

#endif

/* infer_request_internal.h: what infer_request.c (mapping a request onto a model),
 * infer_request_check.c (the request's limit checks) and text_input.c (text inputs)
 * share. Private to the replica. */
#ifndef PS_SERVING_REPLICA_INFER_REQUEST_INTERNAL_H
#define PS_SERVING_REPLICA_INFER_REQUEST_INTERNAL_H

#include <stddef.h>

#include "status.h"

/* Formats err (may be NULL) and returns INVALID_ARGUMENT: the one status a bad request
 * gets from these checks. */
ps_status infer_request_invalid(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif

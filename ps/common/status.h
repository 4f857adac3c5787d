/* status.h: the one status type of the project.
 *
 * Every library function that acts returns a ps_status; PS_STATUS_OK is zero and
 * failures are negative, so `if (st < 0)` and `if (st != PS_STATUS_OK)` both work.
 * The codes mirror gRPC's so that the rpc layer maps them one to one, plus a few
 * that only make sense inside a process (out of memory, I/O, parse errors).
 */
#ifndef PS_COMMON_STATUS_H
#define PS_COMMON_STATUS_H

typedef enum ps_status {
    PS_STATUS_OK = 0,
    PS_STATUS_CANCELLED = -1,           /* the operation was cancelled by the caller */
    PS_STATUS_INVALID_ARGUMENT = -2,    /* bad input: shape, type, value, syntax */
    PS_STATUS_DEADLINE_EXCEEDED = -3,   /* ran out of time */
    PS_STATUS_NOT_FOUND = -4,           /* unknown name or key */
    PS_STATUS_ALREADY_EXISTS = -5,      /* a create found the thing already there */
    PS_STATUS_RESOURCE_EXHAUSTED = -6,  /* a size or rate limit was hit */
    PS_STATUS_FAILED_PRECONDITION = -7, /* the system is not in a state to do this */
    PS_STATUS_OUT_OF_RANGE = -8,        /* an index or offset past the end */
    PS_STATUS_UNIMPLEMENTED = -9,       /* not supported (yet) */
    PS_STATUS_INTERNAL = -10,           /* a bug or broken invariant */
    PS_STATUS_UNAVAILABLE = -11,        /* a peer cannot be reached; retrying may help */
    PS_STATUS_NO_MEMORY = -12,          /* an allocation failed */
    PS_STATUS_IO = -13,                 /* a read, write or open failed */
    PS_STATUS_PARSE = -14,              /* a serialized form could not be parsed */
    PS_STATUS_WRONG_EPOCH = -15,        /* routed with a stale ring: refresh and retry */
} ps_status;

/* A short constant description, e.g. "invalid argument"; never NULL. */
const char *ps_status_str(ps_status st);

/* The canonical upper-case name, e.g. "INVALID_ARGUMENT"; never NULL. */
const char *ps_status_name(ps_status st);

#endif

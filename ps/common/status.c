/* status.c: names and descriptions of ps_status values (see status.h). */
#include "status.h"

const char *ps_status_str(ps_status st) {
    switch (st) {
    case PS_STATUS_OK:
        return "ok";
    case PS_STATUS_CANCELLED:
        return "cancelled";
    case PS_STATUS_INVALID_ARGUMENT:
        return "invalid argument";
    case PS_STATUS_DEADLINE_EXCEEDED:
        return "deadline exceeded";
    case PS_STATUS_NOT_FOUND:
        return "not found";
    case PS_STATUS_ALREADY_EXISTS:
        return "already exists";
    case PS_STATUS_RESOURCE_EXHAUSTED:
        return "resource exhausted";
    case PS_STATUS_FAILED_PRECONDITION:
        return "failed precondition";
    case PS_STATUS_OUT_OF_RANGE:
        return "out of range";
    case PS_STATUS_UNIMPLEMENTED:
        return "unimplemented";
    case PS_STATUS_INTERNAL:
        return "internal error";
    case PS_STATUS_UNAVAILABLE:
        return "unavailable";
    case PS_STATUS_NO_MEMORY:
        return "out of memory";
    case PS_STATUS_IO:
        return "I/O error";
    case PS_STATUS_PARSE:
        return "parse error";
    case PS_STATUS_WRONG_EPOCH:
        return "wrong ring epoch";
    }
    return "unknown status";
}

const char *ps_status_name(ps_status st) {
    switch (st) {
    case PS_STATUS_OK:
        return "OK";
    case PS_STATUS_CANCELLED:
        return "CANCELLED";
    case PS_STATUS_INVALID_ARGUMENT:
        return "INVALID_ARGUMENT";
    case PS_STATUS_DEADLINE_EXCEEDED:
        return "DEADLINE_EXCEEDED";
    case PS_STATUS_NOT_FOUND:
        return "NOT_FOUND";
    case PS_STATUS_ALREADY_EXISTS:
        return "ALREADY_EXISTS";
    case PS_STATUS_RESOURCE_EXHAUSTED:
        return "RESOURCE_EXHAUSTED";
    case PS_STATUS_FAILED_PRECONDITION:
        return "FAILED_PRECONDITION";
    case PS_STATUS_OUT_OF_RANGE:
        return "OUT_OF_RANGE";
    case PS_STATUS_UNIMPLEMENTED:
        return "UNIMPLEMENTED";
    case PS_STATUS_INTERNAL:
        return "INTERNAL";
    case PS_STATUS_UNAVAILABLE:
        return "UNAVAILABLE";
    case PS_STATUS_NO_MEMORY:
        return "NO_MEMORY";
    case PS_STATUS_IO:
        return "IO";
    case PS_STATUS_PARSE:
        return "PARSE";
    case PS_STATUS_WRONG_EPOCH:
        return "WRONG_EPOCH";
    }
    return "UNKNOWN";
}

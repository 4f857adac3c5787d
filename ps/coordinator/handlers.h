/* handlers.h: the ps.Coordinator gRPC service: one rpc handler per method, each a thin
 * translation between protobuf messages and the coord_ctx operations (coord.h).
 *
 * Why this way: the rpc layer (proto/rpc.h) passes each handler the `user` pointer of
 * its method, so the coordinator's state reaches handlers through that context, never
 * through globals. Handlers hold no state and take no lock; decisions and their
 * messages live in coord_*.c where unit tests reach them without a network. Watch
 * streams are counted against the context's limit and end when their call dies or the
 * coordinator stops.
 */
#ifndef PS_COORDINATOR_HANDLERS_H
#define PS_COORDINATOR_HANDLERS_H

#include <stddef.h>

#include "coord.h"
#include "rpc.h"

#define HANDLERS_METHOD_COUNT 18 /* methods of ps.Coordinator */

/* Fills methods[HANDLERS_METHOD_COUNT] with every method of the service, each with
 * `ctx` as its user pointer, for rpc_server_serve. */
void handlers_methods(coord_ctx *ctx, rpc_method methods[HANDLERS_METHOD_COUNT]);

#endif

/* testsvc_impl.h: the handlers of pstest.Test (proto/testsvc.proto), a service that
 * exists to exercise the rpc layer from C and Python tests. */
#ifndef PS_PROTO_TESTSVC_IMPL_H
#define PS_PROTO_TESTSVC_IMPL_H

#include "rpc.h"

/* Registers Echo, Count, Sleep and Stats on `server`. Counters are process-wide. */
ps_status testsvc_register(rpc_server *server);

#endif

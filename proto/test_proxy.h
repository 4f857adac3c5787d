/* test_proxy.h: a loopback TCP proxy for the rpc layer's tests. It forwards every
 * connection made to it to a target port, from a thread of its own, and can freeze:
 * stop reading and writing both ways while keeping every socket open. To either side a
 * frozen proxy looks like a peer that stopped (SIGSTOP) or a network that drops every
 * packet: the connection stays up and nothing comes back, not even HTTP/2 ping
 * acknowledgements. Test code only. */
#ifndef PS_PROTO_TEST_PROXY_H
#define PS_PROTO_TEST_PROXY_H

#include <stdbool.h>

typedef struct test_proxy test_proxy;

/* Listens on 127.0.0.1 (a free port: *ret_port) and forwards to 127.0.0.1:target_port.
 * NULL when it cannot listen or start its thread. */
test_proxy *test_proxy_create(int target_port, int *ret_port);
/* Freezes (true) or thaws (false) every connection, present and future. */
void test_proxy_freeze(test_proxy *proxy, bool frozen);
/* Stops the thread and closes every socket. Accepts NULL. */
void test_proxy_destroy(test_proxy *proxy);

#endif

/* test_proxy.c: see test_proxy.h. One thread polls the listening socket and every
 * pair of sockets (client side, target side); bytes read from one side are written to
 * the other before the next poll. Frozen, it polls nothing but its own stop flag. */
#include "test_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PROXY_MAX_PAIRS 8
#define PROXY_POLL_MS 10

struct test_proxy {
    int listen_fd, target_port;
    int fds[PROXY_MAX_PAIRS][2]; /* [client side, target side]; -1 when free */
    atomic_bool frozen, stop;
    pthread_t thread;
};

static void pair_close(test_proxy *p, int i) {
    for (int k = 0; k < 2; k++) {
        if (p->fds[i][k] >= 0)
            close(p->fds[i][k]);
        p->fds[i][k] = -1;
    }
}

static int connect_target(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void accept_one(test_proxy *p) {
    int c = accept(p->listen_fd, NULL, NULL);
    if (c < 0)
        return;
    int t = connect_target(p->target_port);
    for (int i = 0; t >= 0 && i < PROXY_MAX_PAIRS; i++) {
        if (p->fds[i][0] < 0) {
            p->fds[i][0] = c;
            p->fds[i][1] = t;
            return;
        }
    }
    close(c);
    if (t >= 0)
        close(t);
}

/* Moves what `from` holds to `to`; false when either side is done. */
static bool forward(int from, int to) {
    char buf[65536];
    ssize_t got = read(from, buf, sizeof buf);
    if (got <= 0)
        return false;
    for (ssize_t off = 0; off < got;) {
        ssize_t put = write(to, buf + off, (size_t)(got - off));
        if (put <= 0)
            return false;
        off += put;
    }
    return true;
}

static void *proxy_main(void *arg) {
    test_proxy *p = arg;
    while (!atomic_load(&p->stop)) {
        if (atomic_load(&p->frozen)) {
            usleep(PROXY_POLL_MS * 1000);
            continue;
        }
        struct pollfd pfd[1 + 2 * PROXY_MAX_PAIRS];
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
        for (int i = 0; i < PROXY_MAX_PAIRS; i++)
            for (int k = 0; k < 2; k++)
                pfd[n++] = (struct pollfd){.fd = p->fds[i][k], .events = POLLIN};
        if (poll(pfd, (nfds_t)n, PROXY_POLL_MS) <= 0)
            continue;
        if (pfd[0].revents & POLLIN)
            accept_one(p);
        for (int i = 0; i < PROXY_MAX_PAIRS; i++)
            for (int k = 0; k < 2; k++)
                if (p->fds[i][k] >= 0 && (pfd[1 + 2 * i + k].revents & (POLLIN | POLLHUP)) &&
                    !forward(p->fds[i][k], p->fds[i][1 - k]))
                    pair_close(p, i);
    }
    return NULL;
}

test_proxy *test_proxy_create(int target_port, int *ret_port) {
    test_proxy *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->target_port = target_port;
    memset(p->fds, -1, sizeof p->fds);
    p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(p->listen_fd, 8) != 0 || getsockname(p->listen_fd, (struct sockaddr *)&a, &len) ||
        pthread_create(&p->thread, NULL, proxy_main, p) != 0) {
        if (p->listen_fd >= 0)
            close(p->listen_fd);
        free(p);
        return NULL;
    }
    *ret_port = ntohs(a.sin_port);
    return p;
}

void test_proxy_freeze(test_proxy *p, bool frozen) {
    atomic_store(&p->frozen, frozen);
}

void test_proxy_destroy(test_proxy *p) {
    if (!p)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    for (int i = 0; i < PROXY_MAX_PAIRS; i++)
        pair_close(p, i);
    close(p->listen_fd);
    free(p);
}

// Raw TCP loopback throughput when the sender writes from a ring of RING
// bytes, as a net_sink does from its input buffer (2 x retention, 32 MiB by
// default), instead of re-sending one cache-hot chunk like
// ../shared/peers/limits/sock_bw.c. The receiver reads into one hot chunk.
// Usage: ring_tcp RING_BYTES [chunk_bytes] [total_MiB]; prints GB/s.
// Build: gcc -O2 -o ring_tcp bench/ring_tcp.c
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    size_t ring = argc > 1 ? (size_t)atol(argv[1]) : (32u << 20);
    size_t chunk = argc > 2 ? (size_t)atol(argv[2]) : 131072;
    size_t total = (size_t)(argc > 3 ? atol(argv[3]) : 8192) << 20;
    if (ring < chunk || ring % chunk) {
        fprintf(stderr, "RING_BYTES must be a multiple of chunk_bytes\n");
        return 1;
    }
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(l, (void *)&a, sizeof a) || getsockname(l, (void *)&a, &al) || listen(l, 1)) return 2;
    int tx = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(tx, (void *)&a, sizeof a)) return 2;
    int rx = accept(l, 0, 0);
    close(l);
    pid_t p = fork();
    if (p == 0) {
        close(rx);
        char *buf = malloc(ring);
        memset(buf, 7, ring);
        size_t sent = 0, pos = 0;
        while (sent < total) {
            ssize_t w = write(tx, buf + pos, chunk);
            if (w <= 0) _exit(3);
            sent += w;
            pos = (pos + w) % ring;
            if (pos % chunk) pos -= pos % chunk;  // keep writes chunk-aligned
        }
        close(tx);
        _exit(0);
    }
    close(tx);
    char *buf = malloc(chunk);
    size_t got = 0;
    double t0 = now();
    ssize_t r;
    while ((r = read(rx, buf, chunk)) > 0) got += r;
    double t = now() - t0;
    waitpid(p, 0, 0);
    printf("tcp ring=%zu chunk=%zu total=%zuMiB: %.2f GB/s\n", ring, chunk, got >> 20, got / t / 1e9);
    return 0;
}

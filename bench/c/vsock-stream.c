/* The C side of the vsock streams benchmark (bench/vsock.ts, bench/guest/vsock.mjs). Runs INSIDE
 * the QEMU guest only, built static on the host (gcc -static -O2). It does the transfers the guest
 * script does with the library's Duplex, with plain blocking sockets: a server in a forked child
 * (ours runs in a second node process) and the client in this process, always on CID 1
 * (VMADDR_CID_LOCAL, the loopback transport); there is no option to connect anywhere else.
 *
 *   vsock-stream tput PORT BYTES   client writes BYTES in 64 KiB write(2)s and shuts down its
 *                                  side; the server reads with a 64 KiB buffer until end of file
 *                                  and replies with the byte count. Prints "BYTES NS": the
 *                                  nanoseconds from connect(2) to the end of the reply.
 *   vsock-stream rtt PORT COUNT    COUNT 1-byte round trips (the server echoes what it reads).
 *                                  Prints "COUNT NS": the nanoseconds from after connect(2) to
 *                                  the last echo.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define CHUNK (64 * 1024)

static char buf[CHUNK];

static void die(const char *what) {
  perror(what);
  exit(1);
}

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static struct sockaddr_vm address(unsigned cid, unsigned port) {
  struct sockaddr_vm a;
  memset(&a, 0, sizeof a);
  a.svm_family = AF_VSOCK;
  a.svm_cid = cid;
  a.svm_port = port;
  return a;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    p += w;
    n -= (size_t)w;
  }
}

/* The forked server: one connection, then exit. */
static void serve(int listener, int tput) {
  int s = accept(listener, NULL, NULL);
  if (s < 0) die("accept");
  close(listener);
  unsigned long long total = 0;
  for (;;) {
    ssize_t n = read(s, buf, CHUNK);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("server read");
    }
    if (n == 0) break;
    total += (unsigned long long)n;
    if (!tput) write_all(s, buf, (size_t)n); /* echo */
  }
  if (tput) {
    char reply[32];
    int len = snprintf(reply, sizeof reply, "%llu", total);
    write_all(s, reply, (size_t)len);
  }
  close(s);
  _exit(0);
}

int main(int argc, char **argv) {
  if (argc != 4 || (strcmp(argv[1], "tput") != 0 && strcmp(argv[1], "rtt") != 0)) {
    fprintf(stderr, "usage: %s tput PORT BYTES | rtt PORT COUNT\n", argv[0]);
    return 2;
  }
  int tput = strcmp(argv[1], "tput") == 0;
  unsigned port = (unsigned)strtoul(argv[2], NULL, 10);
  unsigned long long amount = strtoull(argv[3], NULL, 10);

  int listener = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket");
  struct sockaddr_vm any = address(VMADDR_CID_ANY, port);
  if (bind(listener, (struct sockaddr *)&any, sizeof any) < 0) die("bind");
  if (listen(listener, 1) < 0) die("listen");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) serve(listener, tput);
  close(listener);

  memset(buf, 7, sizeof buf);
  int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) die("socket");
  struct sockaddr_vm local = address(VMADDR_CID_LOCAL, port); /* loopback only */
  double t0 = now_ns();
  if (connect(s, (struct sockaddr *)&local, sizeof local) < 0) die("connect");
  double ns;
  if (tput) {
    for (unsigned long long left = amount; left > 0;) {
      size_t n = left < CHUNK ? (size_t)left : CHUNK;
      write_all(s, buf, n);
      left -= n;
    }
    if (shutdown(s, SHUT_WR) < 0) die("shutdown");
    char reply[32];
    size_t got = 0;
    for (;;) {
      ssize_t n = read(s, reply + got, sizeof reply - 1 - got);
      if (n < 0) {
        if (errno == EINTR) continue;
        die("client read");
      }
      if (n == 0) break;
      got += (size_t)n;
    }
    ns = now_ns() - t0;
    reply[got] = 0;
    if (strtoull(reply, NULL, 10) != amount) {
      fprintf(stderr, "server counted %s of %llu bytes\n", reply, amount);
      return 1;
    }
  } else {
    char b = 1;
    t0 = now_ns();
    for (unsigned long long i = 0; i < amount; i++) {
      write_all(s, &b, 1);
      ssize_t n;
      while ((n = read(s, &b, 1)) < 0 && errno == EINTR) {
      }
      if (n != 1) die("client read");
    }
    ns = now_ns() - t0;
  }
  close(s);
  int status;
  if (waitpid(child, &status, 0) < 0) die("waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "server exited with status %d\n", status);
    return 1;
  }
  printf("%llu %.0f\n", amount, ns);
  return 0;
}

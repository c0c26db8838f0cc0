/* The C side of the binding-overhead benchmark (bench/binding.ts): N pairs of flock(LOCK_EX|LOCK_NB)
 * and flock(LOCK_UN) on one file, the same two system calls the addon's flockTry and flockUnlock
 * make. Prints the nanoseconds per pair. Usage: flock-pairs FILE N */
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: %s FILE N\n", argv[0]); return 2; }
  int fd = open(argv[1], O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) { perror("open"); return 1; }
  long n = atol(argv[2]);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < n; i++) {
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) { perror("flock"); return 1; }
    if (flock(fd, LOCK_UN) != 0) { perror("flock"); return 1; }
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
  printf("%.1f\n", ns / n);
  close(fd);
  return 0;
}

/*
 * A static helper for the QEMU guest (built on the host with `gcc -static`), for what the
 * library must not do itself:
 *   mkhelper kexec-load KERNEL CMDLINE   plain kexec_file_load (no initrd) - the addon only issues
 *                                        multikernel-flagged loads, which a stock kernel rejects
 *   mkhelper kexec-unload                kexec_file_load(-1, -1, 0, NULL, KEXEC_FILE_UNLOAD)
 *   mkhelper notify-recv PATH COUNT      bind an AF_UNIX datagram socket at PATH ('@' = abstract),
 *                                        print "READY", then COUNT datagrams as "DGRAM <text>"
 * Exit 0 on success; on failure prints "ERRNO <name> <number>" and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define KEXEC_FILE_UNLOAD 0x1
#define KEXEC_FILE_NO_INITRAMFS 0x4

static int fail(const char *what) {
  int e = errno;
  printf("ERRNO %s %d (%s)\n", strerrorname_np(e) ? strerrorname_np(e) : "?", e, what);
  return 1;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc == 4 && strcmp(argv[1], "kexec-load") == 0) {
    int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail("open");
    if (syscall(SYS_kexec_file_load, fd, -1, strlen(argv[3]) + 1, argv[3], (unsigned long)KEXEC_FILE_NO_INITRAMFS) != 0)
      return fail("kexec_file_load");
    puts("OK");
    return 0;
  }
  if (argc == 2 && strcmp(argv[1], "kexec-unload") == 0) {
    if (syscall(SYS_kexec_file_load, -1, -1, 0UL, NULL, (unsigned long)KEXEC_FILE_UNLOAD) != 0)
      return fail("kexec_file_load");
    puts("OK");
    return 0;
  }
  if (argc == 4 && strcmp(argv[1], "notify-recv") == 0) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(argv[2]);
    if (n >= sizeof sa.sun_path) { errno = ENAMETOOLONG; return fail("path"); }
    memcpy(sa.sun_path, argv[2], n);
    if (sa.sun_path[0] == '@') sa.sun_path[0] = '\0';
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return fail("socket");
    if (bind(s, (struct sockaddr *)&sa, offsetof(struct sockaddr_un, sun_path) + n) != 0) return fail("bind");
    puts("READY");
    for (int i = 0, count = atoi(argv[3]); i < count; i++) {
      char buf[4096];
      ssize_t r = recv(s, buf, sizeof buf - 1, 0);
      if (r < 0) return fail("recv");
      buf[r] = '\0';
      for (ssize_t j = 0; j < r; j++) if (buf[j] == '\n') buf[j] = ' ';
      printf("DGRAM %s\n", buf);
    }
    return 0;
  }
  fprintf(stderr, "usage: mkhelper kexec-load KERNEL CMDLINE | kexec-unload | notify-recv PATH COUNT\n");
  return 2;
}

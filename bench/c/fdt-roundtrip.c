/* The C side of the device-tree benchmark (bench/fdt.ts): what decodeFdt + encodeFdt do, done
 * in-process with libfdt (Debian's libfdt-dev): open the blob into a work buffer, walk every node
 * and every property (reading names and values), pack. Prints milliseconds per round (median of
 * ROUNDS). Usage: fdt-roundtrip FILE ROUNDS */
#include <libfdt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: %s FILE ROUNDS\n", argv[0]); return 2; }
  FILE *f = fopen(argv[1], "rb");
  if (!f) { perror("open"); return 1; }
  static char blob[8 << 20];
  size_t size = fread(blob, 1, sizeof blob, f);
  fclose(f);
  int rounds = atoi(argv[2]);
  double *ms = calloc(rounds, sizeof *ms);
  size_t bufsize = size * 2;
  char *buf = malloc(bufsize);
  unsigned long sink = 0;
  for (int r = 0; r < rounds; r++) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (fdt_check_header(blob) != 0) { fprintf(stderr, "bad blob\n"); return 1; }
    if (fdt_open_into(blob, buf, bufsize) != 0) { fprintf(stderr, "fdt_open_into failed\n"); return 1; }
    int depth = 0;
    for (int node = 0; node >= 0; node = fdt_next_node(buf, node, &depth)) {
      int len;
      const char *name = fdt_get_name(buf, node, &len);
      sink += name ? (unsigned char)name[0] : 0;
      int prop;
      fdt_for_each_property_offset(prop, buf, node) {
        const char *pname;
        const unsigned char *val = fdt_getprop_by_offset(buf, prop, &pname, &len);
        for (int i = 0; i < len; i++) sink += val[i];
        sink += (unsigned char)pname[0];
      }
    }
    if (fdt_pack(buf) != 0) { fprintf(stderr, "fdt_pack failed\n"); return 1; }
    clock_gettime(CLOCK_MONOTONIC, &b);
    ms[r] = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
  }
  qsort(ms, rounds, sizeof *ms, cmp);
  printf("%.4f %lu\n", ms[rounds / 2], sink & 1);
  return 0;
}

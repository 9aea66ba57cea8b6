/* A Parboil-style program: wall-clock timings on stdout, the result in a file. */
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  double start = now();
  int values[64];
  long checksum = 0;
  for (int i = 0; i < 64; i++) values[i] = (i * 37 + 11) % 101;
  for (int i = 0; i < 64; i++) checksum = checksum * 31 + values[i];
  FILE *out = fopen("result.txt", "w");
  if (!out) return 1;
  fprintf(out, "checksum %ld\n", checksum);
  fclose(out);
  printf("Timing: compute %.9f s\n", now() - start);
  printf("IO: %.9f\n", now() - start);
  return 0;
}

/* Copies a file byte by byte (LLFI's memcpy-style sample): copy IN OUT. */
#include <stdio.h>

int main(int argc, char **argv) {
  FILE *in, *out;
  int c, n = 0;
  if (argc < 3) return 2;
  in = fopen(argv[1], "rb");
  out = fopen(argv[2], "wb");
  if (!in || !out) return 1;
  while ((c = fgetc(in)) != EOF) {
    fputc(c, out);
    n++;
  }
  fclose(in);
  fclose(out);
  printf("copied %d bytes\n", n);
  return 0;
}

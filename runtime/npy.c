/* .npy files carry the shape and dtype, so the controller can reject a wrong input by itself. */
#include "npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, int errlen, const char *path, const char *why) {
  snprintf(err, errlen, "%s: %s", path, why);
  return -1;
}

int npy_read(const char *path, npy_array *out, char *err, int errlen) {
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "rb");
  if (!f) return fail(err, errlen, path, "cannot open");
  unsigned char magic[8];
  if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "\x93NUMPY", 6) != 0) {
    fclose(f);
    return fail(err, errlen, path, "not a .npy file");
  }
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    if (fread(b, 1, 2, f) != 2) { fclose(f); return fail(err, errlen, path, "truncated header"); }
    hlen = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    if (fread(b, 1, 4, f) != 4) { fclose(f); return fail(err, errlen, path, "truncated header"); }
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | ((uint32_t)b[3] << 24);
  }
  char *header = calloc(hlen + 1, 1);
  if (fread(header, 1, hlen, f) != hlen) {
    free(header); fclose(f);
    return fail(err, errlen, path, "truncated header");
  }
  char *d = strstr(header, "'descr':");
  char *fo = strstr(header, "'fortran_order':");
  char *sh = strstr(header, "'shape':");
  if (!d || !fo || !sh) { free(header); fclose(f); return fail(err, errlen, path, "bad header"); }
  d = strchr(d + 8, '\'');
  if (d) {
    char *end = strchr(d + 1, '\'');
    int n = end ? (int)(end - d - 1) : 0;
    if (n > 15) n = 15;
    memcpy(out->descr, d + 1, n);
  }
  if (strncmp(fo + 16, " True", 5) == 0) { free(header); fclose(f); return fail(err, errlen, path, "Fortran-order arrays are not supported"); }
  char *p = strchr(sh, '(');
  out->count = 1;
  for (p = p ? p + 1 : NULL; p && *p && *p != ')';) {
    while (*p == ' ' || *p == ',') p++;
    if (*p == ')') break;
    if (out->rank == NPY_MAX_RANK) { free(header); fclose(f); return fail(err, errlen, path, "rank too large"); }
    char *next;
    long long v = strtoll(p, &next, 10);
    if (next == p) break;
    out->shape[out->rank++] = v;
    out->count *= v;
    p = next;
  }
  free(header);
  if (strcmp(out->descr, "<f4") != 0) { fclose(f); return 0; }
  out->data = malloc(out->count > 0 ? out->count * sizeof(float) : sizeof(float));
  if ((int64_t)fread(out->data, sizeof(float), out->count, f) != out->count) {
    fclose(f); free(out->data); out->data = NULL;
    return fail(err, errlen, path, "truncated data");
  }
  fclose(f);
  return 0;
}

int npy_write(const char *path, const float *data, const int64_t *shape, int rank) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  char header[256];
  int n = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
  int64_t count = 1;
  for (int i = 0; i < rank; i++) {
    n += snprintf(header + n, sizeof header - n, "%lld,%s", (long long)shape[i], i + 1 < rank ? " " : "");
    count *= shape[i];
  }
  n += snprintf(header + n, sizeof header - n, "), }");
  int total = 10 + n + 1;
  int padding = (64 - total % 64) % 64;
  uint16_t hlen = (uint16_t)(n + padding + 1);
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  unsigned char b[2] = {hlen & 0xff, hlen >> 8};
  fwrite(b, 1, 2, f);
  fwrite(header, 1, n, f);
  for (int i = 0; i < padding; i++) fputc(' ', f);
  fputc('\n', f);
  fwrite(data, sizeof(float), count, f);
  return fclose(f) == 0 ? 0 : -1;
}

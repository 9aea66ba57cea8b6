/* Test harness for runtime/npy.c (tests/test_native_safety.py).
 *
 *   npy_harness read MAX_BYTES path...     one line per file: "ok descr nbytes d0 d1 ..." or "error ..."
 *   npy_harness write path descr d0 d1 ... writes count bytes 0, 1, 2, ... (mod 256) as that array
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "read")) {
    size_t max_bytes = strtoull(argv[2], NULL, 10);
    for (int i = 3; i < argc; i++) {
      npy_array arr;
      char err[512];
      if (npy_read(argv[i], &arr, max_bytes, err, sizeof err)) {
        printf("error %s\n", err);
        continue;
      }
      printf("ok %s %zu", npy_descr(arr.dtype), arr.nbytes);
      for (int d = 0; d < arr.rank; d++) printf(" %lld", (long long)arr.shape[d]);
      unsigned sum = 0;  /* reads every byte (the sanitizers see an overrun) */
      for (size_t b = 0; b < arr.nbytes; b++) sum += ((unsigned char *)arr.data)[b];
      printf(" sum=%u\n", sum);
      free(arr.data);
    }
    return 0;
  }
  if (argc >= 4 && !strcmp(argv[1], "write")) {
    int dtype = -1;
    for (int d = 0; d < NPY_NUM_DTYPES; d++)
      if (!strcmp(argv[3], npy_descr(d))) dtype = d;
    int rank = argc - 4;
    int64_t shape[64];
    size_t count = 1;
    if (dtype < 0 || rank > 64) return 2;
    for (int i = 0; i < rank; i++) count *= (size_t)(shape[i] = strtoll(argv[4 + i], NULL, 10));
    size_t nbytes = count * npy_elem_size(dtype);
    unsigned char *data = malloc(nbytes ? nbytes : 1);
    for (size_t b = 0; b < nbytes; b++) data[b] = (unsigned char)(dtype == 8 ? b % 2 : b);
    int rc = npy_write(argv[2], data, dtype, shape, rank);
    free(data);
    return rc ? 1 : 0;
  }
  fprintf(stderr, "usage: npy_harness read MAX_BYTES path... | write path descr dims...\n");
  return 2;
}

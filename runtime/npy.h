/* Minimal .npy reader/writer for float32 C-order arrays (NumPy format versions 1-3). */
#ifndef LLTFI_NPY_H
#define LLTFI_NPY_H
#include <stdint.h>

#define NPY_MAX_RANK 16

typedef struct {
  int rank;
  int64_t shape[NPY_MAX_RANK];
  char descr[16];   /* e.g. "<f4" */
  float *data;      /* malloc'd; NULL unless descr is "<f4" */
  int64_t count;
} npy_array;

/* Returns 0 on success; on failure writes a one-line reason into err. */
int npy_read(const char *path, npy_array *out, char *err, int errlen);
int npy_write(const char *path, const float *data, const int64_t *shape, int rank);
#endif

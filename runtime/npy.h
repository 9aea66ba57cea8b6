/* .npy reader and writer (NumPy format versions 1-3, C order) for the element types models use.
 *
 * The header is parsed as NumPy parses it (a Python dict literal with exactly the keys 'descr',
 * 'fortran_order' and 'shape'), with bounds on everything a hostile file controls: header length,
 * rank, negative dimensions, element-count overflow, and the data size against what the caller
 * expects before anything is allocated.
 */
#ifndef LLTFI_NPY_H
#define LLTFI_NPY_H
#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_RANK 16
#define NPY_MAX_HEADER (1 << 20) /* bytes; NumPy itself refuses more than 10,000 by default */

/* Element types; the glue's lltfi_tensor_info.dtype holds one of these. */
enum {
  NPY_F32, NPY_F64, NPY_F16, NPY_I64, NPY_I32, NPY_I16, NPY_I8, NPY_U8, NPY_BOOL, NPY_U16, NPY_U32, NPY_U64,
  NPY_NUM_DTYPES
};

typedef struct {
  int rank;
  int64_t shape[NPY_MAX_RANK];
  int dtype;        /* NPY_* */
  size_t count;     /* elements */
  size_t nbytes;    /* count * element size */
  void *data;       /* malloc'd by npy_read (at least one byte) */
} npy_array;

/* "<f4", "|b1", ...: the descr NumPy writes for a dtype code; NULL if out of range. */
const char *npy_descr(int dtype);
/* Bytes per element (0 if out of range). */
size_t npy_elem_size(int dtype);
/* The NumPy name ("float32", "bool", ...) for messages. */
const char *npy_dtype_name(int dtype);

/* Parses the header dict text (`len` bytes, not NUL-terminated) into rank, shape, dtype, count and
   nbytes. Returns 0 on success; on failure writes a one-line reason into err. */
int npy_parse_header(const char *text, size_t len, npy_array *out, char *err, int errlen);

/* Reads a whole .npy file. Returns 0 on success; on failure writes a one-line reason into err and
   leaves out->data NULL: -2 for data larger than `max_bytes` (refused before allocating; rank, shape
   and dtype are filled in, for a message about the mismatch), -1 for anything else. */
int npy_read(const char *path, npy_array *out, size_t max_bytes, char *err, int errlen);

/* Writes `data` (count = product of shape) as a C-order .npy file. Returns 0 on success. */
int npy_write(const char *path, const void *data, int dtype, const int64_t *shape, int rank);
#endif

/* What the per-model glue (generated at compile time) gives the controller.
 *
 * Tensors are known by position only: the glue holds no names (a name from a model file pasted into
 * C is code injection); manifest.json maps positions to names. */
#ifndef LLTFI_MODEL_API_H
#define LLTFI_MODEL_API_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
  int rank;
  const int64_t *shape;
  int64_t count;   /* elements */
  int dtype;       /* NPY_* (npy.h) */
  int elem_size;   /* bytes per element */
} lltfi_tensor_info;

extern const int lltfi_num_inputs;
extern const int lltfi_num_outputs;
extern const lltfi_tensor_info lltfi_inputs[];
extern const lltfi_tensor_info lltfi_outputs[];

/* Runs one inference: inputs are contiguous arrays of their element types; outputs are written
   contiguously. */
void lltfi_model_run(void **inputs, void **outputs);

/* Copies a strided memref (as returned by the model) into a contiguous array. */
void lltfi_copy_strided(void *dst, const void *base, int64_t offset, const int64_t *sizes, const int64_t *strides,
                        int rank, int elem_size);

/* Frees the result buffers of one run (the model hands their ownership to the caller). */
void lltfi_free_results(void *const *allocated, int n, void *const *inputs);

/* campaign_server.c: the servers' shared helpers. */
/* Reads an inputs list (one input set per line: whitespace-separated .npy paths, see
   write_inputs_list in Python) into a growing array of sets; 0 on success, 2 on bad input. */
int lltfi_load_input_sets(const char *list, void ****sets, int *n_sets);
/* Bytes of all outputs, contiguous, in order (count x element size each). */
int64_t lltfi_output_bytes(void);
/* Points outs[i] at output i inside one contiguous buffer of lltfi_output_bytes() bytes. */
void lltfi_output_pointers(void *base, void **outs);
#endif

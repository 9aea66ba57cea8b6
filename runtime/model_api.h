/* What the per-model glue (generated at compile time) gives the controller. */
#ifndef LLTFI_MODEL_API_H
#define LLTFI_MODEL_API_H
#include <stdint.h>

typedef struct {
  const char *name;
  int rank;
  const int64_t *shape;
  int64_t count;
} lltfi_tensor_info;

extern const int lltfi_num_inputs;
extern const int lltfi_num_outputs;
extern const lltfi_tensor_info lltfi_inputs[];
extern const lltfi_tensor_info lltfi_outputs[];

/* Runs one inference: inputs are contiguous float32 arrays; outputs are written contiguously. */
void lltfi_model_run(float **inputs, float **outputs);

/* Copies a strided memref (as returned by the model) into a contiguous array. */
void lltfi_copy_strided(float *dst, const float *base, int64_t offset, const int64_t *sizes,
                        const int64_t *strides, int rank);

/* Frees the result buffers of one run (the model hands their ownership to the caller). */
void lltfi_free_results(float *const *allocated, int n, float *const *inputs);
/* Reads an inputs list (one input set of .npy paths per line); campaign_server.c. */
int lltfi_load_input_sets(const char *list, float ***sets, int max_sets, int *n_sets);
#endif

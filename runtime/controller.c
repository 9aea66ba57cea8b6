/* Native driver of a compiled model: .npy inputs in, .npy outputs out, no Python at inference time.
 *
 *   program --input x.npy [--input x2.npy ...] [--output y.npy ...] [--repeat N] [--time]
 *   program --profile --inputs-list L [--repeat N] [--no-check] [--timeout-us T]   (see campaign_server.c)
 *   program --serve --inputs-list L                   (fork-server for campaigns)
 *   program --walk --inputs-list L [--jobs J]         (campaigns forked at the injection point)
 *
 * Exit status: 0 success, 2 bad input (missing file, wrong shape or dtype), 1 other failure.
 */
#include <stdio.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model_api.h"
#include "npy.h"
#include "trial_heap.h"

void lltfi_copy_strided(void *dst, const void *base, int64_t offset, const int64_t *sizes, const int64_t *strides,
                        int rank, int elem_size) {
  const char *src = (const char *)base;
  char *out = (char *)dst;
  size_t size = (size_t)elem_size;
  int64_t total = 1, expect = 1;
  int contiguous = 1;
  for (int i = rank - 1; i >= 0; i--) {
    total *= sizes[i];
    if (sizes[i] != 1 && strides[i] != expect) contiguous = 0;
    expect *= sizes[i];
  }
  if (contiguous) {
    if (total > 0) memcpy(out, src + offset * (int64_t)size, (size_t)total * size);
    return;
  }
  int64_t index[NPY_MAX_RANK] = {0};
  for (int64_t n = 0; n < total; n++) {
    int64_t at = offset;
    for (int i = 0; i < rank; i++) at += index[i] * strides[i];
    memcpy(out + n * (int64_t)size, src + at * (int64_t)size, size);
    for (int i = rank - 1; i >= 0; i--) {
      if (++index[i] < sizes[i]) break;
      index[i] = 0;
    }
  }
}

/* Frees what one run returned: each distinct `allocated` pointer once, never a model input nor a
 * constant global (finalize-memref-to-llvm gives those the allocated pointer 0xdeadbeef). The
 * deallocation pipeline clones results that would alias an input or a global, and the importer
 * copies repeated results; the checks keep the glue safe should a lowering return an alias anyway. */
void lltfi_free_results(void *const *allocated, int n, void *const *inputs) {
  for (int i = 0; i < n; i++) {
    void *p = allocated[i];
    int skip = p == NULL || p == (void *)(uintptr_t)0xdeadbeef;
    for (int j = 0; !skip && j < lltfi_num_inputs; j++) skip = p == inputs[j];
    for (int j = 0; !skip && j < i; j++) skip = p == allocated[j];
    if (!skip) _mlir_memref_to_llvm_free(p);  /* the model's allocator (trial_heap.h) */
  }
}

/* "2x3", "scalar"; truncated (never overrun) if `len` is short. */
static void shape_str(char *buf, size_t len, const int64_t *shape, int rank) {
  size_t n = 0;
  buf[0] = 0;
  if (rank == 0) snprintf(buf, len, "scalar");
  for (int i = 0; i < rank && n < len; i++) {
    int k = snprintf(buf + n, len - n, i ? "x%lld" : "%lld", (long long)shape[i]);
    if (k < 0) break;
    n += (size_t)k;
  }
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int lltfi_profile_main(const char *list, int repeat, int check, long long timeout_us);
int lltfi_serve_main(const char *list);
int lltfi_walk_main(const char *list, int jobs);

int main(int argc, char **argv) {
#ifdef __GLIBC__
  /* Keep freed tensor buffers in the heap for the next inference: glibc would otherwise mmap and
   * munmap every buffer above 128 KB, and page faults on fresh pages cost more than the model. */
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
  if (argc >= 4 && !strcmp(argv[1], "--profile") && !strcmp(argv[2], "--inputs-list")) {
    int repeat = 3, check = 1;
    long long timeout_us = 0;
    for (int i = 4; i < argc; i++) {
      if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
      else if (!strcmp(argv[i], "--timeout-us") && i + 1 < argc) timeout_us = atoll(argv[++i]);
      else if (!strcmp(argv[i], "--no-check")) check = 0;
    }
    return lltfi_profile_main(argv[3], repeat, check, timeout_us);
  }
  if (argc >= 4 && !strcmp(argv[1], "--serve") && !strcmp(argv[2], "--inputs-list"))
    return lltfi_serve_main(argv[3]);
  if (argc >= 4 && !strcmp(argv[1], "--walk") && !strcmp(argv[2], "--inputs-list"))  /* walk_server.c */
    return lltfi_walk_main(argv[3], argc >= 6 && !strcmp(argv[4], "--jobs") ? atoi(argv[5]) : 1);
  int n_in = 0, n_out = 0, repeat = 1, show_time = 0;
  const char **in_paths = calloc((size_t)argc, sizeof *in_paths), **out_paths = calloc((size_t)argc, sizeof *out_paths);
  if (!in_paths || !out_paths) { fprintf(stderr, "error: out of memory\n"); return 1; }
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--input") && i + 1 < argc) in_paths[n_in++] = argv[++i];
    else if (!strcmp(argv[i], "--output") && i + 1 < argc) out_paths[n_out++] = argv[++i];
    else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--time")) show_time = 1;
    else {
      fprintf(stderr, "usage: %s --input x.npy ... [--output y.npy ...] [--repeat N] [--time]\n", argv[0]);
      return 2;
    }
  }
  if (n_in != lltfi_num_inputs) {
    fprintf(stderr, "error: the model takes %d input(s), %d given\n", lltfi_num_inputs, n_in);
    return 2;
  }
  if (n_out > lltfi_num_outputs) {  /* fewer: the first ones (a traced build's layers follow its outputs) */
    fprintf(stderr, "error: the model has %d output(s), %d --output given\n", lltfi_num_outputs, n_out);
    return 2;
  }
  void **inputs = calloc(n_in ? (size_t)n_in : 1, sizeof(void *));
  void **outputs = calloc(lltfi_num_outputs ? (size_t)lltfi_num_outputs : 1, sizeof(void *));
  if (!inputs || !outputs) { fprintf(stderr, "error: out of memory\n"); return 1; }
  for (int i = 0; i < n_in; i++) {
    npy_array arr;
    char err[512], got[400], want[400];
    const lltfi_tensor_info *info = &lltfi_inputs[i];
    int rc = npy_read(in_paths[i], &arr, (size_t)info->count * (size_t)info->elem_size, err, sizeof err);
    if (rc == -1) {
      fprintf(stderr, "error: input %d: %s\n", i, err);
      return 2;
    }
    int same = rc == 0 && arr.rank == info->rank && arr.dtype == info->dtype;
    for (int d = 0; same && d < arr.rank; d++) same = arr.shape[d] == info->shape[d];
    if (!same) {
      shape_str(got, sizeof got, arr.shape, arr.rank);
      shape_str(want, sizeof want, info->shape, info->rank);
      fprintf(stderr, "error: input %d from %s: expected %s of shape %s, got %s of shape %s\n", i, in_paths[i],
              npy_dtype_name(info->dtype), want, npy_dtype_name(arr.dtype), got);
      return 2;
    }
    inputs[i] = arr.data;
  }
  for (int i = 0; i < lltfi_num_outputs; i++) {
    outputs[i] = malloc(lltfi_outputs[i].count ? (size_t)lltfi_outputs[i].count * lltfi_outputs[i].elem_size : 1);
    if (!outputs[i]) { fprintf(stderr, "error: out of memory\n"); return 1; }
  }
  double start = now();
  for (int r = 0; r < repeat; r++) lltfi_model_run(inputs, outputs);
  double elapsed = now() - start;
  if (show_time) fprintf(stderr, "time_per_inference_us %.3f\n", 1e6 * elapsed / (repeat > 0 ? repeat : 1));
  extern uint64_t lltfi_sid_mismatches;
  if (lltfi_sid_mismatches) fprintf(stderr, "sid_mismatches %llu\n", (unsigned long long)lltfi_sid_mismatches);
  for (int i = 0; i < n_out; i++) {
    const lltfi_tensor_info *info = &lltfi_outputs[i];
    if (npy_write(out_paths[i], outputs[i], info->dtype, info->shape, info->rank)) {
      fprintf(stderr, "error: cannot write %s\n", out_paths[i]);
      return 1;
    }
  }
  return 0;
}

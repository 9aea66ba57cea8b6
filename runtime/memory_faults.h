/* Memory faults: bits of stored data corrupted by a fork-server child, not instruction results.
 *
 * Weights (persistent faults): weights.S (llvm_backend/weights.py) defines `lltfi_weight_table`,
 * one {address, bytes} entry per externalized initializer, in the order of the manifest's
 * "weights" list; names never reach C. A trial line prefixed "W t1[,t2...] elem_bytes " asks the
 * child to corrupt element `target` of table entries t1, t2, ... (copies of one tensor: a node and
 * its OD duplicate each read their own; elements of `elem_bytes` bytes) before the inference; the
 * corruption stays for the whole run. The rest of the line is the usual trial line
 * (trial_protocol.h): fault type, num_bits, bit, mask and seed choose the bits exactly as for an
 * instruction fault. The fault record names the first table entry as `site` and the element as
 * `index`, with that copy's bits before and after.
 *
 * Activations (transient faults): a line prefixed "A id node output elem_bytes " asks the child to
 * corrupt element `target` of the `output`-th tensor that ONNX node `node` reports at its operator
 * boundary (runtime/boundaries.h: lltfi_node_end, after the node's call in an instrumented build of
 * optimized code), right after the operator wrote it and before anything reads it. The fault record
 * names `id` (the campaign's number for that tensor) as `site`.
 */
#ifndef LLTFI_MEMORY_FAULTS_H
#define LLTFI_MEMORY_FAULTS_H
#include <stdint.h>

#include "fi_runtime.h"

typedef struct {
  const void *address;
  uint64_t bytes;
} lltfi_weight_entry;

#define LLTFI_MAX_COPIES 16

typedef struct {
  int kind;            /* 0: none (an instruction fault); 1: a weight element; 2: an activation element */
  long long id, node, output;          /* activations */
  int n_copies;
  long long tensor[LLTFI_MAX_COPIES];  /* indices into lltfi_weight_table, all of the same size */
  int elem_bytes;      /* 1, 2, 4 or 8 */
} lltfi_memory_fault;

/* Strips a leading "W t1[,t2...] elem_bytes " from a trial line into `m` (m->kind = 0 without one);
   returns the rest of the line, or NULL if the prefix is malformed. */
const char *lltfi_parse_memory_fault(const char *line, lltfi_memory_fault *m);

/* 0 if the fault names an existing element of an existing table entry (or is none), else -1. */
int lltfi_check_memory_fault(const lltfi_memory_fault *m, long long element);

/* In the child, before the inference: corrupts the weight element (or arms the activation fault)
   and records the fault in `log`; the model then runs in golden mode. */
void lltfi_apply_memory_fault(const lltfi_memory_fault *m, long long element, const lltfi_fault_spec *spec,
                              lltfi_fault_log *log);

/* Called by lltfi_node_end for every output tensor of every operator: applies an armed activation
   fault when its tensor comes by. */
void lltfi_memory_node_end(int64_t node, const void *data, int64_t nbytes, int32_t final);
#endif

/* Operator boundaries: end a trial early once the fault is masked.
 *
 * Instrumented builds of optimized models call lltfi_node_end() after every outlined operator
 * (`node_<i>` in main_graph), once per output tensor (dialect_passes/node_boundaries.py). A golden
 * record holds every such tensor of one fault-free run of an input set. A trial child compares the
 * tensors the same calls hand it with the record, from its first fault on: a tensor that differs is
 * corrupted until its last reader (`last_use`, an ONNX node index) has run. Once every fault has been
 * injected and no live tensor is corrupted, the rest of the run is the golden run -- the state the
 * future depends on is bit-identical -- so the child leaves the golden outputs and exits: benign,
 * masked at that operator.
 *
 * This is exact when a fault can only change floating-point values (the campaign turns it on only
 * for such selections): a corrupted value then reaches memory only through the operator's outputs.
 */
#ifndef LLTFI_BOUNDARIES_H
#define LLTFI_BOUNDARIES_H
#include <stddef.h>
#include <stdint.h>

typedef struct lltfi_golden_record lltfi_golden_record;

/* Runs one golden inference of input set `set` writing its outputs (all of them, contiguous) to `out`. */
typedef void (*lltfi_run_fn)(int set, void *out);

/* The record of `set`, made by a forked recorder child on first use (kept within a memory budget;
   LLTFI_GOLDEN_BUDGET_MB overrides the default of 2048). NULL if it could not be made. Call in the
   server, before forking trial children or walkers: they inherit the shared mapping. */
const lltfi_golden_record *lltfi_golden_record_for(int set, lltfi_run_fn run, size_t out_bytes);

/* Bytes of all operator outputs of the recorded run (0 for NULL): how much a trial may write. */
uint64_t lltfi_golden_output_bytes(const lltfi_golden_record *rec);

/* In a trial child: check boundaries against `rec` from now on; on masking, copy the golden outputs
   to `out` and _exit(0). Calls already made in this run (a walk child) keep their count. */
void lltfi_boundaries_check(const lltfi_golden_record *rec, void *out);

/* The servers end trials early only with LLTFI_EARLY_END=1 in their environment: the campaign sets
   it for selections where that is exact. */
int lltfi_early_end(void);

/* A new run: restart the call count (boundaries of the run before are not this run's). */
void lltfi_boundaries_restart(void);

/* The hook: `node` ran and `data` (`nbytes`) is one of its outputs, read last by node `last_use`;
   `final` marks the node's last output. */
void lltfi_node_end(int64_t node, int64_t last_use, const void *data, int64_t nbytes, int32_t final);
#endif

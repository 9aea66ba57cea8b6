/* Where a compiled model's tensor buffers come from.
 *
 * Models are lowered with `finalize-memref-to-llvm{use-generic-functions}`: every memref.alloc and
 * dealloc calls the two functions below instead of malloc and free. They are malloc and free, except
 * in a walk engine's trial child (walk_server.c), which calls lltfi_trial_heap_begin() right after its
 * fork: from then on its new buffers come from a fresh private region backed by transparent huge pages.
 *
 * Why: a trial child forked from the walker in mid-inference writes every later buffer into heap pages
 * the walker has touched (glibc reuses freed chunks), and each 4 KB page it writes first costs a page
 * fault and a copy. MobileNetV2: about 550 of a trial's 600 faults, 4 ms of kernel time per trial on a
 * 2-core VM against 5 ms of model code. In a fresh region a trial faults once per 2 MB it uses.
 *
 * The buffers' values do not depend on where they are, so results do not change; the region is only
 * used when the campaign ends trials early (boundaries.h), i.e. when a fault can change nothing but
 * floating-point values, so no corrupted address makes the layout matter either.
 */
#ifndef LLTFI_TRIAL_HEAP_H
#define LLTFI_TRIAL_HEAP_H
#include <stddef.h>
#include <stdint.h>

void *_mlir_memref_to_llvm_alloc(uint64_t size);
void *_mlir_memref_to_llvm_aligned_alloc(uint64_t alignment, uint64_t size);
void _mlir_memref_to_llvm_free(void *ptr);

/* This process's buffers from now on come from a fresh region (a trial child, once, after its fork).
   Buffers allocated before still go back to malloc's heap. If the region cannot be reserved, nothing
   changes. Returns 1 if the region is in use. */
int lltfi_trial_heap_begin(void);

/* Bytes from the region's start to its top: its footprint so far (0 without a region). */
size_t lltfi_trial_heap_extent(void);

#endif

/* Exercises runtime/trial_heap.c against a shadow copy of every live block: prints PASS or the first
 * broken property and exits non-zero. Built by tests/test_trial_heap.py, also under ASan + UBSan. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "trial_heap.h"

#define LIVE 512

static void *ptr[LIVE];
static size_t len[LIVE];
static unsigned char tag[LIVE];

#define CHECK(cond, what)                                   \
  do {                                                      \
    if (!(cond)) {                                          \
      printf("FAIL %s (line %d)\n", what, __LINE__);        \
      exit(1);                                              \
    }                                                       \
  } while (0)

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* Every 64th byte and the last 64: blocks are 64-byte aligned and at least 64 bytes apart, so any
   overlap covers one of them (and the sanitized build stays fast on blocks of megabytes). */
static size_t step_after(size_t i, size_t n) { return i + 64 < n - (n > 64 ? 64 : n) ? i + 64 : i + 1; }

static int intact(int k) {
  const unsigned char *p = ptr[k];
  for (size_t i = 0; i < len[k]; i = step_after(i, len[k]))
    if (p[i] != (unsigned char)(tag[k] + i)) return 0;
  return 1;
}

static void fill(int k) {
  unsigned char *p = ptr[k];
  for (size_t i = 0; i < len[k]; i = step_after(i, len[k])) p[i] = (unsigned char)(tag[k] + i);
}

int main(void) {
  void *before = _mlir_memref_to_llvm_alloc(1000);  /* malloc's: goes back to free() */
  CHECK(before != NULL, "malloc before the region");
  CHECK(lltfi_trial_heap_extent() == 0, "no region, no extent");
  CHECK(lltfi_trial_heap_begin() == 1, "region reserved");
  CHECK(lltfi_trial_heap_begin() == 1, "begin twice keeps the region");

  /* Best fit reuses a freed block in place; a block at the top gives its room back. */
  char *a = _mlir_memref_to_llvm_alloc(1 << 20), *b = _mlir_memref_to_llvm_alloc(1 << 20);
  size_t extent = lltfi_trial_heap_extent();
  CHECK(a && b && b > a && extent >= 2u << 20, "two blocks off the top");
  _mlir_memref_to_llvm_free(a);
  char *c = _mlir_memref_to_llvm_alloc(512 << 10);
  CHECK(c == a && lltfi_trial_heap_extent() == extent, "a smaller block reuses the freed one");
  _mlir_memref_to_llvm_free(c);
  _mlir_memref_to_llvm_free(b);
  CHECK(lltfi_trial_heap_extent() == 0, "freeing everything lowers the top to the start");

  /* Neighbours merge: two adjacent freed blocks hold one block of both sizes. */
  char *p[4];
  for (int i = 0; i < 4; i++) p[i] = _mlir_memref_to_llvm_alloc(100000);
  _mlir_memref_to_llvm_free(p[1]);
  _mlir_memref_to_llvm_free(p[2]);
  char *merged = _mlir_memref_to_llvm_alloc(200000);
  CHECK(merged == p[1], "adjacent free blocks merge");
  _mlir_memref_to_llvm_free(merged);
  _mlir_memref_to_llvm_free(p[0]);
  _mlir_memref_to_llvm_free(p[3]);
  CHECK(lltfi_trial_heap_extent() == 0, "merged blocks go back to the top");

  void *z1 = _mlir_memref_to_llvm_alloc(0), *z2 = _mlir_memref_to_llvm_alloc(0);
  CHECK(z1 && z2 && z1 != z2, "zero-byte blocks are distinct");
  void *aligned = _mlir_memref_to_llvm_aligned_alloc(4096, 10000);  /* beyond the headers: malloc's */
  CHECK(aligned && (uintptr_t)aligned % 4096 == 0, "large alignment");
  _mlir_memref_to_llvm_free(aligned);
  _mlir_memref_to_llvm_free(z1);
  _mlir_memref_to_llvm_free(z2);
  _mlir_memref_to_llvm_free(before);

  /* Random allocations and frees: blocks are 64-byte aligned, never overlap (each keeps its bytes),
     and the top comes back to the start once everything is freed. */
  for (int step = 0; step < 20000; step++) {
    int k = (int)(next() % LIVE);
    if (ptr[k]) {
      CHECK(intact(k), "a live block kept its bytes");
      _mlir_memref_to_llvm_free(ptr[k]);
      ptr[k] = NULL;
      continue;
    }
    uint64_t r = next();
    len[k] = r % 4 == 0 ? (size_t)(r >> 8) % (3u << 20) : (size_t)(r >> 8) % 5000;
    ptr[k] = (r & 8) ? _mlir_memref_to_llvm_aligned_alloc(64, len[k]) : _mlir_memref_to_llvm_alloc(len[k]);
    CHECK(ptr[k] != NULL && (uintptr_t)ptr[k] % 64 == 0, "64-byte aligned block");
    tag[k] = (unsigned char)step;
    fill(k);
  }
  for (int k = 0; k < LIVE; k++)
    if (ptr[k]) {
      CHECK(intact(k), "a live block kept its bytes");
      _mlir_memref_to_llvm_free(ptr[k]);
    }
  CHECK(lltfi_trial_heap_extent() == 0, "everything freed: the top is back at the start");

  /* A double free aborts, as glibc's does. */
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    void *twice = _mlir_memref_to_llvm_alloc(64);
    _mlir_memref_to_llvm_free(twice);
    _mlir_memref_to_llvm_free(twice);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "a double free aborts");
  puts("PASS");
  return 0;
}

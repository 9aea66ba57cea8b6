/* Tensor buffers: malloc's heap, or a trial child's fresh region (see trial_heap.h).
 *
 * The region is one reservation (MAP_NORESERVE: only pages written count) with MADV_HUGEPAGE. Its
 * first bytes hold the allocator's state, so nothing of it lives in the executable's static storage
 * (which a fault reading past a weight array could reach; it should hold the same bytes in every
 * engine). Blocks carry a 64-byte header (their size and a tag) and are 64-byte aligned. Free blocks
 * are kept by address and merged with their neighbours; a free block that ends at the top lowers the
 * top. A new block is the smallest free block that fits, else comes off the top: a trial reuses the
 * pages it has already faulted in, and its footprint stays near its buffers' peak.
 */
#include "trial_heap.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HEADER 64
#define HUGE_PAGE ((size_t)2 << 20)
#define MAX_FREE 4096           /* free blocks kept; one more is left unused (it only costs room) */
#define MAX_REGION ((size_t)1 << 36)
#define TAG 0x6c6c7466692d6870ull

typedef struct {
  char *at;
  size_t size;
} span;

struct trial_heap {
  char *lo, *top, *end;
  int n_free;
  span free[MAX_FREE];  /* by address; none touches another or the top */
};

static struct trial_heap *heap;

int lltfi_trial_heap_begin(void) {
  if (heap) return 1;
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  size_t cap = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : (size_t)1 << 32;
  if (cap > MAX_REGION) cap = MAX_REGION;
  char *map = mmap(NULL, cap + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED) return 0;
  char *start = (char *)(((uintptr_t)map + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
  madvise(start, cap, MADV_HUGEPAGE);  /* advice: without huge pages the region still works */
  struct trial_heap *h = (struct trial_heap *)start;
  h->lo = h->top = start + ((sizeof *h + HEADER - 1) / HEADER * HEADER);
  h->end = start + cap;
  h->n_free = 0;
  heap = h;
  return 1;
}

size_t lltfi_trial_heap_extent(void) { return heap ? (size_t)(heap->top - heap->lo) : 0; }

static void drop_span(int i) {
  memmove(&heap->free[i], &heap->free[i + 1], (size_t)(heap->n_free - i - 1) * sizeof(span));
  heap->n_free--;
}

static void *take(uint64_t size) {
  if (size > (uint64_t)(heap->end - heap->lo)) return NULL;
  size_t n = (size_t)(size + HEADER + HEADER - 1) / HEADER * HEADER;
  int best = -1;
  for (int i = 0; i < heap->n_free; i++)
    if (heap->free[i].size >= n && (best < 0 || heap->free[i].size < heap->free[best].size)) best = i;
  char *block;
  if (best >= 0) {
    span *s = &heap->free[best];
    block = s->at;
    if (s->size - n >= 2 * HEADER) {
      s->at += n;
      s->size -= n;
    } else {
      n = s->size;
      drop_span(best);
    }
  } else {
    if ((size_t)(heap->end - heap->top) < n) return NULL;
    block = heap->top;
    heap->top += n;
  }
  uint64_t *head = (uint64_t *)block;
  head[0] = n;
  head[1] = TAG;
  return block + HEADER;
}

static void give(char *p) {
  char *block = p - HEADER;
  uint64_t *head = (uint64_t *)block;
  if (head[1] != TAG) abort();  /* not a live block: a double free, as glibc would abort on */
  head[1] = 0;
  size_t n = (size_t)head[0];
  int lo = 0, hi = heap->n_free;  /* first span above the block */
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (heap->free[mid].at < block) lo = mid + 1;
    else hi = mid;
  }
  int i = lo;
  if (i > 0 && heap->free[i - 1].at + heap->free[i - 1].size == block) {
    heap->free[--i].size += n;
  } else {
    if (heap->n_free == MAX_FREE) return;
    memmove(&heap->free[i + 1], &heap->free[i], (size_t)(heap->n_free - i) * sizeof(span));
    heap->free[i] = (span){block, n};
    heap->n_free++;
  }
  if (i + 1 < heap->n_free && heap->free[i].at + heap->free[i].size == heap->free[i + 1].at) {
    heap->free[i].size += heap->free[i + 1].size;
    drop_span(i + 1);
  }
  if (heap->free[i].at + heap->free[i].size == heap->top) {
    heap->top = heap->free[i].at;
    drop_span(i);
  }
}

void *_mlir_memref_to_llvm_alloc(uint64_t size) {
  if (heap) {
    void *p = take(size);
    if (p) return p;
  }
  return malloc(size);
}

void *_mlir_memref_to_llvm_aligned_alloc(uint64_t alignment, uint64_t size) {
  if (heap && alignment <= HEADER) {
    void *p = take(size);
    if (p) return p;
  }
  if (alignment < sizeof(void *)) alignment = sizeof(void *);
  void *p = NULL;
  return posix_memalign(&p, alignment, size ? size : 1) == 0 ? p : NULL;
}

void _mlir_memref_to_llvm_free(void *ptr) {
  if (!ptr) return;
  if (heap && (char *)ptr >= heap->lo && (char *)ptr < heap->end) give(ptr);
  else free(ptr);
}

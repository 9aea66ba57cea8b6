/* See memory_faults.h: weight faults applied in the fork-server's child. */
#include "memory_faults.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Weak: a build assembled before the table existed (or a model without external weights) has none. */
extern const lltfi_weight_entry lltfi_weight_table[] __attribute__((weak));
extern const int64_t lltfi_num_weights __attribute__((weak));

static int64_t num_weights(void) { return &lltfi_num_weights ? lltfi_num_weights : 0; }

const char *lltfi_parse_memory_fault(const char *line, lltfi_memory_fault *m) {
  memset(m, 0, sizeof *m);
  if (line[0] == 'A') {
    int used = 0;
    if (sscanf(line, "A %lld %lld %lld %d %n", &m->id, &m->node, &m->output, &m->elem_bytes, &used) < 4 || !used)
      return NULL;
    m->kind = 2;
    return line + used;
  }
  if (line[0] != 'W') return line;
  if (line[1] != ' ') return NULL;
  const char *at = line + 1;
  for (;;) {  /* at: the space before the first index, then each comma */
    char *end;
    if (m->n_copies == LLTFI_MAX_COPIES) return NULL;
    long long tensor = strtoll(++at, &end, 10);
    if (end == at) return NULL;
    m->tensor[m->n_copies++] = tensor;
    at = end;
    if (*at != ',') break;
  }
  int used = 0;
  if (sscanf(at, " %d %n", &m->elem_bytes, &used) < 1 || used == 0) return NULL;
  m->kind = 1;
  return at + used;
}

int lltfi_check_memory_fault(const lltfi_memory_fault *m, long long element) {
  if (!m->kind) return 0;
  if (m->elem_bytes != 1 && m->elem_bytes != 2 && m->elem_bytes != 4 && m->elem_bytes != 8) return -1;
  if (m->kind == 2) return m->id >= 0 && m->id <= INT32_MAX && m->node >= 0 && m->output >= 0 && element >= 0 ? 0 : -1;
  for (int i = 0; i < m->n_copies; i++) {
    if (m->tensor[i] < 0 || m->tensor[i] >= num_weights()) return -1;
    if (lltfi_weight_table[m->tensor[i]].bytes != lltfi_weight_table[m->tensor[0]].bytes) return -1;
  }
  uint64_t count = lltfi_weight_table[m->tensor[0]].bytes / (uint64_t)m->elem_bytes;
  return m->n_copies > 0 && element >= 0 && (uint64_t)element < count ? 0 : -1;
}

static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* The same choice of bits as an instruction fault (fi_runtime.c): the exact mask of a replay, a
   fixed bit, or num_bits distinct bits drawn from the trial's seed. */
static uint64_t choose_mask(const lltfi_fault_spec *spec, int width) {
  uint64_t mask = spec->fixed_mask;
  if (!mask) {
    if (spec->bit >= 0) {
      mask = spec->bit < width ? 1ull << spec->bit : 0;
    } else {
      uint64_t state = spec->seed;
      int wanted = spec->num_bits < 1 ? 1 : spec->num_bits < width ? spec->num_bits : width;
      while (__builtin_popcountll(mask) < wanted) mask |= 1ull << (splitmix64(&state) % (uint64_t)width);
    }
  }
  return width < 64 ? mask & ((1ull << width) - 1) : mask;
}

/* Flips `mask` (as the fault type says) in the element at `at`; returns the bits before and after. */
static void corrupt(unsigned char *at, int elem_bytes, uint64_t mask, int fault_type, uint64_t *before,
                    uint64_t *after) {
  *before = 0;
  memcpy(before, at, elem_bytes);
  *after = *before;
  if (fault_type == LLTFI_BITFLIP) *after = *before ^ mask;
  else if (fault_type == LLTFI_STUCK_AT_0) *after = *before & ~mask;
  else if (fault_type == LLTFI_STUCK_AT_1) *after = *before | mask;
  memcpy(at, after, elem_bytes);
}

/* The armed activation fault of this child (at most one per run). */
static lltfi_memory_fault armed;
static long long armed_element;
static uint64_t armed_mask;
static int armed_type, armed_seen;
static lltfi_fault_log *armed_log;

void lltfi_memory_node_end(int64_t node, const void *data, int64_t nbytes, int32_t final) {
  if (armed.kind != 2 || node != armed.node) return;
  if (armed_seen++ == armed.output) {
    armed.kind = 0;  /* once */
    if ((armed_element + 1) * armed.elem_bytes > nbytes || armed_type == LLTFI_NO_FAULT) return;
    uint64_t before, after;
    /* The operator's output buffer: heap memory the model owns, written by the operator just now. */
    corrupt((unsigned char *)data + armed_element * armed.elem_bytes, armed.elem_bytes, armed_mask, armed_type,
            &before, &after);
    lltfi_fault_record *r = &armed_log->faults[armed_log->n_faults++];
    r->site = (int32_t)armed.id;
    r->index = (uint64_t)armed_element;
    r->mask = armed_mask;
    r->before = before;
    r->after = after;
  }
  if (final) armed_seen = 0;
}

void lltfi_apply_memory_fault(const lltfi_memory_fault *m, long long element, const lltfi_fault_spec *spec,
                              lltfi_fault_log *log) {
  lltfi_begin_golden();
  log->n_faults = 0;
  log->n_trace = 0;
  int width = 8 * m->elem_bytes;
  if (m->kind == 2) {
    armed = *m;
    armed_element = element;
    armed_mask = choose_mask(spec, width);
    armed_type = spec->fault_type;
    armed_seen = 0;
    armed_log = log;
    return;
  }
  uint64_t mask = choose_mask(spec, width), first_before = 0, first_after = 0;
  long page = sysconf(_SC_PAGESIZE);
  for (int i = 0; i < m->n_copies; i++) {
    unsigned char *at = (unsigned char *)lltfi_weight_table[m->tensor[i]].address + element * m->elem_bytes;
    /* The weights live in .rodata: this child's copy of the page becomes writable (copy on write). */
    uintptr_t start = (uintptr_t)at & ~(uintptr_t)(page - 1);
    uintptr_t end = ((uintptr_t)at + m->elem_bytes + page - 1) & ~(uintptr_t)(page - 1);
    if (mprotect((void *)start, end - start, PROT_READ | PROT_WRITE)) {
      perror("mprotect");
      _exit(70);
    }
    uint64_t before, after;
    corrupt(at, m->elem_bytes, mask, spec->fault_type, &before, &after);
    mprotect((void *)start, end - start, PROT_READ);
    if (i == 0) first_before = before, first_after = after;
  }
  if (spec->fault_type == LLTFI_NO_FAULT) return;
  lltfi_fault_record *r = &log->faults[log->n_faults++];
  r->site = (int32_t)m->tensor[0];
  r->index = (uint64_t)element;
  r->mask = mask;
  r->before = first_before;
  r->after = first_after;
}

/* Hooks called by the instrumented model: profile counting and fault injection.
 *
 * The model calls lltfi_fi_<type>(site, value) only inside the slow copy of a block (see
 * dialect_passes/instrument_sites.py); `lltfi_fi_remaining` is the number of selected dynamic
 * instances still to skip. The hook that reads 0 is at the target instance.
 */
#include "fi_runtime.h"

#include <string.h>

uint64_t lltfi_fi_remaining = UINT64_MAX;
int lltfi_mode = LLTFI_GOLDEN;
uint64_t *lltfi_site_counts = 0;
uint64_t lltfi_sid_mismatches = 0;  /* SID detection-only builds count duplicate mismatches here */

static lltfi_fault_spec spec;
static lltfi_fault_log *fault_log;
static uint64_t next_index;  /* dynamic index of the instance that reads remaining == 0 */
static uint64_t rng_state;
static int trace_left;        /* instances still to record after the last fault */
static void (*walk_reached)(void);

static uint64_t splitmix64(void) {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void lltfi_begin_golden(void) {
  lltfi_mode = LLTFI_GOLDEN;
  lltfi_fi_remaining = UINT64_MAX;
}

void lltfi_begin_profile(uint64_t *counts) {
  lltfi_mode = LLTFI_PROFILE;
  lltfi_site_counts = counts;
  lltfi_fi_remaining = 0;
}

void lltfi_begin_inject(uint64_t target, const lltfi_fault_spec *s, lltfi_fault_log *log) {
  lltfi_mode = LLTFI_INJECT;
  spec = *s;
  if (spec.max_faults < 1) spec.max_faults = 1;
  if (spec.max_faults > LLTFI_MAX_FAULTS) spec.max_faults = LLTFI_MAX_FAULTS;
  if (spec.num_bits < 1) spec.num_bits = 1;
  fault_log = log;
  fault_log->n_faults = 0;
  fault_log->n_trace = 0;
  fault_log->masked = 0;
  trace_left = 0;
  if (spec.trace_len > LLTFI_MAX_TRACE) spec.trace_len = LLTFI_MAX_TRACE;
  rng_state = spec.seed;
  next_index = target;
  lltfi_fi_remaining = target;
}

void lltfi_begin_walk(uint64_t first, void (*reached)(void)) {
  lltfi_mode = LLTFI_WALK;
  walk_reached = reached;
  trace_left = 0;
  lltfi_fi_remaining = first;
}

int lltfi_fault_progress(void) {
  if (lltfi_mode != LLTFI_INJECT || !fault_log || spec.trace_len > 0) return -1;
  if (fault_log->n_faults == 0) return 0;
  return fault_log->n_faults >= spec.max_faults ? 2 : 1;
}

void lltfi_note_masked(int64_t node) {
  fault_log->masked = 1;
  fault_log->masked_node = node;
}

/* Corrupt `width` bits of `bits`; returns the new bits and records the fault. */
static uint64_t inject(int32_t site, uint64_t bits, int width) {
  if (!spec.fixed_mask && spec.bit >= width) {  /* exhaustive plans: no such bit in this register */
    lltfi_fi_remaining = UINT64_MAX;
    return bits;
  }
  uint64_t mask = spec.fixed_mask;
  if (!mask) {
    if (spec.bit >= 0) {
      mask = 1ull << spec.bit;
    } else {
      int wanted = spec.num_bits < width ? spec.num_bits : width;
      while (__builtin_popcountll(mask) < wanted) mask |= 1ull << (splitmix64() % (uint64_t)width);
    }
  }
  if (width < 64) mask &= (1ull << width) - 1;
  uint64_t after = bits;
  if (spec.fault_type == LLTFI_BITFLIP) after = bits ^ mask;
  else if (spec.fault_type == LLTFI_STUCK_AT_0) after = bits & ~mask;
  else if (spec.fault_type == LLTFI_STUCK_AT_1) after = bits | mask;
  lltfi_fault_record *r = &fault_log->faults[fault_log->n_faults++];
  r->site = site;
  r->index = next_index;
  r->mask = mask;
  r->before = bits;
  r->after = after;
  if (fault_log->n_faults < spec.max_faults) {
    /* window: gaps 1..window_len, or (start-1) << 32 | span for LLTFI's start..end window */
    uint64_t span = spec.window_len & 0xffffffffu, base = spec.window_len >> 32;
    uint64_t gap = 1 + base + (span > 1 ? splitmix64() % span : 0);
    next_index += gap;
    lltfi_fi_remaining = gap - 1;
  } else if (spec.trace_len > 0) {
    trace_left = spec.trace_len;  /* every later instance reaches the hooks until the window is full */
    lltfi_fi_remaining = 0;
  } else {
    lltfi_fi_remaining = UINT64_MAX;
  }
  return after;
}

static void record_trace(int32_t site, uint64_t bits) {
  lltfi_trace_record *r = &fault_log->trace[fault_log->n_trace++];
  r->site = site;
  r->bits = bits;
  if (--trace_left == 0) lltfi_fi_remaining = UINT64_MAX;
}

/* 0: pass through; 1: inject here; 2: record for the propagation trace. */
static inline int at_target(int32_t site) {
  if (lltfi_mode == LLTFI_PROFILE) {
    lltfi_site_counts[site]++;
    return 0;
  }
  if (trace_left > 0) return 2;
  if (lltfi_fi_remaining == 0) {
    if (lltfi_mode == LLTFI_WALK) walk_reached();  /* may switch this process to inject mode */
    return lltfi_mode == LLTFI_INJECT;
  }
  lltfi_fi_remaining--;
  return 0;
}

#define HOOK(NAME, CTYPE, UTYPE, WIDTH)                  \
  CTYPE NAME(int32_t site, CTYPE value) {                \
    int what = at_target(site);                          \
    if (!what) return value;                             \
    UTYPE bits;                                          \
    memcpy(&bits, &value, sizeof bits);                  \
    if (what == 2) {                                     \
      record_trace(site, (uint64_t)bits);                \
      return value;                                      \
    }                                                    \
    bits = (UTYPE)inject(site, (uint64_t)bits, WIDTH);   \
    memcpy(&value, &bits, sizeof bits);                  \
    return value;                                        \
  }

HOOK(lltfi_fi_f32, float, uint32_t, 32)
HOOK(lltfi_fi_f64, double, uint64_t, 64)
HOOK(lltfi_fi_i1, uint8_t, uint8_t, 1)
HOOK(lltfi_fi_i8, uint8_t, uint8_t, 8)
HOOK(lltfi_fi_i16, uint16_t, uint16_t, 16)
HOOK(lltfi_fi_i32, uint32_t, uint32_t, 32)
HOOK(lltfi_fi_i64, uint64_t, uint64_t, 64)
HOOK(lltfi_fi_ptr, void *, uint64_t, 64)

/* A vector site's cold copy stores the vector and passes its lanes here: lane 0..n-1, in order,
   each one instance, exactly as n calls of the scalar hook (one call keeps the cold code small). */
#define LANES_HOOK(NAME, SCALAR, CTYPE)                               \
  void NAME(int32_t site, CTYPE *lanes, int32_t n) {                  \
    for (int32_t i = 0; i < n; i++) lanes[i] = SCALAR(site, lanes[i]); \
  }

LANES_HOOK(lltfi_fi_lanes_f32, lltfi_fi_f32, float)
LANES_HOOK(lltfi_fi_lanes_f64, lltfi_fi_f64, double)
LANES_HOOK(lltfi_fi_lanes_i8, lltfi_fi_i8, uint8_t)
LANES_HOOK(lltfi_fi_lanes_i16, lltfi_fi_i16, uint16_t)
LANES_HOOK(lltfi_fi_lanes_i32, lltfi_fi_i32, uint32_t)
LANES_HOOK(lltfi_fi_lanes_i64, lltfi_fi_i64, uint64_t)

/* Operator-level builds pass every element of every operator output through this identity; the
   instrumentation hooks its result, so a fault corrupts one element of one operator's output. */
float lltfi_op_f32(float value) { return value; }

/* State shared by the instrumented model's hooks and the campaign driver. */
#ifndef LLTFI_FI_RUNTIME_H
#define LLTFI_FI_RUNTIME_H
#include <stdint.h>

#define LLTFI_MAX_FAULTS 100  /* LLFI's fi_max_multiple limit */
#define LLTFI_MAX_TRACE 4096

/* LLTFI_WALK: golden, but the hook whose countdown reads 0 calls the walk callback (walk_server.c). */
enum lltfi_mode { LLTFI_GOLDEN = 0, LLTFI_PROFILE = 1, LLTFI_INJECT = 2, LLTFI_WALK = 3 };
/* LLTFI_NO_FAULT: reach the instance and record it, change nothing (the golden side of a trace). */
enum lltfi_fault_type { LLTFI_BITFLIP = 0, LLTFI_STUCK_AT_0 = 1, LLTFI_STUCK_AT_1 = 2, LLTFI_NO_FAULT = 3 };

typedef struct {
  int32_t site;
  uint64_t index;    /* dynamic index among all selected instances of this run */
  uint64_t mask;     /* bits touched */
  uint64_t before;   /* value bits before and after */
  uint64_t after;
} lltfi_fault_record;

typedef struct {
  int fault_type;
  int num_bits;       /* bits per fault (fi_num_bits) */
  int bit;            /* fixed bit position, or -1 for random */
  uint64_t fixed_mask;/* replay: exact mask (0 = draw) */
  int max_faults;     /* fi_max_multiple */
  uint64_t window_len;/* gap between faults drawn in [1, window_len] */
  uint64_t seed;
  int trace_len;      /* record the next trace_len selected instances after the last fault (maxTrace) */
} lltfi_fault_spec;

typedef struct {
  int32_t site;
  uint64_t bits;
} lltfi_trace_record;

typedef struct {
  int n_faults;
  lltfi_fault_record faults[LLTFI_MAX_FAULTS];
  int n_trace;
  lltfi_trace_record trace[LLTFI_MAX_TRACE];
  int32_t masked;       /* the run ended early: golden again after operator masked_node (boundaries.h) */
  int64_t masked_node;
} lltfi_fault_log;

extern uint64_t lltfi_fi_remaining;
extern int lltfi_mode;
extern uint64_t *lltfi_site_counts;     /* profile mode: per static site */
extern const int lltfi_num_sites;       /* from the generated glue */
extern const int lltfi_num_units;
extern uint64_t lltfi_unit_counts[];    /* entries per versioning unit, counted in every mode */

void lltfi_begin_golden(void);
void lltfi_begin_profile(uint64_t *counts);
/* target: 0-based dynamic index of the first fault; log: where to record (may be shared memory). */
void lltfi_begin_inject(uint64_t target, const lltfi_fault_spec *spec, lltfi_fault_log *log);
/* A golden run that calls `reached` at dynamic index `first`, in the hook, before the value passes.
   `reached` either re-arms the countdown (lltfi_fi_remaining = instances to skip before the next call)
   or switches to inject mode at this instance (lltfi_begin_inject(index, ...) with lltfi_fi_remaining
   = 0: the hook then injects exactly as in a run begun in inject mode). */
void lltfi_begin_walk(uint64_t first, void (*reached)(void));
/* For early ending (boundaries.c): -1 not an injecting run (or one that records a trace window, which
   needs the instances after the fault), 0 no fault injected yet, 1 faults pending, 2 all injected. */
int lltfi_fault_progress(void);
void lltfi_note_masked(int64_t node);
#endif

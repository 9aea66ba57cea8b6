/* Profile and fork-server modes of an instrumented model.
 *
 *   model --profile --inputs-list L [--repeat N] [--no-check] [--timeout-us T]
 *       for each input set: golden output and time (best of N golden runs, which also count the
 *       entries of every versioning unit), then a checking run that sends every selected instance
 *       through the hooks (per-site counts), and the count the fast paths consumed. The three
 *       must agree; Python checks. A fault-free run longer than T ends the profile with status 3
 *       and a one-line error.
 *   model --serve --inputs-list L
 *       reads one trial per stdin line, forks a child per trial, prints one result line per trial.
 *
 * L lists one input set per line (space-separated .npy paths, in model input order). Inputs and
 * weights are loaded once; a child only sets the fault, runs the model and leaves its output and
 * fault log in shared memory. The child arms a real-time timer, so a hang ends by SIGALRM (and the
 * server kills a child that outlives it: see trial_protocol.h).
 *
 * Trial and result lines: see trial_protocol.h. status: ok | crash (signal) | hang (timer) | exit
 * (non-zero exit status); code: the signal or the status.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "boundaries.h"
#include "fi_runtime.h"
#include "memory_faults.h"
#include "trial_protocol.h"
#include "model_api.h"
#include "npy.h"

static void ***input_sets;
static int n_sets;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Both servers load their inputs here: the same allocations in the same order, so a fault that reads
   past a buffer sees the same heap in either engine. */
int lltfi_load_input_sets(const char *list, void ****sets_out, int *n_sets_out) {
  FILE *f = fopen(list, "r");
  if (!f) { fprintf(stderr, "error: cannot open %s\n", list); return 2; }
  char *line = NULL;
  size_t line_cap = 0;
  void ***sets = NULL;
  int n = 0, cap = 0, rc = 0;
  while (getline(&line, &line_cap, f) >= 0) {
    void **set = calloc(lltfi_num_inputs ? (size_t)lltfi_num_inputs : 1, sizeof(void *));
    if (!set) { fprintf(stderr, "error: out of memory\n"); rc = 1; break; }
    int i = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line, " \t\r\n", &save); tok && !rc; tok = strtok_r(NULL, " \t\r\n", &save)) {
      if (i >= lltfi_num_inputs) { fprintf(stderr, "error: too many inputs on a line of %s\n", list); rc = 2; break; }
      const lltfi_tensor_info *info = &lltfi_inputs[i];
      npy_array arr;
      char err[600];
      int read = npy_read(tok, &arr, (size_t)info->count * (size_t)info->elem_size, err, sizeof err);
      if (read == -1) {
        fprintf(stderr, "error: input %d: %s\n", i, err);
        rc = 2;
        break;
      }
      int same = read == 0 && arr.rank == info->rank && arr.dtype == info->dtype;
      for (int d = 0; same && d < arr.rank; d++) same = arr.shape[d] == info->shape[d];
      if (!same) {
        fprintf(stderr, "error: %s: not %s of the shape of input %d\n", tok, npy_dtype_name(info->dtype), i);
        free(arr.data);
        rc = 2;
        break;
      }
      set[i++] = arr.data;
    }
    if (rc) break;
    if (i == 0) { free(set); continue; }
    if (i != lltfi_num_inputs) {
      fprintf(stderr, "error: a line of %s has %d inputs, the model takes %d\n", list, i, lltfi_num_inputs);
      rc = 2;
      break;
    }
    if (n == cap) {
      if (cap > (1 << 28)) { fprintf(stderr, "error: too many input sets in %s\n", list); rc = 2; break; }
      void ***grown = realloc(sets, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *sets);
      if (!grown) { fprintf(stderr, "error: out of memory\n"); rc = 1; break; }
      sets = grown;
    }
    sets[n++] = set;
  }
  free(line);
  fclose(f);
  if (!rc && n == 0) { fprintf(stderr, "error: %s lists no input set\n", list); rc = 2; }
  *sets_out = sets;
  *n_sets_out = n;
  return rc;
}

static int load_input_sets(const char *list) { return lltfi_load_input_sets(list, &input_sets, &n_sets); }

int64_t lltfi_output_bytes(void) {
  int64_t n = 0;
  for (int i = 0; i < lltfi_num_outputs; i++) n += lltfi_outputs[i].count * lltfi_outputs[i].elem_size;
  return n;
}

void lltfi_output_pointers(void *base, void **outs) {
  char *at = (char *)base;
  for (int i = 0; i < lltfi_num_outputs; i++) {
    outs[i] = at;
    at += lltfi_outputs[i].count * lltfi_outputs[i].elem_size;
  }
}

static void print_hex(FILE *out, const void *bytes, int64_t n) {
  const unsigned char *b = (const unsigned char *)bytes;
  static const char digits[] = "0123456789abcdef";
  for (int64_t i = 0; i < n; i++) {
    fputc(digits[b[i] >> 4], out);
    fputc(digits[b[i] & 15], out);
  }
}

/* The profile's watchdog: a fault-free run that does not finish is an error, not a stall. */
static char timeout_message[256];
static int timeout_message_len;

static void on_profile_timeout(int sig) {
  (void)sig;
  if (write(2, timeout_message, timeout_message_len) < 0) {}
  _exit(3);
}

static void arm_profile_timer(long long timeout_us, int set) {
  if (timeout_us <= 0) return;
  timeout_message_len = snprintf(timeout_message, sizeof timeout_message,
                                 "error: a fault-free run of input set %d did not finish within %.6g s (it hangs, or "
                                 "the timeout is too short for this model)\n", set, timeout_us * 1e-6);
  struct itimerval timer = {{0, 0}, {timeout_us / 1000000, timeout_us % 1000000}};
  setitimer(ITIMER_REAL, &timer, NULL);
}

static void disarm_profile_timer(void) {
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
}

int lltfi_profile_main(const char *list, int repeat, int check, long long timeout_us) {
  lltfi_die_with_parent(0);
  signal(SIGALRM, on_profile_timeout);
  int rc = load_input_sets(list);
  if (rc) return rc;
  int64_t n_out = lltfi_output_bytes();  /* bytes */
  void *buffer = malloc(n_out ? (size_t)n_out : 1);
  void **outs = calloc(lltfi_num_outputs ? (size_t)lltfi_num_outputs : 1, sizeof(void *));
  if (!buffer || !outs) { fprintf(stderr, "error: out of memory\n"); return 1; }
  lltfi_output_pointers(buffer, outs);
  uint64_t *counts = calloc(lltfi_num_sites ? lltfi_num_sites : 1, sizeof(uint64_t));
  uint64_t *unit_counts = calloc(lltfi_num_units ? lltfi_num_units : 1, sizeof(uint64_t));
  for (int s = 0; s < n_sets; s++) {
    /* Profile = golden runs: per-unit entry counts come for free; the best time is the baseline. */
    double best = 1e30;
    for (int r = 0; r < (repeat > 0 ? repeat : 1); r++) {
      lltfi_begin_golden();
      memset(lltfi_unit_counts, 0, (lltfi_num_units ? lltfi_num_units : 1) * sizeof(uint64_t));
      arm_profile_timer(timeout_us, s);
      double t0 = now();
      lltfi_model_run(input_sets[s], outs);
      double dt = now() - t0;
      disarm_profile_timer();
      if (dt < best) best = dt;
    }
    /* What the fast paths subtract must equal what the hooks count: a self-check of the static
       per-block and per-nest instance counts. */
    const uint64_t start = 1ull << 62;
    lltfi_begin_golden();
    lltfi_fi_remaining = start;
    memset(lltfi_unit_counts, 0, (lltfi_num_units ? lltfi_num_units : 1) * sizeof(uint64_t));
    arm_profile_timer(timeout_us, s);
    lltfi_model_run(input_sets[s], outs);
    disarm_profile_timer();
    uint64_t consumed = start - lltfi_fi_remaining;
    memcpy(unit_counts, lltfi_unit_counts, (lltfi_num_units ? lltfi_num_units : 1) * sizeof(uint64_t));
    memset(counts, 0, (lltfi_num_sites ? lltfi_num_sites : 1) * sizeof(uint64_t));
    double profile_time = 0;
    if (check) {  /* every instance through the hooks: seconds on large models, hence optional */
      lltfi_begin_profile(counts);
      double t0 = now();
      lltfi_model_run(input_sets[s], outs);
      profile_time = now() - t0;
      lltfi_begin_golden();
    }
    printf("P %d %.9f %.9f %llu %d %d", s, best, profile_time, (unsigned long long)consumed, check,
           lltfi_num_sites);
    for (int i = 0; i < lltfi_num_sites; i++) printf(" %llu", (unsigned long long)counts[i]);
    printf(" %d", lltfi_num_units);
    for (int i = 0; i < lltfi_num_units; i++) printf(" %llu", (unsigned long long)unit_counts[i]);
    printf(" %lld ", (long long)n_out);
    print_hex(stdout, buffer, n_out);
    printf("\n");
  }
  fflush(stdout);
  return 0;
}

typedef struct {
  lltfi_fault_log log;
  unsigned char outputs[];
} shared_area;

/* A golden run for a record (boundaries.h), in the recorder child. */
static void run_set(int set, void *out) {
  void *outs[lltfi_num_outputs > 0 ? lltfi_num_outputs : 1];
  lltfi_output_pointers(out, outs);
  lltfi_model_run(input_sets[set], outs);
}

int lltfi_serve_main(const char *list) {
  lltfi_die_with_parent(0);
  int rc = load_input_sets(list);
  if (rc) return rc;
  int64_t n_out = lltfi_output_bytes();  /* bytes */
  size_t size = sizeof(shared_area) + (size_t)n_out;
  shared_area *shared = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  int early = lltfi_early_end();
  if (shared == MAP_FAILED) { perror("mmap"); return 1; }
  char line[1024];
  printf("READY %d\n", n_sets);
  fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
    lltfi_trial trial;
    lltfi_memory_fault memory;  /* a weight fault: the line starts with "W ..." (memory_faults.h) */
    const char *rest = lltfi_parse_memory_fault(line, &memory);
    if (!rest || lltfi_parse_trial(rest, &trial) || trial.input_set < 0 || trial.input_set >= n_sets ||
        lltfi_check_memory_fault(&memory, trial.target)) {
      fprintf(stderr, "error: bad trial line: %s", line);
      return 2;
    }
    const lltfi_golden_record *golden = early && !memory.kind ? lltfi_golden_record_for(
        (int)trial.input_set, run_set, (size_t)n_out) : NULL;
    memset(&shared->log, 0, sizeof shared->log);
    memset(shared->outputs, 0xff, (size_t)n_out);
    fflush(stdout);
    pid_t server = getpid();
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
      lltfi_child_start(server, trial.timeout_us);
      void *outs[lltfi_num_outputs > 0 ? lltfi_num_outputs : 1];  /* on the child's stack: any number */
      lltfi_output_pointers(shared->outputs, outs);
      lltfi_boundaries_restart();
      if (early && !memory.kind) lltfi_boundaries_check(golden, shared->outputs);
      if (memory.kind) lltfi_apply_memory_fault(&memory, trial.target, &trial.spec, &shared->log);
      else lltfi_begin_inject((uint64_t)trial.target, &trial.spec, &shared->log);
      lltfi_model_run(input_sets[trial.input_set], outs);
      _exit(0);
    }
    int watchdog;
    int status = lltfi_wait_child(pid, trial.timeout_us, &watchdog);
    int code;
    const char *kind = lltfi_wait_kind(status, watchdog, &code);
    lltfi_print_result_head(stdout, trial.id, kind, code, &shared->log);
    printf(" %lld ", (long long)(strcmp(kind, "ok") == 0 ? n_out : 0));
    if (strcmp(kind, "ok") == 0) print_hex(stdout, shared->outputs, n_out);
    printf("\n");
    fflush(stdout);
  }
  return 0;
}

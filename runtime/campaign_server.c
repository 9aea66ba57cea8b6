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

#include "fi_runtime.h"
#include "memory_faults.h"
#include "trial_protocol.h"
#include "model_api.h"
#include "npy.h"

#define MAX_SETS 4096

static float **input_sets[MAX_SETS];
static int n_sets;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Both servers load their inputs here: the same allocations in the same order, so a fault that reads
   past a buffer sees the same heap in either engine. */
int lltfi_load_input_sets(const char *list, float ***sets, int max_sets, int *n_sets) {
  FILE *f = fopen(list, "r");
  if (!f) { fprintf(stderr, "error: cannot open %s\n", list); return 2; }
  char line[65536];
  while (fgets(line, sizeof line, f) && *n_sets < max_sets) {
    float **set = calloc(lltfi_num_inputs, sizeof(float *));
    int i = 0;
    for (char *tok = strtok(line, " \t\n"); tok; tok = strtok(NULL, " \t\n")) {
      if (i >= lltfi_num_inputs) { fprintf(stderr, "error: too many inputs on a line of %s\n", list); return 2; }
      npy_array arr;
      char err[512];
      if (npy_read(tok, &arr, err, sizeof err)) { fprintf(stderr, "error: %s\n", err); return 2; }
      int same = arr.data && arr.rank == lltfi_inputs[i].rank;
      for (int d = 0; same && d < arr.rank; d++) same = arr.shape[d] == lltfi_inputs[i].shape[d];
      if (!same) { fprintf(stderr, "error: %s: not float32 of the shape of input '%s'\n", tok, lltfi_inputs[i].name); return 2; }
      set[i++] = arr.data;
    }
    if (i == 0) continue;
    if (i != lltfi_num_inputs) { fprintf(stderr, "error: a line of %s has %d inputs, the model takes %d\n", list, i, lltfi_num_inputs); return 2; }
    sets[(*n_sets)++] = set;
  }
  fclose(f);
  return *n_sets ? 0 : 2;
}

static int load_input_sets(const char *list) { return lltfi_load_input_sets(list, input_sets, MAX_SETS, &n_sets); }

static int64_t total_outputs(void) {
  int64_t n = 0;
  for (int i = 0; i < lltfi_num_outputs; i++) n += lltfi_outputs[i].count ? lltfi_outputs[i].count : 1;
  return n;
}

static void output_pointers(float *base, float **outs) {
  for (int i = 0; i < lltfi_num_outputs; i++) {
    outs[i] = base;
    base += lltfi_outputs[i].count ? lltfi_outputs[i].count : 1;
  }
}

static void print_hex(FILE *out, const float *values, int64_t n) {
  const unsigned char *b = (const unsigned char *)values;
  static const char digits[] = "0123456789abcdef";
  for (int64_t i = 0; i < n * 4; i++) {
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
  int64_t n_out = total_outputs();
  float *buffer = malloc(n_out * sizeof(float));
  float *outs[1024];
  output_pointers(buffer, outs);
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
  float outputs[];
} shared_area;

int lltfi_serve_main(const char *list) {
  lltfi_die_with_parent(0);
  int rc = load_input_sets(list);
  if (rc) return rc;
  int64_t n_out = total_outputs();
  size_t size = sizeof(shared_area) + n_out * sizeof(float);
  shared_area *shared = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
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
    memset(&shared->log, 0, sizeof shared->log);
    memset(shared->outputs, 0xff, n_out * sizeof(float));
    fflush(stdout);
    pid_t server = getpid();
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
      lltfi_child_start(server, trial.timeout_us);
      float *outs[1024];
      output_pointers(shared->outputs, outs);
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

/* The walk engine: fork each trial at its injection point instead of re-running the whole model.
 *
 *   model --walk --inputs-list L [--jobs J]
 *       prints "READY n_sets", then reads groups of trial lines (trial_protocol.h) from stdin, each
 *       group ended by a line "walk". A group holds trials of one input set sorted by target. Every
 *       trial gets exactly the result line the fork-server (campaign_server.c) would print for it,
 *       in the order the trials finish.
 *
 * Per group, the server forks a walker that runs ONE golden inference of the group's input set in
 * walk mode (fi_runtime.c): the hook whose countdown reads 0 is at the next trial's target and calls
 * back here. The walker forks one child per trial at that instance (several trials may share it);
 * the child switches to inject mode exactly as `lltfi_begin_inject(target, ...)` would have left it
 * at that instance, returns into the hook, which injects, and the child runs the rest of the
 * inference, leaves its fault log and outputs in its shared-memory slot and exits. The walker
 * re-arms the countdown for the next target and continues golden. Everything before the injection
 * point is the same in both engines -- values, heap (the walker starts from the same loaded state
 * as a fork-server child: same allocations in the same order, nothing allocated by this file), and
 * the countdown's meaning -- so a trial's result does not depend on the engine. Only memory the
 * model does not own differs (the driver's stdio buffers on the heap, a few words of the driver's
 * static storage): a fault that makes the model read there sees other bytes, as it may from one
 * run of the fork-server to the next (its buffers hold whichever lines it last read and wrote).
 *
 * When the campaign ends trials early (only floating-point values can differ) and the model's
 * operator outputs add up to FRESH_HEAP_MIN_BYTES or more, a trial child takes the buffers it
 * allocates after its fork from a fresh region of its own (trial_heap.h) rather than from the
 * walker's heap pages, which it would have to copy page by page.
 *
 * At most J children are alive; each arms its own timer (SIGALRM: hang), and the walker kills a
 * child that outlives twice its timer plus a second (a hang too, as in trial_protocol.h). After
 * its last trial the walker waits for its children and exits without finishing the inference;
 * trials whose target lies beyond the run (a replayed fi_cycle) get the golden result once the
 * walker's inference ends.
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
#include "model_api.h"
#include "trial_heap.h"
#include "trial_protocol.h"

#define MAX_GROUP 65536
#define MAX_JOBS 256
#define FRESH_HEAP_MIN_BYTES ((uint64_t)8 << 20)  /* operator outputs per run */

typedef struct {
  lltfi_fault_log log;
  unsigned char outputs[];
} walk_slot;

/* Everything the server and walker keep lives in one anonymous mapping: not on the heap, where it
   would move the model's buffers, nor in static storage, which a fault that reads past a weight array
   can reach (the executable is the same in both engines: its static storage should hold the same
   bytes in both). */
struct walk_state {
  void ***input_sets;  /* by lltfi_load_input_sets, on the heap as in the fork-server */
  int n_sets;
  int n_group;
  lltfi_trial group[MAX_GROUP];
  int64_t n_out;      /* bytes of all outputs */
  int jobs;
  char *slots;        /* `jobs` shared slots: fault log and outputs of the child holding it */
  size_t slot_bytes;
  void *run_outputs;  /* private: where the inference writes its outputs (walker and children) */
  /* The walker's children, by slot. */
  pid_t slot_pid[MAX_JOBS];
  int slot_trial[MAX_JOBS];       /* index into `group` */
  double slot_deadline[MAX_JOBS]; /* when the walker kills it (0: no timer) */
  int slot_killed[MAX_JOBS];
  int alive;
  int next_trial;                 /* first trial of the group not forked yet */
  uint64_t here;                  /* dynamic index of the instance the countdown stops at */
  pid_t walker;
  walk_slot *own_slot;            /* in a trial child: its slot */
  int early;                      /* end trials once masked (boundaries.h) */
  int fresh_heap;                 /* trial children allocate from their own region (trial_heap.h) */
  const lltfi_golden_record *golden;
};
static struct walk_state *st;

static walk_slot *slot_at(int k) { return (walk_slot *)(st->slots + (size_t)k * st->slot_bytes); }

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int load_input_sets(const char *list) {
  return lltfi_load_input_sets(list, &st->input_sets, &st->n_sets);
}

static void print_hex(const void *bytes, int64_t n) {
  const unsigned char *b = (const unsigned char *)bytes;
  static const char digits[] = "0123456789abcdef";
  for (int64_t i = 0; i < n; i++) {
    putchar(digits[b[i] >> 4]);
    putchar(digits[b[i] & 15]);
  }
}

/* The result line, as campaign_server.c prints it. */
static void print_result(long long id, const char *kind, int code, const lltfi_fault_log *log, const void *out) {
  int ok = strcmp(kind, "ok") == 0;
  lltfi_print_result_head(stdout, id, kind, code, log);
  printf(" %lld ", (long long)(ok ? st->n_out : 0));
  if (ok) print_hex(out, st->n_out);
  putchar('\n');
}

static void on_alarm(int sig) { (void)sig; }  /* only interrupts waitpid */

static void arm(double seconds) {
  long long us = seconds > 0 ? (long long)(seconds * 1e6) + 1 : 0;
  struct itimerval timer = {{0, 0}, {us / 1000000, us % 1000000}};
  setitimer(ITIMER_REAL, &timer, NULL);
}

/* Kills the children past their deadline (they ignore their own timer); they end as hangs. */
static void kill_overdue(void) {
  double t = now();
  for (int k = 0; k < st->jobs; k++)
    if (st->slot_pid[k] > 0 && st->slot_deadline[k] > 0 && t >= st->slot_deadline[k] && !st->slot_killed[k]) {
      kill(st->slot_pid[k], SIGKILL);  /* not reaped yet: the pid cannot have been recycled */
      st->slot_killed[k] = 1;
    }
}

/* Reaps one child and prints its result; with `block`, waits for one. Returns 0 if none ended. */
static int reap(int block) {
  for (;;) {
    if (block) {
      double first = 0;
      for (int k = 0; k < st->jobs; k++)
        if (st->slot_pid[k] > 0 && st->slot_deadline[k] > 0 && !st->slot_killed[k] && (!first || st->slot_deadline[k] < first))
          first = st->slot_deadline[k];
      if (first) arm(first - now() > 1e-3 ? first - now() : 1e-3);
    }
    int status = 0;
    pid_t pid = waitpid(-1, &status, block ? 0 : WNOHANG);
    if (block) arm(0);
    if (pid < 0 && errno == EINTR) {
      kill_overdue();
      continue;
    }
    if (pid <= 0) return 0;
    int k = 0;
    while (k < st->jobs && st->slot_pid[k] != pid) k++;
    if (k == st->jobs) continue;  /* not a trial (cannot happen: the walker has no other children) */
    int code;
    const char *kind = lltfi_wait_kind(status, st->slot_killed[k], &code);
    walk_slot *s = slot_at(k);
    print_result(st->group[st->slot_trial[k]].id, kind, code, &s->log, s->outputs);
    st->slot_pid[k] = 0;
    st->alive--;
    return 1;
  }
}

static void finish_walker(void) {
  while (st->alive > 0) reap(1);
  fflush(stdout);
  _exit(0);
}

/* The walk callback: the countdown stopped at dynamic index `here`, the target of group[next_trial]. */
static void reached(void) {
  while (st->next_trial < st->n_group && (uint64_t)st->group[st->next_trial].target == st->here) {
    while (reap(0)) {}
    while (st->alive >= st->jobs) reap(1);
    int k = 0;
    while (st->slot_pid[k] > 0) k++;
    lltfi_trial *trial = &st->group[st->next_trial];
    walk_slot *s = slot_at(k);
    s->log.n_faults = s->log.n_trace = 0;  /* all the result line reads of a child that dies early */
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); _exit(1); }
    if (pid == 0) {
      lltfi_child_start(st->walker, trial->timeout_us);
      if (st->fresh_heap) lltfi_trial_heap_begin();  /* only values can differ: where buffers are cannot matter */
      st->own_slot = s;
      lltfi_begin_inject(st->here, &trial->spec, &s->log);
      lltfi_fi_remaining = 0;  /* this instance: back in the hook, it injects */
      if (st->early) lltfi_boundaries_check(st->golden, s->outputs);
      return;
    }
    st->slot_pid[k] = pid;
    st->slot_trial[k] = st->next_trial;
    st->slot_killed[k] = 0;
    st->slot_deadline[k] = trial->timeout_us > 0 ? now() + 2e-6 * trial->timeout_us + 1.0 : 0;
    st->alive++;
    st->next_trial++;
  }
  fflush(stdout);
  if (st->next_trial == st->n_group) finish_walker();  /* the rest of the golden run serves no trial */
  uint64_t next = (uint64_t)st->group[st->next_trial].target;
  lltfi_fi_remaining = next - st->here - 1;
  st->here = next;
}

static void walk(int set) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = on_alarm;  /* no SA_RESTART: the alarm interrupts waitpid */
  sigemptyset(&action.sa_mask);
  sigaction(SIGALRM, &action, NULL);
  st->walker = getpid();
  st->next_trial = 0;
  st->here = (uint64_t)st->group[0].target;
  void *outs[lltfi_num_outputs > 0 ? lltfi_num_outputs : 1];  /* on the stack: any number of outputs */
  lltfi_output_pointers(st->run_outputs, outs);
  lltfi_begin_walk(st->here, reached);
  lltfi_boundaries_restart();
  lltfi_model_run(st->input_sets[set], outs);
  if (st->own_slot) {  /* a trial child at the end of its inference */
    memcpy(st->own_slot->outputs, st->run_outputs, (size_t)st->n_out);
    _exit(0);
  }
  /* Targets beyond the run: never reached, so their runs are golden. */
  lltfi_fault_log none;
  memset(&none, 0, sizeof none);
  for (; st->next_trial < st->n_group; st->next_trial++) print_result(st->group[st->next_trial].id, "ok", 0, &none, st->run_outputs);
  finish_walker();
}

/* Forks the walker of the current group and waits for it; 0 when it served every trial. */
static void run_set(int set, void *out) {
  void *outs[lltfi_num_outputs > 0 ? lltfi_num_outputs : 1];
  lltfi_output_pointers(out, outs);
  lltfi_model_run(st->input_sets[set], outs);
}

static int run_group(void) {
  /* The golden record, made before the walker is forked: the walker and its children inherit it. */
  if (st->early) st->golden = lltfi_golden_record_for((int)st->group[0].input_set, run_set, (size_t)st->n_out);
  /* A region costs a trial one zeroed 2 MB page at least: only worth it for models whose trials would
     otherwise copy many heap pages (LeNet-5: -22% trials/s with it; MobileNetV2: +11%). */
  st->fresh_heap = st->early && lltfi_golden_output_bytes(st->golden) >= FRESH_HEAP_MIN_BYTES;
  fflush(stdout);
  pid_t server = getpid();
  pid_t pid = fork();
  if (pid < 0) { perror("fork"); return 1; }
  if (pid == 0) {
    lltfi_die_with_parent(server);
    walk((int)st->group[0].input_set);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
  if (WIFSIGNALED(status))
    fprintf(stderr, "error: the walker of input set %lld died of signal %d (%s) in a fault-free run\n",
            st->group[0].input_set, WTERMSIG(status), strsignal(WTERMSIG(status)));
  else
    fprintf(stderr, "error: the walker of input set %lld exited with status %d\n", st->group[0].input_set,
            WEXITSTATUS(status));
  return 1;
}

int lltfi_walk_main(const char *list, int n_jobs) {
  lltfi_die_with_parent(0);
  st = mmap(NULL, sizeof *st, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (st == MAP_FAILED) { perror("mmap"); return 1; }
  st->jobs = n_jobs < 1 ? 1 : n_jobs > MAX_JOBS ? MAX_JOBS : n_jobs;
  st->early = lltfi_early_end();
  int rc = load_input_sets(list);
  if (rc) return rc;
  st->n_out = lltfi_output_bytes();
  st->slot_bytes = (sizeof(walk_slot) + (size_t)st->n_out + 63) & ~(size_t)63;
  st->slots = mmap(NULL, st->slot_bytes * st->jobs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  st->run_outputs = mmap(NULL, st->n_out ? (size_t)st->n_out : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (st->slots == MAP_FAILED || st->run_outputs == MAP_FAILED) { perror("mmap"); return 1; }
  char line[1024];
  printf("READY %d\n", st->n_sets);
  fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
    if (!strcmp(line, "walk\n")) {
      if (st->n_group && run_group()) return 1;
      st->n_group = 0;
      continue;
    }
    lltfi_trial *trial = &st->group[st->n_group];
    if (st->n_group == MAX_GROUP || lltfi_parse_trial(line, trial) || trial->input_set < 0 || trial->input_set >= st->n_sets ||
        trial->target < 0 || (st->n_group && (trial->input_set != st->group[0].input_set ||
                                          trial->target < st->group[st->n_group - 1].target))) {
      fprintf(stderr, "error: bad trial line (a group holds at most %d trials of one input set, sorted by "
              "target): %s", MAX_GROUP, line);
      return 2;
    }
    st->n_group++;
  }
  return 0;
}

/* See trial_protocol.h: one implementation of the line protocol and the watchdogs for both fork-servers. */
#include "trial_protocol.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

int lltfi_parse_trial(const char *line, lltfi_trial *t) {
  long long window, seed;
  int type, num_bits, bit, max_faults, trace_len = 0;
  char mask_hex[32];
  if (sscanf(line, "%lld %lld %lld %d %d %d %31s %d %lld %lld %lld %d", &t->id, &t->input_set, &t->target, &type,
             &num_bits, &bit, mask_hex, &max_faults, &window, &seed, &t->timeout_us, &trace_len) < 11)
    return -1;
  lltfi_fault_spec spec = {type, num_bits, bit, strtoull(mask_hex, NULL, 16), max_faults, (uint64_t)window,
                           (uint64_t)seed, trace_len};
  t->spec = spec;
  return 0;
}

const char *lltfi_wait_kind(int status, int watchdog, int *code) {
  *code = 0;
  if (WIFSIGNALED(status)) {
    *code = WTERMSIG(status);
    return *code == SIGALRM || (watchdog && *code == SIGKILL) ? "hang" : "crash";
  }
  if (WEXITSTATUS(status) != 0) {
    *code = WEXITSTATUS(status);
    return "exit";
  }
  return "ok";
}

void lltfi_print_result_head(FILE *out, long long id, const char *kind, int code, const lltfi_fault_log *log) {
  int n = log->n_faults > LLTFI_MAX_FAULTS ? LLTFI_MAX_FAULTS : log->n_faults;
  fprintf(out, "R %lld %s %d %d", id, kind, code, n);
  for (int i = 0; i < n; i++) {
    const lltfi_fault_record *r = &log->faults[i];
    fprintf(out, " %d %llu %llx %llx %llx", r->site, (unsigned long long)r->index, (unsigned long long)r->mask,
            (unsigned long long)r->before, (unsigned long long)r->after);
  }
  int nt = log->n_trace > LLTFI_MAX_TRACE ? LLTFI_MAX_TRACE : log->n_trace;
  fprintf(out, " %d", nt);
  for (int i = 0; i < nt; i++) fprintf(out, " %d %llx", log->trace[i].site, (unsigned long long)log->trace[i].bits);
  fprintf(out, " %lld", log->masked ? (long long)log->masked_node : -1LL);
}

void lltfi_die_with_parent(pid_t parent) {
#ifdef __linux__
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (parent > 0 && getppid() != parent) _exit(1);  /* the parent died before prctl */
#else
  (void)parent;
#endif
}

static void arm(long long us) {
  struct itimerval timer = {{0, 0}, {us / 1000000, us % 1000000}};
  setitimer(ITIMER_REAL, &timer, NULL);
}

void lltfi_child_start(pid_t parent, long long timeout_us) {
  signal(SIGALRM, SIG_DFL);  /* not the server's watchdog handler */
  lltfi_die_with_parent(parent);
  if (timeout_us > 0) arm(timeout_us);
}

static volatile pid_t watched;
static volatile sig_atomic_t watchdog_fired;

static void on_watchdog(int sig) {
  (void)sig;
  if (watched > 0) {
    kill(watched, SIGKILL);
    watchdog_fired = 1;
  }
}

int lltfi_wait_child(pid_t pid, long long timeout_us, int *watchdog) {
  watchdog_fired = 0;
  if (timeout_us > 0) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_watchdog;
    sigemptyset(&action.sa_mask);
    sigaction(SIGALRM, &action, NULL);
    watched = pid;
    arm(2 * timeout_us + 1000000);
  }
  /* Wait without reaping, so that the watchdog can never hit a recycled pid; then disarm and reap. */
  siginfo_t info;
  while (waitid(P_PID, pid, &info, WEXITED | WNOWAIT) < 0 && errno == EINTR) {}
  if (timeout_us > 0) {
    arm(0);
    watched = 0;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  *watchdog = watchdog_fired;
  return status;
}

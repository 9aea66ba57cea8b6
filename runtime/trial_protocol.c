/* See trial_protocol.h: one implementation of the line protocol for both fork-servers. */
#include "trial_protocol.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

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

const char *lltfi_wait_kind(int status, int *code) {
  *code = 0;
  if (WIFSIGNALED(status)) {
    *code = WTERMSIG(status);
    return *code == SIGALRM ? "hang" : "crash";
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
}

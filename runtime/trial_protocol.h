/* The fork-servers' line protocol, shared by the model server and the C-program driver.
 *
 * Trial line:  id input_set target fault_type num_bits bit mask_hex max_faults window_len seed timeout_us [trace_len]
 * Result line: R id status code n_faults {site index mask before after}*n n_trace {site bits}* masked_at
 *              n_bytes out_hex
 *   (masked_at: the ONNX node index after which the run ended early, golden again; -1 if it did not)
 *   (n_bytes: bytes of all outputs, each in its own element type, concatenated; 0 unless ok)
 *
 * Also the watchdogs both servers share: every server and every child dies with its parent (a
 * driver killed with -9 leaves nothing spinning), and a child that outlives its own timer (it
 * blocks or ignores SIGALRM) is killed by its server.
 */
#ifndef LLTFI_TRIAL_PROTOCOL_H
#define LLTFI_TRIAL_PROTOCOL_H
#include <stdio.h>
#include <sys/types.h>

#include "fi_runtime.h"

typedef struct {
  long long id, input_set, target, timeout_us;
  lltfi_fault_spec spec;
} lltfi_trial;

/* Returns 0 on success, -1 on a malformed line. */
int lltfi_parse_trial(const char *line, lltfi_trial *trial);

/* "ok", "hang" (the trial's timer, or the server's watchdog), "crash" (another signal) or "exit"
   (non-zero status). `watchdog`: what lltfi_wait_child said. */
const char *lltfi_wait_kind(int wait_status, int watchdog, int *code);

/* Prints "R id kind code" followed by the fault records and the trace window (no newline). */
void lltfi_print_result_head(FILE *out, long long id, const char *kind, int code, const lltfi_fault_log *log);

/* SIGKILL this process when its parent dies (Linux). With `parent` > 0, exits at once if the
   parent is already gone. */
void lltfi_die_with_parent(pid_t parent);

/* First thing in a forked child: default SIGALRM, die with `parent`, and arm the trial timer
   (`timeout_us` > 0) whose SIGALRM ends a hang. */
void lltfi_child_start(pid_t parent, long long timeout_us);

/* Waits for (and reaps) a child started with lltfi_child_start. With `timeout_us` > 0, a watchdog
   SIGKILLs the child at twice its timer plus one second; `*watchdog` says whether it did. */
int lltfi_wait_child(pid_t pid, long long timeout_us, int *watchdog);
#endif

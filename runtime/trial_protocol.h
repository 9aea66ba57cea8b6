/* The fork-servers' line protocol, shared by the model server and the C-program driver.
 *
 * Trial line:  id input_set target fault_type num_bits bit mask_hex max_faults window_len seed timeout_us [trace_len]
 * Result line: R id status code n_faults {site index mask before after}*n n_trace {site bits}* n_out out_hex
 */
#ifndef LLTFI_TRIAL_PROTOCOL_H
#define LLTFI_TRIAL_PROTOCOL_H
#include <stdio.h>

#include "fi_runtime.h"

typedef struct {
  long long id, input_set, target, timeout_us;
  lltfi_fault_spec spec;
} lltfi_trial;

/* Returns 0 on success, -1 on a malformed line. */
int lltfi_parse_trial(const char *line, lltfi_trial *trial);

/* "ok", "hang" (the trial's timer), "crash" (another signal) or "exit" (non-zero status). */
const char *lltfi_wait_kind(int wait_status, int *code);

/* Prints "R id kind code" followed by the fault records and the trace window (no newline). */
void lltfi_print_result_head(FILE *out, long long id, const char *kind, int code, const lltfi_fault_log *log);
#endif

/* Operator boundaries and golden records: see boundaries.h.
 *
 * Records live in shared anonymous mappings made by the server (never on the heap, whose layout the
 * trial children must share with the other engine, nor in static storage). A recorder child fills
 * one and exits; walkers and trial children forked afterwards read it.
 */
#include "boundaries.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fi_runtime.h"
#include "memory_faults.h"
#include "trial_protocol.h"

#define ABSENT UINT64_MAX
#define MAX_ENTRIES (1 << 20)   /* operator outputs per run */
#define MAX_LIVE 4096           /* corrupted tensors alive at once; more: no early end */
#define MAX_RECORDS 64          /* input sets with a record at once (least recently used goes) */

typedef struct {
  int64_t node, last_use, nbytes;
  uint64_t offset;  /* into the data area, or ABSENT (over budget) */
} entry;

struct lltfi_golden_record {
  size_t map_bytes;
  int set;
  int complete;
  int64_t n_entries;
  size_t out_offset, out_bytes;  /* the run's outputs */
  size_t data_offset, data_cap, used;
  uint64_t output_bytes;  /* of every operator output of the run, recorded or not */
  entry entries[MAX_ENTRIES];
};

typedef struct {
  lltfi_golden_record *rec[MAX_RECORDS];
  unsigned long long last_used[MAX_RECORDS];
  unsigned long long clock;
  size_t held;  /* bytes of data held by all records */
} record_table;

enum { OFF, RECORD, CHECK };
static int mode = OFF;
static int64_t seq;  /* boundary calls so far in this run */
static lltfi_golden_record *recording;
static record_table *table;
/* A trial child's view. */
static const lltfi_golden_record *golden;
static void *out_dst;
static int disabled;
static int n_live;
static int64_t live_until[MAX_LIVE];

static size_t budget(void) {
  const char *mb = getenv("LLTFI_GOLDEN_BUDGET_MB");
  long long v = mb ? atoll(mb) : 2048;
  return v < 0 ? 0 : (size_t)v << 20;
}

static size_t page_round(size_t n) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  return (n + page - 1) / page * page;
}

static void drop(int k) {
  table->held -= table->rec[k]->data_cap;
  munmap(table->rec[k], table->rec[k]->map_bytes);
  table->rec[k] = NULL;
}

static lltfi_golden_record *record(int set, lltfi_run_fn run, size_t out_bytes) {
  size_t cap = budget();
  for (;;) {  /* make room: evict the least recently used records */
    int free_slot = -1, oldest = -1;
    for (int k = 0; k < MAX_RECORDS; k++) {
      if (!table->rec[k]) { free_slot = k; continue; }
      if (oldest < 0 || table->last_used[k] < table->last_used[oldest]) oldest = k;
    }
    if (free_slot >= 0 && table->held <= cap / 2) break;
    if (oldest < 0) break;
    drop(oldest);
  }
  size_t head = page_round(sizeof(lltfi_golden_record));
  size_t outs = page_round(out_bytes);
  size_t data_cap = cap > table->held ? cap - table->held : 0;
  size_t map_bytes = head + outs + data_cap;
  lltfi_golden_record *rec = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE,
                                  -1, 0);
  if (rec == MAP_FAILED) return NULL;
  rec->map_bytes = map_bytes;
  rec->set = set;
  rec->out_offset = head;
  rec->out_bytes = out_bytes;
  rec->data_offset = head + outs;
  rec->data_cap = data_cap;
  fflush(stdout);
  pid_t server = getpid();
  pid_t pid = fork();
  if (pid < 0) { munmap(rec, map_bytes); return NULL; }
  if (pid == 0) {
    lltfi_die_with_parent(server);
    lltfi_begin_golden();
    recording = rec;
    mode = RECORD;
    seq = 0;
    run(set, (char *)rec + rec->out_offset);
    rec->complete = 1;
    _exit(0);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !rec->complete) {
    munmap(rec, map_bytes);
    return NULL;
  }
  /* Give back what the run did not use. */
  size_t keep = page_round(rec->data_offset + rec->used);
  if (keep < map_bytes) {
    munmap((char *)rec + keep, map_bytes - keep);
    rec->map_bytes = keep;
    rec->data_cap = rec->used;
  }
  return rec;
}

const lltfi_golden_record *lltfi_golden_record_for(int set, lltfi_run_fn run, size_t out_bytes) {
  if (!table) {
    table = mmap(NULL, sizeof *table, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (table == MAP_FAILED) { table = NULL; return NULL; }
  }
  table->clock++;
  for (int k = 0; k < MAX_RECORDS; k++)
    if (table->rec[k] && table->rec[k]->set == set) {
      table->last_used[k] = table->clock;
      return table->rec[k];
    }
  lltfi_golden_record *rec = record(set, run, out_bytes);
  if (!rec) return NULL;
  for (int k = 0; k < MAX_RECORDS; k++)
    if (!table->rec[k]) {
      table->rec[k] = rec;
      table->last_used[k] = table->clock;
      table->held += rec->data_cap;
      return rec;
    }
  munmap(rec, rec->map_bytes);  /* cannot happen: record() made room */
  return NULL;
}

uint64_t lltfi_golden_output_bytes(const lltfi_golden_record *rec) { return rec ? rec->output_bytes : 0; }

int lltfi_early_end(void) {
  const char *v = getenv("LLTFI_EARLY_END");
  return v && !strcmp(v, "1");
}

void lltfi_boundaries_restart(void) { seq = 0; }

void lltfi_boundaries_check(const lltfi_golden_record *rec, void *out) {
  golden = rec;
  out_dst = out;
  disabled = rec == NULL;
  n_live = 0;
  mode = CHECK;
}

static void on_record(int64_t node, int64_t last_use, const void *data, int64_t nbytes) {
  int64_t i = seq - 1;
  if (i >= MAX_ENTRIES) return;
  entry *e = &recording->entries[i];
  e->node = node;
  e->last_use = last_use;
  e->nbytes = nbytes;
  e->offset = ABSENT;
  if (nbytes > 0) recording->output_bytes += (uint64_t)nbytes;
  if (nbytes >= 0 && (size_t)nbytes <= recording->data_cap - recording->used) {
    e->offset = recording->used;
    memcpy((char *)recording + recording->data_offset + recording->used, data, (size_t)nbytes);
    recording->used += (size_t)nbytes;
  }
  recording->n_entries = i + 1;
}

static void on_check(int64_t node, int64_t last_use, const void *data, int64_t nbytes, int32_t final) {
  int progress = lltfi_fault_progress();
  if (progress <= 0 || disabled) return;  /* not injecting, tracing, or before the first fault */
  int64_t i = seq - 1;
  if (i >= golden->n_entries) { disabled = 1; return; }
  const entry *e = &golden->entries[i];
  if (e->node != node || e->nbytes != nbytes) { disabled = 1; return; }  /* not the recorded run */
  int same = e->offset != ABSENT &&
             memcmp((const char *)golden + golden->data_offset + e->offset, data, (size_t)nbytes) == 0;
  if (!same && last_use > node) {
    if (n_live == MAX_LIVE) { disabled = 1; return; }
    live_until[n_live++] = last_use;
  }
  if (!final) return;
  for (int k = 0; k < n_live;) {  /* tensors whose last reader has run are dead */
    if (live_until[k] <= node) live_until[k] = live_until[--n_live];
    else k++;
  }
  if (progress == 2 && n_live == 0) {
    memcpy(out_dst, (const char *)golden + golden->out_offset, golden->out_bytes);
    lltfi_note_masked(node);
    _exit(0);
  }
}

void lltfi_node_end(int64_t node, int64_t last_use, const void *data, int64_t nbytes, int32_t final) {
  lltfi_memory_node_end(node, data, nbytes, final);  /* an activation fault strikes here */
  seq++;
  if (mode == RECORD) on_record(node, last_use, data, nbytes);
  else if (mode == CHECK) on_check(node, last_use, data, nbytes, final);
}

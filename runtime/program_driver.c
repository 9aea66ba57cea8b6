/* Driver of an instrumented C/C++ program (its `main` renamed to __lltfi_program_main).
 *
 *   prog [args...]                                      golden run, as the original program
 *   prog --lltfi-profile [--stdin F] [--timeout-us T] -- [args...]
 *                                                       P line: counts, golden stdout (see below)
 *   prog --lltfi-serve [--stdin F] [--output-file F]... [--max-output B] -- [args...]
 *                                                       fork-server, same protocol as campaign_server.c
 * Output files (relative names in the working directory) are appended to the captured stdout after
 * each run; with output files the server runs in a private directory of symlinks (see below).
 * A fault-free run longer than T (profile) is an error. A trial whose captured output exceeds B
 * bytes (the child may write B + 1 bytes to any file, then SIGXFSZ ends it) reports status
 * `output_limit` and no output bytes: an over-long output is an SDC, and never fills the disk or
 * the pipe to Python.
 *
 * Every run happens in a forked child (a program may change global state), with stdout captured in
 * a temporary file and stdin from F (or /dev/null), so each trial sees the same inputs.
 * P line:  P 0 golden_s check_s consumed n_sites counts... n_units units... n_bytes stdout_hex exit_status
 * R line:  as in trial_protocol.h, with the captured stdout (and output files) as the output bytes
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

#include "fi_runtime.h"
#include "trial_protocol.h"

int __lltfi_program_main(int argc, char **argv);

typedef struct {
  lltfi_fault_log log;
  uint64_t consumed;
  uint64_t counts_and_units[];
} program_shared;

static const char *stdin_path = "/dev/null";
static const char *output_files[64];  /* files the program writes, compared like its stdout */
static int n_output_files;
static void capture_output_files(int out_fd);
static int prog_argc;
static char **prog_argv;
static long long max_output;  /* bytes of captured output per trial; 0: no limit */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Runs the program in a child; returns wait status (`*watchdog`: see lltfi_wait_child); stdout goes
   to `out_fd`, at most `limit` + 1 bytes of it (`limit` > 0). */
static int run_child(int out_fd, long long timeout_us, long long limit, int *watchdog, void (*setup)(void *),
                     void *arg) {
  fflush(stdout);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) { perror("fork"); exit(1); }
  if (pid == 0) {
    lltfi_child_start(parent, timeout_us);
    if (limit > 0) {
      struct rlimit size = {(rlim_t)limit + 1, (rlim_t)limit + 1};
      setrlimit(RLIMIT_FSIZE, &size);
    }
    for (int i = 0; i < n_output_files; i++) unlink(output_files[i]);
    int in = open(stdin_path, O_RDONLY);
    if (in >= 0) { dup2(in, 0); close(in); }
    dup2(out_fd, 1);
    setup(arg);
    int rc = __lltfi_program_main(prog_argc, prog_argv);
    exit(rc); /* exit(), not _exit(): the program's stdio buffers must be flushed */
  }
  int status = lltfi_wait_child(pid, timeout_us, watchdog);
  capture_output_files(out_fd);
  return status;
}

static long long captured_size(int fd) {
  return (long long)lseek(fd, 0, SEEK_END);
}

/* Prints " n_bytes hex" of the captured output (" 0 " when `send` is 0), then empties the file. */
static void print_captured(int fd, int send) {
  off_t size = send ? lseek(fd, 0, SEEK_END) : 0;
  lseek(fd, 0, SEEK_SET);
  printf(" %lld ", (long long)size);
  unsigned char buf[4096];
  ssize_t n;
  static const char digits[] = "0123456789abcdef";
  while (send && (n = read(fd, buf, sizeof buf)) > 0)
    for (ssize_t i = 0; i < n; i++) { putchar(digits[buf[i] >> 4]); putchar(digits[buf[i] & 15]); }
  if (ftruncate(fd, 0) != 0) perror("ftruncate");
  lseek(fd, 0, SEEK_SET);
}

/* Parallel fork-servers must not share the program's output files: each server runs in a private
   directory holding symlinks to everything in the original one except those files. */
static char workdir[] = "/tmp/lltfi-work-XXXXXX";
static pid_t server_pid;

static void remove_workdir(void) {
  if (getpid() != server_pid) return;  /* children inherit atexit handlers */
  DIR *d = opendir(workdir);
  struct dirent *e;
  char path[8192];
  while (d && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(path, sizeof path, "%s/%s", workdir, e->d_name);
    unlink(path);
  }
  if (d) closedir(d);
  rmdir(workdir);
}

static void private_workdir(void) {
  char here[4096];
  char *dir = workdir;
  if (!getcwd(here, sizeof here) || !mkdtemp(dir)) { perror("lltfi driver"); exit(1); }
  DIR *d = opendir(here);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    int skip = 0;
    for (int i = 0; i < n_output_files; i++) skip |= !strcmp(e->d_name, output_files[i]);
    if (skip) continue;
    char from[8192], to[8192];
    snprintf(from, sizeof from, "%s/%s", here, e->d_name);
    snprintf(to, sizeof to, "%s/%s", dir, e->d_name);
    if (symlink(from, to) != 0) perror("symlink");
  }
  if (d) closedir(d);
  if (chdir(dir) != 0) { perror("chdir"); exit(1); }
  server_pid = getpid();
  atexit(remove_workdir);
}

/* After a run: append each output file (then remove it) to the captured stdout. */
static void capture_output_files(int out_fd) {
  for (int i = 0; i < n_output_files; i++) {
    char header[512];
    int n = snprintf(header, sizeof header, "\n--- %s ---\n", output_files[i]);
    if (n < 0) n = 0;
    if (n >= (int)sizeof header) n = (int)sizeof header - 1;  /* a long name is cut, never over-read */
    if (write(out_fd, header, n) != n) perror("write");
    int fd = open(output_files[i], O_RDONLY);
    if (fd < 0) {
      if (write(out_fd, "(missing)\n", 10) != 10) perror("write");
      continue;
    }
    char buf[4096];
    ssize_t got;
    while ((got = read(fd, buf, sizeof buf)) > 0)
      if (write(out_fd, buf, got) != got) perror("write");
    close(fd);
    unlink(output_files[i]);
  }
}

static program_shared *shared;

static void setup_golden(void *arg) {
  (void)arg;
  lltfi_begin_golden();
  lltfi_fi_remaining = 1ull << 62;
  memset(lltfi_unit_counts, 0, (lltfi_num_units ? lltfi_num_units : 1) * sizeof(uint64_t));
  /* Copy counters to shared memory at exit, whatever path the program takes to exit. */
}

static void save_golden_counters(void) {
  if (lltfi_mode != LLTFI_GOLDEN || !shared) return;
  shared->consumed = (1ull << 62) - lltfi_fi_remaining;
  memcpy(shared->counts_and_units + lltfi_num_sites, lltfi_unit_counts, lltfi_num_units * sizeof(uint64_t));
}

static void setup_profile(void *arg) {
  (void)arg;
  lltfi_begin_profile(shared->counts_and_units);
}

static lltfi_fault_spec trial_spec;
static unsigned long long trial_target;
static void setup_trial(void *arg) {
  (void)arg;
  lltfi_begin_inject(trial_target, &trial_spec, &shared->log);
}

int main(int argc, char **argv) {
  int mode = 0;
  int i = 1;
  if (argc > 1 && !strcmp(argv[1], "--lltfi-profile")) mode = 1;
  else if (argc > 1 && !strcmp(argv[1], "--lltfi-serve")) mode = 2;
  if (mode == 0) return __lltfi_program_main(argc, argv);
  lltfi_die_with_parent(0);
  long long timeout_us = 0;  /* profile: per fault-free run */
  for (i = 2; i < argc && strcmp(argv[i], "--"); i++) {
    if (!strcmp(argv[i], "--stdin") && i + 1 < argc) stdin_path = argv[++i];
    else if (!strcmp(argv[i], "--output-file") && i + 1 < argc) {
      const char *name = argv[++i];
      /* a plain name in the working directory: the driver unlinks and reads it after each run */
      if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..")) {
        fprintf(stderr, "error: --output-file %s: give a file name in the working directory (no '/')\n", name);
        return 2;
      }
      if (n_output_files == (int)(sizeof output_files / sizeof *output_files)) {
        fprintf(stderr, "error: more than %d --output-file\n", n_output_files);
        return 2;
      }
      output_files[n_output_files++] = name;
    }
    else if (!strcmp(argv[i], "--timeout-us") && i + 1 < argc) timeout_us = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--max-output") && i + 1 < argc) max_output = atoll(argv[++i]);
  }
  /* argv[0] stays the program's name; its arguments follow "--". */
  prog_argc = 1 + (i < argc ? argc - i - 1 : 0);
  prog_argv = calloc(prog_argc + 1, sizeof(char *));
  prog_argv[0] = argv[0];
  for (int k = 1; k < prog_argc; k++) prog_argv[k] = argv[i + k];
  size_t size = sizeof(program_shared) + (lltfi_num_sites + lltfi_num_units + 1) * sizeof(uint64_t);
  shared = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  char path[] = "/tmp/lltfi-stdout-XXXXXX";
  int out_fd = mkstemp(path);
  if (out_fd < 0 || shared == MAP_FAILED) { perror("lltfi driver"); return 1; }
  unlink(path);
  if (n_output_files) private_workdir();
  atexit(save_golden_counters);
  if (mode == 1) {
    int watchdog;
    double t0 = now();
    int status = run_child(out_fd, timeout_us, 0, &watchdog, setup_golden, NULL);
    double golden = now() - t0;
    int code;
    if (!strcmp(lltfi_wait_kind(status, watchdog, &code), "hang")) {
      fprintf(stderr, "error: the program does not finish within %.6g s without faults (its fault-free run "
              "hangs, or the timeout is too short for it)\n", timeout_us * 1e-6);
      return 2;
    }
    if (!WIFEXITED(status)) {
      fprintf(stderr, "error: the program crashes without faults (signal %d, %s); campaigns need a fault-free "
              "run that exits 0 (check its arguments and --stdin)\n", WTERMSIG(status), strsignal(WTERMSIG(status)));
      return 2;
    }
    uint64_t consumed = shared->consumed;
    uint64_t *units = malloc((lltfi_num_units + 1) * sizeof(uint64_t));
    memcpy(units, shared->counts_and_units + lltfi_num_sites, lltfi_num_units * sizeof(uint64_t));
    memset(shared->counts_and_units, 0, lltfi_num_sites * sizeof(uint64_t));
    t0 = now();
    int check_status = run_child(out_fd, 0, 0, &watchdog, setup_profile, NULL);
    double check = now() - t0;
    (void)check_status;
    if (ftruncate(out_fd, 0) != 0) perror("ftruncate");
    lseek(out_fd, 0, SEEK_SET);
    int again = run_child(out_fd, timeout_us, 0, &watchdog, setup_golden, NULL);  /* stdout without the hooks */
    if (!WIFEXITED(again)) {
      fprintf(stderr, "error: the program's second fault-free run %s (signal %d); campaigns need a deterministic "
              "program\n", WTERMSIG(again) == SIGALRM || watchdog ? "hangs" : "crashes", WTERMSIG(again));
      return 2;
    }
    printf("P 0 %.9f %.9f %llu 1 %d", golden, check, (unsigned long long)consumed, lltfi_num_sites);
    for (int s = 0; s < lltfi_num_sites; s++) printf(" %llu", (unsigned long long)shared->counts_and_units[s]);
    printf(" %d", lltfi_num_units);
    for (int u = 0; u < lltfi_num_units; u++) printf(" %llu", (unsigned long long)units[u]);
    print_captured(out_fd, 1);
    printf(" %d\n", WEXITSTATUS(status));
    return 0;
  }
  printf("READY 1\n");
  fflush(stdout);
  char line[1024];
  while (fgets(line, sizeof line, stdin)) {
    lltfi_trial trial;
    if (lltfi_parse_trial(line, &trial)) {
      fprintf(stderr, "error: bad trial line: %s", line);
      return 2;
    }
    trial_spec = trial.spec;
    trial_target = (unsigned long long)trial.target;
    memset(&shared->log, 0, sizeof shared->log);
    int watchdog;
    int status = run_child(out_fd, trial.timeout_us, max_output, &watchdog, setup_trial, NULL);
    int code;
    const char *kind = lltfi_wait_kind(status, watchdog, &code);
    int over = max_output > 0 && captured_size(out_fd) > max_output && strcmp(kind, "hang") != 0;
    if (over) kind = "output_limit";
    lltfi_print_result_head(stdout, trial.id, kind, code, &shared->log);
    print_captured(out_fd, !over);
    printf("\n");
    fflush(stdout);
  }
  return 0;
}

/*
 * The test runner (libuv-style): runs every registered test in a forked
 * child with a timeout, so a crash or a hang cannot stall the suite, and
 * prints one line per test and a summary.
 *
 *   kiln_tests [FILTER] [--list] [-j N]
 *
 * FILTER selects tests whose name contains it. The parent never calls
 * into kiln: a fork of a process with kiln's threads running would not be
 * safe, so each child starts from a clean library.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "runner.h"

typedef struct kt_test {
  const char *name;
  void (*fn)(void);
  int timeout_s;
} kt_test;

#define KT_ENTRY_(name, timeout) {#name, test_##name, timeout},
static const kt_test kt_tests[] = {KT_TEST_LIST(KT_ENTRY_)};
#undef KT_ENTRY_
#define KT_NUM_TESTS ((int)(sizeof(kt_tests) / sizeof(kt_tests[0])))

typedef struct kt_child_entry {
  const char *name;
  int (*fn)(int argc, char **argv);
} kt_child_entry;

#define KT_CHILD_ENTRY_(name) {#name, child_##name},
static const kt_child_entry kt_children[] = {KT_CHILD_LIST(KT_CHILD_ENTRY_)};
#undef KT_CHILD_ENTRY_

/* One running child. */
typedef struct kt_slot {
  bool busy;
  pid_t pid;
  int fd; /* read end of the child's stdout+stderr */
  int test;
  int number;
  double start;
  char *out;
  size_t out_len;
  size_t out_cap;
} kt_slot;

static double kt_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void kt_usage(FILE *f) {
  fprintf(f, "usage: kiln_tests [FILTER] [--list] [-j N]\n"
             "  FILTER   run only the tests whose name contains it\n"
             "  --list   print the test names and exit\n"
             "  -j N     run N tests at once (default 2)\n"
             "environment: KILN_TEST_DEVICE=cpu|gpu, KILN_TEST_SEED=N,\n"
             "  KILN_CACHE_DIR (default: kiln-test-cache beside this "
             "binary),\n"
             "  KILN_TEST_NVRTC_TARGET=sm_XY[a] (also compile every "
             "launched kernel\n"
             "  for that CUDA target, without a GPU)\n");
}

/* The suite's kernel cache lives beside the binary (in the build dir)
 * unless the caller chose one, so runs never touch ~/.cache. */
static void kt_default_cache_dir(void) {
  const char *set = getenv("KILN_CACHE_DIR");
  if (set && *set)
    return;
  char path[4096];
  snprintf(path, sizeof path, "%s", kt_self_exe());
  char *slash = strrchr(path, '/');
  if (!slash)
    return;
  snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path),
           "kiln-test-cache");
  if (mkdir(path, 0700) != 0 && errno != EEXIST)
    fprintf(stderr, "warning: cannot create %s: %s\n", path, strerror(errno));
  setenv("KILN_CACHE_DIR", path, 1);
}

static void kt_append(kt_slot *s, const char *buf, size_t n) {
  if (s->out_len + n + 1 > s->out_cap) {
    size_t cap = (s->out_cap ? s->out_cap * 2 : 4096);
    while (cap < s->out_len + n + 1)
      cap *= 2;
    char *p = realloc(s->out, cap);
    if (!p)
      return; /* drop output rather than fail the suite */
    s->out = p;
    s->out_cap = cap;
  }
  memcpy(s->out + s->out_len, buf, n);
  s->out_len += n;
  s->out[s->out_len] = '\0';
}

static void kt_drain(kt_slot *s) {
  char buf[4096];
  for (;;) {
    ssize_t n = read(s->fd, buf, sizeof buf);
    if (n > 0)
      kt_append(s, buf, (size_t)n);
    else if (n < 0 && errno == EINTR)
      continue;
    else
      break;
  }
}

/* In the child: runs the test with its output on the pipe and exits. */
static _Noreturn void kt_child_main(int test, int wfd) {
  setpgid(0, 0); /* so a timeout can kill compilers it spawned too */
  dup2(wfd, 1);
  dup2(wfd, 2);
  close(wfd);
  setvbuf(stdout, NULL, _IONBF, 0);
  kt_rng_reset(kt_tests[test].name);
  kt_tests[test].fn();
  fflush(NULL);
  exit(0); /* exit, not _exit: LeakSanitizer checks at exit */
}

static bool kt_start(kt_slot *s, int test, int number) {
  int fds[2];
  if (pipe(fds) != 0) {
    perror("pipe");
    return false;
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    close(fds[0]);
    close(fds[1]);
    return false;
  }
  if (pid == 0) {
    close(fds[0]);
    kt_child_main(test, fds[1]);
  }
  close(fds[1]);
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  setpgid(pid, pid);
  *s = (kt_slot){.busy = true, .pid = pid, .fd = fds[0], .test = test,
                 .number = number, .start = kt_now()};
  return true;
}

/* Prints the child's output indented under its result line. */
static void kt_print_output(const kt_slot *s) {
  if (!s->out)
    return;
  const char *p = s->out;
  while (*p) {
    const char *nl = strchr(p, '\n');
    int len = nl ? (int)(nl - p) : (int)strlen(p);
    printf("    %.*s\n", len, p);
    p += len + (nl ? 1 : 0);
  }
}

typedef struct kt_totals {
  int passed, failed, skipped;
} kt_totals;

static void kt_finish(kt_slot *s, int status, bool timed_out,
                      kt_totals *totals) {
  kt_drain(s);
  double secs = kt_now() - s->start;
  const char *name = kt_tests[s->test].name;
  if (timed_out) {
    printf("FAIL %d %s (%.2f s): timeout after %d s\n", s->number, name, secs,
           kt_tests[s->test].timeout_s);
    kt_print_output(s);
    totals->failed++;
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    printf("ok %d %s (%.2f s)\n", s->number, name, secs);
    totals->passed++;
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == KT_SKIP_STATUS) {
    printf("skip %d %s (%.2f s)\n", s->number, name, secs);
    kt_print_output(s);
    totals->skipped++;
  } else {
    if (WIFSIGNALED(status))
      printf("FAIL %d %s (%.2f s): killed by signal %d (%s)\n", s->number,
             name, secs, WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
      printf("FAIL %d %s (%.2f s): exit status %d\n", s->number, name, secs,
             WEXITSTATUS(status));
    kt_print_output(s);
    totals->failed++;
  }
  fflush(stdout);
  close(s->fd);
  free(s->out);
  *s = (kt_slot){0};
}

/* Reads output, reaps finished children and kills those past their
 * timeout. */
static void kt_poll(kt_slot *slots, int jobs, kt_totals *totals) {
  struct pollfd pfd[64];
  int map[64];
  int n = 0;
  for (int i = 0; i < jobs; i++)
    if (slots[i].busy) {
      pfd[n] = (struct pollfd){.fd = slots[i].fd, .events = POLLIN};
      map[n++] = i;
    }
  poll(pfd, (nfds_t)n, 20);
  for (int k = 0; k < n; k++)
    if (pfd[k].revents)
      kt_drain(&slots[map[k]]);
  for (int i = 0; i < jobs; i++) {
    kt_slot *s = &slots[i];
    if (!s->busy)
      continue;
    int status = 0;
    pid_t r = waitpid(s->pid, &status, WNOHANG);
    if (r == s->pid) {
      kill(-s->pid, SIGKILL); /* stray grandchildren, if any */
      kt_finish(s, status, false, totals);
    } else if (kt_now() - s->start > kt_tests[s->test].timeout_s) {
      kill(-s->pid, SIGKILL);
      kill(s->pid, SIGKILL);
      waitpid(s->pid, &status, 0);
      kt_finish(s, status, true, totals);
    }
  }
}

static int kt_run_child_helper(int argc, char **argv) {
  for (size_t i = 0; i < sizeof kt_children / sizeof kt_children[0]; i++)
    if (strcmp(kt_children[i].name, argv[0]) == 0)
      return kt_children[i].fn(argc, argv);
  fprintf(stderr, "kiln_tests: no child helper named '%s'\n", argv[0]);
  return 2;
}

static uint64_t kt_pick_seed(void) {
  const char *s = getenv("KILN_TEST_SEED");
  if (s && *s)
    return strtoull(s, NULL, 0);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ((uint64_t)ts.tv_sec * 1000003u) ^ (uint64_t)ts.tv_nsec ^
         ((uint64_t)getpid() << 32);
}

int main(int argc, char **argv) {
  const char *filter = NULL;
  int jobs = 2;
  bool list = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--child") == 0 && i + 1 < argc)
      return kt_run_child_helper(argc - i - 1, argv + i + 1);
    if (strcmp(argv[i], "--list") == 0) {
      list = true;
    } else if (strcmp(argv[i], "-j") == 0 && i + 1 < argc) {
      jobs = atoi(argv[++i]);
    } else if (strncmp(argv[i], "-j", 2) == 0 && argv[i][2]) {
      jobs = atoi(argv[i] + 2);
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      kt_usage(stdout);
      return 0;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "kiln_tests: unknown option '%s'\n", argv[i]);
      kt_usage(stderr);
      return 2;
    } else {
      filter = argv[i];
    }
  }
  if (jobs < 1 || jobs > 64) {
    fprintf(stderr, "kiln_tests: -j wants a number from 1 to 64\n");
    return 2;
  }
  if (list) {
    for (int i = 0; i < KT_NUM_TESTS; i++)
      if (!filter || strstr(kt_tests[i].name, filter))
        printf("%s\n", kt_tests[i].name);
    return 0;
  }
  const char *dev = getenv("KILN_TEST_DEVICE");
  if (dev && *dev && strcmp(dev, "cpu") != 0 && strcmp(dev, "gpu") != 0) {
    fprintf(stderr, "kiln_tests: KILN_TEST_DEVICE must be cpu or gpu, "
                    "not '%s'\n", dev);
    return 2;
  }
  kt_default_cache_dir();
  kt_seed = kt_pick_seed();
  int selected[KT_NUM_TESTS];
  int count = 0;
  for (int i = 0; i < KT_NUM_TESTS; i++)
    if (!filter || strstr(kt_tests[i].name, filter))
      selected[count++] = i;
  printf("kiln tests: %d tests on device %s, %d at once, seed %llu "
         "(KILN_TEST_SEED=%llu repeats it), cache %s\n",
         count, (dev && *dev) ? dev : "cpu", jobs,
         (unsigned long long)kt_seed, (unsigned long long)kt_seed,
         getenv("KILN_CACHE_DIR") ? getenv("KILN_CACHE_DIR") : "(default)");
  const char *nvrtc = getenv("KILN_TEST_NVRTC_TARGET");
  if (nvrtc && *nvrtc)
    printf("every launched kernel is also compiled for %s "
           "(KILN_TEST_NVRTC_TARGET)\n", nvrtc);
  fflush(stdout);

  kt_slot slots[64] = {{0}};
  kt_totals totals = {0, 0, 0};
  int next = 0;
  for (;;) {
    for (int i = 0; i < jobs && next < count; i++)
      if (!slots[i].busy) {
        if (!kt_start(&slots[i], selected[next], next + 1)) {
          printf("FAIL %d %s: could not start the child\n", next + 1,
                 kt_tests[selected[next]].name);
          totals.failed++;
        }
        next++;
      }
    bool any = false;
    for (int i = 0; i < jobs; i++)
      any = any || slots[i].busy;
    if (!any && next >= count)
      break;
    kt_poll(slots, jobs, &totals);
  }
  if (totals.skipped)
    printf("%d passed, %d failed, %d skipped\n", totals.passed, totals.failed,
           totals.skipped);
  else
    printf("%d passed, %d failed\n", totals.passed, totals.failed);
  return totals.failed ? 1 : 0;
}

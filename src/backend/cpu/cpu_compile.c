/*
 * The CPU backend's compiler side: finds the host C++ compiler, builds the
 * generated source into a shared object, and loads such objects back
 * (possibly ones another process built and kiln's disk cache kept).
 *
 * The compiler runs through posix_spawnp with an explicit argument vector:
 * no shell ever sees a path or a flag. Objects are loaded from memory (a
 * memfd) so that nothing needs to stay on disk while a kernel is in use.
 */
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/cpu/cpu.h"
#include "core/util.h"

extern char **environ;

/* Flags every kernel is built with, on both steps (compile, then link:
 * -ffast-math matters to the link too). -march=native makes the object
 * depend on this CPU, which is why the CPU model and features are in the
 * build id. -w: generated code and the prelude are not the user's to
 * tidy. */
static const char *const common_flags[] = {"-std=c++17",
                                           "-O2",
                                           "-fPIC",
                                           "-march=native",
                                           "-fno-plt",
                                           "-fvisibility=hidden",
                                           "-w"};
#define NUM_COMMON_FLAGS (sizeof common_flags / sizeof common_flags[0])

/* Added to the compile step where the compiler accepts them. The stack
 * usage report (a .su file next to the object) gives the kernel's frame
 * size, which fiber mode checks against its stacks; stack clash
 * protection touches a large frame page by page, so an overflow that
 * gets past that check still lands on the guard page below the stack
 * rather than in a neighbouring fiber's stack. */
static const char *const stack_flags[] = {"-fstack-usage",
                                          "-fstack-clash-protection"};
#define NUM_STACK_FLAGS (sizeof stack_flags / sizeof stack_flags[0])

/* Safe math keeps IEEE results: no contraction into fma, no reassociation,
 * which is what KERNEL-DIALECT.md promises for KILN_MATH_SAFE. */
static const char *const safe_flags[] = {"-ffp-contract=off", "-fno-fast-math"};
static const char *const fast_flags[] = {"-ffast-math"};

#define SOURCE_NAME "kiln-generated.cpp"
#define OBJECT_NAME "kernel.o"
#define STACK_USAGE_NAME "kernel.su" /* the compiler names it after -o */
#define SHARED_NAME "kernel.so"
#define LOG_NAME "compiler.log"
/* The flag probe's empty source, its object and its stack usage report. */
#define PROBE_SOURCE_NAME "probe.cpp"
#define PROBE_OBJECT_NAME "probe.o"
#define PROBE_STACK_USAGE_NAME "probe.su"

#if defined(__x86_64__)
#define HOST_ELF_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define HOST_ELF_MACHINE EM_AARCH64
#else
#error "kiln's CPU backend supports x86_64 and aarch64 hosts only"
#endif

typedef ElfW(Ehdr) host_ehdr;
typedef ElfW(Phdr) host_phdr;

/*
 * The binary that compile produces is the shared object followed by a
 * trailer: a magic string, the object's size, the largest stack frame of
 * its functions (0 if unknown) and the SHA-256 of the object followed by
 * that frame size's 8 bytes. load checks the trailer before the dynamic
 * loader sees a byte, because a torn or altered object could crash the
 * process inside dlopen (a truncated one raises SIGBUS when its segments
 * are touched). Version 1 had no frame size; its files are refused (and
 * recompiled by the cache).
 */
#define TRAILER_MAGIC "KILNCPU2"
typedef struct trailer {
  char magic[8];
  uint64_t object_size;
  uint64_t stack_bytes;
  uint8_t digest[32];
} trailer;

/* ---- compiler discovery ------------------------------------------------- */

/* Filled once by discover_compiler(); read-only afterwards. */
static struct {
  pthread_once_t once;
  kiln_status status;
  char path[4096];
  char version[256];
  char error[512];
  char *build_id; /* kiln__malloc'ed; lives for the process */
  kiln_status build_id_status;
} g_cxx = {PTHREAD_ONCE_INIT, KILN_OK, "", "", "", NULL, KILN_OK};

static pthread_mutex_t g_build_id_lock = PTHREAD_MUTEX_INITIALIZER;

/* Which stack_flags the compiler accepts; probed on the first compile. */
static pthread_mutex_t g_stack_flags_lock = PTHREAD_MUTEX_INITIALIZER;
static bool g_stack_flags_probed;
static bool g_stack_flag_ok[NUM_STACK_FLAGS];

static bool is_executable_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Looks `name` up like execvp does; a name with a slash is taken as is. */
static bool find_program(const char *name, char *out, size_t out_size) {
  if (name[0] == '\0')
    return false;
  if (strchr(name, '/') != NULL) {
    if (!is_executable_file(name) || strlen(name) >= out_size)
      return false;
    strcpy(out, name);
    return true;
  }
  const char *path = getenv("PATH");
  if (path == NULL || path[0] == '\0')
    path = "/usr/local/bin:/usr/bin:/bin";
  while (*path != '\0') {
    const char *end = strchr(path, ':');
    size_t dir_len = end ? (size_t)(end - path) : strlen(path);
    /* An empty PATH entry means the current directory. */
    int n = dir_len == 0
                ? snprintf(out, out_size, "./%s", name)
                : snprintf(out, out_size, "%.*s/%s", (int)dir_len, path, name);
    if (n > 0 && (size_t)n < out_size && is_executable_file(out))
      return true;
    if (end == NULL)
      break;
    path = end + 1;
  }
  return false;
}

/* Runs `argv` with stdout going to a pipe and returns the first line of
 * what it wrote (for `--version`); "" if it printed nothing. */
static void first_output_line(char *const argv[], char *out, size_t out_size) {
  int fds[2];
  out[0] = '\0';
  if (pipe2(fds, O_CLOEXEC) != 0)
    return;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY,
                                   0);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  size_t len = 0;
  if (rc == 0) {
    /* Read everything so the child never blocks on a full pipe. */
    char chunk[512];
    ssize_t got;
    while ((got = read(fds[0], chunk, sizeof chunk)) != 0) {
      if (got < 0) {
        if (errno == EINTR)
          continue;
        break;
      }
      size_t take = (size_t)got;
      if (len + take >= out_size)
        take = out_size - 1 - len;
      memcpy(out + len, chunk, take);
      len += take;
    }
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
  }
  close(fds[0]);
  out[len] = '\0';
  out[strcspn(out, "\r\n")] = '\0';
}

static void discover_compiler(void) {
  const char *env = getenv("KILN_CXX");
  if (env != NULL && env[0] != '\0') {
    if (!find_program(env, g_cxx.path, sizeof g_cxx.path)) {
      snprintf(g_cxx.error, sizeof g_cxx.error,
               "the C++ compiler named by KILN_CXX ('%s') was not found or "
               "is not executable; set KILN_CXX to a compiler such as g++ "
               "or clang++",
               env);
      g_cxx.status = KILN_ERROR_NOT_FOUND;
      return;
    }
  } else {
    static const char *const candidates[] = {"c++", "g++", "clang++"};
    size_t i;
    for (i = 0; i < 3; i++)
      if (find_program(candidates[i], g_cxx.path, sizeof g_cxx.path))
        break;
    if (i == 3) {
      snprintf(g_cxx.error, sizeof g_cxx.error,
               "no C++ compiler found (tried c++, g++ and clang++ on PATH); "
               "install g++ or clang++ or set KILN_CXX");
      g_cxx.status = KILN_ERROR_NOT_FOUND;
      return;
    }
  }
  char *argv[] = {g_cxx.path, (char *)"--version", NULL};
  first_output_line(argv, g_cxx.version, sizeof g_cxx.version);
  g_cxx.status = KILN_OK;
}

/* The compiler's path, or an error naming what is missing. */
static kiln_status compiler_path(const char **out) {
  pthread_once(&g_cxx.once, discover_compiler);
  if (g_cxx.status != KILN_OK)
    return kiln__error(g_cxx.status, "%s", g_cxx.error);
  *out = g_cxx.path;
  return KILN_OK;
}

/* ---- build id ----------------------------------------------------------- */

/* A digest of the CPU's feature flags: two CPUs with the same model name
 * can differ in what -march=native enables (microcode, hypervisors). */
static void cpu_features_digest(char out[17]) {
  char hex[65];
  char *line = NULL;
  size_t cap = 0;
  bool found = false;
  FILE *f = fopen("/proc/cpuinfo", "re");
  if (f != NULL) {
    while (getline(&line, &cap, f) > 0) {
      if (strncmp(line, "flags", 5) == 0 || strncmp(line, "Features", 8) == 0) {
        kiln__sha256_hex(line, strlen(line), hex);
        found = true;
        break;
      }
    }
    free(line); /* allocated by getline, not by kiln's hooks */
    fclose(f);
  }
  if (!found)
    strcpy(hex, "unknown-unknown!"); /* 16 characters, like a digest */
  memcpy(out, hex, 16);
  out[16] = '\0';
}

static char *make_build_id(kiln_device *dev) {
  char features[17];
  kiln__strbuf sb;
  cpu_features_digest(features);
  kiln__sb_init(&sb);
  kiln__sb_appendf(&sb, "cpu-abi%u;%s;%s;%s;%s [features %s];",
                   (unsigned)KILN_CPU_ABI_VERSION, g_cxx.path, g_cxx.version,
                   dev->info.arch, dev->info.name, features);
  for (size_t i = 0; i < NUM_COMMON_FLAGS; i++)
    kiln__sb_appendf(&sb, "%s%s", i ? " " : "", common_flags[i]);
  kiln__sb_appendf(&sb, " safe:%s %s fast:%s", safe_flags[0], safe_flags[1],
                   fast_flags[0]);
  /* Whether they are accepted follows from the compiler's version. */
  kiln__sb_appendf(&sb, " if-accepted:%s %s", stack_flags[0],
                   stack_flags[1]);
  return kiln__sb_take(&sb);
}

/*
 * The CPU build id: ABI version, compiler path and version, architecture,
 * CPU model and features, flags. Computed on first use and kept for the
 * process (there is one CPU device); a failed attempt is retried.
 */
kiln_status kiln__cpu_build_id(kiln_device *dev, const char **out) {
  const char *cxx;
  kiln_status st = compiler_path(&cxx);
  if (st != KILN_OK)
    return st;
  pthread_mutex_lock(&g_build_id_lock);
  if (g_cxx.build_id == NULL)
    g_cxx.build_id = make_build_id(dev);
  char *id = g_cxx.build_id;
  pthread_mutex_unlock(&g_build_id_lock);
  if (id == NULL)
    return kiln__oom("computing the CPU backend's build id");
  *out = id;
  return KILN_OK;
}

/* ---- compile ------------------------------------------------------------ */

/* A private directory for one compilation and the paths inside it. */
typedef struct workdir {
  char dir[4096];
  char source[4200];
  char object[4200];
  char stack_usage[4200];
  char shared[4200];
  char log[4200];
  char probe_source[4200];
  char probe_object[4200];
  char probe_stack_usage[4200];
} workdir;

static kiln_status workdir_create(workdir *w) {
  const char *tmp = getenv("TMPDIR");
  if (tmp == NULL || tmp[0] == '\0')
    tmp = "/tmp";
  int n = snprintf(w->dir, sizeof w->dir, "%s/kiln-build-XXXXXX", tmp);
  if (n < 0 || (size_t)n >= sizeof w->dir)
    return kiln__error(KILN_ERROR_IO,
                       "the temporary directory path '%s' is too long", tmp);
  if (mkdtemp(w->dir) == NULL)
    return kiln__error(KILN_ERROR_IO,
                       "could not create a temporary directory under '%s' "
                       "to compile the kernel: %s",
                       tmp, strerror(errno));
  snprintf(w->source, sizeof w->source, "%s/%s", w->dir, SOURCE_NAME);
  snprintf(w->object, sizeof w->object, "%s/%s", w->dir, OBJECT_NAME);
  snprintf(w->stack_usage, sizeof w->stack_usage, "%s/%s", w->dir,
           STACK_USAGE_NAME);
  snprintf(w->shared, sizeof w->shared, "%s/%s", w->dir, SHARED_NAME);
  snprintf(w->log, sizeof w->log, "%s/%s", w->dir, LOG_NAME);
  snprintf(w->probe_source, sizeof w->probe_source, "%s/%s", w->dir,
           PROBE_SOURCE_NAME);
  snprintf(w->probe_object, sizeof w->probe_object, "%s/%s", w->dir,
           PROBE_OBJECT_NAME);
  snprintf(w->probe_stack_usage, sizeof w->probe_stack_usage, "%s/%s",
           w->dir, PROBE_STACK_USAGE_NAME);
  return KILN_OK;
}

/* Removes the directory and the files we may have put in it. The compiler
 * can leave nothing else there: its temporaries go to TMPDIR. */
static void workdir_remove(const workdir *w) {
  unlink(w->source);
  unlink(w->object);
  unlink(w->stack_usage);
  unlink(w->shared);
  unlink(w->log);
  unlink(w->probe_source);
  unlink(w->probe_object);
  unlink(w->probe_stack_usage);
  rmdir(w->dir);
}

static kiln_status write_file(const char *path, const void *data, size_t size) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return kiln__error(KILN_ERROR_IO, "could not create '%s': %s", path,
                       strerror(errno));
  const char *p = data;
  while (size > 0) {
    ssize_t n = write(fd, p, size);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int err = errno;
      close(fd);
      return kiln__error(KILN_ERROR_IO, "could not write '%s': %s", path,
                         strerror(err));
    }
    p += n;
    size -= (size_t)n;
  }
  close(fd);
  return KILN_OK;
}

/* Reads a whole file into kiln__malloc'ed memory, NUL-terminated. */
static kiln_status read_file(const char *path, char **out, size_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return kiln__error(KILN_ERROR_IO, "could not open '%s': %s", path,
                       strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < 0) {
    close(fd);
    return kiln__error(KILN_ERROR_IO, "could not read the size of '%s'", path);
  }
  size_t len = (size_t)st.st_size;
  char *buf = kiln__malloc(len + 1);
  if (buf == NULL) {
    close(fd);
    return kiln__oom("reading the compiled kernel");
  }
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, buf + got, len - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  close(fd);
  if (got != len) {
    kiln__free(buf);
    return kiln__error(KILN_ERROR_IO, "could not read all of '%s'", path);
  }
  buf[len] = '\0';
  *out = buf;
  *size = len;
  return KILN_OK;
}

/* Compiles the empty probe source with `flag`, all output discarded;
 * true if the compiler exits with status 0. A real compile into the work
 * directory, since a flag such as -fstack-usage writes a file next to
 * the output, even when there is no output (then in the current
 * directory). */
static bool compiler_accepts(const char *cxx, const char *flag,
                             const workdir *w) {
  const char *argv[] = {cxx,  flag,           "-c",           "-o",
                        w->probe_object, w->probe_source, NULL};
  posix_spawn_file_actions_t fa;
  if (posix_spawn_file_actions_init(&fa) != 0)
    return false;
  int rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
                                            O_RDONLY, 0);
  if (rc == 0)
    rc = posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null",
                                          O_WRONLY, 0);
  if (rc == 0)
    rc = posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid;
  if (rc == 0)
    rc = posix_spawn(&pid, cxx, &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    return false;
  int status = 0;
  pid_t r;
  while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  return r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Finds out once per process which stack_flags the compiler accepts.
 * If the probe cannot even be written, this compile goes without them and
 * the next one probes again. Returns whether the answers are known. */
static bool probe_stack_flags(const char *cxx, const workdir *w) {
  pthread_mutex_lock(&g_stack_flags_lock);
  if (!g_stack_flags_probed &&
      write_file(w->probe_source, "", 0) == KILN_OK) {
    for (size_t i = 0; i < NUM_STACK_FLAGS; i++)
      g_stack_flag_ok[i] = compiler_accepts(cxx, stack_flags[i], w);
    g_stack_flags_probed = true;
  }
  bool known = g_stack_flags_probed;
  pthread_mutex_unlock(&g_stack_flags_lock);
  return known;
}

/* Runs the compiler with stdout and stderr in the log file and waits:
 * the compile step (source to object, with the stack flags it accepts)
 * or the link step (object to shared object). Sets *exit_ok to whether
 * it exited with status 0. */
static kiln_status run_compiler(const char *cxx, kiln_math_mode math,
                                const workdir *w, bool link, bool *exit_ok) {
  const char *argv[NUM_COMMON_FLAGS + NUM_STACK_FLAGS + 8];
  size_t n = 0;
  argv[n++] = cxx;
  for (size_t i = 0; i < NUM_COMMON_FLAGS; i++)
    argv[n++] = common_flags[i];
  if (math == KILN_MATH_FAST) {
    argv[n++] = fast_flags[0];
  } else {
    argv[n++] = safe_flags[0];
    argv[n++] = safe_flags[1];
  }
  if (link) {
    argv[n++] = "-shared";
    argv[n++] = "-o";
    argv[n++] = w->shared;
    argv[n++] = w->object;
  } else {
    bool known = probe_stack_flags(cxx, w);
    for (size_t i = 0; i < NUM_STACK_FLAGS; i++)
      if (known && g_stack_flag_ok[i])
        argv[n++] = stack_flags[i];
    argv[n++] = "-c";
    argv[n++] = "-o";
    argv[n++] = w->object;
    argv[n++] = w->source;
  }
  argv[n] = NULL;

  posix_spawn_file_actions_t fa;
  if (posix_spawn_file_actions_init(&fa) != 0)
    return kiln__oom("starting the C++ compiler");
  int rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
                                            O_RDONLY, 0);
  if (rc == 0)
    rc = posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, w->log,
                                          O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (rc == 0)
    rc = posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, STDOUT_FILENO);
  pid_t pid;
  if (rc == 0)
    rc = posix_spawnp(&pid, cxx, &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    return kiln__error(KILN_ERROR_NOT_FOUND,
                       "could not run the C++ compiler '%s': %s; install "
                       "g++ or clang++ or set KILN_CXX",
                       cxx, strerror(rc));
  int status = 0;
  pid_t r;
  while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  if (r < 0) {
    /* SIGCHLD ignored by the application: the child was reaped for us,
     * so judge by whether the output appeared. */
    *exit_ok = access(link ? w->shared : w->object, F_OK) == 0;
    return KILN_OK;
  }
  *exit_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return KILN_OK;
}

/* The compiler failed: hand its messages to the caller. */
static kiln_status compile_failed(const workdir *w, const char *kernel_name,
                                  char **log) {
  char *text = NULL;
  size_t size = 0;
  if (read_file(w->log, &text, &size) != KILN_OK || size == 0) {
    kiln__free(text);
    text = kiln__strdup("the C++ compiler failed without printing a "
                        "message");
  }
  *log = text; /* may be NULL when memory ran out; the caller copes */
  return kiln__error(KILN_ERROR_COMPILE,
                     "the C++ compiler could not compile kernel '%s'",
                     kernel_name ? kernel_name : "?");
}

/*
 * The largest frame in the compiler's stack usage report, whose lines
 * read "place:function<TAB>bytes<TAB>qualifiers". The kernel's body is
 * usually inlined into kiln_cpu_run_thread, and the chain of calls below
 * it is shallow, so the largest frame of any function in the object
 * stands for what one thread needs. A frame qualified "static" or
 * "dynamic,bounded" is at most that size; a plain "dynamic" one (alloca,
 * variable-length arrays) has no bound, and its number, the fixed part,
 * is only a lower bound: still what the thread needs at least. *out is
 * 0 when there is no report (a compiler without -fstack-usage).
 */
static kiln_status largest_frame(const char *su_path, uint64_t *out) {
  char *text = NULL;
  size_t size = 0;
  uint64_t largest = 0;
  *out = 0;
  if (access(su_path, F_OK) != 0)
    return KILN_OK;
  kiln_status st = read_file(su_path, &text, &size);
  if (st != KILN_OK)
    return st;
  for (char *line = text; *line != '\0';) {
    char *end = line + strcspn(line, "\n");
    char *quals = memrchr(line, '\t', (size_t)(end - line));
    char *bytes = quals ? memrchr(line, '\t', (size_t)(quals - line)) : NULL;
    if (bytes != NULL) {
      unsigned long long v = strtoull(bytes + 1, NULL, 10);
      largest = v > largest ? v : largest;
    }
    line = *end != '\0' ? end + 1 : end;
  }
  kiln__free(text);
  *out = largest;
  return KILN_OK;
}

/* Reads the produced object and appends the trailer that load checks. */
static kiln_status read_object(const char *path, uint64_t stack_bytes,
                               kiln__binary *out) {
  char *data = NULL;
  size_t size = 0;
  kiln_status st = read_file(path, &data, &size);
  if (st != KILN_OK)
    return st;
  char *grown = kiln__realloc(data, size + sizeof(trailer));
  if (grown == NULL) {
    kiln__free(data);
    return kiln__oom("reading the compiled kernel");
  }
  trailer t;
  kiln__sha256 h;
  memcpy(t.magic, TRAILER_MAGIC, sizeof t.magic);
  t.object_size = size;
  t.stack_bytes = stack_bytes;
  kiln__sha256_init(&h);
  kiln__sha256_update(&h, grown, size);
  kiln__sha256_update(&h, &t.stack_bytes, sizeof t.stack_bytes);
  kiln__sha256_final(&h, t.digest);
  memcpy(grown + size, &t, sizeof t);
  out->data = grown;
  out->size = size + sizeof t;
  return KILN_OK;
}

/*
 * Compiles `source` into a shared object with the host C++ compiler. On a
 * compile error returns KILN_ERROR_COMPILE with *log the compiler's output
 * (kiln__malloc'ed). The temporary directory is removed in every case.
 */
kiln_status kiln__cpu_compile(kiln_device *dev, const char *source,
                              kiln_math_mode math, const char *kernel_name,
                              kiln__binary *out, char **log) {
  (void)dev;
  const char *cxx;
  if (log != NULL)
    *log = NULL;
  kiln_status st = compiler_path(&cxx);
  if (st != KILN_OK)
    return st;
  workdir w;
  st = workdir_create(&w);
  if (st != KILN_OK)
    return st;
  bool ok = false;
  st = write_file(w.source, source, strlen(source));
  if (st == KILN_OK)
    st = run_compiler(cxx, math, &w, false, &ok);
  if (st == KILN_OK && ok)
    st = run_compiler(cxx, math, &w, true, &ok);
  if (st == KILN_OK && !ok) {
    char *text = NULL;
    st = compile_failed(&w, kernel_name, &text);
    if (log != NULL)
      *log = text;
    else
      kiln__free(text);
  }
  uint64_t stack_bytes = 0;
  if (st == KILN_OK)
    st = largest_frame(w.stack_usage, &stack_bytes);
  if (st == KILN_OK)
    st = read_object(w.shared, stack_bytes, out);
  workdir_remove(&w);
  return st;
}

/* ---- load --------------------------------------------------------------- */

/* What load() hands out: the public part first, so a kiln__cpu_module*
 * and a loaded_module* are the same address. */
typedef struct loaded_module {
  kiln__cpu_module m;
  int fd; /* the memfd the object was loaded from, or -1 */
} loaded_module;

static const char not_ours[] = "the kernel binary is not a shared object "
                               "built for this machine";

/* Checks the trailer and returns the size of the object before it and
 * the frame size it records. */
static kiln_status check_trailer(const void *data, size_t size,
                                 size_t *object_size, uint64_t *stack_bytes) {
  trailer t;
  if (data == NULL || size < sizeof t)
    return kiln__error(KILN_ERROR_COMPILE, "%s (it is too short)", not_ours);
  memcpy(&t, (const char *)data + size - sizeof t, sizeof t);
  if (memcmp(t.magic, TRAILER_MAGIC, sizeof t.magic) != 0 ||
      t.object_size != size - sizeof t)
    return kiln__error(KILN_ERROR_COMPILE,
                       "%s (it was not produced by kiln's CPU compiler, or it "
                       "is truncated)",
                       not_ours);
  uint8_t digest[32];
  kiln__sha256 h;
  kiln__sha256_init(&h);
  kiln__sha256_update(&h, data, size - sizeof t);
  kiln__sha256_update(&h, &t.stack_bytes, sizeof t.stack_bytes);
  kiln__sha256_final(&h, digest);
  if (memcmp(digest, t.digest, sizeof digest) != 0)
    return kiln__error(KILN_ERROR_COMPILE,
                       "%s (its checksum does not match; the file is "
                       "damaged)",
                       not_ours);
  *object_size = size - sizeof t;
  *stack_bytes = t.stack_bytes;
  return KILN_OK;
}

/* Checks that `data` is an ELF shared object for this machine whose
 * segments lie inside it, and returns its thread-local storage size. */
static kiln_status check_elf(const void *data, size_t size,
                             uint64_t *tls_bytes) {
  host_ehdr eh;
  const char *what = not_ours;
  if (size < sizeof eh)
    return kiln__error(KILN_ERROR_COMPILE, "%s (it is too short)", what);
  memcpy(&eh, data, sizeof eh);
  if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
    return kiln__error(KILN_ERROR_COMPILE, "%s (no ELF header)", what);
  unsigned char cls = sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32;
  unsigned char order =
      __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB;
  if (eh.e_ident[EI_CLASS] != cls || eh.e_ident[EI_DATA] != order ||
      eh.e_machine != HOST_ELF_MACHINE || eh.e_type != ET_DYN)
    return kiln__error(KILN_ERROR_COMPILE,
                       "%s (wrong class, byte order, machine or type)", what);
  if (eh.e_phentsize != sizeof(host_phdr) || eh.e_phoff > size ||
      (size - eh.e_phoff) / sizeof(host_phdr) < eh.e_phnum)
    return kiln__error(KILN_ERROR_COMPILE,
                       "%s (its program headers are truncated)", what);
  /* threadgroup storage is the object's thread-local data (cpu_abi.h). */
  *tls_bytes = 0;
  for (unsigned i = 0; i < eh.e_phnum; i++) {
    host_phdr ph;
    memcpy(&ph, (const char *)data + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_offset > size || ph.p_filesz > size - ph.p_offset)
      return kiln__error(KILN_ERROR_COMPILE, "%s (a segment lies past its end)",
                         what);
    if (ph.p_type == PT_TLS)
      *tls_bytes = ph.p_memsz;
  }
  return KILN_OK;
}

/* Puts the bytes in an anonymous memory file. Returns its fd, or -1 when
 * memfds are unavailable (old kernels, seccomp). */
static int bytes_to_memfd(const void *data, size_t size) {
  int fd = memfd_create("kiln-kernel", MFD_CLOEXEC);
  if (fd < 0)
    return -1;
  const char *p = data;
  size_t left = size;
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      close(fd);
      return -1;
    }
    p += n;
    left -= (size_t)n;
  }
  return fd;
}

/* dlopen through /proc/self/fd/N. glibc identifies loaded objects by the
 * name string, so an object still resident under the same name (an fd
 * number reused after an unload that did not unmap) would be returned
 * instead; RTLD_NOLOAD detects that and we then fall back to a file. */
static void *dlopen_memfd(int fd, bool *name_taken) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  void *stale = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  dlerror(); /* the probe's message, if any, is not ours to report */
  *name_taken = stale != NULL;
  if (stale != NULL) {
    dlclose(stale);
    return NULL;
  }
  return dlopen(path, RTLD_NOW | RTLD_LOCAL);
}

/* The fallback: a private temporary file, unlinked once it is mapped. */
static kiln_status dlopen_tempfile(const void *data, size_t size,
                                   void **handle) {
  const char *tmp = getenv("TMPDIR");
  if (tmp == NULL || tmp[0] == '\0')
    tmp = "/tmp";
  char path[4096];
  int n = snprintf(path, sizeof path, "%s/kiln-kernel-XXXXXX.so", tmp);
  if (n < 0 || (size_t)n >= sizeof path)
    return kiln__error(KILN_ERROR_IO,
                       "the temporary directory path '%s' is too long", tmp);
  int fd = mkostemps(path, 3, O_CLOEXEC);
  if (fd < 0)
    return kiln__error(KILN_ERROR_IO,
                       "could not create a temporary file under '%s' to "
                       "load a kernel: %s",
                       tmp, strerror(errno));
  close(fd);
  kiln_status st = write_file(path, data, size);
  if (st == KILN_OK) {
    *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (*handle == NULL) {
      const char *msg = dlerror();
      st = kiln__error(KILN_ERROR_COMPILE,
                       "the kernel binary could not be loaded: %s",
                       msg ? msg : "unknown dlopen error");
    }
  }
  unlink(path);
  return st;
}

/* Opens the object from memory (or a file) and returns the dl handle. */
static kiln_status open_object(const void *data, size_t size, void **handle,
                               int *fd_out) {
  *fd_out = -1;
  int fd = bytes_to_memfd(data, size);
  if (fd >= 0) {
    bool name_taken = false;
    void *h = dlopen_memfd(fd, &name_taken);
    if (h != NULL) {
      *handle = h;
      *fd_out = fd;
      return KILN_OK;
    }
    const char *msg = name_taken ? NULL : dlerror();
    kiln_status st = kiln__error(KILN_ERROR_COMPILE,
                                 "the kernel binary could not be loaded: %s",
                                 msg ? msg : "unknown dlopen error");
    close(fd);
    if (!name_taken)
      return st;
  }
  return dlopen_tempfile(data, size, handle);
}

/* Resolves one of the four entry points; NULL with an error if missing. */
static void *entry_point(void *handle, const char *name) {
  dlerror();
  void *sym = dlsym(handle, name);
  if (sym == NULL) {
    const char *msg = dlerror();
    kiln__error(KILN_ERROR_COMPILE,
                "the kernel binary does not export '%s' (%s); it was not "
                "built by kiln's CPU backend",
                name, msg ? msg : "symbol is NULL");
  }
  return sym;
}

/* Binds the entry points and checks the ABI version. */
static kiln_status bind_entry_points(void *handle, kiln__cpu_module *m) {
  kiln_cpu_abi_version_fn version;
  kiln_cpu_kernel_flags_fn flags;
  /* dlsym returns void*; the cast to a function pointer goes through
   * memcpy because ISO C does not define the direct conversion. */
  void *sym[4];
  static const char *const names[4] = {
      "kiln_cpu_abi_version", "kiln_cpu_kernel_flags", "kiln_cpu_run_group",
      "kiln_cpu_run_thread"};
  for (int i = 0; i < 4; i++) {
    sym[i] = entry_point(handle, names[i]);
    if (sym[i] == NULL)
      return KILN_ERROR_COMPILE;
  }
  memcpy(&version, &sym[0], sizeof version);
  memcpy(&flags, &sym[1], sizeof flags);
  memcpy(&m->run_group, &sym[2], sizeof m->run_group);
  memcpy(&m->run_thread, &sym[3], sizeof m->run_thread);
  uint32_t v = version();
  if (v != KILN_CPU_ABI_VERSION)
    return kiln__error(KILN_ERROR_COMPILE,
                       "the kernel binary was built for CPU ABI version %u, "
                       "but this kiln uses version %u",
                       (unsigned)v, (unsigned)KILN_CPU_ABI_VERSION);
  m->flags = flags();
  return KILN_OK;
}

/*
 * Loads a binary that kiln__cpu_compile produced. Its trailer must match
 * (magic, size, SHA-256), the object must be an ELF shared object for this
 * machine, and it must export the CPU ABI's four entry points with the
 * right ABI version; anything else is refused with KILN_ERROR_COMPILE and
 * nothing is left loaded.
 */
kiln_status kiln__cpu_load(kiln_device *dev, const void *data, size_t size,
                           void **module, kiln__module_info *info) {
  (void)dev;
  uint64_t tls = 0, stack = 0;
  kiln_status st = check_trailer(data, size, &size, &stack);
  if (st == KILN_OK)
    st = check_elf(data, size, &tls);
  if (st != KILN_OK)
    return st;
  loaded_module *lm = kiln__calloc(1, sizeof *lm);
  if (lm == NULL)
    return kiln__oom("loading a CPU kernel");
  void *handle = NULL;
  st = open_object(data, size, &handle, &lm->fd);
  if (st == KILN_OK) {
    st = bind_entry_points(handle, &lm->m);
    if (st != KILN_OK) {
      dlclose(handle);
      if (lm->fd >= 0)
        close(lm->fd);
    }
  }
  if (st != KILN_OK) {
    kiln__free(lm);
    return st;
  }
  lm->m.dl_handle = handle;
  lm->m.tls_bytes = tls;
  lm->m.stack_bytes = stack;
  if (info != NULL) {
    memset(info, 0, sizeof *info); /* max_threads 0: no per-kernel limit */
    info->threadgroup_memory = tls;
    info->registers = -1;
    info->local_memory = 0;
    info->needs_fibers = (lm->m.flags & KILN_CPU_NEEDS_FIBERS) != 0;
    info->stack_bytes = stack;
  }
  *module = &lm->m;
  return KILN_OK;
}

/* Unloads a module from kiln__cpu_load. No launch may still use it (the
 * core keeps kernels alive while work is pending). */
void kiln__cpu_unload(kiln_device *dev, void *module) {
  (void)dev;
  if (module == NULL)
    return;
  loaded_module *lm = module;
  dlclose(lm->m.dl_handle);
  /* Closed only now so no other object can be named /proc/self/fd/N
   * while this one is loaded. */
  if (lm->fd >= 0)
    close(lm->fd);
  kiln__free(lm);
}

/* ---- compile for a named target (kiln compile --target cpu) ------------ */

/*
 * The CPU backend's only target is "cpu": the machine kiln runs on. The
 * report has no registers or spills (a CPU has neither in this sense); its
 * threadgroup memory is the object's thread-local storage.
 */
kiln_status kiln__cpu_compile_for_target(const char *target,
                                         const char *source,
                                         kiln_math_mode math,
                                         const char *kernel_name,
                                         kiln__binary *out, char **log,
                                         kiln__compile_info *info) {
  if (target != NULL && strcmp(target, "cpu") != 0)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "the CPU backend compiles for target 'cpu' only, not "
                       "'%s'",
                       target);
  uint64_t t0 = kiln__now_ns();
  kiln_status st =
      kiln__cpu_compile(NULL, source, math, kernel_name, out, log);
  if (st != KILN_OK)
    return st;
  size_t object_size = 0;
  uint64_t tls = 0, stack = 0;
  st = check_trailer(out->data, out->size, &object_size, &stack);
  if (st == KILN_OK)
    st = check_elf(out->data, object_size, &tls);
  if (st != KILN_OK) {
    kiln__free(out->data);
    out->data = NULL;
    out->size = 0;
    return st;
  }
  if (info != NULL) {
    memset(info, 0, sizeof *info);
    info->registers = -1;
    info->shared_bytes = tls;
    info->local_bytes = stack;
    info->compile_ms = (double)(kiln__now_ns() - t0) * 1e-6;
  }
  return KILN_OK;
}

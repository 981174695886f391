/*
 * Loads libcuda.so.1 and NVRTC with dlopen, once per process, and keeps
 * every symbol in one table each (see cuda_loader.h). Also the checked-call
 * machinery: the failed call's name and result are kept per thread and
 * turned into error sentences with the driver's own error names.
 */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/cuda/cuda_loader.h"
#include "core/util.h"

/* ---- the driver ---------------------------------------------------------- */

static struct {
  pthread_once_t once;
  kiln__cu_api api;
  bool ok;
  char why[512];
} g_cu = {PTHREAD_ONCE_INIT, {0}, false, ""};

/* dlsym into a function-pointer slot. ISO C does not define converting
 * void* to a function pointer, so the bits travel through memcpy. */
static bool bind_symbol(void *handle, const char *name, void *slot) {
  void *sym = dlsym(handle, name);
  if (sym == NULL)
    return false;
  memcpy(slot, &sym, sizeof sym);
  return true;
}

static void load_driver(void) {
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    snprintf(g_cu.why, sizeof g_cu.why,
             "libcuda.so.1 was not found: no NVIDIA driver is installed");
    return;
  }
  kiln__cu_api *api = &g_cu.api;
#define KILN__CU_BIND_(name, sym, params)                                     \
  if (!bind_symbol(h, sym, &api->name)) {                                     \
    snprintf(g_cu.why, sizeof g_cu.why,                                       \
             "the NVIDIA driver (libcuda.so.1) is too old: it lacks %s; "     \
             "install a driver for CUDA 12 or later",                         \
             sym);                                                            \
    dlclose(h);                                                               \
    return;                                                                   \
  }
  KILN__CU_FUNCS(KILN__CU_BIND_)
#undef KILN__CU_BIND_
  /* Optional: without them every stream has the default priority. */
  if (!bind_symbol(h, "cuStreamCreateWithPriority",
                   &api->cuStreamCreateWithPriority) ||
      !bind_symbol(h, "cuCtxGetStreamPriorityRange",
                   &api->cuCtxGetStreamPriorityRange)) {
    api->cuStreamCreateWithPriority = NULL;
    api->cuCtxGetStreamPriorityRange = NULL;
  }
  CUresult r = api->cuInit(0);
  if (r != CUDA_SUCCESS) {
    /* The library stays loaded: its error names make the sentence. */
    snprintf(g_cu.why, sizeof g_cu.why,
             "the NVIDIA driver could not be initialised (cuInit failed: "
             "%s: %s)",
             kiln__cu_error_name(r), kiln__cu_error_text(r));
    return;
  }
  if (api->cuDriverGetVersion(&api->driver_version) != CUDA_SUCCESS)
    api->driver_version = 0;
  /* Optional: without it every launch is a plain cuLaunchKernel. */
  if (!bind_symbol(h, "cuLaunchKernelEx", &api->cuLaunchKernelEx))
    api->cuLaunchKernelEx = NULL;
  g_cu.ok = true;
}

/* The driver table (see cuda_loader.h). */
const kiln__cu_api *kiln__cu_load(const char **why) {
  pthread_once(&g_cu.once, load_driver);
  if (!g_cu.ok) {
    if (why != NULL)
      *why = g_cu.why;
    return NULL;
  }
  return &g_cu.api;
}

/* ---- NVRTC --------------------------------------------------------------- */

static struct {
  pthread_once_t once;
  kiln__nvrtc_api api;
  bool ok;
  char why[768];
  char soname[512];
} g_nvrtc = {PTHREAD_ONCE_INIT, {0}, false, "", ""};

static const char *const nvrtc_names[] = {"libnvrtc.so.13", "libnvrtc.so.12",
                                          "libnvrtc.so"};
#define NUM_NVRTC_NAMES (sizeof nvrtc_names / sizeof nvrtc_names[0])

/* Tries each soname in `dir` ("" for the plain library search). */
static void *open_nvrtc_in(const char *dir) {
  for (size_t i = 0; i < NUM_NVRTC_NAMES; i++) {
    char path[512];
    int n = dir[0] ? snprintf(path, sizeof path, "%s/%s", dir, nvrtc_names[i])
                   : snprintf(path, sizeof path, "%s", nvrtc_names[i]);
    if (n < 0 || (size_t)n >= sizeof path)
      continue;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h != NULL) {
      snprintf(g_nvrtc.soname, sizeof g_nvrtc.soname, "%s", path);
      return h;
    }
  }
  return NULL;
}

/* ---- finding NVRTC without loading it ------------------------------------- */

/*
 * A disk-cache hit needs no compiler, but the cache key must name the
 * compiler that would build the binary. dlopen of NVRTC (a ~100 MB
 * library) just to read its version cost milliseconds on every first
 * launch, so kiln finds the file itself, with stat only, in the dynamic
 * linker's order: $LD_LIBRARY_PATH, /etc/ld.so.cache, the system
 * directories, then /usr/local/cuda/lib64 and $CUDA_HOME/lib64. The file's
 * real path, size and modification time identify it, and it is then
 * loaded by that path, so what the key names is what compiles. (The
 * RUNPATH of the executable is not searched; kiln never relied on it.)
 */
static struct {
  pthread_once_t once;
  char path[512];     /* the file to dlopen; "" if the search found none */
  char identity[768]; /* "<realpath> <size> <mtime>" */
} g_nvrtc_file = {PTHREAD_ONCE_INIT, "", ""};

#if defined(__x86_64__)
#define HOST_ELF_MACHINE 62 /* EM_X86_64 */
#elif defined(__aarch64__)
#define HOST_ELF_MACHINE 183 /* EM_AARCH64 */
#endif

/* Whether `path` is a regular file that this process could load: a
 * 64-bit ELF of the host's machine (the linker skips others too). */
static bool loadable(const char *path, struct stat *st) {
  if (stat(path, st) != 0 || !S_ISREG(st->st_mode))
    return false;
  unsigned char h[20];
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return false;
  size_t n = fread(h, 1, sizeof h, f);
  fclose(f);
  if (n != sizeof h || memcmp(h, "\177ELF", 4) != 0 || h[4] != 2)
    return false;
#ifdef HOST_ELF_MACHINE
  unsigned machine = h[18] | (unsigned)h[19] << 8; /* little-endian hosts */
  if (machine != HOST_ELF_MACHINE)
    return false;
#endif
  return true;
}

/* Takes `path` as the NVRTC to use if it is loadable; true if taken. */
static bool take_candidate(const char *path) {
  struct stat st;
  if (strlen(path) >= sizeof g_nvrtc_file.path || !loadable(path, &st))
    return false;
  char real[PATH_MAX];
  if (realpath(path, real) == NULL)
    return false;
  snprintf(g_nvrtc_file.path, sizeof g_nvrtc_file.path, "%s", path);
  snprintf(g_nvrtc_file.identity, sizeof g_nvrtc_file.identity,
           "%.600s %lld %lld.%09ld", real, (long long)st.st_size,
           (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
  return true;
}

/* Tries `name` in each directory of a ':'-separated list. */
static bool search_list(const char *list, const char *name) {
  while (list != NULL && *list != '\0') {
    size_t len = strcspn(list, ":;");
    char path[768];
    if (len > 0 && len < 512) {
      snprintf(path, sizeof path, "%.*s/%s", (int)len, list, name);
      if (take_candidate(path))
        return true;
    }
    list += len;
    if (*list != '\0')
      list++;
  }
  return false;
}

/* glibc's ld.so.cache (format "glibc-ld.so.cache1.1"): a header, then
 * 24-byte entries {int32 flags; uint32 key, value; ...} whose key (soname)
 * and value (path) are offsets from the header. */
#define LDCACHE_MAGIC "glibc-ld.so.cache1.1"
#define LDCACHE_HEADER 48
#define LDCACHE_ENTRY 24

static uint32_t read_u32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* The NUL-terminated string at `off` of the table, or NULL. */
static const char *cache_string(const unsigned char *base, size_t size,
                                uint32_t off) {
  if (off >= size || memchr(base + off, '\0', size - off) == NULL)
    return NULL;
  return (const char *)base + off;
}

/* Tries every cache entry for `name`, in the cache's order. */
static bool search_ld_cache(const unsigned char *data, size_t size,
                            const char *name) {
  const unsigned char *hit =
      memmem(data, size, LDCACHE_MAGIC, sizeof LDCACHE_MAGIC - 1);
  if (hit == NULL)
    return false;
  size_t avail = size - (size_t)(hit - data);
  if (avail < LDCACHE_HEADER)
    return false;
  uint32_t nlibs = read_u32(hit + 20);
  if (nlibs > (avail - LDCACHE_HEADER) / LDCACHE_ENTRY)
    return false;
  for (uint32_t i = 0; i < nlibs; i++) {
    const unsigned char *e = hit + LDCACHE_HEADER + (size_t)i * LDCACHE_ENTRY;
    const char *key = cache_string(hit, avail, read_u32(e + 4));
    const char *value = cache_string(hit, avail, read_u32(e + 8));
    if (key != NULL && value != NULL && strcmp(key, name) == 0 &&
        take_candidate(value))
      return true;
  }
  return false;
}

/* Reads /etc/ld.so.cache (kiln__malloc'ed; NULL if absent). */
static unsigned char *read_ld_cache(size_t *size) {
  FILE *f = fopen("/etc/ld.so.cache", "rb");
  if (f == NULL)
    return NULL;
  unsigned char *data = NULL;
  long n = -1;
  if (fseek(f, 0, SEEK_END) == 0)
    n = ftell(f);
  if (n > 0 && n < (1L << 26) && fseek(f, 0, SEEK_SET) == 0)
    data = kiln__malloc((size_t)n);
  if (data != NULL && fread(data, 1, (size_t)n, f) != (size_t)n) {
    kiln__free(data);
    data = NULL;
  }
  fclose(f);
  *size = data != NULL ? (size_t)n : 0;
  return data;
}

static const char *const system_dirs =
    "/lib64:/usr/lib64:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:"
    "/lib/aarch64-linux-gnu:/usr/lib/aarch64-linux-gnu:/lib:/usr/lib";

static void find_nvrtc(void) {
  size_t cache_size = 0;
  unsigned char *cache = read_ld_cache(&cache_size);
  bool found = false;
  for (size_t i = 0; i < NUM_NVRTC_NAMES && !found; i++) {
    const char *name = nvrtc_names[i];
    found = search_list(getenv("LD_LIBRARY_PATH"), name) ||
            (cache != NULL && search_ld_cache(cache, cache_size, name)) ||
            search_list(system_dirs, name);
  }
  kiln__free(cache);
  const char *home = getenv("CUDA_HOME");
  for (size_t i = 0; i < NUM_NVRTC_NAMES && !found; i++) {
    found = search_list("/usr/local/cuda/lib64", nvrtc_names[i]);
    if (!found && home != NULL && home[0] != '\0' && strlen(home) < 400) {
      char dir[512];
      snprintf(dir, sizeof dir, "%s/lib64", home);
      found = search_list(dir, nvrtc_names[i]);
    }
  }
}

/* The identity of the NVRTC kiln would load (see cuda_loader.h). */
const char *kiln__nvrtc_identity(void) {
  pthread_once(&g_nvrtc_file.once, find_nvrtc);
  return g_nvrtc_file.path[0] ? g_nvrtc_file.identity : NULL;
}

/* The file found by the search, else the plain dlopen search as before
 * (a layout the search does not know, such as a RUNPATH). */
static void *open_nvrtc(void) {
  if (kiln__nvrtc_identity() != NULL) {
    void *h = dlopen(g_nvrtc_file.path, RTLD_NOW | RTLD_LOCAL);
    if (h != NULL) {
      snprintf(g_nvrtc.soname, sizeof g_nvrtc.soname, "%s",
               g_nvrtc_file.path);
      return h;
    }
  }
  void *h = open_nvrtc_in("");
  if (h == NULL)
    h = open_nvrtc_in("/usr/local/cuda/lib64");
  const char *home = getenv("CUDA_HOME");
  if (h == NULL && home != NULL && home[0] != '\0' && strlen(home) < 400) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/lib64", home);
    h = open_nvrtc_in(dir);
  }
  return h;
}

static void load_nvrtc(void) {
  void *h = open_nvrtc();
  if (h == NULL) {
    snprintf(g_nvrtc.why, sizeof g_nvrtc.why,
             "NVRTC (the CUDA runtime compiler) was not found: tried "
             "libnvrtc.so.13, libnvrtc.so.12 and libnvrtc.so on the library "
             "path, in /usr/local/cuda/lib64 and in $CUDA_HOME/lib64; "
             "install the CUDA toolkit (12 or 13) or set CUDA_HOME");
    return;
  }
  kiln__nvrtc_api *api = &g_nvrtc.api;
#define KILN__NVRTC_BIND_(name, sym, params)                                  \
  if (!bind_symbol(h, sym, &api->name)) {                                     \
    snprintf(g_nvrtc.why, sizeof g_nvrtc.why,                                 \
             "NVRTC ('%s') is too old: it lacks %s; install CUDA 12 or 13",   \
             g_nvrtc.soname, sym);                                            \
    dlclose(h);                                                               \
    return;                                                                   \
  }
  KILN__NVRTC_FUNCS(KILN__NVRTC_BIND_)
  KILN__NVRTC_BIND_(nvrtcGetErrorString, "nvrtcGetErrorString", ())
#undef KILN__NVRTC_BIND_
  /* Optional: a missing one only makes target checks less precise. */
  if (!bind_symbol(h, "nvrtcGetNumSupportedArchs",
                   &api->nvrtcGetNumSupportedArchs) ||
      !bind_symbol(h, "nvrtcGetSupportedArchs", &api->nvrtcGetSupportedArchs)) {
    api->nvrtcGetNumSupportedArchs = NULL;
    api->nvrtcGetSupportedArchs = NULL;
  }
  if (api->nvrtcVersion(&api->major, &api->minor) != NVRTC_SUCCESS) {
    snprintf(g_nvrtc.why, sizeof g_nvrtc.why,
             "NVRTC ('%s') could not report its version; the installation "
             "looks damaged",
             g_nvrtc.soname);
    dlclose(h);
    return;
  }
  api->soname = g_nvrtc.soname;
  g_nvrtc.ok = true;
}

/* The NVRTC table (see cuda_loader.h). */
const kiln__nvrtc_api *kiln__nvrtc_load(const char **why) {
  pthread_once(&g_nvrtc.once, load_nvrtc);
  if (!g_nvrtc.ok) {
    if (why != NULL)
      *why = g_nvrtc.why;
    return NULL;
  }
  return &g_nvrtc.api;
}

/* ---- checked calls -------------------------------------------------------- */

/* The last failed call on this thread. Plain thread-locals: reading them
 * right after the failing call is all the error path needs. */
static _Thread_local const char *tl_call = "";
static _Thread_local int tl_result;
static _Thread_local bool tl_nvrtc;

/* Notes a failed driver call; see cuda_loader.h. */
CUresult kiln__cu_note(CUresult r, const char *call) {
  if (r != CUDA_SUCCESS) {
    tl_call = call;
    tl_result = r;
    tl_nvrtc = false;
  }
  return r;
}

/* Notes a failed NVRTC call; see cuda_loader.h. */
nvrtcResult kiln__nvrtc_note(nvrtcResult r, const char *call) {
  if (r != NVRTC_SUCCESS) {
    tl_call = call;
    tl_result = r;
    tl_nvrtc = true;
  }
  return r;
}

/* The result of this thread's last failed driver call. */
CUresult kiln__cu_last_result(void) {
  return tl_nvrtc ? CUDA_SUCCESS : tl_result;
}

/* The name of this thread's last failed call ("cuMemAlloc"). */
const char *kiln__cu_last_call(void) {
  return tl_call;
}

/* The driver's name for `r`, or a fixed fallback when it has none. */
const char *kiln__cu_error_name(CUresult r) {
  const char *s = NULL;
  if (g_cu.api.cuGetErrorName == NULL ||
      g_cu.api.cuGetErrorName(r, &s) != CUDA_SUCCESS || s == NULL)
    return "an unknown CUDA error";
  return s;
}

/* The driver's description of `r`, or a fixed fallback. */
const char *kiln__cu_error_text(CUresult r) {
  const char *s = NULL;
  if (g_cu.api.cuGetErrorString == NULL ||
      g_cu.api.cuGetErrorString(r, &s) != CUDA_SUCCESS || s == NULL)
    return "no description available";
  return s;
}

/* Formats the caller's part of a message into `buf`. */
static void format_head(char *buf, size_t size, const char *fmt, va_list ap) {
  int n = vsnprintf(buf, size, fmt, ap);
  if (n < 0)
    buf[0] = '\0';
}

/* Sets an error for the last failed driver call; see cuda_loader.h. */
kiln_status kiln__cu_error(kiln_status status, const char *fmt, ...) {
  char head[1024];
  va_list ap;
  va_start(ap, fmt);
  format_head(head, sizeof head, fmt, ap);
  va_end(ap);
  CUresult r = tl_nvrtc ? CUDA_ERROR_INVALID_VALUE : tl_result;
  return kiln__error(status, "%s (%s failed: %s: %s).", head, tl_call,
                     kiln__cu_error_name(r), kiln__cu_error_text(r));
}

/* Sets an error for the last failed NVRTC call; see cuda_loader.h. */
kiln_status kiln__nvrtc_error(kiln_status status, const char *fmt, ...) {
  char head[1024];
  va_list ap;
  va_start(ap, fmt);
  format_head(head, sizeof head, fmt, ap);
  va_end(ap);
  const char *text = "an unknown NVRTC error";
  if (g_nvrtc.api.nvrtcGetErrorString != NULL) {
    const char *s = g_nvrtc.api.nvrtcGetErrorString(tl_result);
    if (s != NULL)
      text = s;
  }
  return kiln__error(status, "%s (%s failed: %s).", head, tl_call, text);
}

/* Errors that leave the context unusable (cuda.h documents each as
 * requiring the process to terminate and relaunch). */
int kiln__cu_is_sticky(CUresult r) {
  switch (r) {
  case CUDA_ERROR_ECC_UNCORRECTABLE:
  case CUDA_ERROR_NVLINK_UNCORRECTABLE:
  case CUDA_ERROR_CONTAINED:
  case CUDA_ERROR_ILLEGAL_ADDRESS:
  case CUDA_ERROR_LAUNCH_TIMEOUT:
  case CUDA_ERROR_CONTEXT_IS_DESTROYED:
  case CUDA_ERROR_ASSERT:
  case CUDA_ERROR_HARDWARE_STACK_ERROR:
  case CUDA_ERROR_ILLEGAL_INSTRUCTION:
  case CUDA_ERROR_MISALIGNED_ADDRESS:
  case CUDA_ERROR_INVALID_ADDRESS_SPACE:
  case CUDA_ERROR_INVALID_PC:
  case CUDA_ERROR_LAUNCH_FAILED:
  case CUDA_ERROR_TENSOR_MEMORY_LEAK:
    return 1;
  default:
    return 0;
  }
}

/*
 * Loads libcuda.so.1 and NVRTC with dlopen, once per process, and keeps
 * every symbol in one table each (see cuda_loader.h). Also the checked-call
 * machinery: the failed call's name and result are kept per thread and
 * turned into error sentences with the driver's own error names.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void *open_nvrtc(void) {
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

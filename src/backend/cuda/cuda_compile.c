/*
 * The CUDA backend's compiler side: NVRTC compiles generated source for
 * the device's architecture straight to a cubin (machine code, so the disk
 * cache holds something the driver loads without a JIT step), ptxas's
 * resource report is parsed for `kiln compile`, and cubins are checked and
 * loaded as modules.
 *
 * Options. -std=c++17 and -default-device (the prelude's helpers need no
 * __device__ markers); safe math is IEEE with no contraction
 * (--fmad=false), fast math is --use_fast_math. --minimal (NVRTC 12.4+)
 * leaves out the CUDA runtime's device-side declarations (textures,
 * device launches, cudaMalloc), which kiln's source never uses: the
 * cubin is byte-identical and a compile takes about 15% less time.
 *
 * What a small kernel's compile costs (NVRTC 13, --time): an empty
 * kernel with no prelude takes ~17 ms (front end 4, NVVM 5, ptxas 6);
 * kiln's prelude sections that every kernel gets and the entry glue add
 * ~8 (bench_cuda's kernel: ~25 ms). No option cuts the floor: -std
 * levels, --builtin-move-forward/-initializer-list=false and
 * --Ofast-compile (which also slows the code) gain at most 1-2 ms.
 * Precompiled headers (--pch, --use-pch) do not help: a PCH file is
 * refused by any other process ("incompatible PCH heap allocation
 * address"), so a disk cache of them cannot serve a cold start, #line
 * directives (kiln's error mapping) disable their creation, and within
 * one process they saved ~2 ms of a 25 ms compile.
 *
 * Warm-up. A process's first compile pays for loading NVRTC (a ~100 MB
 * library) and for NVRTC's own first-use set-up (its builtins library,
 * first touch of its code, the growth of the thread's malloc arena):
 * ~15-20 ms on top of the compile, and more on a machine that has just
 * started, where the first touch of each page of NVRTC's code reads it
 * from disk. The CUDA backend opens its first context (~100 ms of driver
 * work) on a short-lived thread while the calling thread warms NVRTC up
 * with a representative generated kernel (see warm_body), so the user's
 * first kernel finds the compiler, and the pages of it that it needs,
 * warm. Both finish before the call returns: NVRTC crashes if a thread is
 * still loading it when the process exits, so it never runs in the
 * background.
 */
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"
#include "core/kcache.h"
#include "core/util.h"
#include "dialect/dialect.h"

#ifndef EM_CUDA
#define EM_CUDA 190
#endif

#define PROGRAM_NAME "kiln-generated.cu"
#define MAX_OPTIONS 8

static const char *const common_options[] = {"-std=c++17", "-default-device"};
#define NUM_COMMON (sizeof common_options / sizeof common_options[0])
static const char safe_option[] = "--fmad=false";
static const char fast_option[] = "--use_fast_math";
static const char ptxas_option[] = "--ptxas-options=-v";
static const char minimal_option[] = "--minimal";

/* Cleared when this NVRTC refuses --minimal despite its version, so that
 * the refusal costs one retry per process, not one per compile. */
static atomic_bool g_minimal_ok = true;

/* Whether to pass --minimal: NVRTC 12.4 introduced it. */
static bool use_minimal(const kiln__nvrtc_api *nv) {
  return (nv->major > 12 || (nv->major == 12 && nv->minor >= 4)) &&
         atomic_load_explicit(&g_minimal_ok, memory_order_relaxed);
}

/* ---- targets ------------------------------------------------------------ */

/* Parses "sm_XY" / "sm_XYa" (two or three digits); returns the number
 * (90 for sm_90a) or -1. */
static int parse_target(const char *t) {
  if (t == NULL || strncmp(t, "sm_", 3) != 0)
    return -1;
  const char *p = t + 3;
  int v = 0, digits = 0;
  while (*p >= '0' && *p <= '9' && digits < 4) {
    v = v * 10 + (*p - '0');
    p++;
    digits++;
  }
  if (digits < 2 || digits > 3)
    return -1;
  if (*p == 'a')
    p++;
  return *p == '\0' ? v : -1;
}

/* Refuses an architecture this NVRTC cannot target, naming its range. */
static kiln_status check_supported(const kiln__nvrtc_api *nv,
                                   const char *arch, int number) {
  if (nv->nvrtcGetNumSupportedArchs == NULL ||
      nv->nvrtcGetSupportedArchs == NULL)
    return KILN_OK; /* NVRTC itself will say so */
  int n = 0;
  if (nv->nvrtcGetNumSupportedArchs(&n) != NVRTC_SUCCESS || n <= 0 || n > 256)
    return KILN_OK;
  int archs[256];
  if (nv->nvrtcGetSupportedArchs(archs) != NVRTC_SUCCESS)
    return KILN_OK;
  for (int i = 0; i < n; i++)
    if (archs[i] == number)
      return KILN_OK;
  return kiln__error(KILN_ERROR_UNSUPPORTED,
                     "NVRTC %d.%d cannot compile for %s; it supports sm_%d "
                     "to sm_%d (install a CUDA toolkit that knows this "
                     "architecture)",
                     nv->major, nv->minor, arch, archs[0], archs[n - 1]);
}

/* ---- ptxas reports ------------------------------------------------------- */

/* The number just before `unit` on this line ("12 bytes stack frame"),
 * or -1. `line_end` bounds the search. */
static long long number_before(const char *line, const char *line_end,
                               const char *unit) {
  const char *hit = strstr(line, unit);
  if (hit == NULL || hit >= line_end)
    return -1;
  const char *p = hit;
  while (p > line && p[-1] == ' ')
    p--;
  const char *end = p;
  while (p > line && p[-1] >= '0' && p[-1] <= '9')
    p--;
  if (p == end)
    return -1;
  return strtoll(p, NULL, 10);
}

/* The number just after `prefix` on this line ("Used 32 registers"). */
static long long number_after(const char *line, const char *line_end,
                              const char *prefix) {
  const char *hit = strstr(line, prefix);
  if (hit == NULL || hit >= line_end)
    return -1;
  hit += strlen(prefix);
  while (hit < line_end && *hit == ' ')
    hit++;
  if (hit >= line_end || *hit < '0' || *hit > '9')
    return -1;
  return strtoll(hit, NULL, 10);
}

/* Reads one line of the entry's block into `info`. */
static void parse_line(const char *line, const char *end,
                       kiln__compile_info *info) {
  long long v;
  if ((v = number_before(line, end, " bytes stack frame")) >= 0)
    info->local_bytes = (uint64_t)v;
  if ((v = number_before(line, end, " bytes spill stores")) >= 0)
    info->spill_store_bytes = (uint64_t)v;
  if ((v = number_before(line, end, " bytes spill loads")) >= 0)
    info->spill_load_bytes = (uint64_t)v;
  if ((v = number_after(line, end, "Used ")) >= 0 &&
      number_before(line, end, " registers") == v)
    info->registers = (int)v;
  if ((v = number_before(line, end, " bytes smem")) >= 0)
    info->shared_bytes = (uint64_t)v;
}

/* The function a ptxas line introduces, copied into `out` ("" if the line
 * introduces none): "Compiling entry function 'NAME' for 'sm_90a'",
 * "Function properties for NAME" (quoted or not, any prefix such as
 * "ptxas info    :" with any spacing). */
static void line_function(const char *line, const char *end, char *out,
                          size_t size) {
  static const char *const markers[] = {"entry function", "properties for"};
  out[0] = '\0';
  for (size_t m = 0; m < 2; m++) {
    const char *hit = strstr(line, markers[m]);
    if (hit == NULL || hit >= end)
      continue;
    const char *p = hit + strlen(markers[m]);
    while (p < end && (*p == ' ' || *p == '\'' || *p == '"' || *p == '`'))
      p++;
    size_t n = 0;
    while (p + n < end && p[n] != '\'' && p[n] != '"' && p[n] != ' ' &&
           p[n] != '\r' && p[n] != ':' && n + 1 < size)
      n++;
    memcpy(out, p, n);
    out[n] = '\0';
    return;
  }
}

/* Whether function name `fn` (as ptxas printed it) is `entry`: the same,
 * or a mangled name that contains it as an identifier ("_Z10kiln_entry"
 * or a "$"-suffixed variant). */
static bool same_function(const char *fn, const char *entry) {
  const char *hit = strstr(fn, entry);
  if (hit == NULL)
    return false;
  char after = hit[strlen(entry)];
  bool left_ok = hit == fn || (hit[-1] >= '0' && hit[-1] <= '9');
  bool right_ok = after == '\0' || after == '$' || after == '(';
  return left_ok && right_ok;
}

/* Parses the lines of `log` that belong to `entry` (or, when `any`, every
 * line) into `info`; returns whether a line named the entry. */
static bool parse_blocks(const char *log, const char *entry, bool any,
                         kiln__compile_info *info) {
  bool seen = false, inside = any;
  for (const char *p = log; *p != '\0';) {
    const char *end = p + strcspn(p, "\n");
    char fn[256];
    line_function(p, end, fn, sizeof fn);
    if (fn[0] != '\0') {
      inside = any || same_function(fn, entry);
      seen = seen || same_function(fn, entry);
    }
    if (inside)
      parse_line(p, end, info);
    p = *end ? end + 1 : end;
  }
  return seen;
}

/*
 * Parses `ptxas -v` output for function `entry`: the lines after any line
 * naming it ("Compiling entry function", "Function properties for") up to
 * a line naming another function. If no line names it (a report format
 * this parser does not know), every line is read: kiln's modules have one
 * entry point. Fields not found keep their values (callers preset
 * registers to -1).
 */
void kiln__cuda_parse_ptxas(const char *log, const char *entry,
                            kiln__compile_info *info) {
  if (log == NULL || entry == NULL)
    return;
  if (!parse_blocks(log, entry, false, info))
    (void)parse_blocks(log, entry, true, info);
}

/* ---- NVRTC ----------------------------------------------------------------- */

/* The program log, kiln__malloc'ed ("" when empty); NULL without memory. */
static char *program_log(const kiln__nvrtc_api *nv, nvrtcProgram prog) {
  size_t size = 0;
  if (KILN__NVRTC(nv, nvrtcGetProgramLogSize, prog, &size) != NVRTC_SUCCESS)
    size = 0;
  char *text = kiln__malloc(size + 1);
  if (text == NULL)
    return NULL;
  text[0] = '\0';
  if (size > 0 &&
      KILN__NVRTC(nv, nvrtcGetProgramLog, prog, text) != NVRTC_SUCCESS)
    text[0] = '\0';
  text[size] = '\0';
  return text;
}

/* Appends one log line in the form the rest of kiln reads: NVRTC writes
 * "body(3): error: ..." where GCC and clang write "body:3: error: ...".
 * Blank lines and NVRTC's closing count ("1 error detected in the
 * compilation of ...") are dropped so the message stays one paragraph. */
static void normalize_line(kiln__strbuf *sb, const char *line, size_t len) {
  size_t name = 0;
  while (name < len && line[name] != '(' && line[name] != ' ' &&
         line[name] != ':')
    name++;
  size_t digits = name + 1;
  while (digits < len && line[digits] >= '0' && line[digits] <= '9')
    digits++;
  bool empty = strspn(line, " \t\r") >= len;
  bool summary = len > 0 && line[0] >= '0' && line[0] <= '9' &&
                 strstr(line, " detected in the compilation of") != NULL &&
                 (size_t)(strstr(line, " detected in the compilation of") -
                          line) < len;
  if (empty || summary)
    return;
  if (name > 0 && name < len && line[name] == '(' && digits > name + 1 &&
      digits + 1 < len && line[digits] == ')' && line[digits + 1] == ':') {
    kiln__sb_append_n(sb, line, name);
    kiln__sb_append(sb, ":");
    kiln__sb_append_n(sb, line + name + 1, digits - name - 1);
    kiln__sb_append_n(sb, line + digits + 1, len - digits - 1);
  } else {
    kiln__sb_append_n(sb, line, len);
  }
  kiln__sb_append(sb, "\n");
}

/* Says in the user's terms what ptxas's shared-memory refusal means. */
static void explain_shared(kiln__strbuf *sb, const char *log,
                           const char *arch) {
  const char *hit = strstr(log, "uses too much shared data (");
  unsigned long long used = 0, max = 0;
  if (hit == NULL ||
      sscanf(hit, "uses too much shared data (%llx bytes, %llx max)", &used,
             &max) != 2)
    return;
  kiln__sb_appendf(sb,
                   "the kernel declares %llu bytes of threadgroup memory, "
                   "but %s allows at most %llu bytes of static threadgroup "
                   "memory per threadgroup\n",
                   used, arch, max);
}

/* The compile log as kiln reports it (see normalize_line); NULL without
 * memory. Takes ownership of `raw`. */
static char *normalize_log(char *raw, const char *arch) {
  if (raw == NULL)
    return NULL;
  kiln__strbuf sb;
  kiln__sb_init(&sb);
  const char *p = raw;
  while (*p != '\0') {
    size_t len = strcspn(p, "\n");
    normalize_line(&sb, p, len);
    p += len;
    if (*p == '\n')
      p++;
  }
  explain_shared(&sb, raw, arch);
  kiln__free(raw);
  if (sb.len == 0)
    kiln__sb_append(&sb, "(NVRTC printed no message)\n");
  return kiln__sb_take(&sb);
}

static int build_options(const kiln__nvrtc_job *job, bool minimal,
                         char *arch_opt, size_t arch_size,
                         const char **opts) {
  int n = 0;
  snprintf(arch_opt, arch_size, "--gpu-architecture=%s", job->arch);
  opts[n++] = arch_opt;
  for (size_t i = 0; i < NUM_COMMON; i++)
    opts[n++] = common_options[i];
  opts[n++] = job->math == KILN_MATH_FAST ? fast_option : safe_option;
  if (minimal)
    opts[n++] = minimal_option;
  if (job->ptxas_report)
    opts[n++] = ptxas_option;
  return n;
}

/* Copies the cubin out of a compiled program. */
static kiln_status take_cubin(const kiln__nvrtc_api *nv, nvrtcProgram prog,
                              const char *name, kiln__binary *out) {
  size_t size = 0;
  if (KILN__NVRTC(nv, nvrtcGetCUBINSize, prog, &size) != NVRTC_SUCCESS)
    return kiln__nvrtc_error(KILN_ERROR_COMPILE,
                             "NVRTC produced no cubin for kernel '%s'", name);
  if (size == 0)
    return kiln__error(KILN_ERROR_COMPILE,
                       "NVRTC produced an empty cubin for kernel '%s'.",
                       name);
  char *data = kiln__malloc(size);
  if (data == NULL)
    return kiln__oom("copying a compiled CUDA kernel");
  if (KILN__NVRTC(nv, nvrtcGetCUBIN, prog, data) != NVRTC_SUCCESS) {
    kiln__free(data);
    return kiln__nvrtc_error(KILN_ERROR_COMPILE,
                             "NVRTC could not hand over the cubin of kernel "
                             "'%s'",
                             name);
  }
  out->data = data;
  out->size = size;
  return KILN_OK;
}

/* KILN_DEBUG_NVRTC_LOG=1: keep NVRTC's raw log, for reports from
 * machines where its format surprises kiln. */
static bool debug_log(void) {
  const char *v = getenv("KILN_DEBUG_NVRTC_LOG");
  return v != NULL && v[0] == '1';
}

/* Appends the raw log after a normalised one (debug only); takes both. */
static char *with_raw_log(char *text, char *raw) {
  if (text == NULL || raw == NULL) {
    kiln__free(raw);
    return text;
  }
  kiln__strbuf sb;
  kiln__sb_init(&sb);
  kiln__sb_appendf(&sb, "%s--- raw NVRTC log (KILN_DEBUG_NVRTC_LOG) ---\n%s\n",
                   text, raw);
  kiln__free(text);
  kiln__free(raw);
  char *joined = kiln__sb_take(&sb);
  return joined;
}

/* Debug only: shows a successful compile's raw log and options on stderr
 * (like a verbose launch, printing happens only on request). */
static void show_raw_log(const kiln__nvrtc_job *job, const char *const *opts,
                         int n, const char *raw) {
  fprintf(stderr, "// kiln: NVRTC log of kernel '%s' for %s (options:",
          job->name, job->arch);
  for (int i = 0; i < n; i++)
    fprintf(stderr, " %s", opts[i]);
  fprintf(stderr, "), %zu bytes:\n%s\n// kiln: end of NVRTC log\n",
          raw != NULL ? strlen(raw) : (size_t)0, raw != NULL ? raw : "");
  fflush(stderr);
}

/* Runs NVRTC on a created program and collects the results. With
 * `minimal`, an NVRTC that refuses the option sets *refused and returns
 * without an error message: the caller asks again without it. */
static kiln_status run_program(const kiln__nvrtc_api *nv, nvrtcProgram prog,
                               const kiln__nvrtc_job *job, bool minimal,
                               kiln__binary *out, char **log,
                               kiln__compile_info *info, bool *refused) {
  char arch_opt[64];
  const char *opts[MAX_OPTIONS];
  int n = build_options(job, minimal, arch_opt, sizeof arch_opt, opts);
  uint64_t t0 = kiln__now_ns();
  nvrtcResult r = KILN__NVRTC(nv, nvrtcCompileProgram, prog, n, opts);
  kiln__stage_add(KILN__STAGE_NVRTC, kiln__now_ns() - t0);
  if (r == NVRTC_ERROR_INVALID_OPTION && minimal) {
    *refused = true;
    return KILN_ERROR_COMPILE;
  }
  if (r == NVRTC_ERROR_COMPILATION) {
    char *text = normalize_log(program_log(nv, prog), job->arch);
    if (debug_log())
      text = with_raw_log(text, program_log(nv, prog));
    if (log != NULL)
      *log = text;
    else
      kiln__free(text);
    return kiln__error(KILN_ERROR_COMPILE,
                       "NVRTC could not compile kernel '%s' for %s.",
                       job->name, job->arch);
  }
  if (r != NVRTC_SUCCESS)
    return kiln__nvrtc_error(r == NVRTC_ERROR_OUT_OF_MEMORY
                                 ? KILN_ERROR_OUT_OF_MEMORY
                                 : KILN_ERROR_COMPILE,
                             "NVRTC %d.%d could not compile kernel '%s' for "
                             "%s",
                             nv->major, nv->minor, job->name, job->arch);
  if ((info != NULL && job->ptxas_report) || debug_log()) {
    char *text = program_log(nv, prog);
    if (text == NULL)
      return kiln__oom("reading the CUDA compiler's report");
    if (debug_log())
      show_raw_log(job, opts, n, text);
    if (info != NULL && job->ptxas_report) {
      char entry[KILN__ENTRY_NAME_CAP];
      kiln__dialect_entry_name(job->name, entry, sizeof entry);
      kiln__cuda_parse_ptxas(text, entry, info);
    }
    kiln__free(text);
  }
  return take_cubin(nv, prog, job->name, out);
}

/* ---- warm-up ------------------------------------------------------ */

/* `claimed`: the process's one warm-up was handed out; `compiled`: a
 * compile has begun, so a warm-up would come too late. */
static atomic_bool g_warm_claimed, g_compiled;

/*
 * The warm-up kernel's body. NVRTC is ~100 MB of code, and on a machine
 * that has just started, every page of it that a compile touches for the
 * first time is read from disk. So the warm-up compiles what a user's
 * first kernel is likely to need: it goes through codegen.c like any
 * kernel (the same prelude sections and entry glue) and holds a loop,
 * threadgroup memory, barriers and a vector swizzle. Measured with
 * NVRTC 13 (the process's RSS of libnvrtc): after it, a small body-only
 * kernel touches no new page of NVRTC, and kernels with loops, SIMD
 * functions, atomics or math 64-324 KB, against 0.8-2 MB after a
 * warm-up of the whole prelude with a one-line kernel; it takes ~50 ms
 * (~40 before), hidden behind the context's creation.
 */
static const char warm_body[] =
    "threadgroup float tile[64];\n"
    "uint i = thread_position_in_grid.x;\n"
    "uint t = thread_index_in_threadgroup;\n"
    "float acc = 0.0f;\n"
    "for (int k0 = 0; k0 < n; k0 += 64) {\n"
    "  tile[t % 64] = a[(i + k0) % n];\n"
    "  threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "  for (int k = 0; k < 64; ++k) acc += tile[k] * 2.0f;\n"
    "  threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "}\n"
    "float4 v = float4(acc, acc * 2.0f, acc + 1.0f, 1.0f);\n"
    "out[i] = (v * v.wzyx).x + a[i] * 2.0f + 1.0f;\n";

/* The warm-up program: codegen.c's source for warm_body with inputs
 * a (float32[]) and n (int32 scalar), output out (float32), 256 threads
 * per threadgroup. kiln__malloc'ed; NULL if generation failed. */
static char *warm_up_source(void) {
  static const char *const in_names[] = {"a", "n"};
  static const kiln_dtype in_dtypes[] = {KILN_FLOAT32, KILN_INT32};
  static const int in_ndims[] = {1, 0};
  static const char *const out_names[] = {"out"};
  static const kiln_dtype out_dtypes[] = {KILN_FLOAT32};
  kiln__scan scan;
  if (kiln__dialect_scan("kiln_warm_up", "", warm_body, &scan) != KILN_OK)
    return NULL;
  kiln__signature sig;
  kiln__strbuf sb;
  kiln__sb_init(&sb);
  bool ok = kiln__dialect_build_signature(
                "kiln_warm_up", &scan, in_names, in_dtypes, in_ndims, 2,
                out_names, out_dtypes, 1, false, NULL, 0, &sig) == KILN_OK;
  if (ok) {
    sig.max_threads = 256;
    ok = kiln__dialect_generate(&sig, KILN__TARGET_CUDA,
                                kiln__prelude_cuda_text, &sb) == KILN_OK &&
         !sb.failed && sb.len > 0;
    kiln__signature_free(&sig);
  }
  kiln__scan_free(&scan);
  if (!ok) {
    kiln__sb_free(&sb);
    return NULL;
  }
  return kiln__sb_take(&sb);
}

/* Whether the caller should warm NVRTC up: true once per process, and
 * only before any compile. */
bool kiln__cuda_warm_up_claim(void) {
  if (atomic_load(&g_compiled))
    return false;
  return !atomic_exchange(&g_warm_claimed, true);
}

/* Loads NVRTC and compiles the warm-up program for `arch` (see
 * kiln__cuda_warm_up). */
static void warm_up(const char *arch) {
  const kiln__nvrtc_api *nv = kiln__nvrtc_load(NULL);
  if (nv == NULL || parse_target(arch) < 0)
    return;
  char *source = warm_up_source();
  nvrtcProgram prog = NULL;
  if (source == NULL ||
      nv->nvrtcCreateProgram(&prog, source, PROGRAM_NAME, 0, NULL, NULL) !=
          NVRTC_SUCCESS) {
    kiln__free(source);
    return;
  }
  kiln__nvrtc_job job = {arch, source, "kiln warm-up", KILN_MATH_SAFE,
                         false};
  char arch_opt[64];
  const char *opts[MAX_OPTIONS];
  bool minimal = use_minimal(nv);
  int n = build_options(&job, minimal, arch_opt, sizeof arch_opt, opts);
  nvrtcResult r = nv->nvrtcCompileProgram(prog, n, opts);
  (void)nv->nvrtcDestroyProgram(&prog);
  kiln__free(source);
  if (r == NVRTC_ERROR_INVALID_OPTION && minimal)
    atomic_store_explicit(&g_minimal_ok, false, memory_order_relaxed);
}

/*
 * Loads NVRTC and compiles the warm-up program for `arch`, throwing the
 * result away. Best effort and silent: without NVRTC, or if the compile
 * fails, it just returns, and a real compile reports the problem. Its
 * time goes to the stage clock (bench_cuda prints it).
 */
void kiln__cuda_warm_up(const char *arch) {
  uint64_t t0 = kiln__now_ns();
  warm_up(arch);
  kiln__stage_add(KILN__STAGE_WARM_UP, kiln__now_ns() - t0);
}

/* One NVRTC program, from creation to destruction. */
static kiln_status compile_once(const kiln__nvrtc_api *nv,
                                const kiln__nvrtc_job *job, bool minimal,
                                kiln__binary *out, char **log,
                                kiln__compile_info *info, bool *refused) {
  nvrtcProgram prog = NULL;
  if (KILN__NVRTC(nv, nvrtcCreateProgram, &prog, job->source, PROGRAM_NAME, 0,
                  NULL, NULL) != NVRTC_SUCCESS)
    return kiln__nvrtc_error(KILN_ERROR_OUT_OF_MEMORY,
                             "NVRTC could not take the source of kernel '%s'",
                             job->name);
  kiln_status st =
      run_program(nv, prog, job, minimal, out, log, info, refused);
  (void)KILN__NVRTC(nv, nvrtcDestroyProgram, &prog);
  return st;
}

/* Compiles one job to a cubin; see cuda_internal.h. */
kiln_status kiln__cuda_nvrtc_compile(const kiln__nvrtc_job *job,
                                     kiln__binary *out, char **log,
                                     kiln__compile_info *info) {
  const char *why = NULL;
  if (log != NULL)
    *log = NULL;
  atomic_store(&g_compiled, true);
  const kiln__nvrtc_api *nv = kiln__nvrtc_load(&why);
  if (nv == NULL)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "kernel '%s' cannot be compiled for the GPU: %s.",
                       job->name, why);
  int number = parse_target(job->arch);
  kiln_status st = check_supported(nv, job->arch, number);
  if (st != KILN_OK)
    return st;
  if (info != NULL) {
    memset(info, 0, sizeof *info);
    info->registers = -1;
  }
  uint64_t t0 = kiln__now_ns();
  kiln__binary bin = {NULL, 0};
  bool refused = false;
  st = compile_once(nv, job, use_minimal(nv), &bin, log, info, &refused);
  if (refused) {
    /* A compiled program cannot be compiled again: start over. */
    atomic_store_explicit(&g_minimal_ok, false, memory_order_relaxed);
    st = compile_once(nv, job, false, &bin, log, info, &refused);
  }
  if (st != KILN_OK)
    return st;
  if (info != NULL)
    info->compile_ms = (double)(kiln__now_ns() - t0) * 1e-6;
  *out = bin;
  return KILN_OK;
}

/* ---- build id and compile --------------------------------------------------- */

/* The build id from `compiler`, the NVRTC's identity (its file, or where
 * the search found none, its version as reported once loaded). */
static char *make_build_id(const kiln__cuda_device *d, const char *compiler) {
  kiln__strbuf sb;
  kiln__sb_init(&sb);
  kiln__sb_appendf(&sb, "cuda-abi%d;nvrtc %s;driver %d;%s;",
                   KILN_CUDA_ABI_VERSION, compiler, d->cu->driver_version,
                   d->arch);
  for (size_t i = 0; i < NUM_COMMON; i++)
    kiln__sb_appendf(&sb, "%s ", common_options[i]);
  kiln__sb_appendf(&sb, "safe:%s fast:%s %s(12.4+)", safe_option,
                   fast_option, minimal_option);
  return kiln__sb_take(&sb);
}

/* Names the compiler for the build id. Loads NVRTC only when its file
 * could not be found without loading it (see cuda_loader.c). */
static kiln_status compiler_identity(const kiln__cuda_device *d, char *out,
                                     size_t size) {
  const char *file = kiln__nvrtc_identity();
  if (file != NULL) {
    snprintf(out, size, "file %s", file);
    return KILN_OK;
  }
  const char *why = NULL;
  const kiln__nvrtc_api *nv = kiln__nvrtc_load(&why);
  if (nv == NULL)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "kernels cannot be compiled for gpu:%d: %s.",
                       d->ordinal, why);
  snprintf(out, size, "%d.%d %s", nv->major, nv->minor, nv->soname);
  return KILN_OK;
}

/*
 * The build id: "cuda-abi<v>;nvrtc <identity>;driver <version>;<arch>;
 * <flags>", where the identity is NVRTC's file (real path, size and
 * modification time), so that a disk-cache hit never loads the compiler.
 * Computed once per device.
 */
kiln_status kiln__cuda_build_id(struct kiln_device *dev, const char **out) {
  kiln__cuda_device *d = kiln__cuda_dev(dev);
  pthread_mutex_lock(&d->lock);
  char *id = d->build_id;
  pthread_mutex_unlock(&d->lock);
  if (id == NULL) {
    char compiler[1024];
    kiln_status st = compiler_identity(d, compiler, sizeof compiler);
    if (st != KILN_OK)
      return st;
    char *made = make_build_id(d, compiler);
    if (made == NULL)
      return kiln__oom("computing the CUDA backend's build id");
    pthread_mutex_lock(&d->lock);
    if (d->build_id == NULL)
      d->build_id = made;
    else
      kiln__free(made); /* another thread won; the ids are equal */
    id = d->build_id;
    pthread_mutex_unlock(&d->lock);
  }
  *out = id;
  return KILN_OK;
}

/* Compiles generated source for the device's architecture. */
kiln_status kiln__cuda_compile(struct kiln_device *dev, const char *source,
                               kiln_math_mode math, const char *kernel_name,
                               kiln__binary *out, char **log) {
  kiln__cuda_device *d = kiln__cuda_dev(dev);
  kiln__nvrtc_job job = {d->arch, source,
                         kernel_name != NULL ? kernel_name : "?", math,
                         false};
  return kiln__cuda_nvrtc_compile(&job, out, log, NULL);
}

/* Whether a cubin for `target` can load on `dev`: a GPU of the same major
 * architecture, at least the target's minor ("a" targets: exactly it). */
static bool runs_on(const struct kiln_device *dev, const char *target) {
  int want = parse_target(target);
  int have = parse_target(dev->info.arch);
  if (dev->ops != &kiln__cuda_backend || want < 0 || have < 0 ||
      want / 10 != have / 10 || have < want)
    return false;
  return target[strlen(target) - 1] != 'a' || have == want;
}

/*
 * Where ptxas's report gave no register count, and a GPU that runs the
 * cubin is present, reads registers and local memory from the loaded
 * module instead (cuFuncGetAttribute). Best effort: a failure leaves the
 * report as it was (the call still succeeds).
 */
static void report_from_driver(const char *target, const kiln__binary *bin,
                               kiln__compile_info *info) {
  if (kiln__cu_load(NULL) == NULL || kiln__devices_init() != KILN_OK)
    return;
  for (int i = 0; i < kiln__device_count(); i++) {
    struct kiln_device *dev = kiln__device_at(i);
    void *module = NULL;
    kiln__module_info m;
    if (dev == NULL || !runs_on(dev, target) ||
        kiln__cuda_load(dev, bin->data, bin->size, &module, &m) != KILN_OK)
      continue;
    info->registers = m.registers;
    info->local_bytes = m.local_memory;
    if (info->shared_bytes == 0)
      info->shared_bytes = m.threadgroup_memory;
    kiln__cuda_unload(dev, module);
    break;
  }
}

/*
 * Compiles for a named target ("sm_90a", "sm_80", ...) without a device:
 * needs NVRTC only. Fills `info` from ptxas's report.
 */
kiln_status kiln__cuda_compile_for_target(const char *target,
                                          const char *source,
                                          kiln_math_mode math,
                                          const char *kernel_name,
                                          kiln__binary *out, char **log,
                                          kiln__compile_info *info) {
  if (log != NULL)
    *log = NULL;
  if (parse_target(target) < 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "'%.40s' is not a CUDA target; use sm_XY or sm_XYa "
                       "(for example sm_90a for H100, sm_80 for A100)",
                       target != NULL ? target : "(null)");
  kiln__compile_info local;
  kiln__compile_info *report = info != NULL ? info : &local;
  kiln__nvrtc_job job = {target, source,
                         kernel_name != NULL ? kernel_name : "?", math, true};
  kiln_status st = kiln__cuda_nvrtc_compile(&job, out, log, report);
  if (st == KILN_OK && info != NULL && info->registers < 0)
    report_from_driver(target, out, info);
  return st;
}

/* ---- load ----------------------------------------------------------------------- */

/* Checks that the bytes are a 64-bit CUDA ELF image whose section table
 * lies inside them; see cuda_internal.h. */
kiln_status kiln__cuda_check_cubin(const void *data, size_t size) {
  static const char what[] = "the kernel binary is not a CUDA cubin";
  Elf64_Ehdr eh;
  if (data == NULL || size < sizeof eh)
    return kiln__error(KILN_ERROR_COMPILE, "%s (it is too short).", what);
  memcpy(&eh, data, sizeof eh);
  if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
    return kiln__error(KILN_ERROR_COMPILE, "%s (no ELF header).", what);
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_CUDA)
    return kiln__error(KILN_ERROR_COMPILE,
                       "%s (it is an ELF file for machine %u, not CUDA).",
                       what, (unsigned)eh.e_machine);
  if (eh.e_shoff > size || (eh.e_shnum > 0 && eh.e_shentsize == 0) ||
      (eh.e_shentsize > 0 &&
       (size - eh.e_shoff) / eh.e_shentsize < eh.e_shnum))
    return kiln__error(KILN_ERROR_COMPILE,
                       "%s (its section table is truncated).", what);
  return KILN_OK;
}

/*
 * The name of the module's entry point (codegen.c names it after the
 * kernel: kiln__dialect_entry_name): the first global function symbol
 * of the cubin's symbol table whose name starts with "kiln_", read with
 * every offset checked against the image; "kiln_entry" (the name every
 * kernel had before) when there is none. The cubin passed
 * kiln__cuda_check_cubin, so its section table lies inside it.
 */
static void cubin_entry(const void *data, size_t size, char *out,
                        size_t cap) {
  snprintf(out, cap, "%s", KILN_CUDA_ENTRY_NAME);
  const unsigned char *b = data;
  Elf64_Ehdr eh;
  memcpy(&eh, b, sizeof eh);
  if (eh.e_shentsize < sizeof(Elf64_Shdr))
    return;
  for (unsigned i = 0; i < eh.e_shnum; i++) {
    Elf64_Shdr sh, st;
    memcpy(&sh, b + eh.e_shoff + (size_t)i * eh.e_shentsize, sizeof sh);
    if (sh.sh_type != SHT_SYMTAB || sh.sh_entsize < sizeof(Elf64_Sym) ||
        sh.sh_link >= eh.e_shnum || sh.sh_offset > size ||
        sh.sh_size > size - sh.sh_offset)
      continue;
    memcpy(&st, b + eh.e_shoff + (size_t)sh.sh_link * eh.e_shentsize,
           sizeof st);
    if (st.sh_offset > size || st.sh_size > size - st.sh_offset)
      continue;
    const char *names = (const char *)b + st.sh_offset;
    for (uint64_t k = 0; k + sh.sh_entsize <= sh.sh_size;
         k += sh.sh_entsize) {
      Elf64_Sym sym;
      memcpy(&sym, b + sh.sh_offset + k, sizeof sym);
      if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC ||
          ELF64_ST_BIND(sym.st_info) != STB_GLOBAL ||
          sym.st_name >= st.sh_size)
        continue;
      const char *nm = names + sym.st_name;
      size_t len = strnlen(nm, st.sh_size - sym.st_name);
      if (len < st.sh_size - sym.st_name && len < cap &&
          strncmp(nm, "kiln_", 5) == 0) {
        memcpy(out, nm, len + 1);
        return;
      }
    }
  }
}

static int func_attribute(kiln__cuda_device *d, CUfunction f, int attrib,
                          int fallback) {
  int v = 0;
  if (KILN__CU(d->cu, cuFuncGetAttribute, &v, attrib, f) != CUDA_SUCCESS)
    return fallback;
  return v;
}

/*
 * Loads a cubin from compile (possibly from the disk cache of another
 * process): checks the ELF header, loads the module, finds its entry point
 * (cubin_entry) and reads its resources. Nothing stays loaded on failure.
 */
kiln_status kiln__cuda_load(struct kiln_device *dev, const void *data,
                            size_t size, void **module,
                            kiln__module_info *info) {
  kiln__cuda_device *d = kiln__cuda_dev(dev);
  kiln_status st = kiln__cuda_check_cubin(data, size);
  if (st != KILN_OK)
    return st;
  st = kiln__cuda_enter(d);
  if (st != KILN_OK)
    return st;
  kiln__cuda_module *m = kiln__calloc(1, sizeof *m);
  if (m == NULL)
    return kiln__oom("loading a CUDA kernel");
  if (KILN__CU(d->cu, cuModuleLoadData, &m->module, data) != CUDA_SUCCESS) {
    kiln__free(m);
    return kiln__cuda_fail(d, KILN_ERROR_COMPILE,
                           "the compiled kernel could not be loaded on "
                           "gpu:%d",
                           d->ordinal);
  }
  char entry[KILN__ENTRY_NAME_CAP];
  cubin_entry(data, size, entry, sizeof entry);
  if (KILN__CU(d->cu, cuModuleGetFunction, &m->function, m->module,
               entry) != CUDA_SUCCESS) {
    st = kiln__cuda_fail(d, KILN_ERROR_COMPILE,
                         "the compiled kernel has no entry point '%s'; it "
                         "was not built by kiln's CUDA backend",
                         entry);
    (void)KILN__CU(d->cu, cuModuleUnload, m->module);
    kiln__free(m);
    return st;
  }
  m->max_threads = func_attribute(
      d, m->function, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 1024);
  m->registers = func_attribute(d, m->function, CU_FUNC_ATTRIBUTE_NUM_REGS, -1);
  if (info != NULL) {
    memset(info, 0, sizeof *info); /* fields this backend does not know */
    info->threadgroup_memory = (uint64_t)func_attribute(
        d, m->function, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, 0);
    info->registers = m->registers;
    info->local_memory = (uint64_t)func_attribute(
        d, m->function, CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, 0);
    info->needs_fibers = false;
    info->max_threads = (uint32_t)m->max_threads;
  }
  *module = m;
  return KILN_OK;
}

/* Unloads a module. No queued launch may still use it (the core keeps
 * modules for the process). On a lost device only the host side goes. */
void kiln__cuda_unload(struct kiln_device *dev, void *module) {
  kiln__cuda_device *d = kiln__cuda_dev(dev);
  kiln__cuda_module *m = module;
  if (m == NULL)
    return;
  if (kiln__cuda_enter(d) == KILN_OK)
    (void)KILN__CU(d->cu, cuModuleUnload, m->module);
  kiln__free(m);
}

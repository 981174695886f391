/*
 * kiln's own CUDA kernels: the strided gather behind copy_strided (n-d, up
 * to 16 dimensions, 1/2/4/8-byte elements) and the strided (scatter) fill
 * behind fill_strided. (Contiguous 8-byte fills need no kernel: cuda_fill
 * does them with two strided cuMemsetD2D32Async calls, which work without
 * NVRTC.) NVRTC compiles the small source below once per process and
 * architecture; each device loads the module on first use and keeps it
 * for the process.
 */
#include <stdio.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"
#include "core/util.h"

/* The struct mirrors kiln__cuda_gather_dims (cuda_internal.h) field by
 * field; both sides use the same natural alignment. */
static const char builtin_source[] =
    "struct kiln_gather_dims {\n"
    "  long long shape[16];\n"
    "  long long strides[16];\n"
    "  unsigned long long count;\n"
    "  int ndim;\n"
    "};\n"
    "/* Byte offset of the view's element i (row-major index order). */\n"
    "__device__ long long kiln_view_offset(unsigned long long i,\n"
    "                                      const kiln_gather_dims &g) {\n"
    "  long long off = 0;\n"
    "  for (int k = g.ndim - 1; k >= 0; k--) {\n"
    "    unsigned long long n = (unsigned long long)g.shape[k];\n"
    "    off += (long long)(i % n) * g.strides[k];\n"
    "    i /= n;\n"
    "  }\n"
    "  return off;\n"
    "}\n"
    "template <typename T>\n"
    "__device__ void kiln_gather(const char *src, T *dst,\n"
    "                            const kiln_gather_dims &g) {\n"
    "  unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;\n"
    "  for (unsigned long long i =\n"
    "           (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
    "       i < g.count; i += step) {\n"
    "    dst[i] = *(const T *)(src + kiln_view_offset(i, g));\n"
    "  }\n"
    "}\n"
    "#define KILN_GATHER(N, T)                                          \\\n"
    "  extern \"C\" __global__ void kiln_gather##N(const char *src, T *dst, \\\n"
    "                                            kiln_gather_dims g) {   \\\n"
    "    kiln_gather<T>(src, dst, g);                                    \\\n"
    "  }\n"
    "template <typename T>\n"
    "__device__ void kiln_scatter_fill(char *dst, T value,\n"
    "                                  const kiln_gather_dims &g) {\n"
    "  unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;\n"
    "  for (unsigned long long i =\n"
    "           (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
    "       i < g.count; i += step) {\n"
    "    *(T *)(dst + kiln_view_offset(i, g)) = value;\n"
    "  }\n"
    "}\n"
    "#define KILN_SFILL(N, T)                                           \\\n"
    "  extern \"C\" __global__ void kiln_sfill##N(char *dst, T value,     \\\n"
    "                                          kiln_gather_dims g) {     \\\n"
    "    kiln_scatter_fill<T>(dst, value, g);                            \\\n"
    "  }\n"
    "KILN_SFILL(1, unsigned char)\n"
    "KILN_SFILL(2, unsigned short)\n"
    "KILN_SFILL(4, unsigned int)\n"
    "KILN_SFILL(8, unsigned long long)\n"
    "KILN_GATHER(1, unsigned char)\n"
    "KILN_GATHER(2, unsigned short)\n"
    "KILN_GATHER(4, unsigned int)\n"
    "KILN_GATHER(8, unsigned long long)\n";

static const char *const builtin_names[KILN__CUDA_NUM_BUILTINS] = {
    "kiln_gather1", "kiln_gather2", "kiln_gather4", "kiln_gather8",
    "kiln_sfill1",  "kiln_sfill2",  "kiln_sfill4",  "kiln_sfill8"};

/* What a device keeps once loaded. */
typedef struct builtins {
  CUmodule module;
  CUfunction functions[KILN__CUDA_NUM_BUILTINS];
} builtins;

/* Compiled cubins, one per architecture, for the process. */
typedef struct cubin_entry {
  char arch[16];
  kiln__binary bin;
  struct cubin_entry *next;
} cubin_entry;

/* Serializes building and loading; held for a compile (rare: once per
 * architecture per process). */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static cubin_entry *g_cubins;

/* The cubin for `arch`, compiled on first use. g_lock held. */
static kiln_status cubin_for(const char *arch, const kiln__binary **out) {
  for (cubin_entry *e = g_cubins; e != NULL; e = e->next) {
    if (strcmp(e->arch, arch) == 0) {
      *out = &e->bin;
      return KILN_OK;
    }
  }
  cubin_entry *e = kiln__calloc(1, sizeof *e);
  if (e == NULL)
    return kiln__oom("compiling kiln's CUDA copy kernels");
  kiln__nvrtc_job job = {arch, builtin_source, "kiln builtins", KILN_MATH_SAFE,
                         false};
  char *log = NULL;
  kiln_status st = kiln__cuda_nvrtc_compile(&job, &e->bin, &log, NULL);
  if (st == KILN_ERROR_COMPILE)
    st = kiln__error(KILN_ERROR_INTERNAL,
                     "kiln's own CUDA copy kernels failed to compile for %s; "
                     "this is a bug in kiln: %s",
                     arch, log != NULL ? log : "(no compiler log)");
  kiln__free(log);
  if (st != KILN_OK) {
    kiln__free(e);
    return st;
  }
  snprintf(e->arch, sizeof e->arch, "%s", arch);
  e->next = g_cubins;
  g_cubins = e;
  *out = &e->bin;
  return KILN_OK;
}

/* Loads the module on the device and finds every function. g_lock held,
 * context current. */
static kiln_status load_builtins(kiln__cuda_device *d, builtins **out) {
  const kiln__binary *bin = NULL;
  kiln_status st = cubin_for(d->arch, &bin);
  if (st != KILN_OK)
    return st;
  builtins *b = kiln__calloc(1, sizeof *b);
  if (b == NULL)
    return kiln__oom("loading kiln's CUDA copy kernels");
  if (KILN__CU(d->cu, cuModuleLoadData, &b->module, bin->data) !=
      CUDA_SUCCESS) {
    kiln__free(b);
    return kiln__cuda_fail(d, KILN_ERROR_INTERNAL,
                           "kiln's CUDA copy kernels could not be loaded on "
                           "gpu:%d",
                           d->ordinal);
  }
  for (int i = 0; i < KILN__CUDA_NUM_BUILTINS; i++) {
    if (KILN__CU(d->cu, cuModuleGetFunction, &b->functions[i], b->module,
                 builtin_names[i]) != CUDA_SUCCESS) {
      st = kiln__cuda_fail(d, KILN_ERROR_INTERNAL,
                           "kiln's CUDA copy kernel '%s' is missing on "
                           "gpu:%d",
                           builtin_names[i], d->ordinal);
      (void)KILN__CU(d->cu, cuModuleUnload, b->module);
      kiln__free(b);
      return st;
    }
  }
  *out = b;
  return KILN_OK;
}

/* A builtin function of the device; see cuda_internal.h. The module
 * pointer is published once, so later calls read it without a lock. */
kiln_status kiln__cuda_builtin_get(kiln__cuda_device *d,
                                   kiln__cuda_builtin which, CUfunction *out) {
  builtins *b = __atomic_load_n(&d->builtins, __ATOMIC_ACQUIRE);
  if (b == NULL) {
    kiln_status st = KILN_OK;
    pthread_mutex_lock(&g_lock);
    b = d->builtins;
    if (b == NULL) {
      st = load_builtins(d, &b);
      if (st == KILN_OK)
        __atomic_store_n(&d->builtins, (void *)b, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&g_lock);
    if (st != KILN_OK)
      return st;
  }
  *out = b->functions[which];
  return KILN_OK;
}

/*
 * The CUDA driver API and NVRTC, loaded with dlopen at first use so that
 * kiln builds and runs where CUDA is absent. cuda.h and nvrtc.h are NOT
 * included: the few types, enums and constants kiln needs are declared
 * here by hand. They mirror the documented, ABI-stable driver API and
 * NVRTC interfaces (values as in CUDA 12/13's cuda.h and nvrtc.h).
 *
 * Every call goes through KILN__CU / KILN__NVRTC: on failure the macro
 * records which function failed and its result in a per-thread slot, and
 * kiln__cu_error / kiln__nvrtc_error turn that into a sentence with the
 * driver's error name and text (MLX's CHECK_NVRTC_ERROR).
 */
#ifndef KILN_BACKEND_CUDA_LOADER_H
#define KILN_BACKEND_CUDA_LOADER_H

#include <stddef.h>

#include "kiln.h"

/* ---- driver API types (mirroring cuda.h) -------------------------------- */

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr; /* 64-bit hosts only */
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef void (*CUhostFn)(void *user_data);

/* CUresult values kiln tells apart. */
#define CUDA_SUCCESS 0
#define CUDA_ERROR_INVALID_VALUE 1
#define CUDA_ERROR_OUT_OF_MEMORY 2
#define CUDA_ERROR_NOT_INITIALIZED 3
#define CUDA_ERROR_DEINITIALIZED 4
#define CUDA_ERROR_NO_DEVICE 100
#define CUDA_ERROR_ECC_UNCORRECTABLE 214
#define CUDA_ERROR_NVLINK_UNCORRECTABLE 220
#define CUDA_ERROR_CONTAINED 226
#define CUDA_ERROR_NOT_READY 600
#define CUDA_ERROR_NOT_SUPPORTED 801
#define CUDA_ERROR_ILLEGAL_ADDRESS 700
#define CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES 701
#define CUDA_ERROR_LAUNCH_TIMEOUT 702
#define CUDA_ERROR_CONTEXT_IS_DESTROYED 709
#define CUDA_ERROR_ASSERT 710
#define CUDA_ERROR_HARDWARE_STACK_ERROR 714
#define CUDA_ERROR_ILLEGAL_INSTRUCTION 715
#define CUDA_ERROR_MISALIGNED_ADDRESS 716
#define CUDA_ERROR_INVALID_ADDRESS_SPACE 717
#define CUDA_ERROR_INVALID_PC 718
#define CUDA_ERROR_LAUNCH_FAILED 719
#define CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE 720
#define CUDA_ERROR_TENSOR_MEMORY_LEAK 721

/* CUdevice_attribute values. */
#define CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK 1
#define CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X 2
#define CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y 3
#define CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z 4
#define CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X 5
#define CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y 6
#define CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z 7
#define CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK 8
#define CU_DEVICE_ATTRIBUTE_WARP_SIZE 10
#define CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT 16
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN 97

/* CUfunction_attribute values. */
#define CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK 0
#define CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES 1
#define CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES 3
#define CU_FUNC_ATTRIBUTE_NUM_REGS 4
#define CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES 8

/* cuLaunchKernelEx's configuration (CUDA 12+), with the one attribute
 * kiln sets: programmatic stream serialization (Hopper's programmatic
 * dependent launch, see cuda_backend.c). As in cuda.h: a 4-byte id padded
 * to 8, then a 64-byte value union, 8-byte aligned. */
#define CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION 6
typedef struct CUlaunchAttribute {
  int id;
  char pad[4];
  union {
    char bytes[64];
    int programmatic_serialization_allowed;
    unsigned long long align;
  } value;
} CUlaunchAttribute;
typedef struct CUlaunchConfig {
  unsigned gridDimX, gridDimY, gridDimZ;
  unsigned blockDimX, blockDimY, blockDimZ;
  unsigned sharedMemBytes;
  CUstream hStream;
  CUlaunchAttribute *attrs;
  unsigned numAttrs;
} CUlaunchConfig;

/* Flags. */
#define CU_STREAM_NON_BLOCKING 0x1u
#define CU_EVENT_DISABLE_TIMING 0x2u

/* ---- NVRTC types (mirroring nvrtc.h) ------------------------------------ */

typedef int nvrtcResult;
typedef struct _nvrtcProgram *nvrtcProgram;
#define NVRTC_SUCCESS 0
#define NVRTC_ERROR_OUT_OF_MEMORY 1
#define NVRTC_ERROR_INVALID_OPTION 5
#define NVRTC_ERROR_COMPILATION 6

/* ---- the loader tables -------------------------------------------------- */

/* X-macro lists: (return type, symbol name in the library, parameters).
 * The table member is named like the documented, unversioned function;
 * the symbol is the versioned one where the driver versions it. */
#define KILN__CU_FUNCS(XX)                                                    \
  XX(cuInit, "cuInit", (unsigned flags))                                      \
  XX(cuDriverGetVersion, "cuDriverGetVersion", (int *version))                \
  XX(cuGetErrorName, "cuGetErrorName", (CUresult r, const char **s))          \
  XX(cuGetErrorString, "cuGetErrorString", (CUresult r, const char **s))      \
  XX(cuDeviceGetCount, "cuDeviceGetCount", (int *count))                      \
  XX(cuDeviceGet, "cuDeviceGet", (CUdevice * dev, int ordinal))               \
  XX(cuDeviceGetName, "cuDeviceGetName", (char *name, int len, CUdevice dev)) \
  XX(cuDeviceGetAttribute, "cuDeviceGetAttribute",                            \
     (int *value, int attrib, CUdevice dev))                                  \
  XX(cuDeviceTotalMem, "cuDeviceTotalMem_v2", (size_t * bytes, CUdevice dev)) \
  XX(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain",                    \
     (CUcontext * ctx, CUdevice dev))                                         \
  XX(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2",               \
     (CUdevice dev))                                                          \
  XX(cuCtxSetCurrent, "cuCtxSetCurrent", (CUcontext ctx))                     \
  XX(cuCtxGetCurrent, "cuCtxGetCurrent", (CUcontext * ctx))                   \
  XX(cuMemAlloc, "cuMemAlloc_v2", (CUdeviceptr * ptr, size_t bytes))          \
  XX(cuMemFree, "cuMemFree_v2", (CUdeviceptr ptr))                            \
  XX(cuMemGetInfo, "cuMemGetInfo_v2", (size_t * free_bytes, size_t * total))  \
  XX(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2",                               \
     (CUdeviceptr dst, const void *src, size_t bytes, CUstream s))            \
  XX(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2",                               \
     (void *dst, CUdeviceptr src, size_t bytes, CUstream s))                  \
  XX(cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2",                               \
     (CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s))            \
  XX(cuMemsetD8Async, "cuMemsetD8Async",                                      \
     (CUdeviceptr dst, unsigned char v, size_t n, CUstream s))                \
  XX(cuMemsetD16Async, "cuMemsetD16Async",                                    \
     (CUdeviceptr dst, unsigned short v, size_t n, CUstream s))               \
  XX(cuMemsetD32Async, "cuMemsetD32Async",                                    \
     (CUdeviceptr dst, unsigned int v, size_t n, CUstream s))                 \
  XX(cuMemsetD2D32Async, "cuMemsetD2D32Async",                                \
     (CUdeviceptr dst, size_t pitch, unsigned int v, size_t width,            \
      size_t height, CUstream s))                                             \
  XX(cuStreamCreate, "cuStreamCreate", (CUstream * s, unsigned flags))        \
  XX(cuStreamDestroy, "cuStreamDestroy_v2", (CUstream s))                     \
  XX(cuStreamSynchronize, "cuStreamSynchronize", (CUstream s))                \
  XX(cuStreamQuery, "cuStreamQuery", (CUstream s))                            \
  XX(cuStreamWaitEvent, "cuStreamWaitEvent",                                  \
     (CUstream s, CUevent e, unsigned flags))                                 \
  XX(cuEventCreate, "cuEventCreate", (CUevent * e, unsigned flags))           \
  XX(cuEventDestroy, "cuEventDestroy_v2", (CUevent e))                        \
  XX(cuEventRecord, "cuEventRecord", (CUevent e, CUstream s))                 \
  XX(cuEventQuery, "cuEventQuery", (CUevent e))                               \
  XX(cuEventSynchronize, "cuEventSynchronize", (CUevent e))                   \
  XX(cuLaunchKernel, "cuLaunchKernel",                                        \
     (CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,       \
      unsigned by, unsigned bz, unsigned shared, CUstream s, void **params,   \
      void **extra))                                                          \
  XX(cuLaunchCooperativeKernel, "cuLaunchCooperativeKernel",                  \
     (CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,       \
      unsigned by, unsigned bz, unsigned shared, CUstream s, void **params))  \
  XX(cuLaunchHostFunc, "cuLaunchHostFunc",                                    \
     (CUstream s, CUhostFn fn, void *user))                                   \
  XX(cuModuleLoadData, "cuModuleLoadData", (CUmodule * m, const void *image)) \
  XX(cuModuleUnload, "cuModuleUnload", (CUmodule m))                          \
  XX(cuModuleGetFunction, "cuModuleGetFunction",                              \
     (CUfunction * f, CUmodule m, const char *name))                          \
  XX(cuFuncGetAttribute, "cuFuncGetAttribute",                                \
     (int *value, int attrib, CUfunction f))                                  \
  XX(cuFuncSetAttribute, "cuFuncSetAttribute",                                \
     (CUfunction f, int attrib, int value))

#define KILN__NVRTC_FUNCS(XX)                                                 \
  XX(nvrtcVersion, "nvrtcVersion", (int *major, int *minor))                  \
  XX(nvrtcCreateProgram, "nvrtcCreateProgram",                                \
     (nvrtcProgram * p, const char *src, const char *name, int num_headers,   \
      const char *const *headers, const char *const *include_names))          \
  XX(nvrtcDestroyProgram, "nvrtcDestroyProgram", (nvrtcProgram * p))          \
  XX(nvrtcCompileProgram, "nvrtcCompileProgram",                              \
     (nvrtcProgram p, int num_options, const char *const *options))           \
  XX(nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize",                        \
     (nvrtcProgram p, size_t * size))                                         \
  XX(nvrtcGetProgramLog, "nvrtcGetProgramLog", (nvrtcProgram p, char *log))   \
  XX(nvrtcGetCUBINSize, "nvrtcGetCUBINSize", (nvrtcProgram p, size_t * size)) \
  XX(nvrtcGetCUBIN, "nvrtcGetCUBIN", (nvrtcProgram p, char *cubin))

typedef struct kiln__cu_api {
#define KILN__CU_MEMBER_(name, sym, params) CUresult(*name) params;
  KILN__CU_FUNCS(KILN__CU_MEMBER_)
#undef KILN__CU_MEMBER_
  /* Optional (NULL if the driver lacks them): stream priorities, for
   * kiln's high-priority side stream (kiln__device_side_stream). */
  CUresult (*cuStreamCreateWithPriority)(CUstream *s, unsigned flags,
                                         int priority);
  CUresult (*cuCtxGetStreamPriorityRange)(int *least, int *greatest);
  int driver_version; /* cuDriverGetVersion, e.g. 13000 */
  /* Optional (CUDA 12+; NULL when the driver lacks it): launches with
   * attributes, for programmatic dependent launch. */
  CUresult (*cuLaunchKernelEx)(const CUlaunchConfig *config, CUfunction f,
                               void **params, void **extra);
} kiln__cu_api;

typedef struct kiln__nvrtc_api {
#define KILN__NVRTC_MEMBER_(name, sym, params) nvrtcResult(*name) params;
  KILN__NVRTC_FUNCS(KILN__NVRTC_MEMBER_)
#undef KILN__NVRTC_MEMBER_
  const char *(*nvrtcGetErrorString)(nvrtcResult r);
  /* Optional (CUDA 11.2+): the architectures this NVRTC can target. */
  nvrtcResult (*nvrtcGetNumSupportedArchs)(int *count);
  nvrtcResult (*nvrtcGetSupportedArchs)(int *archs);
  int major, minor; /* nvrtcVersion */
  const char *soname; /* the library that was loaded */
} kiln__nvrtc_api;

/*
 * The driver table, loaded and cuInit'ed once per process (thread-safe).
 * NULL if unavailable; then *why (may be NULL) receives a static sentence:
 * "libcuda.so.1 was not found: no NVIDIA driver is installed", or one
 * naming the CUDA error cuInit returned.
 */
const kiln__cu_api *kiln__cu_load(const char **why);

/*
 * The NVRTC table, loaded once per process (libnvrtc.so.13, .so.12, .so,
 * also under /usr/local/cuda/lib64 and $CUDA_HOME/lib64). NULL if absent;
 * *why receives a static sentence naming the sonames tried.
 */
const kiln__nvrtc_api *kiln__nvrtc_load(const char **why);

/*
 * The identity of the NVRTC library kiln__nvrtc_load would load, found with
 * stat and without loading it: "<real path> <size> <mtime>". Computed once
 * per process; NULL if the search found no file (kiln__nvrtc_load then
 * falls back to a plain dlopen search).
 */
const char *kiln__nvrtc_identity(void);

/* ---- checked calls ------------------------------------------------------- */

/* Records a failed call (name and result) in this thread's slot; returns
 * `r` unchanged so that the macros below can be used as expressions. */
CUresult kiln__cu_note(CUresult r, const char *call);
nvrtcResult kiln__nvrtc_note(nvrtcResult r, const char *call);

/* Calls a driver function through the table `api`, noting any failure. */
#define KILN__CU(api, fn, ...) kiln__cu_note((api)->fn(__VA_ARGS__), #fn)
#define KILN__NVRTC(api, fn, ...)                                             \
  kiln__nvrtc_note((api)->fn(__VA_ARGS__), #fn)

/* The result and function name of this thread's last failed call. */
CUresult kiln__cu_last_result(void);
const char *kiln__cu_last_call(void);

/* "CUDA_ERROR_ILLEGAL_ADDRESS" and its text, never NULL. */
const char *kiln__cu_error_name(CUresult r);
const char *kiln__cu_error_text(CUresult r);

/*
 * Sets the error: the caller's sentence (printf-style, without a final
 * period), then " (cuXxx failed: CUDA_ERROR_NAME: text)." from this
 * thread's last failed driver call. Returns `status`.
 */
kiln_status kiln__cu_error(kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Like kiln__cu_error for the last failed NVRTC call. */
kiln_status kiln__nvrtc_error(kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* True for the errors after which the CUDA context is unusable (a kernel
 * fault, an uncorrectable ECC error, ...): the device is lost. */
int kiln__cu_is_sticky(CUresult r);

#endif /* KILN_BACKEND_CUDA_LOADER_H */

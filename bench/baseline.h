/*
 * The baselines of the linear-algebra benchmarks: the CUDA runtime, cuBLAS
 * and cuSOLVER, loaded at run time with dlopen so that every bench program
 * builds and runs on machines without CUDA (it then prints kiln's CPU
 * lines only). Header-only (static functions and one static table per
 * library) because CMake builds every bench/NAME.c as its own program: each
 * program gets its own copy, and a program that never calls a loader pays
 * nothing for it.
 *
 * Only the few types and enum values these calls need are declared here,
 * with the values of NVIDIA's headers (cublas_api.h, driver_types.h). Every
 * function pointer has the exact C prototype of the library function; one
 * that a library lacks stays NULL, and the line that needs it says so
 * instead of running (the legacy cusolverDn<t> calls may one day leave
 * cuSOLVER; the 64-bit generic API is their successor).
 *
 * Library names differ between CUDA versions (CUDA 13 ships libcublas.so.13
 * and libcusolver.so.12, CUDA 12 libcublas.so.12 and libcusolver.so.11):
 * each loader tries the names it knows, bare (the loader's search path)
 * and under /usr/local/cuda/lib64.
 */
#ifndef KILN_BENCH_BASELINE_H
#define KILN_BENCH_BASELINE_H

#include <dlfcn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The card's peaks that achieved rates are compared with: H100 SXM
 * data-sheet figures (dense), as bench_linalg has always printed them.
 * On the H100 the measured float32 FMA peak is about 60 TFLOP/s, so 90%
 * of the data-sheet figure is about all any kernel reaches.
 */
#define BENCH_PEAK_FP32_TFLOPS 67.0
#define BENCH_PEAK_FP64_TFLOPS 67.0
#define BENCH_PEAK_TF32_TFLOPS 494.0
#define BENCH_PEAK_BF16_TFLOPS 989.0
#define BENCH_PEAK_HBM_TBS 3.35

/* ---- the CUDA runtime --------------------------------------------------- */

enum { BL_H2D = 1, BL_D2H = 2, BL_D2D = 3 }; /* cudaMemcpyKind */

/* cudaError_t is an enum: int here, 0 is cudaSuccess. */
static struct {
  int (*malloc_)(void **ptr, size_t size);
  int (*free_)(void *ptr); /* cudaFree(NULL) is a no-op */
  int (*memcpy_)(void *dst, const void *src, size_t count, int kind);
  int (*memcpy2d)(void *dst, size_t dpitch, const void *src, size_t spitch,
                  size_t width, size_t height, int kind);
  int (*sync)(void); /* cudaDeviceSynchronize */
} rt;

/* The first library of `names` (NULL-terminated) that dlopen finds. */
static inline void *bl_open_first(const char *const *names) {
  for (int i = 0; names[i] != NULL; i++) {
    void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (h != NULL)
      return h;
  }
  return NULL;
}

/* Stores dlsym(h, name) into a function pointer (ISO C cannot convert an
 * object pointer to a function pointer directly). */
#define BL_SYM(h, field, name) (*(void **)&(field) = dlsym((h), (name)))

/* Loads the CUDA runtime once; false if it is absent or incomplete. */
static inline bool load_runtime(void) {
  static const char *const names[] = {"libcudart.so.13",
                                      "libcudart.so.12",
                                      "libcudart.so",
                                      "/usr/local/cuda/lib64/libcudart.so.13",
                                      "/usr/local/cuda/lib64/libcudart.so.12",
                                      NULL};
  if (rt.sync != NULL)
    return true;
  void *h = bl_open_first(names);
  if (h == NULL)
    return false;
  BL_SYM(h, rt.malloc_, "cudaMalloc");
  BL_SYM(h, rt.free_, "cudaFree");
  BL_SYM(h, rt.memcpy_, "cudaMemcpy");
  BL_SYM(h, rt.memcpy2d, "cudaMemcpy2D");
  if (!rt.malloc_ || !rt.free_ || !rt.memcpy_ || !rt.memcpy2d)
    return false;
  BL_SYM(h, rt.sync, "cudaDeviceSynchronize"); /* last: marks "loaded" */
  return rt.sync != NULL;
}

/* cudaMalloc of `bytes` (at least 1), zero on success; *p stays NULL on
 * failure so that the clean-up's cudaFree is harmless. */
static inline int bl_malloc(void **p, size_t bytes) {
  *p = NULL;
  if (rt.malloc_(p, bytes ? bytes : 1) != 0) {
    *p = NULL;
    return 1;
  }
  return 0;
}

/* ---- cuBLAS ------------------------------------------------------------- */

typedef struct cublas_ctx *cublas_handle;
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum { CUBLAS_FILL_MODE_LOWER = 0, CUBLAS_FILL_MODE_UPPER = 1 };
enum { CUBLAS_DIAG_NON_UNIT = 0, CUBLAS_DIAG_UNIT = 1 };
enum { CUBLAS_SIDE_LEFT = 0, CUBLAS_SIDE_RIGHT = 1 };
enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 };
enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
enum { CUBLAS_COMPUTE_32F = 68 };
enum { CUBLAS_GEMM_DEFAULT = -1 };

/* cublasStatus_t is an enum: int here, 0 is CUBLAS_STATUS_SUCCESS. */
static struct {
  int (*create)(cublas_handle *handle);
  int (*set_stream)(cublas_handle handle, void *stream);
  int (*set_math)(cublas_handle handle, int mode);
  int (*sgemm)(cublas_handle handle, int transa, int transb, int m, int n,
               int k, const float *alpha, const float *a, int lda,
               const float *b, int ldb, const float *beta, float *c, int ldc);
  int (*gemm_ex)(cublas_handle handle, int transa, int transb, int m, int n,
                 int k, const void *alpha, const void *a, int atype, int lda,
                 const void *b, int btype, int ldb, const void *beta, void *c,
                 int ctype, int ldc, int compute_type, int algo);
  /* Solves op(A) X = alpha B (side left) in place of B. */
  int (*strsm)(cublas_handle handle, int side, int uplo, int trans, int diag,
               int m, int n, const float *alpha, const float *a, int lda,
               float *b, int ldb);
  /* Householder QR of each m x n matrix in place (R above the diagonal,
   * the reflectors below, their scalars in tau); both pointer arrays live
   * on the device, `info` on the host (a parameter error, not a pivot). */
  int (*sgeqrf_batched)(cublas_handle handle, int m, int n,
                        float *const a_array[], int lda,
                        float *const tau_array[], int *info, int batch);
  cublas_handle handle;
} cb;

/* Loads cuBLAS (and the runtime) once and makes a handle on the legacy
 * default stream; false with *why set if that fails. */
static inline bool load_cublas(const char **why) {
  static const char *const names[] = {"libcublas.so.13",
                                      "libcublas.so.12",
                                      "libcublas.so",
                                      "/usr/local/cuda/lib64/libcublas.so.13",
                                      "/usr/local/cuda/lib64/libcublas.so.12",
                                      NULL};
  if (cb.handle != NULL)
    return true;
  void *h = bl_open_first(names);
  if (h == NULL || !load_runtime()) {
    *why = "cuBLAS or the CUDA runtime was not found";
    return false;
  }
  BL_SYM(h, cb.create, "cublasCreate_v2");
  BL_SYM(h, cb.set_stream, "cublasSetStream_v2");
  BL_SYM(h, cb.set_math, "cublasSetMathMode");
  BL_SYM(h, cb.sgemm, "cublasSgemm_v2");
  BL_SYM(h, cb.gemm_ex, "cublasGemmEx");
  BL_SYM(h, cb.strsm, "cublasStrsm_v2");
  BL_SYM(h, cb.sgeqrf_batched, "cublasSgeqrfBatched");
  cublas_handle hd = NULL;
  if (!cb.create || !cb.set_stream || !cb.set_math || cb.create(&hd) != 0 ||
      cb.set_stream(hd, NULL) != 0) {
    *why = "cuBLAS could not be initialised";
    return false;
  }
  cb.handle = hd;
  return true;
}

/* ---- cuSOLVER (dense) ---------------------------------------------------- */

typedef struct cusolver_ctx *cusolver_handle;

/* cusolverStatus_t is an enum: int here, 0 is CUSOLVER_STATUS_SUCCESS.
 * `info` arguments point to device memory (devInfo): 0 on success, -i for
 * a bad i-th parameter, +i for a failed pivot or leading minor. */
static struct {
  int (*create)(cusolver_handle *handle);
  int (*set_stream)(cusolver_handle handle, void *stream);
  int (*destroy)(cusolver_handle handle);
  int (*spotrf_size)(cusolver_handle handle, int uplo, int n, float *a, int lda,
                     int *lwork);
  int (*spotrf)(cusolver_handle handle, int uplo, int n, float *a, int lda,
                float *work, int lwork, int *info);
  int (*dpotrf_size)(cusolver_handle handle, int uplo, int n, double *a,
                     int lda, int *lwork);
  int (*dpotrf)(cusolver_handle handle, int uplo, int n, double *a, int lda,
                double *work, int lwork, int *info);
  int (*spotrf_batched)(cusolver_handle handle, int uplo, int n,
                        float *a_array[], int lda, int *info, int batch);
  /* The 64-bit generic API (cusolverDnX*), which PyTorch calls for a
   * single matrix's Cholesky (on a column-major copy, with the lower fill
   * mode for a lower factor): PyTorch took 9.3 ms at 8192^2 float32 on an
   * H100 where the legacy Spotrf with the upper fill took 13.2, and
   * Xpotrf with the upper fill 13.1 on an H200, so the fill mode is
   * presumably what matters (bench_linalg times all three). dtypes are
   * cudaDataType values (CUDA_R_32F 0, CUDA_R_64F 1); params from
   * create_params. */
  int (*create_params)(void **params);
  int (*destroy_params)(void *params);
  int (*xpotrf_size)(cusolver_handle handle, void *params, int uplo,
                     int64_t n, int dtype_a, const void *a, int64_t lda,
                     int compute, size_t *dev_bytes, size_t *host_bytes);
  int (*xpotrf)(cusolver_handle handle, void *params, int uplo, int64_t n,
                int dtype_a, void *a, int64_t lda, int compute, void *dev_work,
                size_t dev_bytes, void *host_work, size_t host_bytes,
                int *info);
  void *params; /* NULL when the generic API is missing */
  /* Householder QR in place: R on and above the diagonal, the reflectors
   * below it, their scalars in tau (min(m, n) of them). */
  int (*sgeqrf_size)(cusolver_handle handle, int m, int n, float *a, int lda,
                     int *lwork);
  int (*sgeqrf)(cusolver_handle handle, int m, int n, float *a, int lda,
                float *tau, float *work, int lwork, int *info);
  /* The first n columns of Q from geqrf's k reflectors, in place of them. */
  int (*sorgqr_size)(cusolver_handle handle, int m, int n, int k,
                     const float *a, int lda, const float *tau, int *lwork);
  int (*sorgqr)(cusolver_handle handle, int m, int n, int k, float *a, int lda,
                const float *tau, float *work, int lwork, int *info);
  /* LU with partial pivoting in place; ipiv from 1, LAPACK's. */
  int (*sgetrf_size)(cusolver_handle handle, int m, int n, float *a, int lda,
                     int *lwork);
  int (*sgetrf)(cusolver_handle handle, int m, int n, float *a, int lda,
                float *work, int *ipiv, int *info);
  /* Solves op(A) X = B in place of B with getrf's factors. */
  int (*sgetrs)(cusolver_handle handle, int trans, int n, int nrhs,
                const float *a, int lda, const int *ipiv, float *b, int ldb,
                int *info);
  cusolver_handle handle;
} cs;

/* Loads cuSOLVER (and the runtime) once and makes a handle on the legacy
 * default stream; false with *why set if that fails. A function the
 * library lacks stays NULL: each caller checks the ones it uses. */
static inline bool load_cusolver(const char **why) {
  static const char *const names[] = {"libcusolver.so.12",
                                      "libcusolver.so.11",
                                      "libcusolver.so",
                                      "/usr/local/cuda/lib64/libcusolver.so.12",
                                      "/usr/local/cuda/lib64/libcusolver.so.11",
                                      NULL};
  if (cs.handle != NULL)
    return true;
  void *h = bl_open_first(names);
  if (h == NULL || !load_runtime()) {
    *why = "cuSOLVER or the CUDA runtime was not found";
    return false;
  }
  BL_SYM(h, cs.create, "cusolverDnCreate");
  BL_SYM(h, cs.set_stream, "cusolverDnSetStream");
  BL_SYM(h, cs.destroy, "cusolverDnDestroy");
  BL_SYM(h, cs.spotrf_size, "cusolverDnSpotrf_bufferSize");
  BL_SYM(h, cs.spotrf, "cusolverDnSpotrf");
  BL_SYM(h, cs.dpotrf_size, "cusolverDnDpotrf_bufferSize");
  BL_SYM(h, cs.dpotrf, "cusolverDnDpotrf");
  BL_SYM(h, cs.spotrf_batched, "cusolverDnSpotrfBatched");
  BL_SYM(h, cs.create_params, "cusolverDnCreateParams");
  BL_SYM(h, cs.destroy_params, "cusolverDnDestroyParams");
  BL_SYM(h, cs.xpotrf_size, "cusolverDnXpotrf_bufferSize");
  BL_SYM(h, cs.xpotrf, "cusolverDnXpotrf");
  BL_SYM(h, cs.sgeqrf_size, "cusolverDnSgeqrf_bufferSize");
  BL_SYM(h, cs.sgeqrf, "cusolverDnSgeqrf");
  BL_SYM(h, cs.sorgqr_size, "cusolverDnSorgqr_bufferSize");
  BL_SYM(h, cs.sorgqr, "cusolverDnSorgqr");
  BL_SYM(h, cs.sgetrf_size, "cusolverDnSgetrf_bufferSize");
  BL_SYM(h, cs.sgetrf, "cusolverDnSgetrf");
  BL_SYM(h, cs.sgetrs, "cusolverDnSgetrs");
  cusolver_handle hd = NULL;
  if (!cs.create || !cs.set_stream || !cs.destroy || cs.create(&hd) != 0 ||
      cs.set_stream(hd, NULL) != 0) {
    *why = "cuSOLVER could not be initialised";
    return false;
  }
  cs.handle = hd;
  cs.params = NULL;
  if (cs.create_params && cs.destroy_params && cs.xpotrf_size && cs.xpotrf &&
      cs.create_params(&cs.params) != 0)
    cs.params = NULL;
  return true;
}

/* Destroys the cuSOLVER handle, if any (the program's end). */
static inline void unload_cusolver(void) {
  if (cs.params != NULL)
    cs.destroy_params(cs.params);
  cs.params = NULL;
  if (cs.handle != NULL)
    cs.destroy(cs.handle);
  cs.handle = NULL;
}

#endif /* KILN_BENCH_BASELINE_H */

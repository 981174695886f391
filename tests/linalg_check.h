/*
 * Helpers shared by the linear-algebra tests (tests/test_linalg_*.c): host
 * matrices in double, device arrays of them rounded as kiln sees them,
 * random orthogonal and ill-conditioned matrices, and the NVRTC compile
 * check every linalg_*_nvrtc test runs on each kernel configuration.
 */
#ifndef KILN_TESTS_LINALG_CHECK_H
#define KILN_TESTS_LINALG_CHECK_H

#include "check.h"

/* n doubles, zeroed (at least one), or the test fails. */
double *kt_la_alloc(int64_t n);

/* A device array of `dt` holding v (row-major, shape's element count),
 * and v rounded in place to what the array holds, so host references
 * compute with exactly kiln's inputs. */
kiln_array *kt_la_array(kiln_dtype dt, int ndim, const int64_t *shape,
                        double *v);

/* A template argument. */
void kt_la_targ(kiln_template_arg *t, const char *name,
                kiln_template_kind kind, int64_t v, kiln_dtype d);

/* A random orthogonal n x n matrix (a product of Householder reflectors
 * of random vectors), row-major. */
void kt_la_orthogonal(int64_t n, double *q);

/* a (m x n) = U diag(s) V with random orthogonal U (m x m) and V (n x n)
 * and s from 1 down to 1/cond, log-evenly (min(m, n) values): a matrix of
 * 2-norm condition number `cond`. */
void kt_la_ill(int64_t m, int64_t n, double cond, double *a);

/* A random m x n matrix (values in [-1, 1]) held as the transposed view of
 * a stored n x m array: *view is the m x n view (strides 1, m), *base the
 * stored array (destroy both), and a (m x n, row-major) receives the
 * view's values as kiln sees them. */
void kt_la_transposed(kiln_dtype dt, int64_t m, int64_t n, double *a,
                      kiln_array **base, kiln_array **view);

/* A strided batch of `batch` random m x n matrices read in place: every
 * other column (from column `col0`, 0 or 1) of every other matrix of a
 * stored (2 batch) x m x 2n array whose other elements are garbage. *view
 * is the batch x m x n view, *base the stored array (destroy both), and
 * a (batch x m x n, row-major) receives the view's values as kiln sees
 * them. */
void kt_la_sliced(kiln_dtype dt, int64_t batch, int64_t m, int64_t n,
                  int col0, double *a, kiln_array **base, kiln_array **view);

/* The Frobenius norm of count values. */
double kt_la_fro(const double *a, int64_t count);

/* ||A^T A - R^T R||_F for A (m x n) and the first k rows of R (k x n),
 * both row-major: the check of an R without Q (R^T R = A^T A). */
double kt_la_gram_diff(const double *a, const double *r, int64_t m,
                       int64_t n, int64_t k);

/* Checks one packed LU factorization lu (m x n, LAPACK's form) of a with
 * pivots piv (matrix `entry` of a batch, for messages): every pivot in
 * range, |L| <= 1, and the backward error ||A[perm] - L U||_F / (||A||_F
 * n eps) below KT_LA_LU_THRESHOLD. */
#define KT_LA_LU_THRESHOLD 10.0
void kt_la_lu_check(const char *what, int64_t entry, kiln_dtype dt, int64_t m,
                    int64_t n, const double *a, const double *lu,
                    const int32_t *piv);

/* One library-kernel configuration to compile for a CUDA target. */
typedef struct kt_la_kernel {
  const char *family, *name, *inputs, *outputs;
  unsigned flags; /* kiln__library_kernel flags */
  int num_inputs, num_outputs;
  const kiln_array_spec *in;
  const kiln_output_spec *out;
  const kiln_template_arg *targs;
  int num_targs;
  bool allow_spills; /* a few bytes of spills are known and accepted */
  bool forbid_local; /* no local memory at all (arrays meant to stay in
                        registers) */
} kt_la_kernel;

/* Compiles k for `target` (NVRTC, no GPU needed) and fails the test when
 * it does not compile, spills registers (unless allowed) or needs more
 * than 48 KiB of threadgroup memory. With KILN_TEST_REPORT set, prints its
 * resources. */
void kt_la_compile(const kt_la_kernel *k, const char *target);

/* A `kiln linalg` error: exit status `want` (any failure for 0), one line
 * on stderr starting "kiln linalg: ", mentioning `mention` (and
 * `mention2` unless NULL), nothing written to `od`. */
void kt_la_cli_expect_error(const char *what, const char *od, int want,
                            const char *mention, const char *mention2,
                            kt_cli r);

/* The NVRTC target of the *_nvrtc tests (KILN_TEST_NVRTC_TARGET); skips
 * the test when it is not set. */
const char *kt_la_nvrtc_target(void);

/* The start of a numpy-driven CLI test: skips it without the CLI or
 * python3 with numpy, else returns a fresh temporary directory (the
 * caller frees it after kt_rmtree). Its script begins with
 * KT_LA_NUMPY_HEAD, which sets d, kiln and dev from argv (as
 * kt_python_check passes them) and rng from the seed given for %llu. */
char *kt_la_numpy_dir(const char *tag);
#define KT_LA_NUMPY_HEAD                                                      \
  "import numpy as np, subprocess, sys, os\n"                                 \
  "d, kiln, dev = sys.argv[1], sys.argv[2], sys.argv[3]\n"                    \
  "rng = np.random.default_rng(%llu)\n"

/* A = M M^T + n I (n x n) into a, M's entries kt_uniform(-1, 1): a
 * random symmetric positive definite matrix, in double. */
void kt_la_spd(int64_t n, double *a);

/* A = Q diag(s) Q^T (n x n) into a, Q a random orthogonal matrix and s
 * from 1 down to 1 / cond, log-evenly: symmetric positive definite of
 * condition number cond. */
void kt_la_spd_ill(int64_t n, double cond, double *a);

/* Checks Cholesky factors f (batch x n x n, lower, or upper with `upper`)
 * of the matrices a (both in double): a positive diagonal, exact zeros in
 * the other triangle, and the backward error ||A - L L^T||_F / (||A||_F n
 * eps(dt)) below `threshold`. */
void kt_la_chol_check(const char *what, kiln_dtype dt, bool upper,
                      int64_t batch, int64_t n, const double *a,
                      const double *f, double threshold);

/* Allocation-failure sweeps. kt_af_hooks() are allocation hooks
 * (kiln_set_alloc_hooks) that count the host allocations of the armed
 * thread (the streams' threads are never armed, so never fail) and fail
 * one of them, and count the live blocks of every thread. kt_af_arm
 * arms the calling thread with the count at 0, failing allocation
 * fail_nth (from 1; 0 fails none); kt_af_disarm disarms it and returns
 * how many it made; kt_af_settle waits for every stream, empties the
 * device's cache and returns the live blocks. */
const kiln_alloc_hooks *kt_af_hooks(void);
void kt_af_arm(long fail_nth);
long kt_af_disarm(void);
long kt_af_settle(void);

/* A sweep of allocation failures over one call (the hooks installed
 * first): `call` makes it (and nothing else that allocates: it runs
 * armed), `check` then sees its status and the allocation k that
 * failed, and checks and frees the results (k 0: the unarmed run that
 * counts the call's allocations). For about 60 k over all of them: the
 * call either succeeds or fails with out of memory, saying so; no host
 * block leaks once the streams are idle. Returns the allocation count. */
typedef kiln_status (*kt_af_call_fn)(void *ctx);
typedef void (*kt_af_check_fn)(void *ctx, kiln_status st, long k);
long kt_af_sweep(const char *what, kt_af_call_fn call, kt_af_check_fn check,
                 void *ctx);

#endif /* KILN_TESTS_LINALG_CHECK_H */

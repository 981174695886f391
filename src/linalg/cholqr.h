/*
 * Shifted CholeskyQR3 (src/linalg/cholqr.c), the fast tall-skinny path of
 * kiln_qr (path 4), with its configurations for the NVRTC compile test.
 */
#ifndef KILN_LINALG_CHOLQR_H
#define KILN_LINALG_CHOLQR_H

#include "linalg/linalg.h"

/* The widest A the CholeskyQR path takes (both dtypes). */
#define KILN__CHOLQR_NMAX 64

/*
 * Shifted CholeskyQR3 of A (...×m×n, m >= n >= 1, n <= KILN__CHOLQR_NMAX;
 * float32 or float64; read in place, may be a strided view) into q (the
 * reduced ...×m×n Q, contiguous, or NULL for R only) and r (...×n×n,
 * contiguous, positive diagonal). flag (int32, one per matrix of the
 * batch, contiguous) receives 0 where the factorization succeeded and a
 * non-zero code where it broke down (a numerically rank-deficient matrix,
 * non-finite values, a Gram that overflowed): that matrix's q and r then
 * hold garbage and the caller must factor it another way (kiln_qr runs
 * TSQR behind the flag). q also holds the rows between passes; R only
 * allocates a batch x m x n workspace for them instead. Asynchronous, on
 * s; nothing is read back.
 */
kiln_status kiln__qr_cholqr(kiln_stream *s, kiln_array *a, kiln_array *q,
                            kiln_array *r, kiln_array *flag);

/* One kernel configuration kiln__qr_cholqr can launch (kernels/cholqr.metal):
 * kernel name, inputs, outputs, the dtype and NC/PASS template values
 * (PASS -1 where the kernel has none, NC -1 for cq_reduce, whose PASS 3
 * means its template STAGED, and 2 not). */
typedef struct kiln__cholqr_config {
  const char *name, *inputs, *outputs;
  kiln_dtype dtype;
  int nc, pass;
} kiln__cholqr_config;

typedef kiln_status (*kiln__cholqr_config_fn)(
    const kiln__cholqr_config *config, void *user);

/* Calls fn for every configuration (stops at the first non-OK status). */
kiln_status kiln__cholqr_for_each_config(kiln__cholqr_config_fn fn,
                                         void *user);

#endif /* KILN_LINALG_CHOLQR_H */

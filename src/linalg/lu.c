/* PLACEHOLDER (being written): LU and what is built on it. */
#include "linalg/linalg.h"

kiln_status kiln_lu_factor(kiln_array *a, kiln_array **lu, kiln_array **pivots) {
  KILN_API_ENTER();
  (void)a;
  (void)lu;
  (void)pivots;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_lu_factor_ex(kiln_array *a, const kiln_linalg_opts *opts, kiln_array **lu, kiln_array **pivots) {
  KILN_API_ENTER();
  (void)a;
  (void)opts;
  (void)lu;
  (void)pivots;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_lu(kiln_array *a, kiln_array **perm, kiln_array **l, kiln_array **u) {
  KILN_API_ENTER();
  (void)a;
  (void)perm;
  (void)l;
  (void)u;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_lu_ex(kiln_array *a, const kiln_linalg_opts *opts, kiln_array **perm, kiln_array **l, kiln_array **u) {
  KILN_API_ENTER();
  (void)a;
  (void)opts;
  (void)perm;
  (void)l;
  (void)u;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_solve(kiln_array *a, kiln_array *b, kiln_array **x) {
  KILN_API_ENTER();
  (void)a;
  (void)b;
  (void)x;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_solve_ex(kiln_array *a, kiln_array *b, const kiln_linalg_opts *opts, kiln_array **x) {
  KILN_API_ENTER();
  (void)a;
  (void)b;
  (void)opts;
  (void)x;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_inv(kiln_array *a, kiln_array **out) {
  KILN_API_ENTER();
  (void)a;
  (void)out;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_inv_ex(kiln_array *a, const kiln_linalg_opts *opts, kiln_array **out) {
  KILN_API_ENTER();
  (void)a;
  (void)opts;
  (void)out;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_det(kiln_array *a, kiln_array **out) {
  KILN_API_ENTER();
  (void)a;
  (void)out;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_det_ex(kiln_array *a, const kiln_linalg_opts *opts, kiln_array **out) {
  KILN_API_ENTER();
  (void)a;
  (void)opts;
  (void)out;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_slogdet(kiln_array *a, kiln_array **sign, kiln_array **logabsdet) {
  KILN_API_ENTER();
  (void)a;
  (void)sign;
  (void)logabsdet;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_slogdet_ex(kiln_array *a, const kiln_linalg_opts *opts, kiln_array **sign, kiln_array **logabsdet) {
  KILN_API_ENTER();
  (void)a;
  (void)opts;
  (void)sign;
  (void)logabsdet;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}


/* PLACEHOLDER (being written): triangular solves and inverses. */
#include "linalg/linalg.h"

kiln_status kiln_solve_triangular(kiln_array *a, kiln_array *b, bool upper, bool trans, bool unit_diagonal, kiln_array **x) {
  KILN_API_ENTER();
  (void)a;
  (void)b;
  (void)upper;
  (void)trans;
  (void)unit_diagonal;
  (void)x;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_solve_triangular_ex(kiln_array *a, kiln_array *b, bool upper, bool trans, bool unit_diagonal, const kiln_linalg_opts *opts, kiln_array **x) {
  KILN_API_ENTER();
  (void)a;
  (void)b;
  (void)upper;
  (void)trans;
  (void)unit_diagonal;
  (void)opts;
  (void)x;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_tri_inv(kiln_array *a, bool upper, bool unit_diagonal, kiln_array **out) {
  KILN_API_ENTER();
  (void)a;
  (void)upper;
  (void)unit_diagonal;
  (void)out;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_tri_inv_ex(kiln_array *a, bool upper, bool unit_diagonal, const kiln_linalg_opts *opts, kiln_array **out) {
  KILN_API_ENTER();
  (void)a;
  (void)upper;
  (void)unit_diagonal;
  (void)opts;
  (void)out;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_cholesky_inv(kiln_array *f, bool upper, kiln_array **out) {
  KILN_API_ENTER();
  (void)f;
  (void)upper;
  (void)out;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_cholesky_inv_ex(kiln_array *f, bool upper, const kiln_linalg_opts *opts, kiln_array **out) {
  KILN_API_ENTER();
  (void)f;
  (void)upper;
  (void)opts;
  (void)out;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln__trsm(kiln_stream *s, kiln_array *a, bool upper, bool trans, bool unit, double alpha, kiln_array *b) {
  (void)s;
  (void)a;
  (void)upper;
  (void)trans;
  (void)unit;
  (void)alpha;
  (void)b;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

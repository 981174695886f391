/* PLACEHOLDER (being written): norms. */
#include "linalg/linalg.h"

kiln_status kiln_norm(kiln_array *a, kiln_norm_type type, bool vectors, kiln_array **out) {
  KILN_API_ENTER();
  (void)a;
  (void)type;
  (void)vectors;
  (void)out;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_norm_ex(kiln_array *a, kiln_norm_type type, bool vectors, const kiln_linalg_opts *opts, kiln_array **out) {
  KILN_API_ENTER();
  (void)a;
  (void)type;
  (void)vectors;
  (void)opts;
  (void)out;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}


/* PLACEHOLDER (being written): QR (kiln_qr). */
#include "linalg/linalg.h"

kiln_status kiln_qr(kiln_array *a, kiln_qr_mode mode, kiln_array **q, kiln_array **r) {
  KILN_API_ENTER();
  (void)a;
  (void)mode;
  (void)q;
  (void)r;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

kiln_status kiln_qr_ex(kiln_array *a, kiln_qr_mode mode, const kiln_linalg_opts *opts, kiln_array **q, kiln_array **r) {
  KILN_API_ENTER();
  (void)a;
  (void)mode;
  (void)opts;
  (void)q;
  (void)r;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}


kiln_status kiln__qr_tsqr(kiln_stream *s, kiln_array *a, kiln_array *q,
                          kiln_array *r) {
  (void)s;
  (void)a;
  (void)q;
  (void)r;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

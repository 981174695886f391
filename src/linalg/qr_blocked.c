/* PLACEHOLDER (being written): blocked Householder QR. */
#include "linalg/linalg.h"

kiln_status kiln__qr_blocked(kiln_stream *s, kiln_array *a, kiln_qr_mode mode, kiln_array *q, kiln_array *r) {
  (void)s;
  (void)a;
  (void)mode;
  (void)q;
  (void)r;
  return kiln__error(KILN_ERROR_UNSUPPORTED, "not implemented yet.");
}

/*
 * What is built on the LU factorization of lu.c: kiln_lu_factor (the
 * packed factors and pivots), kiln_lu (perm, L, U), kiln_solve, kiln_inv,
 * kiln_det and kiln_slogdet, on any device, batched, float32 and float64.
 *
 * solve: A = P^T L U (checked: a singular A is an error), then X = P B
 * (lu_gather, which also reads strided and broadcast B and makes X
 * contiguous), then L Y = X and U X = Y in place with kiln__trsm. A 2-D A
 * with a batched B is factored once; a batched A with a 2-D B reads B for
 * every entry. inv is solve against the identity, gathered straight into
 * its permuted form. det and slogdet read the factors' diagonal and the
 * pivots' parity in one small kernel per batch, without waiting (a
 * singular matrix is 0 / sign 0 and -inf, not an error).
 *
 * Every call checks its arguments first, creates its results only once
 * they are sure to be written, and on any failure destroys them and
 * leaves the caller's pointers untouched.
 */
#include <stdint.h>
#include <string.h>

#include "linalg/linalg.h"

/* ---- kiln_lu_factor and kiln_lu ------------------------------------------ */

static kiln_status null_check(const void *a, const char *an, const void *b,
                              const char *bn, const void *c, const char *cn,
                              const void *d, const char *dn) {
  const void *p[4] = {a, b, c, d};
  const char *names[4] = {an, bn, cn, dn};
  for (int i = 0; i < 4; i++)
    if (names[i] != NULL && p[i] == NULL)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "%s is NULL.", names[i]);
  return KILN_OK;
}

static kiln_status lu_factor(kiln_array *a, const kiln_linalg_opts *opts,
                             kiln_array **lu, kiln_array **pivots) {
  kiln_status st = null_check(a, "A", lu, "lu", pivots, "pivots", NULL, NULL);
  kiln_linalg_opts o;
  kiln_stream *s = NULL;
  if (st == KILN_OK)
    st = kiln__lu_prepare(a, opts, "LU", false, &o, &s);
  kiln__lu f;
  if (st == KILN_OK)
    st = kiln__lu_run(s, a, o.path, true, &f);
  if (st != KILN_OK)
    return st;
  *lu = f.w;
  *pivots = f.piv;
  kiln__array_destroy(f.info);
  return KILN_OK;
}

static kiln_status lu_unpacked(kiln_array *a, const kiln_linalg_opts *opts,
                               kiln_array **perm, kiln_array **l,
                               kiln_array **u) {
  kiln_status st = null_check(a, "A", perm, "perm", l, "l", u, "u");
  kiln_linalg_opts o;
  kiln_stream *s = NULL;
  if (st == KILN_OK)
    st = kiln__lu_prepare(a, opts, "LU", false, &o, &s);
  kiln__lu f;
  memset(&f, 0, sizeof f);
  if (st == KILN_OK)
    st = kiln__lu_run(s, a, o.path, true, &f);
  kiln_array *p = NULL, *la = NULL, *ua = NULL;
  int nd = a->ndim;
  int64_t shape[KILN_MAX_NDIM];
  memcpy(shape, a->shape, (size_t)nd * sizeof *shape);
  shape[nd - 1] = f.k;
  if (st == KILN_OK)
    st = kiln__lu_perm(s, &f, &p);
  if (st == KILN_OK)
    st = kiln__array_create(s->device, a->dtype, nd, shape, &la);
  shape[nd - 2] = f.k;
  shape[nd - 1] = f.n;
  if (st == KILN_OK)
    st = kiln__array_create(s->device, a->dtype, nd, shape, &ua);
  if (st == KILN_OK)
    st = kiln__lu_unpack(s, &f, la, ua);
  kiln__lu_free(&f);
  if (st != KILN_OK) {
    kiln__array_destroy(p);
    kiln__array_destroy(la);
    kiln__array_destroy(ua);
    return st;
  }
  *perm = p;
  *l = la;
  *u = ua;
  return KILN_OK;
}

/* Public: see kiln.h. */
kiln_status kiln_lu_factor(kiln_array *a, kiln_array **lu,
                           kiln_array **pivots) {
  KILN_API_ENTER();
  return lu_factor(a, NULL, lu, pivots);
}

/* Public: see kiln.h; opts->path is documented at the top of this file. */
kiln_status kiln_lu_factor_ex(kiln_array *a, const kiln_linalg_opts *opts,
                              kiln_array **lu, kiln_array **pivots) {
  KILN_API_ENTER();
  return lu_factor(a, opts, lu, pivots);
}

/* Public: see kiln.h. */
kiln_status kiln_lu(kiln_array *a, kiln_array **perm, kiln_array **l,
                    kiln_array **u) {
  KILN_API_ENTER();
  return lu_unpacked(a, NULL, perm, l, u);
}

/* Public: see kiln.h. */
kiln_status kiln_lu_ex(kiln_array *a, const kiln_linalg_opts *opts,
                       kiln_array **perm, kiln_array **l, kiln_array **u) {
  KILN_API_ENTER();
  return lu_unpacked(a, opts, perm, l, u);
}

/* ---- kiln_solve and kiln_inv --------------------------------------------- */

/* B's checks against A (n x n): dtype, device, rank, rows, batch. On
 * success *bv is B as a matrix view (n x 1 for a 1-D B) and shape/ndim
 * the shape of X. */
static kiln_status check_rhs(kiln_array *a, kiln_array *b, int64_t *batch,
                             kiln_array **bv, int *ndim, int64_t *shape) {
  int64_t n = a->shape[a->ndim - 1];
  if (b->dtype != a->dtype)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "B is %s but A is %s; they must have one dtype.",
                       kiln_dtype_name(b->dtype), kiln_dtype_name(a->dtype));
  if (b->buffer->device != a->buffer->device)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "B lives on device %d but A on device %d; move them "
                       "to one device first.",
                       b->buffer->device->index, a->buffer->device->index);
  if (b->ndim == 1 && a->ndim != 2)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "B is 1-D, which needs a 2-D A, but A has %d "
                       "dimensions; give B as ...×n×k.",
                       a->ndim);
  if (b->ndim == 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "B is 0-d; it must be a vector of n or matrices of "
                       "n x k.");
  int64_t rows = b->ndim == 1 ? b->shape[0] : b->shape[b->ndim - 2];
  if (rows != n)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "B has %lld rows but A is %lld x %lld; they must "
                       "match.",
                       (long long)rows, (long long)n, (long long)n);
  if (b->ndim > 1) {
    kiln_array *ops[2] = {a, b};
    static const char *const names[2] = {"A", "B"};
    kiln_status st = kiln__linalg_batch(ops, 2, names, batch);
    if (st != KILN_OK)
      return st;
  }
  const kiln_array *big = a->ndim >= b->ndim ? a : b;
  *ndim = b->ndim == 1 ? 1 : big->ndim;
  memcpy(shape, big->shape, (size_t)big->ndim * sizeof *shape);
  if (b->ndim == 1) {
    shape[0] = n;
  } else {
    shape[*ndim - 2] = n;
    shape[*ndim - 1] = b->shape[b->ndim - 1];
  }
  int64_t vs[2] = {n, 1}, vst[2] = {b->ndim == 1 ? b->strides[0] : 0, 1};
  const char *api = kiln__api_current();
  kiln_status st =
      b->ndim == 1 ? kiln_array_view(b, 2, vs, vst, 0, bv)
                   : kiln_array_view(b, b->ndim, b->shape, b->strides, 0, bv);
  kiln__api_enter(api);
  return st;
}

/* X as matrices: X itself, or an n x 1 view of a 1-D X. */
static kiln_status matrix_view(kiln_array *x, kiln_array **out) {
  const char *api = kiln__api_current();
  int64_t vs[2] = {x->ndim == 1 ? x->shape[0] : 0, 1}, vst[2] = {1, 1};
  kiln_status st =
      x->ndim == 1 ? kiln_array_view(x, 2, vs, vst, 0, out)
                   : kiln_array_view(x, x->ndim, x->shape, x->strides, 0, out);
  kiln__api_enter(api);
  return st;
}

/* X = U^-1 L^-1 X in place (X already in pivot order). */
typedef struct subst_job {
  kiln_stream *s;
  const kiln__lu *f;
  kiln_array *xv;
} subst_job;

static kiln_status substitute_fn(void *user) {
  subst_job *j = user;
  kiln_status st = kiln__trsm(j->s, j->f->w, false, false, true, 1.0, j->xv);
  return st == KILN_OK ? kiln__trsm(j->s, j->f->w, true, false, false, 1.0,
                                    j->xv)
                       : st;
}

/* With a scalar pool in use (linalg.h): the solves' GEMMs and scalars
 * then enqueue no fill between two of their kernels. */
static kiln_status substitute(kiln_stream *s, const kiln__lu *f,
                              kiln_array *xv) {
  subst_job j = {s, f, xv};
  return kiln__linalg_pooled(s, xv->dtype, substitute_fn, &j);
}

/*
 * Solves A X = B, or with b == NULL A X = I (the inverse): factor (checked),
 * permute, two triangular solves. x receives the new result.
 */
static kiln_status solve_into(kiln_array *a, kiln_array *b,
                              const kiln_linalg_opts *opts, const char *what,
                              kiln_array **x) {
  kiln_linalg_opts o;
  kiln_stream *s = NULL;
  kiln_status st = kiln__lu_prepare(a, opts, what, true, &o, &s);
  int64_t batch = 1, shape[KILN_MAX_NDIM];
  int ndim = a->ndim;
  kiln_array *bv = NULL, *perm = NULL, *xa = NULL, *xv = NULL;
  if (st == KILN_OK)
    st = kiln__lu_check(a, what, true, &batch);
  if (st == KILN_OK && b != NULL)
    st = check_rhs(a, b, &batch, &bv, &ndim, shape);
  if (st == KILN_OK && b == NULL)
    memcpy(shape, a->shape, (size_t)a->ndim * sizeof *shape);
  kiln__lu f;
  memset(&f, 0, sizeof f);
  if (st == KILN_OK)
    st = kiln__lu_run(s, a, o.path, true, &f);
  if (st == KILN_OK)
    st = kiln__array_create(s->device, a->dtype, ndim, shape, &xa);
  bool work = st == KILN_OK && xa->size > 0;
  if (work)
    st = kiln__lu_perm(s, &f, &perm);
  if (st == KILN_OK && work)
    st = kiln__lu_gather(s, perm, b != NULL ? bv : f.w, b == NULL, batch, xa);
  if (st == KILN_OK && work)
    st = matrix_view(xa, &xv);
  if (st == KILN_OK && work)
    st = substitute(s, &f, xv);
  kiln__array_destroy(bv);
  kiln__array_destroy(perm);
  kiln__array_destroy(xv);
  kiln__lu_free(&f);
  if (st != KILN_OK) {
    kiln__array_destroy(xa);
    return st;
  }
  *x = xa;
  return KILN_OK;
}

static kiln_status solve(kiln_array *a, kiln_array *b,
                         const kiln_linalg_opts *opts, kiln_array **x) {
  kiln_status st = null_check(a, "A", b, "B", x, "x", NULL, NULL);
  return st == KILN_OK ? solve_into(a, b, opts, "solve", x) : st;
}

static kiln_status inv(kiln_array *a, const kiln_linalg_opts *opts,
                       kiln_array **out) {
  kiln_status st = null_check(a, "A", out, "out", NULL, NULL, NULL, NULL);
  return st == KILN_OK ? solve_into(a, NULL, opts, "inv", out) : st;
}

/* Public: see kiln.h; opts->path (the factorization's) as for
 * kiln_lu_factor_ex. */
kiln_status kiln_solve(kiln_array *a, kiln_array *b, kiln_array **x) {
  KILN_API_ENTER();
  return solve(a, b, NULL, x);
}

/* Public: see kiln.h. */
kiln_status kiln_solve_ex(kiln_array *a, kiln_array *b,
                          const kiln_linalg_opts *opts, kiln_array **x) {
  KILN_API_ENTER();
  return solve(a, b, opts, x);
}

/* Public: see kiln.h. */
kiln_status kiln_inv(kiln_array *a, kiln_array **out) {
  KILN_API_ENTER();
  return inv(a, NULL, out);
}

/* Public: see kiln.h. */
kiln_status kiln_inv_ex(kiln_array *a, const kiln_linalg_opts *opts,
                        kiln_array **out) {
  KILN_API_ENTER();
  return inv(a, opts, out);
}

/* ---- kiln_det and kiln_slogdet ------------------------------------------- */

/* det (log false: *d, sign scratch) or slogdet (*sign, *d = log|det|),
 * asynchronous: the factorization is not checked. */
static kiln_status determinant(kiln_array *a, const kiln_linalg_opts *opts,
                               bool log, kiln_array **sign, kiln_array **d) {
  kiln_linalg_opts o;
  kiln_stream *s = NULL;
  kiln_status st =
      kiln__lu_prepare(a, opts, log ? "slogdet" : "det", true, &o, &s);
  kiln__lu f;
  memset(&f, 0, sizeof f);
  kiln_array *da = NULL, *sa = NULL;
  if (st == KILN_OK)
    st = kiln__lu_run(s, a, o.path, false, &f);
  if (st == KILN_OK)
    st = kiln__array_create(s->device, a->dtype, a->ndim - 2, a->shape, &da);
  if (st == KILN_OK)
    st = kiln__array_create(s->device, a->dtype, a->ndim - 2, a->shape, &sa);
  if (st == KILN_OK)
    st = kiln__lu_det(s, &f, log, da, sa);
  kiln__lu_free(&f);
  if (st != KILN_OK || !log)
    kiln__array_destroy(sa);
  if (st != KILN_OK) {
    kiln__array_destroy(da);
    return st;
  }
  if (log)
    *sign = sa;
  *d = da;
  return KILN_OK;
}

/* Public: see kiln.h; opts->path (the factorization's) as for
 * kiln_lu_factor_ex. */
kiln_status kiln_det(kiln_array *a, kiln_array **out) {
  KILN_API_ENTER();
  kiln_status st = null_check(a, "A", out, "out", NULL, NULL, NULL, NULL);
  return st == KILN_OK ? determinant(a, NULL, false, NULL, out) : st;
}

/* Public: see kiln.h. */
kiln_status kiln_det_ex(kiln_array *a, const kiln_linalg_opts *opts,
                        kiln_array **out) {
  KILN_API_ENTER();
  kiln_status st = null_check(a, "A", out, "out", NULL, NULL, NULL, NULL);
  return st == KILN_OK ? determinant(a, opts, false, NULL, out) : st;
}

/* Public: see kiln.h. */
kiln_status kiln_slogdet(kiln_array *a, kiln_array **sign,
                         kiln_array **logabsdet) {
  KILN_API_ENTER();
  kiln_status st =
      null_check(a, "A", sign, "sign", logabsdet, "logabsdet", NULL, NULL);
  return st == KILN_OK ? determinant(a, NULL, true, sign, logabsdet) : st;
}

/* Public: see kiln.h. */
kiln_status kiln_slogdet_ex(kiln_array *a, const kiln_linalg_opts *opts,
                            kiln_array **sign, kiln_array **logabsdet) {
  KILN_API_ENTER();
  kiln_status st =
      null_check(a, "A", sign, "sign", logabsdet, "logabsdet", NULL, NULL);
  return st == KILN_OK ? determinant(a, opts, true, sign, logabsdet) : st;
}

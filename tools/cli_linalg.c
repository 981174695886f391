/*
 * `kiln linalg OP ...`: kiln's linear algebra on .npy files, the interface
 * of issue 4 (other tools depend on it, so it changes only by growing):
 *
 *   kiln linalg OP [--device cpu|gpu|gpu:N] [--out-dir DIR]
 *                  [--dtype float32|float64] [options] INPUT.npy...
 *
 * Every operation runs through one table (linalg_ops): its inputs, the
 * flags it takes, a shape check phrased in terms of the user's files, and
 * a run function that calls the public API and names its results. The
 * steps are the same for all: parse, check the flags against the
 * operation, read the inputs (converting with --dtype, else keeping their
 * own float32/float64), check shapes, open the device, run and wait for
 * the stream (so that an asynchronous failure is reported before anything
 * is written), then write every result to a temporary next to its final
 * name and rename them all. Any failure removes every temporary, so no
 * output file appears unless the whole operation succeeded.
 *
 * Exit status: 0 on success, 1 when the operation failed (unreadable or
 * unsuitable inputs, a singular matrix, ...), 2 for bad usage (unknown
 * operation or flag, a flag of another operation, a wrong input count).
 */
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kiln.h"
#include "npy.h"

/* Options that only some operations take, as bits. */
enum {
  OF_TRANS_A = 1u << 0,
  OF_TRANS_B = 1u << 1,
  OF_ALPHA = 1u << 2,
  OF_UPPER = 1u << 3,
  OF_UNIT = 1u << 4,
  OF_MODE = 1u << 5
};

typedef enum linalg_flag_id {
  LF_DEVICE, LF_OUT_DIR, LF_DTYPE, LF_TRANS_A, LF_TRANS_B, LF_ALPHA,
  LF_UPPER, LF_UNIT, LF_MODE, LF_HELP
} linalg_flag_id;

typedef struct linalg_flag {
  const char *name;
  linalg_flag_id id;
  bool takes_value;
  unsigned bit; /* OF_*: 0 for the options of every operation */
} linalg_flag;

static const linalg_flag linalg_flags[] = {
    {"--device", LF_DEVICE, true, 0},
    {"--out-dir", LF_OUT_DIR, true, 0},
    {"--dtype", LF_DTYPE, true, 0},
    {"--trans-a", LF_TRANS_A, false, OF_TRANS_A},
    {"--trans-b", LF_TRANS_B, false, OF_TRANS_B},
    {"--alpha", LF_ALPHA, true, OF_ALPHA},
    {"--upper", LF_UPPER, false, OF_UPPER},
    {"--unit-diagonal", LF_UNIT, false, OF_UNIT},
    {"--mode", LF_MODE, true, OF_MODE},
    {"--help", LF_HELP, false, 0},
};
#define NUM_LINALG_FLAGS (sizeof linalg_flags / sizeof linalg_flags[0])

/* The parsed command line. */
typedef struct linalg_opts {
  const char *device;
  const char *out_dir;
  const char *dtype_text;
  kiln_dtype dtype; /* with dtype_text */
  unsigned given;   /* OF_* options on the command line */
  bool trans_a, trans_b, upper, unit;
  bool has_alpha;
  double alpha;
  const char *mode_text;
  kiln_qr_mode mode;
  const char **inputs; /* the .npy paths, in order (pointers into argv) */
  int num_inputs;
} linalg_opts;

#define MAX_RESULTS 3

typedef struct linalg_op linalg_op;

/* Everything `kiln linalg OP` holds, released in one place. */
typedef struct linalg_state {
  const linalg_op *op;
  linalg_opts o;
  npy_array in[2];
  kiln_dtype dtype; /* the dtype the operation is computed in */
  kiln_device *device;
  kiln_linalg_opts lo; /* the stream every call runs on */
  kiln_array *a, *b;
  int num_results;
  const char *names[MAX_RESULTS]; /* file names without .npy */
  kiln_array *results[MAX_RESULTS];
  char *tmp_paths[MAX_RESULTS]; /* temporaries not yet renamed */
} linalg_state;

/* One operation of the interface. */
struct linalg_op {
  const char *name;
  int num_inputs;
  unsigned flags; /* the OF_* options it takes */
  bool half;      /* also computes in float16 (gemm) */
  int (*check)(linalg_state *s); /* shapes, named after the files */
  int (*run)(linalg_state *s);   /* the library call; sets the results */
};

static void linalg_state_free(linalg_state *s) {
  for (int i = 0; i < MAX_RESULTS; i++) {
    if (s->tmp_paths[i])
      unlink(s->tmp_paths[i]);
    free(s->tmp_paths[i]);
    kiln_array_destroy(s->results[i]);
  }
  kiln_array_destroy(s->a);
  kiln_array_destroy(s->b);
  for (int i = 0; i < 2; i++)
    npy_array_free(&s->in[i]);
  free(s->o.inputs);
}

/* ---- shapes -------------------------------------------------------------- */

static const char *const input_names[2] = {"A", "B"};

/* "2x3x4" for messages. */
static void shape_text(const npy_array *a, char *out, size_t cap) {
  kiln_output_spec sp;
  sp.ndim = a->ndim;
  memcpy(sp.shape, a->shape, sizeof sp.shape);
  format_shape(out, cap, &sp);
}

static int64_t rows_of(const npy_array *a) { return a->shape[a->ndim - 2]; }
static int64_t cols_of(const npy_array *a) { return a->shape[a->ndim - 1]; }

/* Input i must hold matrices (at least 2 dimensions). */
static int need_matrices(const linalg_state *s, int i) {
  const npy_array *a = &s->in[i];
  if (a->ndim >= 2)
    return 0;
  char sh[400];
  shape_text(a, sh, sizeof sh);
  return runtime_error("input %s ('%s') has shape %s; %s needs matrices "
                       "(at least 2 dimensions).", input_names[i],
                       s->o.inputs[i], sh, s->op->name);
}

/* Input i must hold square matrices. */
static int need_square(const linalg_state *s, int i) {
  int rc = need_matrices(s, i);
  if (rc)
    return rc;
  const npy_array *a = &s->in[i];
  if (rows_of(a) == cols_of(a))
    return 0;
  char sh[400];
  shape_text(a, sh, sizeof sh);
  return runtime_error("input %s ('%s') has shape %s; %s needs square "
                       "matrices (...xNxN).", input_names[i],
                       s->o.inputs[i], sh, s->op->name);
}

/* The batch dimensions of A and B (all but the last two, or the last one
 * of a 1-D B) are equal, or one of them has none. */
static int same_batch(const linalg_state *s) {
  const npy_array *a = &s->in[0], *b = &s->in[1];
  int ba = a->ndim - 2, bb = b->ndim - 2;
  if (ba <= 0 || bb <= 0)
    return 0;
  bool same = ba == bb;
  for (int d = 0; same && d < ba; d++)
    same = a->shape[d] == b->shape[d];
  if (same)
    return 0;
  char sa[400], sb[400];
  shape_text(a, sa, sizeof sa);
  shape_text(b, sb, sizeof sb);
  return runtime_error("the batch dimensions of A (%s) and B (%s) differ; "
                       "they must be equal, or one input must have none.",
                       sa, sb);
}

/* B has as many rows as the square A: ...xNxN with ...xNxK (or, for
 * solve with a plain A, a vector of N). */
static int need_rows_of_a(const linalg_state *s, bool vector_ok) {
  const npy_array *a = &s->in[0], *b = &s->in[1];
  char sa[400], sb[400];
  shape_text(a, sa, sizeof sa);
  shape_text(b, sb, sizeof sb);
  if (b->ndim == 1 && vector_ok) {
    if (a->ndim != 2)
      return runtime_error("input B ('%s') is a vector (shape %s) but A "
                           "(%s) is a batch; give B as ...xNxK matrices.",
                           s->o.inputs[1], sb, sa);
    if (b->shape[0] != rows_of(a))
      return runtime_error("input B ('%s') has %lld elements but A (%s) "
                           "has %lld rows; they must agree.",
                           s->o.inputs[1], (long long)b->shape[0], sa,
                           (long long)rows_of(a));
    return 0;
  }
  int rc = need_matrices(s, 1);
  if (rc)
    return rc;
  if (rows_of(b) != rows_of(a))
    return runtime_error("input B ('%s', shape %s) has %lld rows but A "
                         "(%s) has %lld; %s needs B with as many rows as "
                         "A.", s->o.inputs[1], sb, (long long)rows_of(b),
                         sa, (long long)rows_of(a), s->op->name);
  return same_batch(s);
}

static int check_matrix(linalg_state *s) { return need_matrices(s, 0); }
static int check_square(linalg_state *s) { return need_square(s, 0); }

static int check_triangular(linalg_state *s) {
  int rc = need_square(s, 0);
  return rc ? rc : need_rows_of_a(s, false);
}

static int check_solve(linalg_state *s) {
  int rc = need_square(s, 0);
  return rc ? rc : need_rows_of_a(s, true);
}

/* op(A) (...xMxK) and op(B) (...xKxN) chain. */
static int check_gemm(linalg_state *s) {
  int rc = need_matrices(s, 0);
  if (!rc)
    rc = need_matrices(s, 1);
  if (rc)
    return rc;
  const npy_array *a = &s->in[0], *b = &s->in[1];
  int64_t ka = a->shape[a->ndim - (s->o.trans_a ? 2 : 1)];
  int64_t kb = b->shape[b->ndim - (s->o.trans_b ? 1 : 2)];
  if (ka != kb) {
    char sa[400], sb[400];
    shape_text(a, sa, sizeof sa);
    shape_text(b, sb, sizeof sb);
    return runtime_error("the shapes of A (%s) and B (%s) do not chain: "
                         "op(A) has %lld columns but op(B) has %lld rows.",
                         sa, sb, (long long)ka, (long long)kb);
  }
  return same_batch(s);
}

/* ---- running ------------------------------------------------------------- */

/* Input i as a device array of the operation's dtype. */
static int upload(linalg_state *s, int i, kiln_array **out) {
  kiln_status st = kiln_array_from_host(s->device, s->dtype, s->in[i].ndim,
                                        s->in[i].shape, s->in[i].data, out);
  if (st != KILN_OK)
    return library_error(st, "cannot place input %s on the device",
                         input_names[i]);
  return 0;
}

static int upload_inputs(linalg_state *s) {
  int rc = upload(s, 0, &s->a);
  if (!rc && s->op->num_inputs > 1)
    rc = upload(s, 1, &s->b);
  return rc;
}

/* Names result i (its file is DIR/NAME.npy). */
static void name_result(linalg_state *s, int i, const char *name) {
  s->names[i] = name;
  if (s->num_results < i + 1)
    s->num_results = i + 1;
}

/* C = alpha * op(A) @ op(B), into a C made here (beta = 0: C's
 * uninitialised contents are never read). */
static int run_gemm(linalg_state *s) {
  const npy_array *a = &s->in[0], *b = &s->in[1];
  const npy_array *batch = a->ndim > 2 ? a : b;
  int64_t shape[KILN_MAX_NDIM];
  memcpy(shape, batch->shape, sizeof shape);
  shape[batch->ndim - 2] = a->shape[a->ndim - (s->o.trans_a ? 1 : 2)];
  shape[batch->ndim - 1] = b->shape[b->ndim - (s->o.trans_b ? 2 : 1)];
  kiln_status st = kiln_array_create(s->device, s->dtype, batch->ndim, shape,
                                     &s->results[0]);
  if (st != KILN_OK)
    return library_error(st, "cannot make the result C");
  name_result(s, 0, "C");
  double alpha = s->o.has_alpha ? s->o.alpha : 1.0;
  st = kiln_gemm_ex(s->o.trans_a, s->o.trans_b, alpha, s->a, s->b, 0.0,
                    s->results[0], &s->lo);
  return st == KILN_OK ? 0 : library_error(st, "gemm failed");
}

/* kiln_cholesky_ex waits and fails, naming the batch entry and the minor,
 * if a matrix is not positive definite. */
static int run_cholesky(linalg_state *s) {
  kiln_status st = kiln_cholesky_ex(s->a, s->o.upper, &s->lo,
                                    &s->results[0]);
  name_result(s, 0, s->o.upper ? "U" : "L");
  return st == KILN_OK ? 0 : library_error(st, "cholesky failed");
}

static int run_qr(linalg_state *s) {
  kiln_qr_mode mode = s->o.mode_text ? s->o.mode : KILN_QR_REDUCED;
  kiln_status st;
  if (mode == KILN_QR_R) {
    st = kiln_qr_ex(s->a, mode, &s->lo, NULL, &s->results[0]);
    name_result(s, 0, "R");
  } else {
    st = kiln_qr_ex(s->a, mode, &s->lo, &s->results[0], &s->results[1]);
    name_result(s, 0, "Q");
    name_result(s, 1, "R");
  }
  return st == KILN_OK ? 0 : library_error(st, "qr failed");
}

static int run_solve_triangular(linalg_state *s) {
  kiln_status st = kiln_solve_triangular_ex(s->a, s->b, s->o.upper, false,
                                            s->o.unit, &s->lo,
                                            &s->results[0]);
  name_result(s, 0, "X");
  return st == KILN_OK ? 0 : library_error(st, "solve-triangular failed");
}

static int run_lu(linalg_state *s) {
  kiln_status st = kiln_lu_ex(s->a, &s->lo, &s->results[0], &s->results[1],
                              &s->results[2]);
  name_result(s, 0, "perm");
  name_result(s, 1, "L");
  name_result(s, 2, "U");
  return st == KILN_OK ? 0 : library_error(st, "lu failed");
}

static int run_solve(linalg_state *s) {
  kiln_status st = kiln_solve_ex(s->a, s->b, &s->lo, &s->results[0]);
  name_result(s, 0, "X");
  return st == KILN_OK ? 0 : library_error(st, "solve failed");
}

static int run_inv(linalg_state *s) {
  kiln_status st = kiln_inv_ex(s->a, &s->lo, &s->results[0]);
  name_result(s, 0, "Ainv");
  return st == KILN_OK ? 0 : library_error(st, "inv failed");
}

static int run_det(linalg_state *s) {
  kiln_status st = kiln_det_ex(s->a, &s->lo, &s->results[0]);
  name_result(s, 0, "det");
  return st == KILN_OK ? 0 : library_error(st, "det failed");
}

/* The interface, in the order of the help. */
static const linalg_op linalg_ops[] = {
    {"gemm", 2, OF_TRANS_A | OF_TRANS_B | OF_ALPHA, true, check_gemm,
     run_gemm},
    {"qr", 1, OF_MODE, false, check_matrix, run_qr},
    {"cholesky", 1, OF_UPPER, false, check_square, run_cholesky},
    {"solve-triangular", 2, OF_UPPER | OF_UNIT, false, check_triangular,
     run_solve_triangular},
    {"lu", 1, 0, false, check_matrix, run_lu},
    {"solve", 2, 0, false, check_solve, run_solve},
    {"inv", 1, 0, false, check_square, run_inv},
    {"det", 1, 0, false, check_square, run_det},
};
#define NUM_LINALG_OPS (sizeof linalg_ops / sizeof linalg_ops[0])
#define LINALG_OP_LIST                                                       \
  "gemm, qr, cholesky, solve-triangular, lu, solve, inv, det"

/* ---- the command line ---------------------------------------------------- */

void print_linalg_help(FILE *f) {
  fputs(
      "usage: kiln linalg OP [--device cpu|gpu|gpu:N] [--out-dir DIR]\n"
      "                      [--dtype float32|float64] [options] "
      "INPUT.npy...\n"
      "\n"
      "Linear algebra on .npy files, on any device. Inputs may have leading\n"
      "batch dimensions (...xMxN): the operation runs on every matrix of "
      "the\n"
      "batch. The batch dimensions of the inputs must be equal, or an input\n"
      "may have none (it is then used for every batch entry). Results are\n"
      "written to DIR/NAME.npy.\n"
      "\n"
      "operations (inputs, options -> results):\n"
      "  gemm A.npy B.npy [--trans-a] [--trans-b] [--alpha F]  -> C.npy\n"
      "                     C = alpha * op(A) @ op(B); op(X) is X, or with\n"
      "                     --trans-a / --trans-b the transpose of its last\n"
      "                     two dimensions\n"
      "  qr A.npy [--mode reduced|complete|r]      -> Q.npy R.npy\n"
      "                     A = Q @ R, Q with orthonormal columns, R upper\n"
      "                     triangular with a non-negative diagonal. "
      "reduced\n"
      "                     (default): Q is MxK and R KxN, K = min(M, N);\n"
      "                     complete: Q MxM, R MxN; r: only R.npy (KxN)\n"
      "  cholesky A.npy [--upper]                  -> L.npy (U.npy)\n"
      "                     A = L @ L^T for symmetric positive definite A;\n"
      "                     with --upper A = U^T @ U, written to U.npy. "
      "Only\n"
      "                     that triangle of A is read; the other triangle "
      "of\n"
      "                     the result is 0\n"
      "  solve-triangular A.npy B.npy [--upper] [--unit-diagonal]  -> "
      "X.npy\n"
      "                     X with A @ X = B: A NxN lower triangular (upper\n"
      "                     with --upper; only that triangle is read), B "
      "NxK;\n"
      "                     --unit-diagonal takes A's diagonal as ones\n"
      "  lu A.npy                                  -> perm.npy L.npy U.npy\n"
      "                     A[perm] = L @ U (partial pivoting): perm "
      "(int32)\n"
      "                     reorders A's M rows, L is MxK unit lower and U\n"
      "                     KxN upper triangular, K = min(M, N)\n"
      "  solve A.npy B.npy                         -> X.npy\n"
      "                     X with A @ X = B: A NxN, B NxK (or a vector of "
      "N\n"
      "                     when A is a single matrix)\n"
      "  inv A.npy                                 -> Ainv.npy\n"
      "                     the inverse of each NxN matrix\n"
      "  det A.npy                                 -> det.npy\n"
      "                     the determinant of each NxN matrix (A's batch\n"
      "                     shape; 0-d for a single matrix)\n"
      "\n"
      "options:\n"
      "  --device SPEC      cpu, gpu or gpu:N (default: the best device)\n"
      "  --out-dir DIR      where results are written (default: .)\n"
      "  --dtype DTYPE      float32 or float64: convert every input to it "
      "on\n"
      "                     the host first (default: keep the inputs' own\n"
      "                     float32 or float64, which must agree; gemm "
      "also\n"
      "                     takes float16)\n"
      "  --trans-a          gemm: use the transpose of A\n"
      "  --trans-b          gemm: use the transpose of B\n"
      "  --alpha F          gemm: scale the product by F (default 1)\n"
      "  --mode MODE        qr: reduced (default), complete or r\n"
      "  --upper            cholesky: compute U (A = U^T @ U) instead of L;\n"
      "                     solve-triangular: A is upper triangular\n"
      "  --unit-diagonal    solve-triangular: A's diagonal is all ones (not\n"
      "                     read)\n"
      "\n"
      "float16 products are accumulated in float32. No output file is "
      "written\n"
      "unless the whole operation succeeds.\n"
      "Exit status: 0 on success, 1 if the operation failed (a matrix that "
      "is\n"
      "singular for solve, inv or lu, or not positive definite for "
      "cholesky:\n"
      "the message names its batch entry and the pivot or leading minor), "
      "2\n"
      "for bad options.\n"
      "\n"
      "examples:\n"
      "  kiln linalg gemm a.npy b.npy --trans-b --alpha 0.5 --out-dir out\n"
      "  kiln linalg cholesky a.npy --upper --dtype float64\n"
      "  kiln linalg qr a.npy --mode r --device gpu\n"
      "  kiln linalg solve a.npy b.npy --out-dir out\n",
      f);
}

static const linalg_flag *find_linalg_flag(const char *arg, size_t len) {
  for (size_t k = 0; k < NUM_LINALG_FLAGS; k++)
    if (strlen(linalg_flags[k].name) == len &&
        !strncmp(linalg_flags[k].name, arg, len))
      return &linalg_flags[k];
  return NULL;
}

static int unknown_linalg_flag(const char *word) {
  const char *names[NUM_LINALG_FLAGS];
  for (size_t k = 0; k < NUM_LINALG_FLAGS; k++)
    names[k] = linalg_flags[k].name;
  const char *hint = closest(word, names, NUM_LINALG_FLAGS);
  if (hint)
    return usage_error("unknown option '%s'; did you mean '%s'?", word, hint);
  return usage_error("unknown option '%s'.", word);
}

static int parse_mode(linalg_opts *o, const char *flag, const char *v) {
  int rc = set_once(&o->mode_text, flag, v);
  if (rc)
    return rc;
  if (!strcmp(v, "reduced"))
    o->mode = KILN_QR_REDUCED;
  else if (!strcmp(v, "complete"))
    o->mode = KILN_QR_COMPLETE;
  else if (!strcmp(v, "r"))
    o->mode = KILN_QR_R;
  else
    return usage_error("--mode '%s' is not reduced, complete or r.", v);
  return 0;
}

static int apply_linalg_flag(linalg_opts *o, const linalg_flag *f,
                             const char *v) {
  int rc;
  o->given |= f->bit;
  switch (f->id) {
  case LF_OUT_DIR: return set_once(&o->out_dir, f->name, v);
  case LF_DEVICE:
    if ((rc = set_once(&o->device, f->name, v)) != 0)
      return rc;
    if (!valid_device_spec(v))
      return usage_error("--device '%s' is not cpu, gpu or gpu:N.", v);
    return 0;
  case LF_DTYPE:
    if ((rc = set_once(&o->dtype_text, f->name, v)) != 0)
      return rc;
    /* Only the dtypes the operations compute in are offered. */
    if (!strcmp(v, "float32"))
      o->dtype = KILN_FLOAT32;
    else if (!strcmp(v, "float64"))
      o->dtype = KILN_FLOAT64;
    else
      return usage_error("--dtype '%s' is not float32 or float64.", v);
    return 0;
  case LF_TRANS_A: o->trans_a = true; return 0;
  case LF_TRANS_B: o->trans_b = true; return 0;
  case LF_UPPER: o->upper = true; return 0;
  case LF_UNIT: o->unit = true; return 0;
  case LF_MODE: return parse_mode(o, f->name, v);
  case LF_ALPHA:
    if (o->has_alpha)
      return usage_error("--alpha is given twice.");
    o->has_alpha = true;
    if (!parse_double(v, &o->alpha) || !isfinite(o->alpha))
      return usage_error("--alpha '%s' is not a finite number.", v);
    return 0;
  case LF_HELP: return 0;
  }
  return 0;
}

/* Parses the flags and inputs after the operation's name; returns 0 or an
 * exit status. */
static int parse_linalg_args(int argc, char **argv, linalg_opts *o) {
  o->inputs = calloc((size_t)argc + 1, sizeof *o->inputs);
  if (!o->inputs)
    return runtime_error("out of memory.");
  bool only_inputs = false; /* after "--", for names that start with -- */
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    if (only_inputs || strncmp(arg, "--", 2) != 0) {
      o->inputs[o->num_inputs++] = arg;
      continue;
    }
    if (!arg[2]) {
      only_inputs = true;
      continue;
    }
    /* Both "--flag value" and "--flag=value" are accepted. */
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    const linalg_flag *f = find_linalg_flag(arg, len);
    if (!f) {
      char word[64];
      snprintf(word, sizeof word, "%.*s", (int)len, arg);
      return unknown_linalg_flag(word);
    }
    const char *value = NULL;
    if (f->takes_value) {
      /* A value may start with '-' (--alpha -2) but not with "--". */
      if (eq)
        value = eq + 1;
      else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
        value = argv[++i];
      else
        return usage_error("%s needs a value.", f->name);
    } else if (eq) {
      return usage_error("%s takes no value.", f->name);
    }
    int rc = apply_linalg_flag(o, f, value);
    if (rc)
      return rc;
  }
  return 0;
}

/* The operation named `name`; unknown names get a suggestion. */
static int find_linalg_op(const char *name, const linalg_op **out) {
  const char *names[NUM_LINALG_OPS];
  for (size_t i = 0; i < NUM_LINALG_OPS; i++) {
    names[i] = linalg_ops[i].name;
    if (!strcmp(name, linalg_ops[i].name)) {
      *out = &linalg_ops[i];
      return 0;
    }
  }
  const char *hint = closest(name, names, NUM_LINALG_OPS);
  if (hint)
    return usage_error("unknown operation '%s'; did you mean '%s'?", name,
                       hint);
  return usage_error("unknown operation '%s' (operations: " LINALG_OP_LIST
                     ").", name);
}

/* "cholesky and solve-triangular": the operations that take option
 * `bit`. */
static void owners_of(unsigned bit, char *out, size_t cap) {
  const char *found[NUM_LINALG_OPS];
  size_t n = 0;
  for (size_t i = 0; i < NUM_LINALG_OPS; i++)
    if (linalg_ops[i].flags & bit)
      found[n++] = linalg_ops[i].name;
  size_t len = 0;
  out[0] = '\0';
  for (size_t i = 0; i < n && len < cap; i++)
    len += (size_t)snprintf(out + len, cap - len, "%s%s",
                            i == 0 ? "" : i + 1 == n ? " and " : ", ",
                            found[i]);
}

/* Every option given belongs to the operation, and the input count is
 * right (both usage errors). */
static int check_linalg_args(const linalg_state *s) {
  const linalg_op *op = s->op;
  unsigned foreign = s->o.given & ~op->flags;
  for (size_t k = 0; foreign && k < NUM_LINALG_FLAGS; k++) {
    if (!(linalg_flags[k].bit & foreign))
      continue;
    char owners[128];
    owners_of(linalg_flags[k].bit, owners, sizeof owners);
    return usage_error("%s is an option of %s; %s does not take it.",
                       linalg_flags[k].name, owners, op->name);
  }
  if (s->o.num_inputs == op->num_inputs)
    return 0;
  const char *was = s->o.num_inputs == 1 ? "was" : "were";
  if (op->num_inputs == 2)
    return usage_error("%s takes two inputs, A.npy and B.npy; %d %s "
                       "given.", op->name, s->o.num_inputs, was);
  return usage_error("%s takes one input, A.npy; %d %s given.", op->name,
                     s->o.num_inputs, was);
}

/* ---- inputs and results -------------------------------------------------- */

/* Converts an input to float32 or float64 in place (--dtype). */
static int convert_input(npy_array *a, kiln_dtype to, const char *what) {
  if (a->dtype == to)
    return 0;
  size_t n = a->nbytes / kiln_dtype_size(a->dtype);
  size_t size = kiln_dtype_size(to);
  void *out = malloc(n ? n * size : 1);
  if (!out)
    return runtime_error("out of memory converting input %s to %s.", what,
                         kiln_dtype_name(to));
  for (size_t i = 0; i < n; i++) {
    const unsigned char *in = (const unsigned char *)a->data;
    kiln_dtype_write(to, kiln_dtype_read(a->dtype, in + i * kiln_dtype_size(
                                                      a->dtype)),
                     (unsigned char *)out + i * size);
  }
  free(a->data);
  a->data = out;
  a->nbytes = n * size;
  a->dtype = to;
  return 0;
}

/* The dtypes an operation computes in without --dtype. */
static bool computes_in(const linalg_op *op, kiln_dtype dt) {
  return (op->half && dt == KILN_FLOAT16) || dt == KILN_FLOAT32 ||
         dt == KILN_FLOAT64;
}

/* Reads the inputs and settles the dtype: --dtype converts, otherwise the
 * inputs' own dtype is kept and must agree. */
static int load_linalg_inputs(linalg_state *s) {
  for (int i = 0; i < s->o.num_inputs; i++) {
    char err[512];
    if (npy_read(s->o.inputs[i], &s->in[i], err, sizeof err) != 0)
      return runtime_error("cannot read input %s: %s.", input_names[i],
                           err);
  }
  if (s->o.dtype_text) {
    s->dtype = s->o.dtype;
    for (int i = 0; i < s->o.num_inputs; i++) {
      int rc = convert_input(&s->in[i], s->dtype, input_names[i]);
      if (rc)
        return rc;
    }
    return 0;
  }
  for (int i = 0; i < s->o.num_inputs; i++)
    if (!computes_in(s->op, s->in[i].dtype))
      return runtime_error("input %s ('%s') holds %s values; %s works on "
                           "%s (give --dtype float32 or --dtype float64 to "
                           "convert it).", input_names[i], s->o.inputs[i],
                           kiln_dtype_name(s->in[i].dtype), s->op->name,
                           s->op->half ? "float16, float32 or float64"
                                       : "float32 or float64");
  for (int i = 1; i < s->o.num_inputs; i++)
    if (s->in[i].dtype != s->in[0].dtype)
      return runtime_error("input %s is %s but input %s is %s; give "
                           "--dtype float32 or --dtype float64 to convert "
                           "both.", input_names[0],
                           kiln_dtype_name(s->in[0].dtype), input_names[i],
                           kiln_dtype_name(s->in[i].dtype));
  s->dtype = s->in[0].dtype;
  return 0;
}

/* Runs the operation and waits for its stream, so that a failure while
 * running is reported before anything is written. */
static int run_linalg(linalg_state *s) {
  kiln_linalg_opts_init(&s->lo);
  s->lo.stream = kiln_default_stream(s->device);
  int rc = upload_inputs(s);
  if (!rc)
    rc = s->op->run(s);
  if (rc)
    return rc;
  kiln_status st = kiln_stream_synchronize(s->lo.stream);
  if (st != KILN_OK)
    return library_error(st, "%s failed while running", s->op->name);
  return 0;
}

/* Copies result i to a temporary next to DIR/NAME.npy. */
static int write_result(linalg_state *s, int i, const char *dir) {
  kiln_array *r = s->results[i];
  size_t nbytes = kiln_array_nbytes_dense(r);
  void *host = malloc(nbytes ? nbytes : 1);
  if (!host)
    return runtime_error("out of memory copying %s (%zu bytes).",
                         s->names[i], nbytes);
  kiln_status st = kiln_array_to_host(r, host, nbytes);
  int rc = st != KILN_OK
               ? library_error(st, "cannot read the result %s", s->names[i])
               : write_temp(dir, s->names[i], kiln_array_dtype(r),
                            kiln_array_ndim(r), kiln_array_shape(r), host,
                            &s->tmp_paths[i]);
  free(host);
  return rc;
}

/* Writes every result to its temporary, then renames them all; if one
 * rename fails, the results already renamed are removed again, so the
 * outputs appear together or not at all. */
static int write_linalg_results(linalg_state *s, const char *dir) {
  for (int i = 0; i < s->num_results; i++) {
    int rc = write_result(s, i, dir);
    if (rc)
      return rc;
  }
  char *done[MAX_RESULTS] = {NULL};
  int rc = 0;
  for (int i = 0; i < s->num_results && !rc; i++) {
    char *final = join_path(dir, "", s->names[i], "");
    if (!final) {
      rc = runtime_error("out of memory.");
    } else if (rename(s->tmp_paths[i], final) != 0) {
      int e = errno;
      rc = runtime_error("cannot write '%s': %s.", final, strerror(e));
      free(final);
    } else {
      free(s->tmp_paths[i]);
      s->tmp_paths[i] = NULL;
      done[i] = final;
    }
  }
  for (int i = 0; i < MAX_RESULTS; i++) {
    if (rc && done[i])
      unlink(done[i]);
    free(done[i]);
  }
  return rc;
}

/* `kiln linalg OP ...`: each step prints its own error. */
int cmd_linalg(int argc, char **argv) {
  if (argc == 0)
    return usage_error("missing the operation (" LINALG_OP_LIST ").");
  /* --help anywhere wins. */
  for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
    if (!strcmp(argv[i], "--help")) {
      print_linalg_help(stdout);
      return 0;
    }
  if (!strncmp(argv[0], "--", 2))
    return usage_error("the operation must come first, as in 'kiln linalg "
                       "gemm A.npy B.npy' (operations: " LINALG_OP_LIST
                       ").");
  linalg_state s;
  memset(&s, 0, sizeof s);
  int rc = find_linalg_op(argv[0], &s.op);
  if (!rc)
    rc = parse_linalg_args(argc - 1, argv + 1, &s.o);
  const char *dir = s.o.out_dir ? s.o.out_dir : ".";
  if (!rc)
    rc = check_linalg_args(&s);
  if (!rc)
    rc = check_out_dir(dir);
  if (!rc)
    rc = load_linalg_inputs(&s);
  if (!rc)
    rc = s.op->check(&s);
  if (!rc)
    rc = open_device(s.o.device, &s.device);
  if (!rc)
    rc = run_linalg(&s);
  if (!rc)
    rc = write_linalg_results(&s, dir);
  linalg_state_free(&s);
  return rc;
}

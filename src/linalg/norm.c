/*
 * Norms of vectors and matrices on any device (kiln_norm), with one kernel
 * family, kernels/norm.metal.
 *
 * Every norm is a reduction over a segment of A (a vector along the last
 * dimension, or a matrix of the last two) of one of three kinds: a sum of
 * squares (2-norm, Frobenius), a sum of magnitudes (vector 1-norm), or the
 * largest sum of magnitudes along lines (vector inf-norm with lines of one
 * element, matrix 1-norm over columns, matrix inf-norm over rows). Sums
 * are accumulated in double; sums of squares with Blue's three scaled
 * accumulators, so no finite input whose norm is representable overflows
 * or underflows on the way (see the .metal).
 *
 * Order of work, as in every linalg driver: check the arguments, return
 * early when there is nothing to reduce (an empty batch: an empty result;
 * empty segments: zeros), then pick the launch and enqueue it. Nothing is
 * waited for: the call is asynchronous like kiln_gemm.
 *
 * Paths (kiln_linalg_opts.path for kiln_norm_ex):
 *   0  auto: one threadgroup per segment when the batch alone fills the
 *      device; otherwise G threadgroups share each segment (enough to give
 *      the device about 8 groups per compute unit) and a second kernel,
 *      norm_finish, combines their partial sums;
 *   1  one threadgroup per segment, whatever the batch;
 *   2  split: at least two groups per segment and the second pass.
 *
 * Empty segments (a vector of length 0, a matrix with no rows or no
 * columns) have norm 0 for every type. numpy raises for the max-based
 * norms of an empty vector; kiln takes the maximum over no lines as 0, the
 * smallest a norm can be, so a batch with empty entries needs no special
 * case and agrees with the sum-based norms.
 */
#include <stdint.h>
#include <string.h>

#include "linalg/linalg.h"

#define NORM_PATH_AUTO 0
#define NORM_PATH_ONE 1
#define NORM_PATH_SPLIT 2

/* Matches kernels/norm.metal. */
#define NORM_SSQ 0
#define NORM_ASUM 1
#define NORM_MAXSUM 2

/* Threadgroup limits of the kernels: at most 256 threads (their scratch
 * arrays), segments along grid.y and grid.z of at most 65535 each. */
#define NORM_MAX_THREADS 256
#define NORM_GRID_YZ 65535

/* Groups per compute unit the automatic split aims for. */
#define NORM_GROUPS_PER_UNIT 8

/* One checked norm and what the checks worked out. */
typedef struct norm_problem {
  kiln_array *a;
  kiln_norm_type type;
  bool vectors;
  kiln_linalg_opts opts;
  kiln_stream *stream;
  int op;                 /* NORM_SSQ, NORM_ASUM, NORM_MAXSUM */
  bool swap;              /* MAXSUM over rows (the matrix inf-norm) */
  int64_t segments;       /* S: the number of norms */
  int64_t rows, cols;     /* a segment: R x C (R = 1 for vectors) */
  int64_t row_stride, col_stride;
  kiln_array *out;
} norm_problem;

/* ---- checks -------------------------------------------------------------- */

static kiln_status check_problem(norm_problem *p) {
  kiln_array *a = p->a;
  if (a->dtype != KILN_FLOAT32 && a->dtype != KILN_FLOAT64)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "A is %s; norms support float32 and float64.",
                       kiln_dtype_name(a->dtype));
  if ((int)p->type < KILN_NORM_FRO || (int)p->type > KILN_NORM_INF)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "type is %d, not a kiln_norm_type (KILN_NORM_FRO, "
                       "_1, _2 or _INF).",
                       (int)p->type);
  int need = p->vectors ? 1 : 2;
  if (a->ndim < need)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "A has %d dimension%s; %s norms need at least %d.",
                       a->ndim, a->ndim == 1 ? "" : "s",
                       p->vectors ? "vector" : "matrix", need);
  if (!p->vectors && p->type == KILN_NORM_2)
    return kiln__error(KILN_ERROR_UNSUPPORTED,
                       "the matrix 2-norm is the largest singular value, "
                       "and kiln does not compute singular values yet; use "
                       "KILN_NORM_FRO, KILN_NORM_1 or KILN_NORM_INF, or "
                       "vectors = true for 2-norms of vectors.");
  if (p->opts.path < NORM_PATH_AUTO || p->opts.path > NORM_PATH_SPLIT)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "opts->path is %d; norms know 0 (auto), 1 (one "
                       "threadgroup per norm) and 2 (split).",
                       p->opts.path);
  return kiln__linalg_stream(&p->opts, &p->a, 1, &p->stream);
}

/* The reduction kind and the segment's geometry (as the kernel sees it
 * before its own reordering). */
static void describe(norm_problem *p) {
  const kiln_array *a = p->a;
  int nd = a->ndim;
  int nbd = p->vectors ? nd - 1 : nd - 2;
  p->segments = 1;
  for (int d = 0; d < nbd; d++)
    p->segments *= a->shape[d];
  if (p->vectors) {
    p->rows = 1;
    p->cols = a->shape[nd - 1];
    p->row_stride = 0;
    p->col_stride = a->strides[nd - 1];
    p->op = p->type == KILN_NORM_1     ? NORM_ASUM
            : p->type == KILN_NORM_INF ? NORM_MAXSUM
                                       : NORM_SSQ;
    p->swap = false;
    return;
  }
  p->rows = a->shape[nd - 2];
  p->cols = a->shape[nd - 1];
  p->row_stride = a->strides[nd - 2];
  p->col_stride = a->strides[nd - 1];
  p->op = p->type == KILN_NORM_FRO ? NORM_SSQ : NORM_MAXSUM;
  p->swap = p->type == KILN_NORM_INF;
  if (p->swap) { /* the inf-norm's lines are the rows */
    int64_t t = p->rows;
    p->rows = p->cols;
    p->cols = t;
    t = p->row_stride;
    p->row_stride = p->col_stride;
    p->col_stride = t;
  }
}

/* ---- the launch ---------------------------------------------------------- */

static int64_t abs64(int64_t v) { return v < 0 ? -v : v; }

/* Threads per group: enough for the segment's work, a power of two. */
static uint32_t pick_threads(int64_t work) {
  if (work <= 256)
    return 32;
  if (work <= 2048)
    return 64;
  if (work <= 8192)
    return 128;
  return NORM_MAX_THREADS;
}

/* MAXSUM lines with the summation contiguous in memory and long enough to
 * occupy a SIMD group: a SIMD group per line reads them coalesced. */
static bool warp_lines(const norm_problem *p) {
  return p->op == NORM_MAXSUM && p->rows >= 32 &&
         abs64(p->row_stride) < abs64(p->col_stride);
}

/*
 * G, the groups per segment. Automatic: 1 when the batch gives every
 * compute unit NORM_GROUPS_PER_UNIT groups; else enough groups to, but
 * never so many that a group gets less than a few rounds of work (for
 * MAXSUM: fewer than 32 lines, or a SIMD group's worth per warp).
 */
static uint32_t pick_groups(const norm_problem *p, uint32_t nt) {
  int64_t units = p->stream->device->info.compute_units;
  int64_t target = (units > 0 ? units : 1) * NORM_GROUPS_PER_UNIT;
  int64_t g = 1;
  if (p->segments < target)
    g = (target + p->segments - 1) / p->segments;
  int64_t cap;
  if (p->op != NORM_MAXSUM)
    cap = (p->rows * p->cols) / ((int64_t)nt * 8);
  else
    cap = p->cols / (warp_lines(p) ? (int64_t)nt / 32 : 32);
  if (g > cap)
    g = cap;
  if (p->opts.path == NORM_PATH_ONE || g < 1)
    g = 1;
  if (p->opts.path == NORM_PATH_SPLIT && g < 2)
    g = 2;
  /* grid.x = nt * G must fit 32 bits with room to spare */
  if (g > (1 << 20))
    g = 1 << 20;
  return (uint32_t)g;
}

/* Segments along grid.y and grid.z (y fastest), as the kernels expect. */
static void segment_grid(kiln_launch *L, int64_t segments) {
  int64_t y = segments < NORM_GRID_YZ ? segments : NORM_GRID_YZ;
  L->grid[1] = (uint32_t)y;
  L->grid[2] = (uint32_t)((segments + y - 1) / y);
}

static kiln_status launch_reduce(const norm_problem *p, uint32_t nt,
                                 uint32_t groups, kiln_array *dst) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("norm", "norm_reduce", "A", "P",
                                        KILN__LIB_NO_ROW_CONTIG, &k);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[6];
  kiln__targ_dtype(&t[0], "T", p->a->dtype);
  kiln__targ_int(&t[1], "OP", p->op);
  kiln__targ_bool(&t[2], "VEC", p->vectors);
  kiln__targ_bool(&t[3], "SWAP", p->swap);
  kiln__targ_bool(&t[4], "WARP_LINES", warp_lines(p));
  kiln__targ_bool(&t[5], "DIRECT", groups == 1);
  kiln_output_spec spec;
  kiln__linalg_out_spec(&spec, dst);
  kiln_launch L;
  kiln__linalg_launch_init(&L, p->stream);
  L.inputs = &p->a;
  L.num_inputs = 1;
  L.outputs = &spec;
  L.num_outputs = 1;
  L.template_args = t;
  L.num_template_args = 6;
  L.grid[0] = nt * groups;
  L.threadgroup[0] = nt;
  segment_grid(&L, p->segments);
  return kiln__kernel_launch_into(k, &L, &dst);
}

static kiln_status launch_finish(const norm_problem *p, kiln_array *parts,
                                 uint32_t groups) {
  kiln_kernel *k = NULL;
  kiln_status st = kiln__library_kernel("norm", "norm_finish", "Pin", "out",
                                        0, &k);
  if (st != KILN_OK)
    return st;
  kiln_template_arg t[2];
  kiln__targ_dtype(&t[0], "T", p->a->dtype);
  kiln__targ_int(&t[1], "OP", p->op);
  kiln_output_spec spec;
  kiln__linalg_out_spec(&spec, p->out);
  kiln_launch L;
  kiln__linalg_launch_init(&L, p->stream);
  L.inputs = &parts;
  L.num_inputs = 1;
  L.outputs = &spec;
  L.num_outputs = 1;
  L.template_args = t;
  L.num_template_args = 2;
  uint32_t nt = groups <= 32 ? 32 : groups <= 256 ? 64 : NORM_MAX_THREADS;
  L.grid[0] = nt;
  L.threadgroup[0] = nt;
  segment_grid(&L, p->segments);
  return kiln__kernel_launch_into(k, &L, &p->out);
}

/* Enqueues the reduction into p->out: one pass, or partials and a second
 * pass (the partials array is released at once; the allocator keeps its
 * memory until the kernels that use it are done). */
static kiln_status run(const norm_problem *p) {
  uint32_t nt = pick_threads(p->rows * p->cols);
  uint32_t groups = pick_groups(p, nt);
  if (groups == 1)
    return launch_reduce(p, nt, 1, p->out);
  int64_t shape[3] = {p->segments, groups, 3};
  kiln_array *parts = NULL;
  kiln_status st = kiln__array_create(p->stream->device, KILN_FLOAT64, 3,
                                      shape, &parts);
  if (st == KILN_OK)
    st = launch_reduce(p, nt, groups, parts);
  if (st == KILN_OK)
    st = launch_finish(p, parts, groups);
  kiln__array_destroy(parts);
  return st;
}

/* The checked norm shared by kiln_norm and kiln_norm_ex. */
static kiln_status norm(kiln_array *a, kiln_norm_type type, bool vectors,
                        const kiln_linalg_opts *opts, kiln_array **out) {
  if (a == NULL || out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "%s is NULL.",
                       a == NULL ? "A" : "out");
  norm_problem p;
  memset(&p, 0, sizeof p);
  p.a = a;
  p.type = type;
  p.vectors = vectors;
  kiln_status st = kiln__linalg_opts(opts, &p.opts);
  if (st == KILN_OK)
    st = check_problem(&p);
  if (st != KILN_OK)
    return st;
  describe(&p);
  int nbd = vectors ? a->ndim - 1 : a->ndim - 2;
  st = kiln__array_create(a->buffer->device, a->dtype, nbd, a->shape,
                          &p.out);
  if (st == KILN_OK && p.segments > 0)
    st = p.rows * p.cols == 0 ? kiln__array_fill(p.out, 0.0, p.stream)
                              : run(&p);
  if (st != KILN_OK) {
    kiln__array_destroy(p.out);
    return st;
  }
  *out = p.out;
  return KILN_OK;
}

/* Public: see kiln.h. */
kiln_status kiln_norm(kiln_array *a, kiln_norm_type type, bool vectors,
                      kiln_array **out) {
  KILN_API_ENTER();
  return norm(a, type, vectors, NULL, out);
}

/* Public: see kiln.h; opts->path is documented at the top of this file. */
kiln_status kiln_norm_ex(kiln_array *a, kiln_norm_type type, bool vectors,
                         const kiln_linalg_opts *opts, kiln_array **out) {
  KILN_API_ENTER();
  return norm(a, type, vectors, opts, out);
}

// kiln's Cholesky kernels (driver: src/linalg/cholesky.c). Every kernel
// works on the *logical lower* factor L (A = L L^T): with UPPER the same
// code reads and writes the mirrored element (j, i) for (i, j), which
// turns it into U = L^T (A = U^T U) reading A's upper triangle, as LAPACK's
// potrf does. Only the logical lower triangle of A is ever read.
//
// The factor is built in W, the contiguous result (...×n×n), which the
// kernels take as their output L; a kernel that also reads W binds it a
// second time as an input (for its shape). info holds, per matrix, 0 or
// the order of the first leading minor found not positive definite
// (LAPACK's info); the driver fills it with 0 first.
//
// Paths:
//   small    chol_small on the whole matrix (n <= NMAX): one threadgroup per
//            matrix, the matrix in threadgroup memory.
//   blocked  chol_copy (A into W), then for each diagonal block of NMAX
//            columns: chol_small on the block (in W), chol_trsm on the panel
//            below it, and the driver's GEMM on the trailing matrix.
#include <metal_stdlib>
using namespace metal;

// Offset of batch entry `b` in a view: its leading dimensions walk the
// batch in C order.
inline int64_t chol_batch_offset(uint b, const constant int* shape,
                                 const constant int64_t* strides, int ndim) {
  int64_t off = 0;
  for (int d = ndim - 3; d >= 0; --d) {
    uint n = (uint)shape[d];
    off += (int64_t)(b % n) * strides[d];
    b /= n;
  }
  return off;
}

//@kernel chol_small
// Factors the diagonal block of W (or of A, for the small path) starting at
// row/column k0, of min(NMAX, n - k0) columns: reads the block's lower
// triangle from the view A, writes L's block and zeros above it into W.
// Template: T, NMAX (block capacity), UPPER. One threadgroup per matrix
// (grid.x = threads * matrices in this launch, batch0 the first), threads
// a multiple of 32.
//
// Right-looking, one column at a time: every thread reads the pivot (so
// the not-positive-definite exit is uniform without an extra barrier),
// scales the column, then warps update the trailing lower triangle, a row
// per warp and columns across lanes (rows padded to NMAX + 1 so the column
// reads fall in distinct banks). Two barriers per column.
threadgroup T S[NMAX * (NMAX + 1)];
constexpr int P = NMAX + 1;
const uint b = (uint)batch0 + threadgroup_position_in_grid.x;
if (info[b] != 0)
  return; // an earlier block of this matrix failed: leave it
const int n = A_shape[A_ndim - 1];
const int k = k0, nb = min(NMAX, n - k);
const int64_t ar = UPPER ? A_strides[A_ndim - 1] : A_strides[A_ndim - 2];
const int64_t ac = UPPER ? A_strides[A_ndim - 2] : A_strides[A_ndim - 1];
const int64_t wr = UPPER ? 1 : (int64_t)n, wc = UPPER ? (int64_t)n : 1;
const device T* a = A + chol_batch_offset(b, A_shape, A_strides, A_ndim);
device T* w = L + (int64_t)b * n * n;
const int tid = (int)thread_index_in_threadgroup;
const int nt = (int)threads_per_threadgroup.x;
const int lane = tid % 32, warp = tid / 32, warps = nt / 32;
for (int e = tid; e < nb * nb; e += nt) {
  int i = e / nb, j = e % nb;
  if (j <= i)
    S[i * P + j] = a[(int64_t)(k + i) * ar + (int64_t)(k + j) * ac];
}
threadgroup_barrier(mem_flags::mem_threadgroup);
int fail = 0;
for (int j = 0; j < nb; ++j) {
  T d = S[j * P + j];
  if (!(d > T(0))) { // also catches NaN, as LAPACK does
    fail = j + 1;
    break;
  }
  T r = sqrt(d);
  for (int i = j + 1 + tid; i < nb; i += nt)
    S[i * P + j] = S[i * P + j] / r;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  // Nobody reads the pivot during the update, so it is stored here.
  if (tid == 0)
    S[j * P + j] = r;
  for (int i = j + 1 + warp; i < nb; i += warps) {
    T li = S[i * P + j];
    for (int c = j + 1 + lane; c <= i; c += 32)
      S[i * P + c] = fma(-li, S[c * P + j], S[i * P + c]);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
}
if (fail != 0) {
  if (tid == 0)
    info[b] = k + fail;
  return;
}
for (int e = tid; e < nb * nb; e += nt) {
  int i = e / nb, j = e % nb;
  w[(int64_t)(k + i) * wr + (int64_t)(k + j) * wc] =
      j <= i ? S[i * P + j] : T(0);
}

//@kernel chol_copy
// W = the logical lower triangle of A, zeros above it (the start of the
// blocked path). Template: T, UPPER. One thread per element of a matrix
// (grid.x >= n * n), batch entries along grid.y from batch0.
const int n = A_shape[A_ndim - 1];
const uint e = thread_position_in_grid.x;
if (e >= (uint)n * (uint)n)
  return;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int i = (int)(e / (uint)n), j = (int)(e % (uint)n);
const int64_t ar = UPPER ? A_strides[A_ndim - 1] : A_strides[A_ndim - 2];
const int64_t ac = UPPER ? A_strides[A_ndim - 2] : A_strides[A_ndim - 1];
const int64_t wr = UPPER ? 1 : (int64_t)n, wc = UPPER ? (int64_t)n : 1;
const device T* a = A + chol_batch_offset(b, A_shape, A_strides, A_ndim);
L[(int64_t)b * n * n + (int64_t)i * wr + (int64_t)j * wc] =
    j <= i ? a[(int64_t)i * ar + (int64_t)j * ac] : T(0);

//@kernel chol_trsm
// The panel below the diagonal block at k0 (NB columns, already factored):
// L21 = A21 L11^-T, each row by forward substitution, and zeros in the
// mirrored panel above the trailing matrix (which earlier GEMM updates
// wrote). Template: T, NB (the block size), UPPER. Threadgroups of 32
// threads, a row each (grid.x = 32 * groups), batch entries along grid.y
// from batch0. Win is W, bound for its shape.
threadgroup T D[NB * (NB + 1)];
threadgroup T X[32 * (NB + 1)];
constexpr int P = NB + 1;
const int n = Win_shape[Win_ndim - 1];
const int k = k0, r0 = k0 + NB + 32 * (int)threadgroup_position_in_grid.x;
const uint b = (uint)batch0 + threadgroup_position_in_grid.y;
const int64_t wr = UPPER ? 1 : (int64_t)n, wc = UPPER ? (int64_t)n : 1;
device T* w = L + (int64_t)b * n * n;
const int tid = (int)thread_index_in_threadgroup;
const int rows = min(32, n - r0);
for (int e = tid; e < NB * NB; e += 32) {
  int i = e / NB, j = e % NB;
  D[i * P + j] = j <= i ? w[(int64_t)(k + i) * wr + (int64_t)(k + j) * wc]
                        : T(0);
}
for (int e = tid; e < rows * NB; e += 32) {
  int r = e / NB, c = e % NB;
  X[r * P + c] = w[(int64_t)(r0 + r) * wr + (int64_t)(k + c) * wc];
}
threadgroup_barrier(mem_flags::mem_threadgroup);
if (tid < rows) {
  for (int c = 0; c < NB; ++c) {
    T s = X[tid * P + c];
    for (int p = 0; p < c; ++p)
      s = fma(-D[c * P + p], X[tid * P + p], s);
    X[tid * P + c] = s / D[c * P + c];
  }
}
threadgroup_barrier(mem_flags::mem_threadgroup);
for (int e = tid; e < rows * NB; e += 32) {
  int r = e / NB, c = e % NB;
  w[(int64_t)(r0 + r) * wr + (int64_t)(k + c) * wc] = X[r * P + c];
  w[(int64_t)(k + c) * wr + (int64_t)(r0 + r) * wc] = T(0);
}

/*
 * The Metal conformance suite, part 1: elementwise with templates, a tiled
 * GEMM through padded threadgroup tiles, a SIMD reduction, atomics,
 * template arguments, implicit shape/strides of strided inputs, and every
 * thread attribute on ragged, clipped and 3-D grids. Every result is
 * compared with a float64 (or exact) host model on fresh random inputs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static const char kt_std_header[] =
    "#include <metal_stdlib>\nusing namespace metal;\n";

void test_conf_elementwise_exp_template(void) {
  kiln_kernel *k = KT_KERNEL("exp_scale", "a,alpha,n", "out", kt_std_header,
                             "uint i = thread_position_in_grid.x;\n"
                             "if (i >= uint(n)) return;\n"
                             "float v = float(a[i]);\n"
                             "out[i] = T(metal::exp(v) * alpha);\n",
                             0);
  kiln_dtype types[2] = {KILN_FLOAT32, KILN_FLOAT16};
  for (int t = 0; t < 2; t++) {
    kiln_dtype dt = types[t];
    int64_t n = 1000;
    void *a;
    kiln_array *aa = kt_random_1d(dt, n, -3, 3, &a);
    float alpha = (float)kt_uniform(0.5, 2);
    kiln_array *al = kt_scalar(KILN_FLOAT32, alpha);
    kiln_array *nn = kt_scalar(KILN_INT32, (double)n);
    kt_call c;
    kt_call_init(&c, t == 0 ? 1000 : 1024, 1, 1, 128, 1, 1);
    kt_call_in(&c, aa);
    kt_call_in(&c, al);
    kt_call_in(&c, nn);
    kt_call_out(&c, dt, 1, n, 0, 0);
    kt_call_targ(&c, "T", KILN_TEMPLATE_DTYPE, dt, 0);
    kiln_array *out;
    KT_RUN(k, &c, &out);
    double *got = kt_read_f64(out), ref[1000];
    for (int64_t i = 0; i < n; i++) {
      ref[i] = exp(kt_get(dt, a, (size_t)i)) * alpha;
      if (dt == KILN_FLOAT16)
        ref[i] = kt_round_half(ref[i]);
    }
    CHECK_CLOSE(kiln_dtype_name(dt), got, ref, (size_t)n,
                dt == KILN_FLOAT16 ? 0x1p-10 : 4 * 0x1p-23, 0);
    free(got);
    free(a);
    kiln_array_destroy(out);
    kiln_array_destroy(nn);
    kiln_array_destroy(al);
    kiln_array_destroy(aa);
  }
  kiln_kernel_destroy(k);
}

static const char kt_gemm_body[] =
    "threadgroup float As[16][17];\n"
    "threadgroup float Bs[16][17];\n"
    "uint tx = thread_position_in_threadgroup.x;\n"
    "uint ty = thread_position_in_threadgroup.y;\n"
    "uint col = threadgroup_position_in_grid.x * 16 + tx;\n"
    "uint row = threadgroup_position_in_grid.y * 16 + ty;\n"
    "float acc = 0.0f;\n"
    "for (int k0 = 0; k0 < K; k0 += 16) {\n"
    "  As[ty][tx] = (row < uint(M) && k0 + tx < uint(K))\n"
    "      ? A[row * K + k0 + tx] : 0.0f;\n"
    "  Bs[ty][tx] = (k0 + ty < uint(K) && col < uint(N))\n"
    "      ? B[(k0 + ty) * N + col] : 0.0f;\n"
    "  threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "  for (int k = 0; k < 16; ++k)\n"
    "    acc = fma(As[ty][k], Bs[k][tx], acc);\n"
    "  threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "}\n"
    "if (row < uint(M) && col < uint(N))\n"
    "  C[row * N + col] = acc;\n";

void test_conf_gemm_tiled(void) {
  const int M = 67, N = 45, K = 83;
  kiln_kernel *k = KT_KERNEL("gemm_tiled", "A,B,M,N,K", "C", kt_std_header,
                             kt_gemm_body, 0);
  float *a, *b;
  kiln_array *aa = kt_random_1d(KILN_FLOAT32, M * K, -1, 1, (void **)&a);
  kiln_array *ba = kt_random_1d(KILN_FLOAT32, K * N, -1, 1, (void **)&b);
  kiln_array *s[3] = {kt_scalar(KILN_INT32, M), kt_scalar(KILN_INT32, N),
                      kt_scalar(KILN_INT32, K)};
  kt_call c;
  kt_call_init(&c, 48, 80, 1, 16, 16, 1); /* padded to whole tiles */
  kt_call_in(&c, aa);
  kt_call_in(&c, ba);
  for (int i = 0; i < 3; i++)
    kt_call_in(&c, s[i]);
  kt_call_out(&c, KILN_FLOAT32, 2, M, N, 0);
  kiln_array *out;
  KT_RUN(k, &c, &out);
  double *got = kt_read_f64(out);
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double ref = 0, mag = 0;
      for (int p = 0; p < K; p++) {
        ref += (double)a[i * K + p] * b[p * N + j];
        mag += fabs((double)a[i * K + p] * b[p * N + j]);
      }
      double err = fabs(got[i * N + j] - ref);
      CHECK(err <= 2.0 * K * 0x1p-24 * mag,
            "C[%d][%d] = %.9g, expected %.9g (error %.3g > bound %.3g)", i, j,
            got[i * N + j], ref, err, 2.0 * K * 0x1p-24 * mag);
    }
  free(got);
  free(a);
  free(b);
  kiln_array_destroy(out);
  kt_destroy_all(s, 3);
  kiln_array_destroy(aa);
  kiln_array_destroy(ba);
  kiln_kernel_destroy(k);
}

static const char kt_reduce_body[] =
    "threadgroup float partial[32];\n"
    "uint i = thread_position_in_grid.x;\n"
    "float v = (i < uint(n)) ? x[i] : 0.0f;\n"
    "float s = simd_sum(v);\n"
    "if (thread_index_in_simdgroup == 0)\n"
    "  partial[simdgroup_index_in_threadgroup] = s;\n"
    "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "if (simdgroup_index_in_threadgroup == 0) {\n"
    "  float p = (thread_index_in_simdgroup < simdgroups_per_threadgroup)\n"
    "      ? partial[thread_index_in_simdgroup] : 0.0f;\n"
    "  float total = simd_sum(p);\n"
    "  if (simd_is_first())\n"
    "    out[threadgroup_position_in_grid.x] = total;\n"
    "}\n";

void test_conf_simd_reduction(void) {
  kiln_kernel *k =
      KT_KERNEL("simd_reduce", "x,n", "out", kt_std_header, kt_reduce_body, 0);
  /* 1000 = 3 x 256 + 232: the last group's last SIMD group has 8 lanes. */
  int64_t sizes[2] = {1000, 4096};
  for (int t = 0; t < 2; t++) {
    int64_t n = sizes[t], groups = (n + 255) / 256;
    float *x;
    kiln_array *xa = kt_random_1d(KILN_FLOAT32, n, -1, 1, (void **)&x);
    kiln_array *nn = kt_scalar(KILN_INT32, (double)n);
    kt_call c;
    kt_call_init(&c, (uint32_t)n, 1, 1, 256, 1, 1);
    kt_call_in(&c, xa);
    kt_call_in(&c, nn);
    kt_call_out(&c, KILN_FLOAT32, 1, groups, 0, 0);
    kiln_array *out;
    KT_RUN(k, &c, &out);
    double *got = kt_read_f64(out);
    for (int64_t g = 0; g < groups; g++) {
      double ref = 0, mag = 0;
      for (int64_t i = g * 256; i < n && i < (g + 1) * 256; i++)
        ref += x[i], mag += fabs(x[i]);
      CHECK(fabs(got[g] - ref) <= 64 * 0x1p-24 * mag,
            "n=%lld group %lld: sum %.9g, expected %.9g", (long long)n,
            (long long)g, got[g], ref);
    }
    free(got);
    free(x);
    kiln_array_destroy(out);
    kiln_array_destroy(nn);
    kiln_array_destroy(xa);
  }
  kiln_kernel_destroy(k);
}

static const char kt_atomic_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "if (i >= uint(n)) return;\n"
    "atomic_fetch_add_explicit(&hist[bins[i]], 1u, memory_order_relaxed);\n"
    "atomic_fetch_add_explicit(&fsum[0], fx[i], memory_order_relaxed);\n"
    "atomic_fetch_min_explicit(&mn[0], v[i], memory_order_relaxed);\n"
    "atomic_fetch_max_explicit(&mx[0], v[i], memory_order_relaxed);\n"
    "uint expected = atomic_load_explicit(&bits[3], memory_order_relaxed);\n"
    "while (!atomic_compare_exchange_weak_explicit(&bits[3], &expected,\n"
    "    expected + 3u, memory_order_relaxed, memory_order_relaxed)) {}\n"
    "atomic_fetch_or_explicit(&bits[0], 1u << (bins[i] % 32),\n"
    "                         memory_order_relaxed);\n"
    "atomic_fetch_xor_explicit(&bits[1], i * 2654435761u,\n"
    "                          memory_order_relaxed);\n"
    "atomic_fetch_sub_explicit(&bits[2], 2u, memory_order_relaxed);\n"
    "if (i == 7) atomic_exchange_explicit(&bits[4], 99u, memory_order_relaxed);\n"
    "if (i == 8) atomic_store_explicit(&mn[1], -5, memory_order_relaxed);\n";

void test_conf_atomics_device(void) {
  kiln_kernel *k = KT_KERNEL("atomics_device", "bins,v,fx,n",
                             "hist,fsum,mn,mx,bits", kt_std_header,
                             kt_atomic_body, KT_ATOMIC);
  const int n = 5000, nb = 37;
  int32_t *bins, *v;
  float *fx;
  kiln_array *ba = kt_random_1d(KILN_INT32, n, 0, nb - 1, (void **)&bins);
  kiln_array *va = kt_random_1d(KILN_INT32, n, -50, 50, (void **)&v);
  kiln_array *fa = kt_random_1d(KILN_FLOAT32, n, -4, 4, (void **)&fx);
  for (int i = 0; i < n; i++)
    fx[i] = (float)(int)fx[i]; /* integers: the sum is exact in any order */
  CHECK_OK(kiln_array_copy_from_host(fa, fx, (size_t)n * 4));
  kiln_array *nn = kt_scalar(KILN_INT32, n - 3); /* a ragged tail */
  for (int pass = 0; pass < 2; pass++) {
    double init = pass == 0 ? 0 : 7;
    kt_call c;
    kt_call_init(&c, (uint32_t)n, 1, 1, 64, 1, 1);
    c.launch.init_value = init;
    kt_call_in(&c, ba);
    kt_call_in(&c, va);
    kt_call_in(&c, fa);
    kt_call_in(&c, nn);
    kt_call_out(&c, KILN_UINT32, 1, nb, 0, 0);
    kt_call_out(&c, KILN_FLOAT32, 1, 1, 0, 0);
    kt_call_out(&c, KILN_INT32, 1, 2, 0, 0);
    kt_call_out(&c, KILN_INT32, 1, 1, 0, 0);
    kt_call_out(&c, KILN_UINT32, 1, 5, 0, 0);
    kiln_array *o[5];
    KT_RUN(k, &c, o);
    uint32_t hist[37], bits[5];
    float fsum;
    int32_t mn[2], mx;
    CHECK_OK(kiln_array_to_host(o[0], hist, sizeof hist));
    CHECK_OK(kiln_array_to_host(o[1], &fsum, sizeof fsum));
    CHECK_OK(kiln_array_to_host(o[2], mn, sizeof mn));
    CHECK_OK(kiln_array_to_host(o[3], &mx, sizeof mx));
    CHECK_OK(kiln_array_to_host(o[4], bits, sizeof bits));
    uint32_t rh[37], ror = (uint32_t)init, rxor = (uint32_t)init;
    for (int b = 0; b < nb; b++)
      rh[b] = (uint32_t)init;
    double rsum = init;
    int32_t rmn = (int32_t)init, rmx = (int32_t)init;
    for (int i = 0; i < n - 3; i++) {
      rh[bins[i]]++;
      rsum += fx[i];
      rmn = v[i] < rmn ? v[i] : rmn;
      rmx = v[i] > rmx ? v[i] : rmx;
      ror |= 1u << (bins[i] % 32);
      rxor ^= (uint32_t)i * 2654435761u;
    }
    for (int b = 0; b < nb; b++)
      CHECK(hist[b] == rh[b], "init %g: hist[%d] = %u, expected %u", init, b,
            hist[b], rh[b]);
    CHECK(fsum == (float)rsum, "atomic float sum %g, expected %g", fsum,
          rsum);
    CHECK(mn[0] == rmn && mx == rmx, "min %d max %d, expected %d %d", mn[0],
          mx, rmn, rmx);
    CHECK(mn[1] == -5, "atomic_store gave %d", mn[1]);
    CHECK(bits[0] == ror, "fetch_or %08x, expected %08x", bits[0], ror);
    CHECK(bits[1] == rxor, "fetch_xor %08x, expected %08x", bits[1], rxor);
    CHECK(bits[2] == (uint32_t)init - 2u * (uint32_t)(n - 3),
          "fetch_sub %u", bits[2]);
    CHECK(bits[3] == (uint32_t)init + 3u * (uint32_t)(n - 3),
          "compare_exchange loop %u, expected %u", bits[3],
          (uint32_t)init + 3u * (uint32_t)(n - 3));
    CHECK(bits[4] == 99, "exchange %u", bits[4]);
    kt_destroy_all(o, 5);
  }
  free(bins);
  free(v);
  free(fx);
  kiln_array_destroy(nn);
  kiln_array_destroy(ba);
  kiln_array_destroy(va);
  kiln_array_destroy(fa);
  kiln_kernel_destroy(k);
}

static const char kt_tg_atomic_body[] =
    "threadgroup atomic_uint count;\n"
    "threadgroup atomic_int lo;\n"
    "threadgroup atomic_float fs;\n"
    "threadgroup atomic_uint andv;\n"
    "uint t = thread_index_in_threadgroup;\n"
    "if (t == 0) {\n"
    "  atomic_store_explicit(&count, 0u, memory_order_relaxed);\n"
    "  atomic_store_explicit(&lo, 1 << 30, memory_order_relaxed);\n"
    "  atomic_store_explicit(&fs, 0.0f, memory_order_relaxed);\n"
    "  atomic_store_explicit(&andv, 0xffffffffu, memory_order_relaxed);\n"
    "}\n"
    "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "uint i = thread_position_in_grid.x;\n"
    "uint old = atomic_fetch_add_explicit(&count, 1u, memory_order_relaxed);\n"
    "atomic_fetch_min_explicit(&lo, v[i], memory_order_relaxed);\n"
    "atomic_fetch_add_explicit(&fs, fx[i], memory_order_relaxed);\n"
    "atomic_fetch_and_explicit(&andv, w[i], memory_order_relaxed);\n"
    "ticket[i] = old;\n"
    "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "if (t == 0) {\n"
    "  uint g = threadgroup_position_in_grid.x;\n"
    "  res[g * 3 + 0] = atomic_load_explicit(&count, memory_order_relaxed);\n"
    "  res[g * 3 + 1] = atomic_exchange_explicit(&andv, 0u,\n"
    "                                            memory_order_relaxed);\n"
    "  res[g * 3 + 2] = uint(atomic_load_explicit(&lo, memory_order_relaxed)\n"
    "                        + 1000);\n"
    "  resf[g] = atomic_load_explicit(&fs, memory_order_relaxed);\n"
    "}\n";

void test_conf_atomics_threadgroup(void) {
  kiln_kernel *k = KT_KERNEL("atomics_threadgroup", "v,fx,w", "ticket,res,resf",
                             kt_std_header, kt_tg_atomic_body, 0);
  const int n = 700, tg = 128, groups = (n + tg - 1) / tg;
  int32_t *v;
  float *fx;
  uint32_t *w;
  kiln_array *va = kt_random_1d(KILN_INT32, n, -900, 900, (void **)&v);
  kiln_array *fa = kt_random_1d(KILN_INT32, n, -8, 8, (void **)&fx);
  kiln_array_destroy(fa);
  for (int i = 0; i < n; i++)
    fx[i] = (float)((int32_t *)fx)[i];
  int64_t nn = n;
  fa = kt_array(KILN_FLOAT32, 1, &nn, fx);
  kiln_array *wa = kt_random_1d(KILN_UINT32, n, 0, 4294967295.0, (void **)&w);
  for (int i = 0; i < n; i++)
    w[i] |= 0x10000001u; /* keep a few bits set in the AND */
  CHECK_OK(kiln_array_copy_from_host(wa, w, (size_t)n * 4));
  kt_call c;
  kt_call_init(&c, n, 1, 1, tg, 1, 1);
  c.launch.init_value = 4242;
  kt_call_in(&c, va);
  kt_call_in(&c, fa);
  kt_call_in(&c, wa);
  kt_call_out(&c, KILN_UINT32, 1, n, 0, 0);
  kt_call_out(&c, KILN_UINT32, 1, groups * 3, 0, 0);
  kt_call_out(&c, KILN_FLOAT32, 1, groups, 0, 0);
  kiln_array *o[3];
  KT_RUN(k, &c, o);
  uint32_t ticket[700], res[18];
  float resf[6];
  CHECK_OK(kiln_array_to_host(o[0], ticket, sizeof ticket));
  CHECK_OK(kiln_array_to_host(o[1], res, sizeof res));
  CHECK_OK(kiln_array_to_host(o[2], resf, sizeof resf));
  for (int g = 0; g < groups; g++) {
    int lo = g * tg, hi = lo + tg < n ? lo + tg : n, size = hi - lo;
    bool seen[128] = {false};
    uint32_t rand_ = 0xffffffffu;
    int32_t rmin = 1 << 30;
    double rs = 0;
    for (int i = lo; i < hi; i++) {
      CHECK(ticket[i] < (uint32_t)size && !seen[ticket[i]],
            "group %d: tickets are a permutation (ticket[%d] = %u)", g, i,
            ticket[i]);
      seen[ticket[i]] = true;
      rand_ &= w[i];
      rmin = v[i] < rmin ? v[i] : rmin;
      rs += fx[i];
    }
    CHECK(res[g * 3] == (uint32_t)size, "group %d count %u, expected %d", g,
          res[g * 3], size);
    CHECK(res[g * 3 + 1] == rand_, "group %d and %08x, expected %08x", g,
          res[g * 3 + 1], rand_);
    CHECK(res[g * 3 + 2] == (uint32_t)(rmin + 1000), "group %d min", g);
    CHECK(resf[g] == (float)rs, "group %d float sum %g, expected %g", g,
          resf[g], rs);
  }
  free(v);
  free(fx);
  free(w);
  kt_destroy_all(o, 3);
  kiln_array_destroy(va);
  kiln_array_destroy(fa);
  kiln_array_destroy(wa);
  kiln_kernel_destroy(k);
}

void test_conf_templates(void) {
  kiln_kernel *k = KT_KERNEL("templated", "a", "out", kt_std_header,
                             "uint i = thread_position_in_grid.x;\n"
                             "T v = T(a[i]);\n"
                             "out[i] = B ? T(v * T(N)) : T(v + T(N));\n",
                             0);
  struct {
    kiln_dtype t;
    int n;
    bool b;
  } cases[3] = {{KILN_FLOAT32, 3, true},
                {KILN_INT32, -7, false},
                {KILN_FLOAT64, 5, false}};
  for (int ci = 0; ci < 3; ci++) {
    int64_t n = 257;
    float *a;
    kiln_array *aa = kt_random_1d(KILN_FLOAT32, n, -20, 20, (void **)&a);
    kt_call c;
    kt_call_init(&c, (uint32_t)n, 1, 1, 32, 1, 1);
    c.launch.init_value = -12345;
    kt_call_in(&c, aa);
    kt_call_out(&c, cases[ci].t, 1, n, 0, 0);
    kt_call_targ(&c, "T", KILN_TEMPLATE_DTYPE, cases[ci].t, 0);
    kt_call_targ(&c, "N", KILN_TEMPLATE_INT, KILN_BOOL, cases[ci].n);
    kt_call_targ(&c, "B", KILN_TEMPLATE_BOOL, KILN_BOOL, cases[ci].b);
    kiln_array *out;
    KT_RUN(k, &c, &out);
    double *got = kt_read_f64(out), ref[257];
    for (int64_t i = 0; i < n; i++) {
      if (cases[ci].t == KILN_FLOAT32)
        ref[i] = cases[ci].b ? (double)(a[i] * (float)cases[ci].n)
                             : (double)(a[i] + (float)cases[ci].n);
      else if (cases[ci].t == KILN_INT32)
        ref[i] = (double)((int32_t)a[i] + cases[ci].n);
      else
        ref[i] = (double)a[i] + cases[ci].n;
    }
    CHECK_CLOSE(kiln_dtype_name(cases[ci].t), got, ref, (size_t)n, 0, 0);
    free(got);
    free(a);
    kiln_array_destroy(out);
    kiln_array_destroy(aa);
  }
  kiln_kernel_destroy(k);
}

static const char kt_strided_body[] =
    "uint i = thread_position_in_grid.x;\n"
    "int64_t off = 0;\n"
    "uint r = i;\n"
    "for (int d = x_ndim - 1; d >= 0; --d) {\n"
    "  off += int64_t(r % uint(x_shape[d])) * x_strides[d];\n"
    "  r /= uint(x_shape[d]);\n"
    "}\n"
    "out[i] = x[off];\n"
    "if (i == 0) {\n"
    "  for (int d = 0; d < x_ndim; ++d) {\n"
    "    meta[d] = x_shape[d];\n"
    "    meta[4 + d] = int(x_strides[d]);\n"
    "  }\n"
    "  meta[8] = x_ndim;\n"
    "}\n";

void test_conf_strided_implicit(void) {
  float base[60];
  kt_random_fill(KILN_FLOAT32, base, 60, -9, 9);
  int64_t bs = 60;
  kiln_array *ba = kt_array(KILN_FLOAT32, 1, &bs, base), *view = NULL;
  int64_t shape[3] = {3, 4, 5}, strides[3] = {-20, 1, 4};
  CHECK_OK(kiln_array_view(ba, 3, shape, strides, 40, &view));
  float want[60];
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 4; b++)
      for (int c = 0; c < 5; c++)
        want[(a * 4 + b) * 5 + c] = base[40 - 20 * a + b + 4 * c];
  for (int pass = 0; pass < 2; pass++) {
    bool keep_strides = pass == 0;
    kiln_kernel *k = KT_KERNEL(keep_strides ? "strided_raw" : "strided_copy",
                               "x", "out,meta", NULL, kt_strided_body,
                               keep_strides ? KT_NO_ROW_CONTIG : 0);
    kt_call c;
    kt_call_init(&c, 60, 1, 1, 32, 1, 1);
    c.launch.init_value = -999;
    kt_call_in(&c, view);
    kt_call_out(&c, KILN_FLOAT32, 1, 60, 0, 0);
    kt_call_out(&c, KILN_INT32, 1, 9, 0, 0);
    kiln_array *o[2];
    KT_RUN(k, &c, o);
    float got[60];
    int32_t meta[9];
    CHECK_OK(kiln_array_to_host(o[0], got, sizeof got));
    CHECK_OK(kiln_array_to_host(o[1], meta, sizeof meta));
    int64_t es[3] = {keep_strides ? -20 : 20, keep_strides ? 1 : 5,
                     keep_strides ? 4 : 1};
    CHECK(meta[8] == 3, "x_ndim %d", meta[8]);
    for (int d = 0; d < 3; d++) {
      CHECK(meta[d] == shape[d], "x_shape[%d] = %d", d, meta[d]);
      CHECK(meta[4 + d] == es[d], "%s: x_strides[%d] = %d, expected %lld",
            keep_strides ? "ensure_row_contiguous=false" : "contiguous copy",
            d, meta[4 + d], (long long)es[d]);
    }
    for (int i = 0; i < 60; i++)
      CHECK(got[i] == want[i], "pass %d: out[%d] = %g, expected %g", pass, i,
            got[i], want[i]);
    kt_destroy_all(o, 2);
    kiln_kernel_destroy(k);
  }
  /* The view itself was not modified by the contiguous copy. */
  float after[60];
  CHECK_OK(kiln_array_to_host(ba, after, sizeof after));
  CHECK(memcmp(after, base, sizeof base) == 0, "input untouched");
  kiln_array_destroy(view);
  kiln_array_destroy(ba);
}

#define KT_NATTR 38

static const char kt_attr_body[] =
    "uint gid = (thread_position_in_grid.z * threads_per_grid.y +\n"
    "            thread_position_in_grid.y) * threads_per_grid.x +\n"
    "           thread_position_in_grid.x;\n"
    "device uint* o = out + gid * 38;\n"
    "uint3 v[9] = {thread_position_in_grid, thread_position_in_threadgroup,\n"
    "  threadgroup_position_in_grid, threads_per_threadgroup,\n"
    "  threadgroups_per_grid, threads_per_grid, grid_size, grid_origin,\n"
    "  dispatch_threads_per_threadgroup};\n"
    "for (int k = 0; k < 9; ++k) {\n"
    "  o[3 * k] = v[k].x; o[3 * k + 1] = v[k].y; o[3 * k + 2] = v[k].z;\n"
    "}\n"
    "o[27] = thread_index_in_threadgroup;\n"
    "o[28] = thread_index_in_simdgroup;\n"
    "o[29] = simdgroup_index_in_threadgroup;\n"
    "o[30] = threads_per_simdgroup;\n"
    "o[31] = simdgroups_per_threadgroup;\n"
    "o[32] = dispatch_simdgroups_per_threadgroup;\n"
    "o[33] = thread_execution_width;\n"
    "o[34] = quadgroup_index_in_threadgroup;\n"
    "o[35] = thread_index_in_quadgroup;\n"
    "o[36] = quadgroups_per_threadgroup;\n"
    "o[37] = dispatch_quadgroups_per_threadgroup;\n";

/* Metal's dispatchThreads, modelled on the host. */
static void kt_attr_model(const uint32_t G[3], const uint32_t T[3],
                          uint32_t x, uint32_t y, uint32_t z, uint32_t *o) {
  uint32_t p[3] = {x, y, z}, tc[3], ng[3], q[3], l[3], sz[3];
  for (int d = 0; d < 3; d++) {
    tc[d] = T[d] < G[d] ? T[d] : G[d];
    ng[d] = (G[d] + tc[d] - 1) / tc[d];
    q[d] = p[d] / tc[d];
    l[d] = p[d] % tc[d];
    sz[d] = G[d] - q[d] * tc[d] < tc[d] ? G[d] - q[d] * tc[d] : tc[d];
  }
  const uint32_t *v[9] = {p, l, q, sz, ng, G, G, NULL, tc};
  for (int k = 0; k < 9; k++)
    for (int d = 0; d < 3; d++)
      o[3 * k + d] = v[k] ? v[k][d] : 0;
  uint32_t lin = l[0] + l[1] * sz[0] + l[2] * sz[0] * sz[1];
  uint32_t nt = sz[0] * sz[1] * sz[2], dt = tc[0] * tc[1] * tc[2];
  uint32_t rest[11] = {lin,         lin % 32,     lin / 32, 32,
                       (nt + 31) / 32, (dt + 31) / 32, 32,   lin / 4,
                       lin % 4,     (nt + 3) / 4, (dt + 3) / 4};
  memcpy(o + 27, rest, sizeof rest);
}

void test_conf_attributes(void) {
  static const char *names[KT_NATTR] = {
      "thread_position_in_grid.x", "thread_position_in_grid.y",
      "thread_position_in_grid.z", "thread_position_in_threadgroup.x",
      "thread_position_in_threadgroup.y", "thread_position_in_threadgroup.z",
      "threadgroup_position_in_grid.x", "threadgroup_position_in_grid.y",
      "threadgroup_position_in_grid.z", "threads_per_threadgroup.x",
      "threads_per_threadgroup.y", "threads_per_threadgroup.z",
      "threadgroups_per_grid.x", "threadgroups_per_grid.y",
      "threadgroups_per_grid.z", "threads_per_grid.x", "threads_per_grid.y",
      "threads_per_grid.z", "grid_size.x", "grid_size.y", "grid_size.z",
      "grid_origin.x", "grid_origin.y", "grid_origin.z",
      "dispatch_threads_per_threadgroup.x",
      "dispatch_threads_per_threadgroup.y",
      "dispatch_threads_per_threadgroup.z", "thread_index_in_threadgroup",
      "thread_index_in_simdgroup", "simdgroup_index_in_threadgroup",
      "threads_per_simdgroup", "simdgroups_per_threadgroup",
      "dispatch_simdgroups_per_threadgroup", "thread_execution_width",
      "quadgroup_index_in_threadgroup", "thread_index_in_quadgroup",
      "quadgroups_per_threadgroup", "dispatch_quadgroups_per_threadgroup"};
  kiln_kernel *k = KT_KERNEL("attributes", "", "out", NULL, kt_attr_body, 0);
  static const uint32_t launches[][6] = {
      {7, 5, 3, 4, 2, 2},    /* ragged in every dimension */
      {3, 1, 1, 8, 4, 2},    /* threadgroup larger than the grid */
      {100, 2, 1, 64, 1, 1}, /* partial SIMD group */
      {37, 3, 2, 16, 16, 4}, /* clipped in y and z */
      {5, 7, 9, 1, 1, 1},
  };
  for (size_t li = 0; li < sizeof launches / sizeof launches[0]; li++) {
    const uint32_t *L = launches[li];
    uint32_t G[3] = {L[0], L[1], L[2]}, T[3] = {L[3], L[4], L[5]};
    uint32_t nthreads = G[0] * G[1] * G[2];
    kt_call c;
    kt_call_init(&c, G[0], G[1], G[2], T[0], T[1], T[2]);
    c.launch.init_value = 4294967295.0;
    kt_call_out(&c, KILN_UINT32, 1, (int64_t)nthreads * KT_NATTR, 0, 0);
    kiln_array *out;
    KT_RUN(k, &c, &out);
    uint32_t *got = kt_read(out);
    for (uint32_t z = 0; z < G[2]; z++)
      for (uint32_t y = 0; y < G[1]; y++)
        for (uint32_t x = 0; x < G[0]; x++) {
          uint32_t want[KT_NATTR];
          kt_attr_model(G, T, x, y, z, want);
          const uint32_t *o = got + ((z * G[1] + y) * G[0] + x) * KT_NATTR;
          for (int a = 0; a < KT_NATTR; a++)
            CHECK(o[a] == want[a],
                  "grid (%u,%u,%u) threadgroup (%u,%u,%u), thread "
                  "(%u,%u,%u): %s = %u, expected %u",
                  G[0], G[1], G[2], T[0], T[1], T[2], x, y, z, names[a], o[a],
                  want[a]);
        }
    free(got);
    kiln_array_destroy(out);
  }
  kiln_kernel_destroy(k);
}

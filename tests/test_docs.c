/*
 * The examples of docs/kernels.md, run as the guide describes them. Each
 * example's header and body are read from the guide itself (the fenced
 * block after a `<!-- kiln-example NAME PART -->` marker), so the guide
 * cannot drift from code that works: edit an example there and this test
 * runs the edited version.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "runner.h"

/* The fenced block that follows the marker for NAME/PART, malloc'ed, or
 * NULL if the guide has none. */
static char *doc_block(const char *name, const char *part) {
  size_t size = 0;
  char *doc = kt_read_file(KILN_SOURCE_DIR "/docs/kernels.md", &size);
  CHECK(doc != NULL, "cannot read docs/kernels.md");
  char marker[128];
  snprintf(marker, sizeof marker, "<!-- kiln-example %s %s -->", name, part);
  char *at = strstr(doc, marker);
  if (!at) {
    free(doc);
    return NULL;
  }
  char *open = strstr(at, "```metal\n");
  CHECK(open != NULL, "example %s %s has no ```metal block", name, part);
  open += strlen("```metal\n");
  char *close = strstr(open, "\n```");
  CHECK(close != NULL, "example %s %s block is not closed", name, part);
  size_t n = (size_t)(close - open) + 1;
  char *out = malloc(n + 1);
  CHECK(out != NULL, "out of memory");
  memcpy(out, open, n);
  out[n] = '\0';
  free(doc);
  return out;
}

static kiln_kernel *doc_kernel(const char *name, const char *inputs,
                               const char *outputs, unsigned flags) {
  char *header = doc_block(name, "header");
  char *body = doc_block(name, "body");
  CHECK(body != NULL, "docs/kernels.md has no body for example %s", name);
  kiln_kernel *k = KT_KERNEL(name, inputs, outputs, header, body, flags);
  free(header);
  free(body);
  return k;
}

void test_doc_myexp(void) {
  kt_rng_reset("doc_myexp");
  enum { N = 1000 };
  kiln_kernel *k = doc_kernel("myexp", "inp", "out", 0);
  void *host = NULL;
  kt_call c;
  kt_call_init(&c, N, 1, 1, 256, 1, 1);
  kt_call_in(&c, kt_random_1d(KILN_FLOAT32, N, -4, 4, &host));
  kt_call_out(&c, KILN_FLOAT32, 1, N, 0, 0);
  kt_call_targ(&c, "T", KILN_TEMPLATE_DTYPE, KILN_FLOAT32, 0);
  kiln_array *out = NULL;
  KT_RUN(k, &c, &out);
  double *got = kt_read_f64(out), ref[N];
  for (int i = 0; i < N; i++)
    ref[i] = exp(((float *)host)[i]);
  CHECK_CLOSE("myexp", got, ref, N, 4 * kt_eps(KILN_FLOAT32), 0);
  free(got);
  free(host);
  kiln_array_destroy(out);
  kt_destroy_all(c.in, 1);
  kiln_kernel_destroy(k);
}

void test_doc_axpy(void) {
  kt_rng_reset("doc_axpy");
  enum { N = 1000 };
  kiln_kernel *k = doc_kernel("axpy", "x,y,alpha,n", "out", 0);
  void *x = NULL, *y = NULL;
  double alpha = kt_uniform(-2, 2);
  kt_call c;
  /* The grid rounded up to whole threadgroups, as the guide says. */
  kt_call_init(&c, 1024, 1, 1, 256, 1, 1);
  kt_call_in(&c, kt_random_1d(KILN_FLOAT32, N, -1, 1, &x));
  kt_call_in(&c, kt_random_1d(KILN_FLOAT32, N, -1, 1, &y));
  kt_call_in(&c, kt_scalar(KILN_FLOAT32, alpha));
  kt_call_in(&c, kt_scalar(KILN_INT32, N));
  kt_call_out(&c, KILN_FLOAT32, 1, N, 0, 0);
  kiln_array *out = NULL;
  KT_RUN(k, &c, &out);
  double *got = kt_read_f64(out), ref[N];
  float a = (float)alpha;
  for (int i = 0; i < N; i++)
    ref[i] = (double)a * ((float *)x)[i] + ((float *)y)[i];
  CHECK_CLOSE("axpy", got, ref, N, 2 * kt_eps(KILN_FLOAT32), 1e-7);
  free(got);
  free(x);
  free(y);
  kiln_array_destroy(out);
  kt_destroy_all(c.in, 4);
  kiln_kernel_destroy(k);
}

void test_doc_strided(void) {
  kt_rng_reset("doc_strided");
  enum { R = 37, C = 23 };
  kiln_kernel *k = doc_kernel("strided", "x", "out", KT_NO_ROW_CONTIG);
  float host[R * C];
  kt_random_fill(KILN_FLOAT32, host, R * C, -1, 1);
  int64_t shape[2] = {R, C};
  kiln_array *base = kt_array(KILN_FLOAT32, 2, shape, host);
  /* The transpose, read in place through x_shape / x_strides. */
  int64_t tshape[2] = {C, R}, tstrides[2] = {1, C};
  kiln_array *xt = NULL;
  CHECK_OK(kiln_array_view(base, 2, tshape, tstrides, 0, &xt));
  kt_call c;
  kt_call_init(&c, R * C, 1, 1, 64, 1, 1);
  kt_call_in(&c, xt);
  kt_call_out(&c, KILN_FLOAT32, 2, C, R, 0);
  kiln_array *out = NULL;
  KT_RUN(k, &c, &out);
  double *got = kt_read_f64(out), ref[R * C];
  for (int i = 0; i < C; i++)
    for (int j = 0; j < R; j++)
      ref[i * R + j] = 2.0 * host[j * C + i];
  CHECK_CLOSE("strided transpose", got, ref, R * C, 0, 0);
  free(got);
  kiln_array_destroy(out);
  kiln_array_destroy(xt);
  kiln_array_destroy(base);
  kiln_kernel_destroy(k);
}

void test_doc_gemm(void) {
  kt_rng_reset("doc_gemm");
  enum { M = 45, N = 67, K = 83 };
  kiln_kernel *k = doc_kernel("gemm", "A,B,M,N,K", "C", 0);
  void *a = NULL, *b = NULL;
  kiln_array *aa = kt_random_1d(KILN_FLOAT32, M * K, -1, 1, &a);
  kiln_array *bb = kt_random_1d(KILN_FLOAT32, K * N, -1, 1, &b);
  kt_call c;
  /* The grid rounded up to whole 16x16 tiles, as the guide says. */
  kt_call_init(&c, 16 * ((N + 15) / 16), 16 * ((M + 15) / 16), 1, 16, 16, 1);
  kt_call_in(&c, aa);
  kt_call_in(&c, bb);
  kt_call_in(&c, kt_scalar(KILN_INT32, M));
  kt_call_in(&c, kt_scalar(KILN_INT32, N));
  kt_call_in(&c, kt_scalar(KILN_INT32, K));
  kt_call_out(&c, KILN_FLOAT32, 2, M, N, 0);
  kiln_array *out = NULL;
  KT_RUN(k, &c, &out);
  double *got = kt_read_f64(out);
  double *ref = malloc(sizeof(double) * M * N);
  CHECK(ref != NULL, "out of memory");
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double s = 0;
      for (int q = 0; q < K; q++)
        s += (double)((float *)a)[i * K + q] * ((float *)b)[q * N + j];
      ref[i * N + j] = s;
    }
  CHECK_CLOSE("gemm", got, ref, M * N, 1e-5, 1e-5);
  free(got);
  free(ref);
  free(a);
  free(b);
  kiln_array_destroy(out);
  kt_destroy_all(c.in, 5);
  kiln_kernel_destroy(k);
}

void test_doc_rowsum(void) {
  kt_rng_reset("doc_rowsum");
  enum { ROWS = 13, COLS = 1000 };
  kiln_kernel *k = doc_kernel("rowsum", "x,ncols", "out", 0);
  void *x = NULL;
  kt_call c;
  kt_call_init(&c, 256, ROWS, 1, 256, 1, 1);
  kt_call_in(&c, kt_random_1d(KILN_FLOAT32, ROWS * COLS, -1, 1, &x));
  kt_call_in(&c, kt_scalar(KILN_INT32, COLS));
  kt_call_out(&c, KILN_FLOAT32, 1, ROWS, 0, 0);
  kiln_array *out = NULL;
  KT_RUN(k, &c, &out);
  double *got = kt_read_f64(out), ref[ROWS];
  for (int r = 0; r < ROWS; r++) {
    ref[r] = 0;
    for (int j = 0; j < COLS; j++)
      ref[r] += ((float *)x)[r * COLS + j];
  }
  CHECK_CLOSE("rowsum", got, ref, ROWS, 1e-5, 1e-5);
  free(got);
  free(x);
  kiln_array_destroy(out);
  kt_destroy_all(c.in, 2);
  kiln_kernel_destroy(k);
}

void test_doc_histogram(void) {
  kt_rng_reset("doc_histogram");
  enum { N = 5000, BINS = 17 };
  kiln_kernel *k = doc_kernel("histogram", "x,nbins", "counts", KT_ATOMIC);
  void *x = NULL;
  kt_call c;
  kt_call_init(&c, N, 1, 1, 128, 1, 1);
  kt_call_in(&c, kt_random_1d(KILN_FLOAT32, N, 0, 0.999, &x));
  kt_call_in(&c, kt_scalar(KILN_INT32, BINS));
  kt_call_out(&c, KILN_INT32, 1, BINS, 0, 0);
  c.launch.init_value = 0;
  kiln_array *out = NULL;
  KT_RUN(k, &c, &out);
  double *got = kt_read_f64(out), ref[BINS] = {0};
  for (int i = 0; i < N; i++) {
    int bin = (int)(((float *)x)[i] * (float)BINS);
    bin = bin < 0 ? 0 : bin > BINS - 1 ? BINS - 1 : bin;
    ref[bin] += 1;
  }
  CHECK_CLOSE("histogram", got, ref, BINS, 0, 0);
  free(got);
  free(x);
  kiln_array_destroy(out);
  kt_destroy_all(c.in, 2);
  kiln_kernel_destroy(k);
}

/* Temporary probe (engineer qrb2): phase timing of the blocked QR. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_NAME "zz_qrb2_probe"
#include "bench_util.h"

extern int kiln__qrb_prof_on;
extern double kiln__qrb_prof[16];
extern int kiln__qrb_knob[8];

static const char *names[12] = {"tsqr",  "recon", "Y2gemm", "f:VtC",
                                "f:TX",  "f:VX",  "q:VtC",  "q:TX",
                                "q:VX",  "panel-rest", "setup", "q-rest"};

static double run_qr(kiln_array *a, kiln_stream *s, int m, int n, int check,
                     const float *ha) {
  kiln_linalg_opts o;
  kiln_linalg_opts_init(&o);
  o.stream = s;
  o.path = 3;
  kiln_array *q = NULL, *r = NULL;
  CHECK(kiln_stream_synchronize(s));
  double t0 = now_s();
  CHECK(kiln_qr_ex(a, KILN_QR_REDUCED, &o, &q, &r));
  CHECK(kiln_stream_synchronize(s));
  double t = now_s() - t0;
  if (check) {
    int k = m < n ? m : n;
    float *hq = malloc((size_t)m * k * 4), *hr = malloc((size_t)k * n * 4);
    CHECK(kiln_array_to_host(q, hq, (size_t)m * k * 4));
    CHECK(kiln_array_to_host(r, hr, (size_t)k * n * 4));
    double res = 0, an = 0, orth = 0;
    int cols[4] = {0, n / 3, n / 2, n - 1};
    for (int c = 0; c < 4; c++) {
      int j = cols[c];
      for (int i = 0; i < m; i++) {
        double x = ha[(size_t)i * n + j];
        for (int l = 0; l <= j && l < k; l++)
          x -= (double)hq[(size_t)i * k + l] * hr[(size_t)l * n + j];
        res += x * x;
        an += (double)ha[(size_t)i * n + j] * ha[(size_t)i * n + j];
      }
      int j2 = cols[(c + 1) % 4] < k ? cols[(c + 1) % 4] : k - 1;
      int j1 = j < k ? j : k - 2;
      double d = 0, e = 0;
      for (int i = 0; i < m; i++) {
        d += (double)hq[(size_t)i * k + j1] * hq[(size_t)i * k + j2];
        e += (double)hq[(size_t)i * k + j1] * hq[(size_t)i * k + j1];
      }
      orth += fabs(d - (j1 == j2)) + fabs(e - 1);
    }
    int neg = 0;
    for (int i = 0; i < k; i++)
      neg += hr[(size_t)i * n + i] < 0;
    printf("    check: rel res %.2e (x/eps %.1f)  orth %.2e  negdiag %d\n",
           sqrt(res / an), sqrt(res / an) / 1.19e-7, orth, neg);
    free(hq);
    free(hr);
  }
  kiln_array_destroy(q);
  kiln_array_destroy(r);
  return t;
}

static void shape(kiln_device *dev, kiln_stream *s, int m, int n) {
  float *ha = malloc((size_t)m * n * 4);
  uint64_t x = 12345;
  for (size_t i = 0; i < (size_t)m * n; i++) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    ha[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 2 - 1);
  }
  int64_t sh[2] = {m, n};
  kiln_array *a = NULL;
  CHECK(kiln_array_from_host(dev, KILN_FLOAT32, 2, sh, ha, &a));
  run_qr(a, s, m, n, 1, ha);
  double best = 1e9;
  for (int i = 0; i < 3; i++) {
    double t = run_qr(a, s, m, n, 0, ha);
    best = t < best ? t : best;
  }
  printf("  %dx%d: best of 3 %.3f ms\n", m, n, best * 1e3);
  memset(kiln__qrb_prof, 0, sizeof kiln__qrb_prof);
  kiln__qrb_prof_on = 1;
  double tp = run_qr(a, s, m, n, 0, ha);
  kiln__qrb_prof_on = 0;
  printf("    profiled total %.3f ms:", tp * 1e3);
  for (int i = 0; i < 12; i++)
    printf(" %s %.2f", names[i], kiln__qrb_prof[i] * 1e3);
  printf("\n");
  kiln_array_destroy(a);
  free(ha);
}

int main(int argc, char **argv) {
  kiln_device *dev = NULL;
  CHECK(kiln_device_find("gpu", &dev));
  kiln_stream *s = kiln_default_stream(dev);
  /* argv: knob settings "i=v", then shapes "MxN" */
  for (int i = 1; i < argc; i++) {
    int kk, v, m, n;
    if (sscanf(argv[i], "k%d=%d", &kk, &v) == 2) {
      kiln__qrb_knob[kk] = v;
      printf("knob %d = %d\n", kk, v);
    } else if (sscanf(argv[i], "%dx%d", &m, &n) == 2) {
      shape(dev, s, m, n);
    } else if (strcmp(argv[i], "reset") == 0) {
      for (int k = 0; k < 8; k++)
        kiln__qrb_knob[k] = -1;
      printf("knobs reset\n");
    }
    fflush(stdout);
  }
  return 0;
}

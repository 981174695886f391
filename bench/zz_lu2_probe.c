/* Temporary probe (lu2): times kiln_lu_factor phases via KILN_LU_PROBE. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#define BENCH_NAME "zz_lu2_probe"
#include "bench_util.h"

static double time_lu(kiln_array *a, kiln_linalg_opts *o, int reps) {
  double best = 1e9;
  for (int r = 0; r < reps; r++) {
    kiln_array *lu = NULL, *piv = NULL;
    double t0 = now_s();
    kiln_status st = kiln_lu_factor_ex(a, o, &lu, &piv);
    double t = now_s() - t0;
    if (st != KILN_OK)
      printf("  (status %d: %s)\n", (int)st, kiln_last_error());
    kiln_array_destroy(lu);
    kiln_array_destroy(piv);
    if (t < best)
      best = t;
  }
  return best * 1e3;
}

int main(int argc, char **argv) {
  kiln_device *dev = NULL;
  if (kiln_device_find("gpu", &dev) != KILN_OK) {
    printf("no gpu\n");
    return 0;
  }
  const char *masks[] = {"0", "1", "2", "4", "8", "16", "3", "31", NULL};
  const char *names[] = {"all", "-panel", "-panelgemm", "-laswp", "-trsm",
                         "-trailgemm", "-panel-panelgemm", "copy only"};
  int sizes[] = {8192, 4096};
  for (int si = 0; si < 2; si++) {
    int n = sizes[si];
    if (argc > 1 && n != atoi(argv[1]))
      continue;
    float *h = malloc((size_t)n * n * 4);
    uint64_t x = 12345;
    for (size_t i = 0; i < (size_t)n * n; i++) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      h[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5);
    }
    int64_t shape[2] = {n, n};
    kiln_array *a = NULL;
    CHECK(kiln_array_from_host(dev, KILN_FLOAT32, 2, shape, h, &a));
    kiln_linalg_opts o;
    kiln_linalg_opts_init(&o);
    setenv("KILN_LU_PROBE", "0", 1);
    time_lu(a, &o, 1);
    for (int i = 0; masks[i]; i++) {
      setenv("KILN_LU_PROBE", masks[i], 1);
      printf("n=%d %-18s %8.2f ms\n", n, names[i], time_lu(a, &o, 3));
      fflush(stdout);
    }
    kiln_array_destroy(a);
    free(h);
  }
  return 0;
}

/* Temporary probe (engineer lu3): LU timings by panel width. DELETE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static double time_lu(kiln_array *a, int reps) {
  double best = 1e30;
  for (int i = 0; i < reps + 1; i++) {
    kiln_array *lu = NULL, *piv = NULL;
    double t0 = now();
    kiln_status st = kiln_lu_factor(a, &lu, &piv);
    double t = now() - t0;
    if (st != KILN_OK)
      printf("  error %s\n", kiln_last_error_message());
    kiln_array_destroy(lu);
    kiln_array_destroy(piv);
    if (i > 0 && t < best)
      best = t;
  }
  return best;
}

int main(void) {
  kiln_device *dev = NULL;
  if (kiln_device_find("gpu", &dev) != KILN_OK) {
    printf("no gpu\n");
    return 0;
  }
  int sizes[3] = {8192, 4096, 2048};
  for (int si = 0; si < 3; si++) {
    int64_t n = sizes[si];
    float *h = malloc((size_t)(n * n) * sizeof *h);
    srand(1);
    for (int64_t i = 0; i < n * n; i++)
      h[i] = (float)rand() / RAND_MAX - 0.5f;
    int64_t shape[2] = {n, n};
    kiln_array *a = NULL;
    kiln_array_from_host(dev, KILN_FLOAT32, 2, shape, h, &a);
    const char *nbs[4] = {"256", "128", "512", "64"};
    for (int b = 0; b < 4; b++) {
      setenv("KILN_LU3_NB", nbs[b], 1);
      unsetenv("KILN_LU3_SKIP");
      double full = time_lu(a, si == 0 ? 3 : 5);
      setenv("KILN_LU3_SKIP", "1", 1);
      double skip = time_lu(a, si == 0 ? 2 : 3);
      unsetenv("KILN_LU3_SKIP");
      printf("LU %lld f32 NB %s: %.2f ms; without panel+laswp %.2f ms\n",
             (long long)n, nbs[b], full, skip);
      fflush(stdout);
    }
    unsetenv("KILN_LU3_NB");
    kiln_array_destroy(a);
    free(h);
  }
  return 0;
}

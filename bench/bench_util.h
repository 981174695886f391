/*
 * Helpers shared by the single-file benchmarks in bench/: the check macro,
 * a monotonic clock, the median of a few repetitions and kernel creation.
 * Each program defines BENCH_NAME (a string literal) before including
 * this header; CHECK's messages start with it.
 */
#ifndef KILN_BENCH_UTIL_H
#define KILN_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kiln.h"

#ifndef BENCH_NAME
#error "define BENCH_NAME before including bench_util.h"
#endif

/* Exits with kiln's message when a call fails: a benchmark has no use for
 * recovery. */
#define CHECK(call)                                                           \
  do {                                                                        \
    kiln_status st_ = (call);                                                 \
    if (st_ != KILN_OK) {                                                     \
      fprintf(stderr, BENCH_NAME ": %s failed: %s\n", #call,                  \
              kiln_last_error());                                             \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorts v in place; the middle value, or the mean of the two middle ones
 * when n is even. */
static inline double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* A kernel with one output; `header` may be NULL. */
static inline kiln_kernel *make_kernel(const char *name,
                                       const char *const *inputs,
                                       int num_inputs, const char *output,
                                       const char *header,
                                       const char *source) {
  kiln_kernel_desc d;
  kiln_kernel_desc_init(&d);
  d.name = name;
  d.input_names = inputs;
  d.num_inputs = num_inputs;
  d.output_names = &output;
  d.num_outputs = 1;
  d.header = header;
  d.source = source;
  kiln_kernel *k = NULL;
  CHECK(kiln_kernel_create(&d, &k));
  return k;
}

#endif /* KILN_BENCH_UTIL_H */

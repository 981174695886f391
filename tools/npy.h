/*
 * Reading and writing numpy .npy files, for the kiln command-line tool.
 *
 * Reads format versions 1.0, 2.0 and 3.0; writes 1.0 (2.0 when the header
 * would not fit in 1.0's 16-bit length). Only little-endian, C-order arrays
 * of numpy's plain numeric dtypes are supported: bool, int8..int64,
 * uint8..uint64, float16, float32 and float64. numpy has no bfloat16, so
 * bfloat16 is neither read nor written.
 *
 * This file depends on nothing but the C library and the kiln_dtype enum of
 * kiln.h, so tests can compile it on its own. Functions return 0 on success
 * and -1 on failure, with one sentence naming the file in `err` (which may
 * be NULL; messages longer than errlen are truncated).
 */
#ifndef KILN_TOOLS_NPY_H
#define KILN_TOOLS_NPY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kiln.h"

/* An array read from a .npy file; `data` holds nbytes in C order. */
typedef struct npy_array {
  kiln_dtype dtype;
  int ndim;                      /* 0 for a scalar */
  int64_t shape[KILN_MAX_NDIM];
  size_t nbytes;                 /* product(shape) * itemsize */
  void *data; /* malloc'ed; never NULL after npy_read (NULL after
                npy_read_header) */
} npy_array;

/*
 * Reads `path` into `out`. On failure `out` is left zeroed and nothing is
 * allocated. Free a successful result with npy_array_free.
 */
int npy_read(const char *path, npy_array *out, char *err, size_t errlen);

/*
 * Reads only the header of `path`: dtype, ndim, shape and nbytes, with the
 * same checks as npy_read; out->data stays NULL and the data is not read
 * (nor checked for truncation). Nothing needs freeing.
 */
int npy_read_header(const char *path, npy_array *out, char *err,
                    size_t errlen);

/* Frees the data of an array filled by npy_read and zeroes it; NULL-safe. */
void npy_array_free(npy_array *array);

/*
 * Writes a C-order array as a .npy file at `path` (created or truncated).
 * `data` holds product(shape) elements of `dtype`. On failure the file may
 * be partly written; callers that must not leave one write to a temporary
 * name and rename it.
 */
int npy_write(const char *path, kiln_dtype dtype, int ndim,
              const int64_t *shape, const void *data, char *err,
              size_t errlen);

/*
 * As npy_write, to an open stream; `name` is only used in error messages.
 * The stream is flushed but not closed.
 */
int npy_write_stream(FILE *stream, const char *name, kiln_dtype dtype,
                     int ndim, const int64_t *shape, const void *data,
                     char *err, size_t errlen);

/*
 * The numpy descr npy_write uses for `dtype` ("<f4", "|b1"), or NULL if the
 * dtype cannot be stored in a .npy file (bfloat16, invalid values).
 */
const char *npy_descr(kiln_dtype dtype);

#endif /* KILN_TOOLS_NPY_H */

/*
 * The `kiln` command-line tool: runs an MLX-style Metal kernel on .npy
 * files, runs kiln's linear algebra on them (`kiln linalg`) and describes
 * the devices kiln sees. It uses only the public header
 * (kiln.h) and npy.h, like any other program built on kiln. `kiln linalg`
 * lives in cli_linalg.c; the helpers both files share are in cli.h.
 *
 * Exit status: 0 on success, 2 for a usage error (bad or missing flags),
 * 1 for a runtime error (unreadable files, a kernel that fails to compile or
 * run). Every error is one paragraph on stderr starting "kiln <command>: ".
 */
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "kiln.h"
#include "npy.h"

/* ---- messages ------------------------------------------------------------ */

/* The subcommand being run, for the "kiln run: " prefix of messages. */
static const char *g_command = "kiln";

/* Prints a usage error with a pointer to the help and returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", g_command);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  if (!strcmp(g_command, "kiln") || !strcmp(g_command, "kiln help"))
    fprintf(stderr, " Run 'kiln --help' for usage.\n");
  else
    fprintf(stderr, " Run 'kiln help %s' for usage.\n", g_command + 5);
  return EXIT_USAGE;
}

/* Prints a runtime error and returns EXIT_RUNTIME. */
int runtime_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", g_command);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return EXIT_RUNTIME;
}

/* Prints "<what>: <the library's message>" for a failed kiln call. */
int library_error(kiln_status status, const char *fmt, ...) {
  const char *detail = kiln_last_error();
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", g_command);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  if (!detail || !detail[0])
    detail = kiln_status_string(status);
  /* Compiler logs end in a newline; keep the paragraph free of blanks. */
  size_t len = strlen(detail);
  while (len && (detail[len - 1] == '\n' || detail[len - 1] == ' '))
    len--;
  fprintf(stderr, ": %.*s\n", (int)len, detail);
  return EXIT_RUNTIME;
}

/* ---- number parsing ------------------------------------------------------ */

/* A plain decimal number: digits only, no sign, no blanks, at most `max`. */
static bool parse_u64(const char *s, uint64_t max, uint64_t *out) {
  if (!s[0])
    return false;
  uint64_t v = 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9')
      return false;
    unsigned d = (unsigned)(*p - '0');
    if (v > max / 10 || max - v * 10 < d)
      return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

/* A decimal integer with an optional '-', within [min, max]. */
static bool parse_i64(const char *s, int64_t min, int64_t max, int64_t *out) {
  bool neg = s[0] == '-';
  uint64_t mag;
  uint64_t limit = neg ? (uint64_t)(-(min + 1)) + 1 : (uint64_t)max;
  if (min >= 0 && neg)
    return false;
  if (!parse_u64(s + neg, limit, &mag))
    return false;
  *out = neg ? (mag == 0 ? 0 : -(int64_t)(mag - 1) - 1) : (int64_t)mag;
  return true;
}

/* A floating-point number as strtod reads it ("1.5", "-inf", "nan"), with
 * nothing else around it. */
bool parse_double(const char *s, double *out) {
  if (!s[0] || s[0] == ' ' || s[0] == '\t')
    return false;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  /* ERANGE on underflow still gives the nearest value; only refuse overflow */
  if (*end != '\0' || (errno == ERANGE && isinf(v)))
    return false;
  *out = v;
  return true;
}

/* Rounds to a binary float with `ebits` exponent and `mbits` mantissa bits
 * (float16: 5, 10; bfloat16: 8, 7), to nearest even. */
static uint16_t to_minifloat(double v, int ebits, int mbits) {
  int bias = (1 << (ebits - 1)) - 1;
  uint16_t sign = signbit(v) ? (uint16_t)(1u << (ebits + mbits)) : 0;
  uint16_t inf = (uint16_t)(((1u << ebits) - 1) << mbits);
  if (isnan(v))
    return sign | inf | (uint16_t)(1u << (mbits - 1));
  double a = fabs(v);
  if (isinf(a))
    return sign | inf;
  int emin = 1 - bias;
  /* Subnormals count units of 2^(emin - mbits); rounding up to 2^mbits
   * units lands exactly on the smallest normal's encoding. */
  if (a < ldexp(1.0, emin))
    return sign | (uint16_t)nearbyint(ldexp(a, mbits - emin));
  int e;
  double m = frexp(a, &e); /* a = m * 2^e, 0.5 <= m < 1 */
  double q = nearbyint(ldexp(m, mbits + 1));
  if (q == ldexp(1.0, mbits + 1)) {
    q /= 2;
    e++;
  }
  int biased = e - 1 + bias;
  if (biased >= (1 << ebits) - 1)
    return sign | inf;
  return sign | (uint16_t)(biased << mbits) |
         (uint16_t)((uint32_t)q - (1u << mbits));
}

/* Integer limits of the integer dtypes. */
static void int_range(kiln_dtype dt, int64_t *min, uint64_t *max) {
  static const struct {
    kiln_dtype dt;
    int64_t min;
    uint64_t max;
  } r[] = {
      {KILN_INT8, INT8_MIN, INT8_MAX},       {KILN_INT16, INT16_MIN, INT16_MAX},
      {KILN_INT32, INT32_MIN, INT32_MAX},    {KILN_INT64, INT64_MIN, INT64_MAX},
      {KILN_UINT8, 0, UINT8_MAX},            {KILN_UINT16, 0, UINT16_MAX},
      {KILN_UINT32, 0, UINT32_MAX},          {KILN_UINT64, 0, UINT64_MAX},
  };
  for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
    if (r[i].dt == dt) {
      *min = r[i].min;
      *max = r[i].max;
      return;
    }
  *min = 0;
  *max = 0;
}

/* Stores the low `size` bytes of v (little-endian host assumed, as npy). */
static void store_int(unsigned char *out, uint64_t v, size_t size) {
  for (size_t i = 0; i < size; i++)
    out[i] = (unsigned char)(v >> (8 * i));
}

/* Encodes a --scalar value text as one element of `dt`. */
static bool encode_scalar(const char *text, kiln_dtype dt,
                          unsigned char out[8]) {
  if (dt == KILN_BOOL) {
    bool t = !strcmp(text, "true") || !strcmp(text, "True") ||
             !strcmp(text, "1");
    bool f = !strcmp(text, "false") || !strcmp(text, "False") ||
             !strcmp(text, "0");
    out[0] = t;
    return t || f;
  }
  double d;
  if (dt == KILN_FLOAT16 || dt == KILN_BFLOAT16 || dt == KILN_FLOAT32 ||
      dt == KILN_FLOAT64) {
    if (!parse_double(text, &d))
      return false;
    if (dt == KILN_FLOAT64) {
      memcpy(out, &d, 8);
      return true;
    }
    if (dt == KILN_FLOAT32) {
      float f = (float)d;
      memcpy(out, &f, 4);
      return !isinf(f) || isinf(d);
    }
    uint16_t h = dt == KILN_FLOAT16 ? to_minifloat(d, 5, 10)
                                    : to_minifloat(d, 8, 7);
    store_int(out, h, 2);
    /* A finite value that rounds to infinity is out of range. */
    uint16_t exp_mask = dt == KILN_FLOAT16 ? 0x7c00 : 0x7f80;
    return (h & exp_mask) != exp_mask || !isfinite(d);
  }
  int64_t min;
  uint64_t max;
  int_range(dt, &min, &max);
  if (min < 0) {
    int64_t v;
    if (!parse_i64(text, min, (int64_t)max, &v))
      return false;
    store_int(out, (uint64_t)v, kiln_dtype_size(dt));
    return true;
  }
  uint64_t u;
  if (!parse_u64(text, max, &u))
    return false;
  store_int(out, u, kiln_dtype_size(dt));
  return true;
}

/* Why encode_scalar refused `text`, as the end of a sentence. */
static const char *scalar_problem(const char *text, kiln_dtype dt) {
  static char why[128];
  if (dt == KILN_BOOL)
    return "is not a bool (use true or false)";
  bool is_float = dt == KILN_FLOAT16 || dt == KILN_BFLOAT16 ||
                  dt == KILN_FLOAT32 || dt == KILN_FLOAT64;
  if (is_float) {
    char *end;
    (void)strtod(text, &end);
    if (end == text || *end || text[0] == ' ' || text[0] == '\t')
      return "is not a number";
    snprintf(why, sizeof why, "is out of the range of %s",
             kiln_dtype_name(dt));
    return why;
  }
  /* An integer-looking text failed only because of its range. */
  const char *digits = text + (text[0] == '-');
  if (!digits[0] || strspn(digits, "0123456789") != strlen(digits))
    return "is not an integer";
  int64_t min;
  uint64_t max;
  int_range(dt, &min, &max);
  snprintf(why, sizeof why, "is out of the range of %s (%lld to %llu)",
           kiln_dtype_name(dt), (long long)min, (unsigned long long)max);
  return why;
}

/* ---- the options of `kiln run` ------------------------------------------- */

/* One --input or --scalar, in the order given: the kernel's inputs. */
typedef struct binding {
  char *name;
  const char *flag;  /* "--input" or "--scalar" */
  const char *file;  /* --input: the .npy path (inside `name`'s buffer) */
  bool is_scalar;
  kiln_dtype dtype;  /* --scalar */
  unsigned char value[8];
} binding;

typedef struct output_arg {
  char *name;
  kiln_output_spec spec;
} output_arg;

typedef struct run_opts {
  const char *name;
  const char *source_path;
  const char *header_path;
  const char *device;
  const char *out_dir;
  const char *target; /* kiln compile */
  binding *binds;
  int num_binds;
  output_arg *outs;
  int num_outs;
  kiln_template_arg *tmpl;
  int num_tmpl;
  uint32_t grid[3];
  uint32_t threadgroup[3];
  bool has_grid, has_threadgroup;
  bool atomic_outputs, no_row_contiguous, fast_math, verbose;
  bool has_init_value;
  double init_value;
} run_opts;

static void run_opts_free(run_opts *o) {
  for (int i = 0; i < o->num_binds; i++)
    free(o->binds[i].name);
  for (int i = 0; i < o->num_outs; i++)
    free(o->outs[i].name);
  for (int i = 0; i < o->num_tmpl; i++)
    free((char *)o->tmpl[i].name);
  free(o->binds);
  free(o->outs);
  free(o->tmpl);
}

static bool is_identifier(const char *s) {
  if (!s[0] || (s[0] >= '0' && s[0] <= '9'))
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_'))
      return false;
  return true;
}

/* Splits "NAME=REST" into a malloc'ed "NAME\0REST"; *rest points after the
 * NUL. Prints a usage error and returns NULL on bad input. */
static char *split_name(const char *flag, const char *value, const char *form,
                        const char **rest, int *rc) {
  const char *eq = strchr(value, '=');
  if (!eq) {
    *rc = usage_error("%s '%s' is not of the form %s.", flag, value, form);
    return NULL;
  }
  char *copy = strdup(value);
  if (!copy) {
    *rc = runtime_error("out of memory.");
    return NULL;
  }
  copy[eq - value] = '\0';
  if (!is_identifier(copy)) {
    *rc = usage_error("%s '%s': the name '%s' is not a valid identifier "
                      "(letters, digits and '_', not starting with a digit).",
                      flag, value, copy);
    free(copy);
    return NULL;
  }
  *rest = copy + (eq - value) + 1;
  return copy;
}

/* Parses a dtype name, printing a usage error naming the flag if unknown. */
static bool parse_dtype(const char *flag, const char *arg, const char *text,
                        kiln_dtype *out, int *rc) {
  if (text[0] && kiln_dtype_from_name(text, out) == KILN_OK)
    return true;
  *rc = usage_error("%s '%s': '%s' is not a dtype (use a numpy name such as "
                    "float32, float16, int32, uint8 or bool).",
                    flag, arg, text);
  return false;
}

/* X[,Y[,Z]] with 1 to 3 positive numbers; missing ones are 1. */
static int parse_dims3(const char *flag, const char *value, uint32_t out[3]) {
  uint32_t v[3] = {1, 1, 1};
  const char *p = value;
  for (int i = 0;; i++) {
    if (i == 3)
      return usage_error("%s '%s' has more than 3 numbers.", flag, value);
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    char num[32];
    uint64_t x;
    if (n >= sizeof num)
      return usage_error("%s '%s': '%.*s' is too large (the most is "
                         "4294967295).", flag, value, (int)n, p);
    memcpy(num, p, n);
    num[n] = '\0';
    if (!parse_u64(num, UINT32_MAX, &x)) {
      bool digits = n > 0 && strspn(num, "0123456789") == n;
      if (digits)
        return usage_error("%s '%s': %s is too large (the most is "
                           "4294967295).", flag, value, num);
      return usage_error("%s '%s': '%s' is not a positive integer (write "
                         "X, X,Y or X,Y,Z).", flag, value, num);
    }
    if (x == 0)
      return usage_error("%s '%s': every number must be at least 1.", flag,
                         value);
    v[i] = (uint32_t)x;
    if (!comma)
      break;
    p = comma + 1;
  }
  memcpy(out, v, sizeof v);
  return 0;
}

/* SHAPE: "4x8x2", "1024", or "" / "()" for a 0-d array. */
static int parse_shape(const char *arg, const char *text,
                       kiln_output_spec *spec) {
  spec->ndim = 0;
  if (!text[0] || !strcmp(text, "()"))
    return 0;
  const char *p = text;
  for (;;) {
    const char *x = strchr(p, 'x');
    size_t n = x ? (size_t)(x - p) : strlen(p);
    char num[32];
    uint64_t d;
    if (spec->ndim == KILN_MAX_NDIM)
      return usage_error("--output '%s': the shape has more than %d "
                         "dimensions.", arg, KILN_MAX_NDIM);
    if (n >= sizeof num || (memcpy(num, p, n), num[n] = '\0',
                            !parse_u64(num, INT64_MAX, &d)))
      return usage_error("--output '%s': shape '%s' is not a list of "
                         "non-negative integers joined by 'x' (such as "
                         "1024 or 4x8x2).", arg, text);
    spec->shape[spec->ndim++] = (int64_t)d;
    if (!x)
      return 0;
    p = x + 1;
  }
}

static int add_output(run_opts *o, const char *value) {
  int rc = 0;
  const char *rest;
  const char *colon = strchr(value, ':');
  if (!colon || !strchr(colon + 1, ':'))
    return usage_error("--output '%s' is not of the form NAME:DTYPE:SHAPE "
                       "(such as y:float32:4x8).", value);
  char *name = strndup(value, (size_t)(colon - value));
  if (!name)
    return runtime_error("out of memory.");
  output_arg *out = &o->outs[o->num_outs];
  out->name = name;
  o->num_outs++; /* owned by o from here on */
  if (!is_identifier(name))
    return usage_error("--output '%s': the name '%s' is not a valid "
                       "identifier.", value, name);
  rest = colon + 1;
  const char *colon2 = strchr(rest, ':');
  char dtype_text[32];
  size_t n = (size_t)(colon2 - rest);
  snprintf(dtype_text, sizeof dtype_text, "%.*s", (int)n, rest);
  if (!parse_dtype("--output", value, dtype_text, &out->spec.dtype, &rc))
    return rc;
  if (!npy_descr(out->spec.dtype))
    return usage_error("--output '%s': %s outputs cannot be saved as .npy "
                       "(numpy has no %s); use float32 or float16.",
                       value, dtype_text, dtype_text);
  return parse_shape(value, colon2 + 1, &out->spec);
}

static int add_input(run_opts *o, const char *value) {
  int rc = 0;
  const char *file;
  char *name = split_name("--input", value, "NAME=FILE.npy", &file, &rc);
  if (!name)
    return rc;
  binding *b = &o->binds[o->num_binds++];
  b->name = name;
  b->flag = "--input";
  b->file = file;
  if (!file[0])
    return usage_error("--input '%s' names no file.", value);
  return 0;
}

static int add_scalar(run_opts *o, const char *value) {
  int rc = 0;
  const char *rest;
  char *name = split_name("--scalar", value, "NAME=VALUE:DTYPE", &rest, &rc);
  if (!name)
    return rc;
  binding *b = &o->binds[o->num_binds++];
  b->name = name;
  b->flag = "--scalar";
  b->is_scalar = true;
  char *colon = strrchr(rest, ':');
  if (!colon)
    return usage_error("--scalar '%s' is not of the form NAME=VALUE:DTYPE "
                       "(such as n=10:int32).", value);
  *colon = '\0'; /* `rest` lives in b->name's buffer */
  if (!parse_dtype("--scalar", value, colon + 1, &b->dtype, &rc))
    return rc;
  if (!encode_scalar(rest, b->dtype, b->value))
    return usage_error("--scalar '%s': '%s' %s.", value, rest,
                       scalar_problem(rest, b->dtype));
  return 0;
}

static int add_template(run_opts *o, const char *value) {
  int rc = 0;
  const char *text;
  char *name = split_name("--template", value, "NAME=VALUE", &text, &rc);
  if (!name)
    return rc;
  kiln_template_arg *t = &o->tmpl[o->num_tmpl++];
  t->name = name;
  int64_t v;
  if (!strcmp(text, "true") || !strcmp(text, "false")) {
    t->kind = KILN_TEMPLATE_BOOL;
    t->value = text[0] == 't';
  } else if (parse_i64(text, INT64_MIN, INT64_MAX, &v)) {
    t->kind = KILN_TEMPLATE_INT;
    t->value = v;
  } else if (text[0] && kiln_dtype_from_name(text, &t->dtype) == KILN_OK) {
    t->kind = KILN_TEMPLATE_DTYPE;
  } else {
    return usage_error("--template '%s': '%s' is not a dtype name, an "
                       "integer, true or false.", value, text);
  }
  return 0;
}

/* ---- flag table ---------------------------------------------------------- */

typedef enum flag_id {
  F_NAME, F_SOURCE, F_HEADER, F_INPUT, F_SCALAR, F_OUTPUT, F_GRID,
  F_THREADGROUP, F_TEMPLATE, F_ATOMIC, F_INIT, F_NO_ROW, F_FAST, F_DEVICE,
  F_OUT_DIR, F_VERBOSE, F_HELP, F_TARGET
} flag_id;

typedef struct flag_def {
  const char *name;
  flag_id id;
  bool takes_value;
} flag_def;

static const flag_def run_flags[] = {
    {"--name", F_NAME, true},          {"--source", F_SOURCE, true},
    {"--header", F_HEADER, true},      {"--input", F_INPUT, true},
    {"--scalar", F_SCALAR, true},      {"--output", F_OUTPUT, true},
    {"--grid", F_GRID, true},          {"--threadgroup", F_THREADGROUP, true},
    {"--template", F_TEMPLATE, true},  {"--atomic-outputs", F_ATOMIC, false},
    {"--init-value", F_INIT, true},    {"--no-row-contiguous", F_NO_ROW, false},
    {"--fast-math", F_FAST, false},    {"--device", F_DEVICE, true},
    {"--out-dir", F_OUT_DIR, true},    {"--verbose", F_VERBOSE, false},
    {"--help", F_HELP, false},
};
#define NUM_RUN_FLAGS (sizeof run_flags / sizeof run_flags[0])

/* `kiln compile` takes every flag of `kiln run` and these. */
static const flag_def compile_only_flags[] = {{"--target", F_TARGET, true}};
#define NUM_COMPILE_ONLY_FLAGS                                               \
  (sizeof compile_only_flags / sizeof compile_only_flags[0])

/* Edit distance, to suggest a flag for a typo. Short strings only. */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63)
    return 64;
  size_t row[64];
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (row[j] + 1 < best)
        best = row[j] + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

/* The closest of `names` to `word`, or NULL if none is close. */
const char *closest(const char *word, const char *const *names,
                           size_t count) {
  const char *best = NULL;
  size_t best_d = 3; /* suggest only within two edits */
  for (size_t i = 0; i < count; i++) {
    size_t d = edit_distance(word, names[i]);
    if (d < best_d) {
      best_d = d;
      best = names[i];
    }
  }
  return best;
}

static int unknown_flag(const char *arg, const flag_def *flags, size_t n) {
  const char *names[32];
  for (size_t i = 0; i < n && i < 32; i++)
    names[i] = flags[i].name;
  const char *hint = closest(arg, names, n < 32 ? n : 32);
  if (hint)
    return usage_error("unknown option '%s'; did you mean '%s'?", arg, hint);
  return usage_error("unknown option '%s'.", arg);
}

/* Sets a flag that may be given once. */
int set_once(const char **slot, const char *flag, const char *value) {
  if (*slot)
    return usage_error("%s is given twice ('%s' and '%s').", flag, *slot,
                       value);
  if (!value[0])
    return usage_error("%s needs a non-empty value.", flag);
  *slot = value;
  return 0;
}

bool valid_device_spec(const char *s) {
  if (!strcmp(s, "cpu") || !strcmp(s, "gpu"))
    return true;
  uint64_t n;
  return !strncmp(s, "gpu:", 4) && parse_u64(s + 4, INT32_MAX, &n);
}

/* Applies one flag; returns 0 or an exit status. */
static int apply_flag(run_opts *o, const flag_def *f, const char *v) {
  int rc;
  switch (f->id) {
  case F_NAME: return set_once(&o->name, f->name, v);
  case F_SOURCE: return set_once(&o->source_path, f->name, v);
  case F_HEADER: return set_once(&o->header_path, f->name, v);
  case F_OUT_DIR: return set_once(&o->out_dir, f->name, v);
  case F_DEVICE:
    if ((rc = set_once(&o->device, f->name, v)) != 0)
      return rc;
    if (!valid_device_spec(v))
      return usage_error("--device '%s' is not cpu, gpu or gpu:N.", v);
    return 0;
  case F_INPUT: return add_input(o, v);
  case F_SCALAR: return add_scalar(o, v);
  case F_OUTPUT: return add_output(o, v);
  case F_TEMPLATE: return add_template(o, v);
  case F_GRID:
    if (o->has_grid)
      return usage_error("--grid is given twice.");
    o->has_grid = true;
    return parse_dims3("--grid", v, o->grid);
  case F_THREADGROUP:
    if (o->has_threadgroup)
      return usage_error("--threadgroup is given twice.");
    o->has_threadgroup = true;
    return parse_dims3("--threadgroup", v, o->threadgroup);
  case F_INIT:
    if (o->has_init_value)
      return usage_error("--init-value is given twice.");
    o->has_init_value = true;
    if (!parse_double(v, &o->init_value))
      return usage_error("--init-value '%s' is not a number.", v);
    return 0;
  case F_ATOMIC: o->atomic_outputs = true; return 0;
  case F_NO_ROW: o->no_row_contiguous = true; return 0;
  case F_FAST: o->fast_math = true; return 0;
  case F_VERBOSE: o->verbose = true; return 0;
  case F_TARGET:
    if ((rc = set_once(&o->target, f->name, v)) != 0)
      return rc;
    if (strcmp(v, "cpu") != 0 && strncmp(v, "sm_", 3) != 0)
      return usage_error("--target '%s' is not cpu or a CUDA architecture "
                         "such as sm_90a or sm_80.", v);
    return 0;
  case F_HELP: return 0;
  }
  return 0;
}

/* Names must be unique across inputs and outputs, and across templates. */
static int check_names(const run_opts *o) {
  for (int i = 0; i < o->num_binds; i++)
    for (int j = 0; j < i; j++)
      if (!strcmp(o->binds[i].name, o->binds[j].name))
        return usage_error("input name '%s' is given twice (by %s and %s).",
                           o->binds[i].name, o->binds[j].flag,
                           o->binds[i].flag);
  for (int i = 0; i < o->num_outs; i++) {
    for (int j = 0; j < i; j++)
      if (!strcmp(o->outs[i].name, o->outs[j].name))
        return usage_error("output name '%s' is given twice.",
                           o->outs[i].name);
    for (int j = 0; j < o->num_binds; j++)
      if (!strcmp(o->outs[i].name, o->binds[j].name))
        return usage_error("'%s' names both an input (%s) and an output.",
                           o->outs[i].name, o->binds[j].flag);
  }
  for (int i = 0; i < o->num_tmpl; i++)
    for (int j = 0; j < i; j++)
      if (!strcmp(o->tmpl[i].name, o->tmpl[j].name))
        return usage_error("template parameter '%s' is given twice.",
                           o->tmpl[i].name);
  return 0;
}

/* `kiln compile` launches nothing, so it needs a target instead of the
 * launch size. */
static int check_required(const run_opts *o, bool compile) {
  char missing[160] = "";
  const char *parts[5];
  int n = 0;
  if (!o->name) parts[n++] = "--name";
  if (!o->source_path) parts[n++] = "--source";
  if (!o->num_outs) parts[n++] = "--output";
  if (!compile && !o->has_grid) parts[n++] = "--grid";
  if (!compile && !o->has_threadgroup) parts[n++] = "--threadgroup";
  if (compile && !o->target) parts[n++] = "--target";
  if (n == 0)
    return 0;
  for (int i = 0; i < n; i++) {
    strcat(missing, i ? ", " : "");
    strcat(missing, parts[i]);
  }
  return usage_error("missing required option%s %s.", n > 1 ? "s" : "",
                     missing);
}

static void print_run_help(FILE *f);
static void print_compile_help(FILE *f);

/* The flag named by the first `len` characters of `arg`, or NULL. */
static const flag_def *find_flag(const char *arg, size_t len, bool compile) {
  for (size_t k = 0; k < NUM_RUN_FLAGS; k++)
    if (strlen(run_flags[k].name) == len &&
        !strncmp(run_flags[k].name, arg, len))
      return &run_flags[k];
  for (size_t k = 0; compile && k < NUM_COMPILE_ONLY_FLAGS; k++)
    if (strlen(compile_only_flags[k].name) == len &&
        !strncmp(compile_only_flags[k].name, arg, len))
      return &compile_only_flags[k];
  return NULL;
}

/* An unknown flag of run or compile, with a suggestion from its flags. */
static int unknown_run_flag(const char *word, bool compile) {
  flag_def all[NUM_RUN_FLAGS + NUM_COMPILE_ONLY_FLAGS];
  size_t n = 0;
  for (size_t k = 0; k < NUM_RUN_FLAGS; k++)
    all[n++] = run_flags[k];
  for (size_t k = 0; compile && k < NUM_COMPILE_ONLY_FLAGS; k++)
    all[n++] = compile_only_flags[k];
  return unknown_flag(word, all, n);
}

/* Parses the arguments after "run" (or "compile", which adds --target and
 * needs no launch size); returns 0, an exit status, or -1 when --help was
 * printed. */
static int parse_run_args(int argc, char **argv, run_opts *o, bool compile) {
  size_t cap = (size_t)argc + 1;
  o->binds = calloc(cap, sizeof *o->binds);
  o->outs = calloc(cap, sizeof *o->outs);
  o->tmpl = calloc(cap, sizeof *o->tmpl);
  if (!o->binds || !o->outs || !o->tmpl)
    return runtime_error("out of memory.");
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    if (strncmp(arg, "--", 2) != 0 || !arg[2])
      return usage_error("unexpected argument '%s' (every option starts "
                         "with --).", arg);
    /* Both "--flag value" and "--flag=value" are accepted. */
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    const flag_def *f = find_flag(arg, len, compile);
    if (!f) {
      char word[64];
      snprintf(word, sizeof word, "%.*s", (int)len, arg);
      return unknown_run_flag(word, compile);
    }
    if (f->id == F_HELP) {
      if (compile)
        print_compile_help(stdout);
      else
        print_run_help(stdout);
      return -1;
    }
    const char *value = NULL;
    if (f->takes_value) {
      if (eq) {
        value = eq + 1;
      } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
        value = argv[++i];
      } else {
        return usage_error("%s needs a value.", f->name);
      }
    } else if (eq) {
      return usage_error("%s takes no value.", f->name);
    }
    int rc = apply_flag(o, f, value);
    if (rc)
      return rc;
  }
  int rc = check_required(o, compile);
  return rc ? rc : check_names(o);
}

/* ---- files --------------------------------------------------------------- */

/* Reads a whole text file; prints the error naming `flag` on failure. */
static int read_text(const char *flag, const char *path, char **out) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return runtime_error("cannot read %s file '%s': %s.", flag, path,
                         strerror(errno));
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  int err = 0;
  while (buf) {
    len += fread(buf + len, 1, cap - len - 1, f);
    if (ferror(f)) {
      err = errno ? errno : EIO;
      break;
    }
    if (feof(f))
      break;
    char *bigger = realloc(buf, cap * 2);
    if (!bigger) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = bigger;
    cap *= 2;
  }
  fclose(f);
  if (!buf)
    return runtime_error("out of memory reading %s file '%s'.", flag, path);
  if (err) {
    free(buf);
    return runtime_error("cannot read %s file '%s': %s.", flag, path,
                         strerror(err));
  }
  buf[len] = '\0';
  if (strlen(buf) != len) {
    free(buf);
    return runtime_error("%s file '%s' contains a NUL byte; it must be "
                         "text.", flag, path);
  }
  *out = buf;
  return 0;
}

int check_out_dir(const char *dir) {
  struct stat st;
  if (stat(dir, &st) != 0)
    return runtime_error("cannot use --out-dir '%s': %s.", dir,
                         strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return runtime_error("--out-dir '%s' is not a directory.", dir);
  if (access(dir, W_OK | X_OK) != 0)
    return runtime_error("cannot write to --out-dir '%s': %s.", dir,
                         strerror(errno));
  return 0;
}

/* "DIR/NAME.EXT", or with a prefix/suffix for temporaries; malloc'ed. */
static char *join_file(const char *dir, const char *prefix, const char *name,
                       const char *ext, const char *suffix) {
  size_t n = strlen(dir) + strlen(prefix) + strlen(name) + strlen(ext) +
             strlen(suffix) + 4;
  char *p = malloc(n);
  if (p) {
    bool slash = dir[0] && dir[strlen(dir) - 1] == '/';
    snprintf(p, n, "%s%s%s%s.%s%s", dir, slash ? "" : "/", prefix, name, ext,
             suffix);
  }
  return p;
}

/* "DIR/NAME.npy", or with a prefix/suffix for temporaries; malloc'ed. */
char *join_path(const char *dir, const char *prefix, const char *name,
                       const char *suffix) {
  return join_file(dir, prefix, name, "npy", suffix);
}

/* Creates a fresh temporary "DIR/.NAME.EXT.tmp-PID-N" next to the final
 * file (same directory, so the rename is atomic); returns its fd. */
static int create_temp(const char *dir, const char *name, const char *ext,
                       char **tmp_out, int *fd_out) {
  char suffix[64];
  char *tmp = NULL;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
    snprintf(suffix, sizeof suffix, ".tmp-%ld-%d", (long)getpid(), attempt);
    free(tmp);
    tmp = join_file(dir, ".", name, ext, suffix);
    if (!tmp)
      return runtime_error("out of memory.");
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (fd < 0 && errno != EEXIST)
      break;
  }
  if (fd < 0) {
    int e = errno;
    free(tmp);
    return runtime_error("cannot create a temporary file in --out-dir "
                         "'%s': %s.", dir, strerror(e));
  }
  *tmp_out = tmp;
  *fd_out = fd;
  return 0;
}

/* Creates a temporary next to the final file and writes the array. */
int write_temp(const char *dir, const char *name, kiln_dtype dtype,
                      int ndim, const int64_t *shape, const void *data,
                      char **tmp_out) {
  char *tmp = NULL;
  int fd = -1;
  int trc = create_temp(dir, name, "npy", &tmp, &fd);
  if (trc)
    return trc;
  FILE *f = fdopen(fd, "wb");
  char err[512] = "out of memory";
  /* Messages name the file the user asked for, not the temporary. */
  char *final = join_path(dir, "", name, "");
  int rc = f && final ? npy_write_stream(f, final, dtype, ndim, shape, data,
                                         err, sizeof err)
                      : -1;
  free(final);
  if (!f) {
    snprintf(err, sizeof err, "cannot write '%s': %s", tmp, strerror(errno));
    close(fd);
  } else if (fclose(f) != 0 && rc == 0) {
    snprintf(err, sizeof err, "cannot write '%s': %s", tmp, strerror(errno));
    rc = -1;
  }
  if (rc != 0) {
    unlink(tmp);
    free(tmp);
    return runtime_error("output '%s': %s.", name, err);
  }
  *tmp_out = tmp;
  return 0;
}

/* ---- kiln run ------------------------------------------------------------ */

/* Everything `kiln run` holds, released in one place. */
typedef struct run_state {
  run_opts opts;
  char *source;
  char *header;
  kiln_device *device;
  kiln_array **inputs;
  kiln_kernel *kernel;
  kiln_array **outputs;
  char **tmp_paths; /* temporaries not yet renamed */
} run_state;

static void run_state_free(run_state *s) {
  for (int i = 0; s->tmp_paths && i < s->opts.num_outs; i++) {
    if (s->tmp_paths[i])
      unlink(s->tmp_paths[i]);
    free(s->tmp_paths[i]);
  }
  for (int i = 0; s->outputs && i < s->opts.num_outs; i++)
    kiln_array_destroy(s->outputs[i]);
  for (int i = 0; s->inputs && i < s->opts.num_binds; i++)
    kiln_array_destroy(s->inputs[i]);
  kiln_kernel_destroy(s->kernel);
  free(s->tmp_paths);
  free(s->outputs);
  free(s->inputs);
  free(s->source);
  free(s->header);
  run_opts_free(&s->opts);
}

/* The --device SPEC, or the default device when SPEC is NULL. */
int open_device(const char *spec, kiln_device **device) {
  if (!spec) {
    *device = kiln_device_default();
    if (!*device)
      return runtime_error("no device is available.");
    return 0;
  }
  kiln_status st = kiln_device_find(spec, device);
  if (st != KILN_OK)
    return library_error(st, "cannot use --device %s", spec);
  return 0;
}

/* Reads --input NAME=FILE: the whole array, or only its header. */
static int read_input_npy(const binding *b, npy_array *a, bool header_only) {
  char err[512];
  int r = header_only ? npy_read_header(b->file, a, err, sizeof err)
                      : npy_read(b->file, a, err, sizeof err);
  if (r != 0)
    return runtime_error("--input %s: %s.", b->name, err);
  return 0;
}

/* Makes the kernel's input arrays from the .npy files and scalars. */
static int load_inputs(run_state *s) {
  int n = s->opts.num_binds;
  s->inputs = calloc((size_t)n + 1, sizeof *s->inputs);
  if (!s->inputs)
    return runtime_error("out of memory.");
  for (int i = 0; i < n; i++) {
    const binding *b = &s->opts.binds[i];
    kiln_status st;
    if (b->is_scalar) {
      st = kiln_array_scalar(s->device, b->dtype, b->value, &s->inputs[i]);
    } else {
      npy_array a;
      int rc = read_input_npy(b, &a, false);
      if (rc)
        return rc;
      st = kiln_array_from_host(s->device, a.dtype, a.ndim, a.shape, a.data,
                                &s->inputs[i]);
      npy_array_free(&a);
    }
    if (st != KILN_OK)
      return library_error(st, "cannot make input '%s'", b->name);
  }
  return 0;
}

/* The kernel that the options describe (shared by run and compile). */
static int make_kernel(const run_opts *o, const char *source,
                       const char *header, kiln_kernel **out) {
  const char **in_names = calloc((size_t)o->num_binds + 1, sizeof(char *));
  const char **out_names = calloc((size_t)o->num_outs + 1, sizeof(char *));
  if (!in_names || !out_names) {
    free(in_names);
    free(out_names);
    return runtime_error("out of memory.");
  }
  for (int i = 0; i < o->num_binds; i++)
    in_names[i] = o->binds[i].name;
  for (int i = 0; i < o->num_outs; i++)
    out_names[i] = o->outs[i].name;
  kiln_kernel_desc d;
  kiln_kernel_desc_init(&d);
  d.name = o->name;
  d.input_names = in_names;
  d.num_inputs = o->num_binds;
  d.output_names = out_names;
  d.num_outputs = o->num_outs;
  d.header = header;
  d.source = source;
  d.ensure_row_contiguous = !o->no_row_contiguous;
  d.atomic_outputs = o->atomic_outputs;
  d.math_mode = o->fast_math ? KILN_MATH_FAST : KILN_MATH_SAFE;
  kiln_status st = kiln_kernel_create(&d, out);
  free(in_names);
  free(out_names);
  if (st != KILN_OK)
    return library_error(st, "cannot create kernel '%s'", o->name);
  return 0;
}

/* The launch fields that run and compile both take from the options:
 * inputs (count only), outputs and template arguments. l->outputs points
 * into *specs, which the caller frees. */
static int init_launch(const run_opts *o, kiln_launch *l,
                       kiln_output_spec **specs) {
  *specs = calloc((size_t)o->num_outs, sizeof **specs);
  if (!*specs)
    return runtime_error("out of memory.");
  for (int i = 0; i < o->num_outs; i++)
    (*specs)[i] = o->outs[i].spec;
  kiln_launch_init(l);
  l->num_inputs = o->num_binds;
  l->outputs = *specs;
  l->num_outputs = o->num_outs;
  l->template_args = o->tmpl;
  l->num_template_args = o->num_tmpl;
  return 0;
}

/* --source and the optional --header, read as text. */
static int read_kernel_text(const run_opts *o, char **source,
                            char **header) {
  int rc = read_text("--source", o->source_path, source);
  if (!rc && o->header_path)
    rc = read_text("--header", o->header_path, header);
  return rc;
}

static int create_kernel(run_state *s) {
  return make_kernel(&s->opts, s->source, s->header, &s->kernel);
}

static int launch_kernel(run_state *s) {
  const run_opts *o = &s->opts;
  kiln_launch l;
  kiln_output_spec *specs = NULL;
  int rc = init_launch(o, &l, &specs);
  if (rc)
    return rc;
  s->outputs = calloc((size_t)o->num_outs, sizeof *s->outputs);
  if (!s->outputs) {
    free(specs);
    return runtime_error("out of memory.");
  }
  l.inputs = s->inputs;
  memcpy(l.grid, o->grid, sizeof l.grid);
  memcpy(l.threadgroup, o->threadgroup, sizeof l.threadgroup);
  l.has_init_value = o->has_init_value;
  l.init_value = o->init_value;
  l.verbose = o->verbose;
  l.device = s->device;
  kiln_status st = kiln_kernel_launch(s->kernel, &l, s->outputs);
  free(specs);
  if (st != KILN_OK)
    return library_error(st, "cannot run kernel '%s'", o->name);
  /* Surface errors of the asynchronous run before writing anything. */
  st = kiln_stream_synchronize(kiln_default_stream(s->device));
  if (st != KILN_OK)
    return library_error(st, "kernel '%s' failed while running", o->name);
  return 0;
}

/* Copies every output to a temporary file; nothing is renamed yet. */
static int write_outputs(run_state *s, const char *dir) {
  const run_opts *o = &s->opts;
  s->tmp_paths = calloc((size_t)o->num_outs, sizeof *s->tmp_paths);
  if (!s->tmp_paths)
    return runtime_error("out of memory.");
  for (int i = 0; i < o->num_outs; i++) {
    kiln_array *a = s->outputs[i];
    size_t nbytes = kiln_array_nbytes_dense(a);
    void *host = malloc(nbytes ? nbytes : 1);
    if (!host)
      return runtime_error("out of memory copying output '%s' (%zu bytes).",
                           o->outs[i].name, nbytes);
    kiln_status st = kiln_array_to_host(a, host, nbytes);
    int rc = st != KILN_OK
                 ? library_error(st, "cannot read output '%s'",
                                 o->outs[i].name)
                 : write_temp(dir, o->outs[i].name, kiln_array_dtype(a),
                              kiln_array_ndim(a), kiln_array_shape(a), host,
                              &s->tmp_paths[i]);
    free(host);
    if (rc)
      return rc;
  }
  return 0;
}

void format_shape(char *out, size_t cap, const kiln_output_spec *sp) {
  size_t n = 0;
  out[0] = '\0';
  if (sp->ndim == 0)
    snprintf(out, cap, "()");
  for (int i = 0; i < sp->ndim && n < cap; i++)
    n += (size_t)snprintf(out + n, cap - n, "%s%lld", i ? "x" : "",
                          (long long)sp->shape[i]);
}

/* Moves every temporary onto its final name. */
static int commit_outputs(run_state *s, const char *dir) {
  const run_opts *o = &s->opts;
  for (int i = 0; i < o->num_outs; i++) {
    char *final = join_path(dir, "", o->outs[i].name, "");
    if (!final)
      return runtime_error("out of memory.");
    if (rename(s->tmp_paths[i], final) != 0) {
      int e = errno;
      int rc = runtime_error("cannot write output '%s' to '%s': %s.",
                             o->outs[i].name, final, strerror(e));
      free(final);
      return rc;
    }
    free(s->tmp_paths[i]);
    s->tmp_paths[i] = NULL;
    if (o->verbose) {
      char shp[400];
      format_shape(shp, sizeof shp, &o->outs[i].spec);
      printf("wrote %s (%s, shape %s)\n", final,
             kiln_dtype_name(o->outs[i].spec.dtype), shp);
    }
    free(final);
  }
  return 0;
}

/* `kiln run`: each step prints its own error and returns the exit status. */
static int cmd_run(int argc, char **argv) {
  run_state s;
  memset(&s, 0, sizeof s);
  int rc = parse_run_args(argc, argv, &s.opts, false);
  if (rc == -1) {
    run_state_free(&s);
    return 0;
  }
  const char *dir = s.opts.out_dir ? s.opts.out_dir : ".";
  if (!rc)
    rc = check_out_dir(dir);
  if (!rc)
    rc = read_kernel_text(&s.opts, &s.source, &s.header);
  if (!rc)
    rc = open_device(s.opts.device, &s.device);
  if (!rc)
    rc = load_inputs(&s);
  if (!rc)
    rc = create_kernel(&s);
  if (!rc)
    rc = launch_kernel(&s);
  if (!rc)
    rc = write_outputs(&s, dir);
  if (!rc)
    rc = commit_outputs(&s, dir);
  run_state_free(&s);
  return rc;
}

/* ---- kiln compile -------------------------------------------------------- */

/* Everything `kiln compile` holds, released in one place. */
typedef struct compile_state {
  run_opts opts;
  char *source;
  char *header;
  kiln_array_spec *in_specs;
  kiln_kernel *kernel;
  char *generated;     /* malloc'ed by kiln_kernel_compile */
  void *binary;
  size_t binary_size;
  kiln_compile_report report;
  char *tmp_paths[2];  /* source, artefact: temporaries not yet renamed */
  char *final_paths[2];
} compile_state;

static void compile_state_free(compile_state *s) {
  for (int i = 0; i < 2; i++) {
    if (s->tmp_paths[i])
      unlink(s->tmp_paths[i]);
    free(s->tmp_paths[i]);
    free(s->final_paths[i]);
  }
  kiln_kernel_destroy(s->kernel);
  free(s->generated);
  free(s->binary);
  free(s->in_specs);
  free(s->source);
  free(s->header);
  run_opts_free(&s->opts);
}

/* The kernel's name becomes a file name in --out-dir. */
static int check_file_name(const char *name) {
  if (strchr(name, '/'))
    return usage_error("--name '%s' contains '/', so it cannot name the "
                       "files written to --out-dir.", name);
  return 0;
}

/* Dtypes and shapes of the inputs: .npy headers only, and scalars. */
static int read_input_specs(compile_state *s) {
  int n = s->opts.num_binds;
  s->in_specs = calloc((size_t)n + 1, sizeof *s->in_specs);
  if (!s->in_specs)
    return runtime_error("out of memory.");
  for (int i = 0; i < n; i++) {
    const binding *b = &s->opts.binds[i];
    kiln_array_spec *spec = &s->in_specs[i];
    if (b->is_scalar) {
      spec->dtype = b->dtype;
      continue;
    }
    npy_array a;
    int rc = read_input_npy(b, &a, true);
    if (rc)
      return rc;
    spec->dtype = a.dtype;
    spec->ndim = a.ndim;
    memcpy(spec->shape, a.shape, sizeof spec->shape);
  }
  return 0;
}

static int compile_kernel(compile_state *s) {
  const run_opts *o = &s->opts;
  kiln_launch l;
  kiln_output_spec *specs = NULL;
  int rc = init_launch(o, &l, &specs);
  if (rc)
    return rc;
  s->report.struct_size = sizeof s->report;
  kiln_status st = kiln_kernel_compile(s->kernel, &l, s->in_specs,
                                       o->target, &s->report, &s->generated,
                                       &s->binary, &s->binary_size);
  free(specs);
  if (st != KILN_OK)
    return library_error(st, "cannot compile kernel '%s' for %s", o->name,
                         o->target);
  return 0;
}

/* Writes `size` bytes to a temporary next to DIR/NAME.EXT. */
static int write_temp_bytes(const char *dir, const char *name,
                            const char *ext, const void *data, size_t size,
                            char **tmp_out) {
  char *tmp = NULL;
  int fd = -1;
  int rc = create_temp(dir, name, ext, &tmp, &fd);
  if (rc)
    return rc;
  FILE *f = fdopen(fd, "wb");
  bool ok = f && fwrite(data, 1, size, f) == size;
  int e = errno;
  if (!f)
    close(fd);
  else if (fclose(f) != 0 && ok) {
    ok = false;
    e = errno;
  }
  if (!ok) {
    unlink(tmp);
    free(tmp);
    return runtime_error("cannot write '%s/%s.%s': %s.", dir, name, ext,
                         strerror(e ? e : EIO));
  }
  *tmp_out = tmp;
  return 0;
}

/* Both files go to temporaries first; only then are they renamed, so a
 * failure leaves no half-written pair. */
static int write_compile_files(compile_state *s, const char *dir) {
  bool cpu = !strcmp(s->opts.target, "cpu");
  const char *ext[2] = {cpu ? "cpp" : "cu", cpu ? "so" : "cubin"};
  const void *data[2] = {s->generated, s->binary};
  size_t size[2] = {strlen(s->generated), s->binary_size};
  for (int i = 0; i < 2; i++) {
    s->final_paths[i] = join_file(dir, "", s->opts.name, ext[i], "");
    if (!s->final_paths[i])
      return runtime_error("out of memory.");
    int rc = write_temp_bytes(dir, s->opts.name, ext[i], data[i], size[i],
                              &s->tmp_paths[i]);
    if (rc)
      return rc;
  }
  for (int i = 0; i < 2; i++) {
    if (rename(s->tmp_paths[i], s->final_paths[i]) != 0) {
      int e = errno;
      if (i == 1)
        unlink(s->final_paths[0]); /* all or nothing */
      return runtime_error("cannot write '%s': %s.", s->final_paths[i],
                           strerror(e));
    }
    free(s->tmp_paths[i]);
    s->tmp_paths[i] = NULL;
  }
  return 0;
}

/* The compiler's report; a GPU kernel with local memory (spills or a stack
 * frame) gets a warning that names the usual cause. A CPU function always
 * has a stack frame, so there only spills would warn (and CPU compilers
 * report none). */
static void print_report(const compile_state *s) {
  const kiln_compile_report *r = &s->report;
  printf("kernel '%s' compiled for %s in %.1f ms\n", s->opts.name, r->target,
         r->compile_ms);
  if (r->registers >= 0)
    printf("  registers per thread:        %d\n", r->registers);
  else
    printf("  registers per thread:        n/a (%s)\n", r->target);
  printf("  shared (threadgroup) memory: %llu bytes\n",
         (unsigned long long)r->threadgroup_memory);
  printf("  local memory (stack frame):  %llu bytes per thread\n",
         (unsigned long long)r->local_memory);
  printf("  spill stores / loads:        %llu / %llu bytes\n",
         (unsigned long long)r->spill_store_bytes,
         (unsigned long long)r->spill_load_bytes);
  for (int i = 0; i < 2; i++)
    printf("wrote %s\n", s->final_paths[i]);
  fflush(stdout);
  bool gpu = strcmp(r->target, "cpu") != 0;
  if (r->spill_store_bytes || r->spill_load_bytes ||
      (gpu && r->local_memory))
    fprintf(stderr,
            "%s: warning: kernel '%s' uses local memory on %s (a %llu-byte "
            "stack frame, %llu bytes of spill stores, %llu of spill "
            "loads), which is much slower than registers. The usual cause "
            "is a dynamically indexed per-thread array (such as float "
            "a[16] indexed by a loop variable the compiler cannot unroll); "
            "index it with compile-time constants, or keep the data in "
            "threadgroup memory. A small frame without spills can also "
            "come from a math function's slow path (the argument "
            "reduction of sin/cos/tan in safe math), which is harmless.\n",
            g_command, s->opts.name, r->target,
            (unsigned long long)r->local_memory,
            (unsigned long long)r->spill_store_bytes,
            (unsigned long long)r->spill_load_bytes);
}

/* `kiln compile`: generates and compiles without launching. */
static int cmd_compile(int argc, char **argv) {
  compile_state s;
  memset(&s, 0, sizeof s);
  int rc = parse_run_args(argc, argv, &s.opts, true);
  if (rc == -1) {
    compile_state_free(&s);
    return 0;
  }
  const char *dir = s.opts.out_dir ? s.opts.out_dir : ".";
  if (!rc)
    rc = check_file_name(s.opts.name);
  if (!rc)
    rc = check_out_dir(dir);
  if (!rc)
    rc = read_kernel_text(&s.opts, &s.source, &s.header);
  if (!rc)
    rc = read_input_specs(&s);
  if (!rc)
    rc = make_kernel(&s.opts, s.source, s.header, &s.kernel);
  if (!rc)
    rc = compile_kernel(&s);
  if (!rc)
    rc = write_compile_files(&s, dir);
  if (!rc)
    print_report(&s);
  compile_state_free(&s);
  return rc;
}

/* ---- kiln info ----------------------------------------------------------- */

/* Writes `s` as a JSON string literal. */
static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"': fputs("\\\"", f); break;
    case '\\': fputs("\\\\", f); break;
    case '\n': fputs("\\n", f); break;
    case '\r': fputs("\\r", f); break;
    case '\t': fputs("\\t", f); break;
    default:
      if (*p < 0x20 || *p == 0x7f)
        fprintf(f, "\\u%04x", *p);
      else
        fputc(*p, f);
    }
  }
  fputc('"', f);
}

/* "cpu" or "gpu:N", as --device spells it. */
static void device_spec(const kiln_device_info *info, char *out, size_t cap) {
  if (info->kind == KILN_DEVICE_CPU)
    snprintf(out, cap, "cpu");
  else
    snprintf(out, cap, "gpu:%d", info->ordinal);
}

static void human_bytes(uint64_t bytes, char *out, size_t cap) {
  static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)bytes;
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(out, cap, "%llu bytes", (unsigned long long)bytes);
  else
    snprintf(out, cap, "%.1f %s", v, units[u]);
}

static void print_device_text(const kiln_device_info *d) {
  char spec[32], mem[32], tgmem[32];
  device_spec(d, spec, sizeof spec);
  human_bytes(d->memory_bytes, mem, sizeof mem);
  human_bytes(d->max_threadgroup_memory, tgmem, sizeof tgmem);
  printf("  [%d] %s: %s\n", d->index, spec, d->name);
  printf("      backend %s, arch %s, %d compute units\n", d->backend,
         d->arch, d->compute_units);
  printf("      memory %s, max threadgroup %u threads, threadgroup memory "
         "%s, SIMD width %u\n",
         mem, d->max_threads_per_threadgroup, tgmem, d->simd_width);
}

static void print_device_json(const kiln_device_info *d, bool first) {
  char spec[32];
  device_spec(d, spec, sizeof spec);
  printf("%s{\"index\": %d, \"name\": ", first ? "" : ", ", d->index);
  json_string(stdout, spec);
  printf(", \"kind\": \"%s\", \"model\": ",
         d->kind == KILN_DEVICE_CPU ? "cpu" : "gpu");
  json_string(stdout, d->name);
  printf(", \"backend\": ");
  json_string(stdout, d->backend);
  printf(", \"arch\": ");
  json_string(stdout, d->arch);
  printf(", \"compute_units\": %d, \"memory_bytes\": %llu, "
         "\"max_threads_per_threadgroup\": %u, "
         "\"max_threadgroup_memory\": %llu, \"simd_width\": %u}",
         d->compute_units, (unsigned long long)d->memory_bytes,
         d->max_threads_per_threadgroup,
         (unsigned long long)d->max_threadgroup_memory, d->simd_width);
}

/* Collects every device's info first, so a failure prints nothing else. */
static int gather_devices(kiln_device_info **out, int *count) {
  int n = kiln_device_count();
  kiln_device_info *infos = calloc((size_t)(n > 0 ? n : 1), sizeof *infos);
  if (!infos)
    return runtime_error("out of memory.");
  for (int i = 0; i < n; i++) {
    kiln_device *dev;
    infos[i].struct_size = sizeof infos[i];
    kiln_status st = kiln_device_get(i, &dev);
    if (st == KILN_OK)
      st = kiln_device_get_info(dev, &infos[i]);
    if (st != KILN_OK) {
      free(infos);
      return library_error(st, "cannot describe device %d", i);
    }
  }
  *out = infos;
  *count = n;
  return 0;
}

static int cmd_info(int argc, char **argv) {
  bool json = false;
  static const flag_def info_flags[] = {{"--json", F_VERBOSE, false},
                                        {"--help", F_HELP, false}};
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) {
      json = true;
    } else if (!strcmp(argv[i], "--help")) {
      printf("usage: kiln info [--json]\n\nPrints the kiln version, every "
             "device kiln can use and the kernel cache directory.\n");
      return 0;
    } else if (!strncmp(argv[i], "--", 2)) {
      return unknown_flag(argv[i], info_flags, 2);
    } else {
      return usage_error("unexpected argument '%s'.", argv[i]);
    }
  }
  kiln_device_info *infos = NULL;
  int n = 0;
  int rc = gather_devices(&infos, &n);
  if (rc)
    return rc;
  const char *gpu_reason = kiln_gpu_unavailable_reason();
  bool has_gpu = false;
  for (int i = 0; i < n; i++)
    has_gpu |= infos[i].kind == KILN_DEVICE_GPU;
  const char *cache = NULL;
  kiln_status cst = kiln_cache_dir(&cache);
  const char *cache_err = cst == KILN_OK ? NULL : kiln_last_error();
  if (cst == KILN_OK && !cache)
    cache_err = "no directory was given";
  if (cache_err && !cache_err[0])
    cache_err = kiln_status_string(cst);
  if (!gpu_reason)
    gpu_reason = "";
  if (json) {
    printf("{\"version\": ");
    json_string(stdout, kiln_version());
    printf(", \"devices\": [");
    for (int i = 0; i < n; i++)
      print_device_json(&infos[i], i == 0);
    printf("], \"gpu_unavailable_reason\": ");
    if (has_gpu)
      printf("null");
    else
      json_string(stdout, gpu_reason[0] ? gpu_reason : "unknown");
    printf(", \"cache_dir\": ");
    if (cache_err) {
      printf("null, \"cache_dir_error\": ");
      json_string(stdout, cache_err);
    } else {
      json_string(stdout, cache);
    }
    printf("}\n");
  } else {
    printf("kiln %s\ndevices:\n", kiln_version());
    for (int i = 0; i < n; i++)
      print_device_text(&infos[i]);
    if (!has_gpu)
      printf("GPU: none (%s)\n", gpu_reason[0] ? gpu_reason : "unknown");
    if (cache_err)
      printf("kernel cache: unusable (%s)\n", cache_err);
    else
      printf("kernel cache: %s\n", cache);
  }
  free(infos);
  return 0;
}

/* ---- help and the command table ------------------------------------------ */

static void print_run_help(FILE *f) {
  fputs(
      "usage: kiln run --name NAME --source BODY_FILE [--header HEADER_FILE]\n"
      "                [--input NAME=FILE.npy]... [--scalar NAME=VALUE:DTYPE]"
      "...\n"
      "                --output NAME:DTYPE:SHAPE...\n"
      "                --grid X,Y,Z --threadgroup X,Y,Z\n"
      "                [--template NAME=VALUE]...\n"
      "                [--atomic-outputs] [--init-value F] "
      "[--no-row-contiguous]\n"
      "                [--fast-math] [--device cpu|gpu|gpu:N] "
      "[--out-dir DIR]\n"
      "                [--verbose]\n"
      "\n"
      "Runs an MLX-style Metal kernel (a body plus an optional header) and\n"
      "saves each output as DIR/NAME.npy.\n"
      "\n"
      "  --name NAME            the kernel's name (used in messages and the "
      "cache)\n"
      "  --source FILE          the kernel body: statements only, no "
      "signature\n"
      "  --header FILE          includes and helpers placed before the "
      "kernel\n"
      "  --input NAME=FILE.npy  an input array; a 0-d array is a scalar\n"
      "  --scalar NAME=VALUE:DTYPE\n"
      "                         a scalar input, such as n=10:int32\n"
      "                         (inputs are bound in the order given)\n"
      "  --output NAME:DTYPE:SHAPE\n"
      "                         an output, such as y:float32:4x8 (repeat "
      "for\n"
      "                         more; SHAPE () or empty is 0-d)\n"
      "  --grid X[,Y[,Z]]       threads to launch (missing numbers are 1)\n"
      "  --threadgroup X[,Y[,Z]]\n"
      "                         threads per threadgroup (at most 1024 in "
      "all)\n"
      "  --template NAME=VALUE  a template argument: a dtype name, an "
      "integer,\n"
      "                         true or false\n"
      "  --atomic-outputs       bind outputs as device atomic<T>*\n"
      "  --init-value F         fill every output with F before the run\n"
      "  --no-row-contiguous    pass strided inputs as they are\n"
      "  --fast-math            let the compiler use fast math\n"
      "  --device SPEC          cpu, gpu or gpu:N (default: the best "
      "device)\n"
      "  --out-dir DIR          where outputs are written (default: .)\n"
      "  --verbose              print the generated source and each file "
      "written\n"
      "\n"
      "DTYPE is a numpy name: bool, int8, int16, int32, int64, uint8, "
      "uint16,\n"
      "uint32, uint64, float16, float32, float64 (bfloat16 for scalars "
      "only).\n"
      "No output file is written unless the whole run succeeds.\n"
      "Exit status: 0 on success, 1 if the run failed, 2 for bad options.\n"
      "\n"
      "example:\n"
      "  echo 'uint i = thread_position_in_grid.x; y[i] = 2 * x[i];' > "
      "twice.metal\n"
      "  kiln run --name twice --source twice.metal --input x=x.npy \\\n"
      "           --output y:float32:1024 --grid 1024 --threadgroup 256\n",
      f);
}

static void print_compile_help(FILE *f) {
  fputs(
      "usage: kiln compile --target cpu|sm_XY[a] --name NAME --source "
      "BODY_FILE\n"
      "                    [the other options of 'kiln run'] [--out-dir "
      "DIR]\n"
      "\n"
      "Generates and compiles a kernel without running it, and prints its\n"
      "resources: registers per thread, shared (threadgroup) memory, local\n"
      "memory and register spills, and the compile time. Reads only the\n"
      "headers of the --input files (dtypes and shapes). Writes the\n"
      "generated source and the compiled artefact to DIR (default: .):\n"
      "  --target cpu       DIR/NAME.cpp and DIR/NAME.so\n"
      "  --target sm_90a    DIR/NAME.cu and DIR/NAME.cubin (needs NVRTC, "
      "not a GPU)\n"
      "\n"
      "--name, --source, --output and --target are required; --grid,\n"
      "--threadgroup, --device and --init-value are accepted and not used.\n"
      "A GPU kernel that uses local memory (spills or a stack frame) gets\n"
      "a warning: the usual cause is a dynamically indexed per-thread "
      "array.\n"
      "Exit status: 0 on success, 1 if the compile failed, 2 for bad "
      "options.\n"
      "\n"
      "example:\n"
      "  kiln compile --target sm_90a --name twice --source twice.metal \\\n"
      "               --input x=x.npy --output y:float32:1024 --out-dir "
      "out\n",
      f);
}

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} command;

static int cmd_help(int argc, char **argv);

/* New subcommands (compile, linalg, ...) slot in here. */
static const command commands[] = {
    {"info", cmd_info, "list kiln's devices and its kernel cache"},
    {"run", cmd_run, "run a Metal kernel body on .npy inputs"},
    {"compile", cmd_compile,
     "compile a kernel for a target (cpu, sm_90a) without running it"},
    {"linalg", cmd_linalg,
     "linear algebra on .npy files (gemm, qr, cholesky, solve, ...)"},
    {"help", cmd_help, "show help for a command"},
};
#define NUM_COMMANDS (sizeof commands / sizeof commands[0])

static const command *find_command(const char *name) {
  for (size_t i = 0; i < NUM_COMMANDS; i++)
    if (!strcmp(commands[i].name, name))
      return &commands[i];
  return NULL;
}

static void print_main_help(FILE *f) {
  fprintf(f, "usage: kiln <command> [options]\n       kiln --version\n"
             "       kiln --help\n\ncommands:\n");
  for (size_t i = 0; i < NUM_COMMANDS; i++)
    fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\nRun 'kiln help <command>' for a command's options.\n");
}

static int unknown_command(const char *name) {
  const char *names[NUM_COMMANDS];
  for (size_t i = 0; i < NUM_COMMANDS; i++)
    names[i] = commands[i].name;
  const char *hint = closest(name, names, NUM_COMMANDS);
  if (hint)
    return usage_error("unknown command '%s'; did you mean '%s'?", name,
                       hint);
  return usage_error("unknown command '%s' (commands: info, run, compile, "
                     "linalg, help).",
                     name);
}

static int cmd_help(int argc, char **argv) {
  if (argc == 0) {
    print_main_help(stdout);
    return 0;
  }
  if (argc > 1)
    return usage_error("help takes one command name.");
  if (!strcmp(argv[0], "run")) {
    print_run_help(stdout);
    return 0;
  }
  if (!strcmp(argv[0], "compile")) {
    print_compile_help(stdout);
    return 0;
  }
  if (!strcmp(argv[0], "linalg")) {
    print_linalg_help(stdout);
    return 0;
  }
  if (!strcmp(argv[0], "info")) {
    char help[] = "--help";
    char *args[] = {help};
    return cmd_info(1, args);
  }
  if (!strcmp(argv[0], "help")) {
    print_main_help(stdout);
    return 0;
  }
  return unknown_command(argv[0]);
}

/* Dispatches `kiln <command> ...` through the command table. */
int main(int argc, char **argv) {
  if (argc < 2) {
    print_main_help(stderr);
    return EXIT_USAGE;
  }
  const char *first = argv[1];
  if (!strcmp(first, "--version") || !strcmp(first, "-V")) {
    printf("kiln %s\n", kiln_version());
    return 0;
  }
  if (!strcmp(first, "--help") || !strcmp(first, "-h")) {
    print_main_help(stdout);
    return 0;
  }
  if (first[0] == '-') {
    static const flag_def top[] = {{"--version", F_HELP, false},
                                   {"--help", F_HELP, false}};
    return unknown_flag(first, top, 2);
  }
  const command *cmd = find_command(first);
  if (!cmd)
    return unknown_command(first);
  /* "kiln run" for messages; the command names are static strings. */
  static char prefix[32];
  snprintf(prefix, sizeof prefix, "kiln %s", cmd->name);
  g_command = prefix;
  return cmd->run(argc - 2, argv + 2);
}

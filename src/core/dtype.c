/*
 * Element types: sizes, names in numpy's and Metal's spelling, and exact
 * conversions between double and every dtype (used by fill, init_value and
 * the tests' references).
 */
#include "core/core.h"

#include <math.h>
#include <string.h>

typedef struct dtype_desc {
  const char *name;       /* numpy */
  const char *metal_name; /* what generated code declares */
  size_t size;
  bool is_float;
} dtype_desc;

static const dtype_desc DTYPES[KILN_DTYPE_COUNT] = {
    [KILN_BOOL] = {"bool", "bool", 1, false},
    [KILN_INT8] = {"int8", "int8_t", 1, false},
    [KILN_INT16] = {"int16", "int16_t", 2, false},
    [KILN_INT32] = {"int32", "int32_t", 4, false},
    [KILN_INT64] = {"int64", "int64_t", 8, false},
    [KILN_UINT8] = {"uint8", "uint8_t", 1, false},
    [KILN_UINT16] = {"uint16", "uint16_t", 2, false},
    [KILN_UINT32] = {"uint32", "uint32_t", 4, false},
    [KILN_UINT64] = {"uint64", "uint64_t", 8, false},
    [KILN_FLOAT16] = {"float16", "float16_t", 2, true},
    [KILN_BFLOAT16] = {"bfloat16", "bfloat16_t", 2, true},
    [KILN_FLOAT32] = {"float32", "float", 4, true},
    [KILN_FLOAT64] = {"float64", "double", 8, true},
};

/* Every spelling kiln_dtype_from_name accepts: numpy's names first, then
 * the Metal and C type names a kernel author would write. */
static const struct {
  const char *name;
  kiln_dtype dtype;
} ALIASES[] = {
    {"bool", KILN_BOOL},         {"int8", KILN_INT8},
    {"char", KILN_INT8},         {"int8_t", KILN_INT8},
    {"int16", KILN_INT16},       {"short", KILN_INT16},
    {"int16_t", KILN_INT16},     {"int32", KILN_INT32},
    {"int", KILN_INT32},         {"int32_t", KILN_INT32},
    {"int64", KILN_INT64},       {"long", KILN_INT64},
    {"int64_t", KILN_INT64},     {"uint8", KILN_UINT8},
    {"uchar", KILN_UINT8},       {"uint8_t", KILN_UINT8},
    {"uint16", KILN_UINT16},     {"ushort", KILN_UINT16},
    {"uint16_t", KILN_UINT16},   {"uint32", KILN_UINT32},
    {"uint", KILN_UINT32},       {"uint32_t", KILN_UINT32},
    {"uint64", KILN_UINT64},     {"ulong", KILN_UINT64},
    {"uint64_t", KILN_UINT64},   {"float16", KILN_FLOAT16},
    {"half", KILN_FLOAT16},      {"float16_t", KILN_FLOAT16},
    {"bfloat16", KILN_BFLOAT16}, {"bfloat", KILN_BFLOAT16},
    {"bfloat16_t", KILN_BFLOAT16}, {"float32", KILN_FLOAT32},
    {"float", KILN_FLOAT32},     {"float64", KILN_FLOAT64},
    {"double", KILN_FLOAT64},
};

/* True for the dtypes of the kiln_dtype enum (the enum may hold anything a
 * caller casts into it). */
bool kiln__dtype_valid(kiln_dtype dtype) {
  return (unsigned)dtype < (unsigned)KILN_DTYPE_COUNT;
}

/* True for float16, bfloat16, float32 and float64. */
bool kiln__dtype_is_float(kiln_dtype dtype) {
  return kiln__dtype_valid(dtype) && DTYPES[dtype].is_float;
}

/* The type the generated source declares; NULL for an invalid dtype. */
const char *kiln__dtype_metal_name(kiln_dtype dtype) {
  return kiln__dtype_valid(dtype) ? DTYPES[dtype].metal_name : NULL;
}

size_t kiln_dtype_size(kiln_dtype dtype) {
  return kiln__dtype_valid(dtype) ? DTYPES[dtype].size : 0;
}

const char *kiln_dtype_name(kiln_dtype dtype) {
  return kiln__dtype_valid(dtype) ? DTYPES[dtype].name : "invalid";
}

kiln_status kiln_dtype_from_name(const char *name, kiln_dtype *out) {
  KILN_API_ENTER();
  if (name == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "name is NULL.");
  if (out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "out is NULL.");
  for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++) {
    if (strcmp(name, ALIASES[i].name) == 0) {
      *out = ALIASES[i].dtype;
      return KILN_OK;
    }
  }
  return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "'%.64s' is not a dtype; use a numpy name such as "
                     "float32, float16, bfloat16, int32, uint8 or bool, or "
                     "its Metal spelling (float, half, bfloat, int, uint, "
                     "...).",
                     name);
}

/* ---- narrow floats ------------------------------------------------------- */

/*
 * Rounds a double to an IEEE-style binary format with `exp_bits` exponent
 * and `man_bits` mantissa bits (half: 5/10, bfloat16: 8/7, float: 8/23),
 * round to nearest even, with subnormals, infinities and NaN. Going straight
 * from double avoids the double rounding of a double->float->half chain.
 */
static uint32_t round_to_format(double x, int exp_bits, int man_bits) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof bits);
  uint32_t sign = (uint32_t)(bits >> 63) << (exp_bits + man_bits);
  int dexp = (int)((bits >> 52) & 0x7ff);
  uint64_t dman = bits & ((UINT64_C(1) << 52) - 1);
  uint32_t exp_all_ones = ((1u << exp_bits) - 1) << man_bits;
  if (dexp == 0x7ff) {
    if (dman == 0)
      return sign | exp_all_ones;
    /* Keep the payload's top bits and force a quiet NaN. */
    uint32_t payload = (uint32_t)(dman >> (52 - man_bits));
    return sign | exp_all_ones | payload | (1u << (man_bits - 1));
  }
  int bias = (1 << (exp_bits - 1)) - 1;
  int emin = 1 - bias;
  int e = dexp - 1023;
  /* Below half the smallest subnormal everything rounds to zero; double
   * subnormals land here too. */
  if (dexp == 0 || e < emin - man_bits - 1)
    return sign;
  if (e > bias)
    return sign | exp_all_ones;
  uint64_t m = dman | (UINT64_C(1) << 52);
  int shift;
  uint64_t result;
  if (e >= emin) {
    shift = 52 - man_bits;
    result = ((uint64_t)(e + bias) << man_bits) |
             ((m >> shift) & ((UINT64_C(1) << man_bits) - 1));
  } else {
    /* Subnormal: count units of the smallest subnormal, 2^(emin-man). */
    shift = 52 + emin - man_bits - e;
    result = m >> shift;
  }
  uint64_t rest = m & ((UINT64_C(1) << shift) - 1);
  uint64_t half = UINT64_C(1) << (shift - 1);
  /* A carry out of the mantissa correctly bumps the exponent (and the
   * largest finite value up to infinity). */
  if (rest > half || (rest == half && (result & 1)))
    result++;
  return sign | (uint32_t)result;
}

/* Widens a format of round_to_format back to double (always exact). */
static double widen_format(uint32_t v, int exp_bits, int man_bits) {
  bool negative = (v >> (exp_bits + man_bits)) & 1;
  int exp = (int)((v >> man_bits) & ((1u << exp_bits) - 1));
  uint32_t man = v & ((1u << man_bits) - 1);
  int bias = (1 << (exp_bits - 1)) - 1;
  double r;
  if (exp == (1 << exp_bits) - 1)
    r = man != 0 ? NAN : INFINITY;
  else if (exp == 0)
    r = ldexp((double)man, 1 - bias - man_bits);
  else
    r = ldexp((double)(man | (1u << man_bits)), exp - bias - man_bits);
  return negative ? -r : r;
}

/* float -> IEEE half bits, round to nearest even. */
uint16_t kiln__float_to_half(float f) {
  return (uint16_t)round_to_format((double)f, 5, 10);
}

/* IEEE half bits -> float (exact). */
float kiln__half_to_float(uint16_t h) {
  return (float)widen_format(h, 5, 10);
}

/* float -> bfloat16 bits, round to nearest even (NaN stays NaN). */
uint16_t kiln__float_to_bfloat(float f) {
  return (uint16_t)round_to_format((double)f, 8, 7);
}

/* bfloat16 bits -> float (exact). */
float kiln__bfloat_to_float(uint16_t b) {
  return (float)widen_format(b, 8, 7);
}

/* ---- double <-> any dtype ------------------------------------------------ */

/* Integer conversion: NaN to 0, saturate at the type's range, otherwise
 * truncate toward zero (C's cast, made total). `lo` and `hi` are exact
 * doubles at or beyond the type's range. */
static int64_t to_signed(double v, double lo, double hi, int64_t min,
                         int64_t max) {
  if (isnan(v))
    return 0;
  if (v <= lo)
    return min;
  if (v >= hi)
    return max;
  return (int64_t)v;
}

static uint64_t to_unsigned(double v, double hi, uint64_t max) {
  if (isnan(v) || v <= 0)
    return 0;
  if (v >= hi)
    return max;
  return (uint64_t)v;
}

/* Stores one element of `dtype` holding `value` at `out` (unaligned ok). */
void kiln__dtype_from_double(kiln_dtype dtype, double value, void *out) {
  union {
    uint8_t b;
    int8_t i8;
    int16_t i16;
    int32_t i32;
    int64_t i64;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    double f64;
  } u;
  switch (dtype) {
  case KILN_BOOL: u.b = value != 0; break;
  case KILN_INT8:
    u.i8 = (int8_t)to_signed(value, -128.0, 127.0, INT8_MIN, INT8_MAX);
    break;
  case KILN_INT16:
    u.i16 =
        (int16_t)to_signed(value, -32768.0, 32767.0, INT16_MIN, INT16_MAX);
    break;
  case KILN_INT32:
    u.i32 = (int32_t)to_signed(value, -2147483648.0, 2147483647.0,
                               INT32_MIN, INT32_MAX);
    break;
  case KILN_INT64:
    /* 2^63 is the first double past INT64_MAX. */
    u.i64 = to_signed(value, -9223372036854775808.0, 9223372036854775808.0,
                      INT64_MIN, INT64_MAX);
    break;
  case KILN_UINT8: u.u8 = (uint8_t)to_unsigned(value, 255.0, UINT8_MAX); break;
  case KILN_UINT16:
    u.u16 = (uint16_t)to_unsigned(value, 65535.0, UINT16_MAX);
    break;
  case KILN_UINT32:
    u.u32 = (uint32_t)to_unsigned(value, 4294967295.0, UINT32_MAX);
    break;
  case KILN_UINT64:
    u.u64 = to_unsigned(value, 18446744073709551616.0, UINT64_MAX);
    break;
  case KILN_FLOAT16: u.u16 = (uint16_t)round_to_format(value, 5, 10); break;
  case KILN_BFLOAT16: u.u16 = (uint16_t)round_to_format(value, 8, 7); break;
  case KILN_FLOAT32:
    /* Done by hand: C leaves out-of-range double->float undefined. */
    u.u32 = round_to_format(value, 8, 23);
    break;
  case KILN_FLOAT64: u.f64 = value; break;
  default: return;
  }
  memcpy(out, &u, kiln_dtype_size(dtype));
}

/* Reads one element of `dtype` at `in` (unaligned ok) as a double. */
double kiln__dtype_to_double(kiln_dtype dtype, const void *in) {
  union {
    uint8_t b;
    int8_t i8;
    int16_t i16;
    int32_t i32;
    int64_t i64;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    float f32;
    double f64;
  } u;
  size_t size = kiln_dtype_size(dtype);
  if (size == 0)
    return 0;
  memcpy(&u, in, size);
  switch (dtype) {
  case KILN_BOOL: return u.b != 0;
  case KILN_INT8: return u.i8;
  case KILN_INT16: return u.i16;
  case KILN_INT32: return u.i32;
  case KILN_INT64: return (double)u.i64;
  case KILN_UINT8: return u.u8;
  case KILN_UINT16: return u.u16;
  case KILN_UINT32: return u.u32;
  case KILN_UINT64: return (double)u.u64;
  case KILN_FLOAT16: return widen_format(u.u16, 5, 10);
  case KILN_BFLOAT16: return widen_format(u.u16, 8, 7);
  case KILN_FLOAT32: return u.f32;
  case KILN_FLOAT64: return u.f64;
  default: return 0;
  }
}

/* Public: see kiln.h. */
double kiln_dtype_read(kiln_dtype dtype, const void *element) {
  return kiln__dtype_to_double(dtype, element);
}

/* Public: see kiln.h. */
void kiln_dtype_write(kiln_dtype dtype, double value, void *element) {
  kiln__dtype_from_double(dtype, value, element);
}

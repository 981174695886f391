/* Dtype sizes, names and parsing (numpy and Metal spellings). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

static const struct {
  kiln_dtype dt;
  size_t size;
  const char *name;
} kt_dtypes[] = {
    {KILN_BOOL, 1, "bool"},         {KILN_INT8, 1, "int8"},
    {KILN_INT16, 2, "int16"},       {KILN_INT32, 4, "int32"},
    {KILN_INT64, 8, "int64"},       {KILN_UINT8, 1, "uint8"},
    {KILN_UINT16, 2, "uint16"},     {KILN_UINT32, 4, "uint32"},
    {KILN_UINT64, 8, "uint64"},     {KILN_FLOAT16, 2, "float16"},
    {KILN_BFLOAT16, 2, "bfloat16"}, {KILN_FLOAT32, 4, "float32"},
    {KILN_FLOAT64, 8, "float64"},
};

void test_dtype_sizes_names(void) {
  CHECK(sizeof kt_dtypes / sizeof kt_dtypes[0] == KILN_DTYPE_COUNT,
        "the table covers every dtype");
  for (size_t i = 0; i < sizeof kt_dtypes / sizeof kt_dtypes[0]; i++) {
    CHECK(kiln_dtype_size(kt_dtypes[i].dt) == kt_dtypes[i].size,
          "size of %s is %zu", kt_dtypes[i].name,
          kiln_dtype_size(kt_dtypes[i].dt));
    CHECK(strcmp(kiln_dtype_name(kt_dtypes[i].dt), kt_dtypes[i].name) == 0,
          "name of dtype %d is \"%s\"", (int)kt_dtypes[i].dt,
          kiln_dtype_name(kt_dtypes[i].dt));
  }
  CHECK(kiln_dtype_size(KILN_DTYPE_COUNT) == 0, "invalid dtype has size 0");
  CHECK(kiln_dtype_size((kiln_dtype)-1) == 0, "negative dtype has size 0");
  CHECK(strcmp(kiln_dtype_name(KILN_DTYPE_COUNT), "invalid") == 0,
        "invalid dtype is named \"invalid\"");
}

void test_dtype_from_name(void) {
  static const struct {
    const char *name;
    kiln_dtype dt;
  } cases[] = {
      {"bool", KILN_BOOL},         {"int8", KILN_INT8},
      {"char", KILN_INT8},         {"int8_t", KILN_INT8},
      {"int16", KILN_INT16},       {"short", KILN_INT16},
      {"int32", KILN_INT32},       {"int", KILN_INT32},
      {"int32_t", KILN_INT32},     {"int64", KILN_INT64},
      {"long", KILN_INT64},        {"int64_t", KILN_INT64},
      {"uint8", KILN_UINT8},       {"uchar", KILN_UINT8},
      {"uint8_t", KILN_UINT8},     {"uint16", KILN_UINT16},
      {"ushort", KILN_UINT16},     {"uint32", KILN_UINT32},
      {"uint", KILN_UINT32},       {"uint32_t", KILN_UINT32},
      {"uint64", KILN_UINT64},     {"ulong", KILN_UINT64},
      {"float16", KILN_FLOAT16},   {"half", KILN_FLOAT16},
      {"float16_t", KILN_FLOAT16}, {"bfloat16", KILN_BFLOAT16},
      {"bfloat", KILN_BFLOAT16},   {"bfloat16_t", KILN_BFLOAT16},
      {"float32", KILN_FLOAT32},   {"float", KILN_FLOAT32},
      {"float64", KILN_FLOAT64},   {"double", KILN_FLOAT64},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kiln_dtype dt = KILN_DTYPE_COUNT;
    CHECK_OK(kiln_dtype_from_name(cases[i].name, &dt));
    CHECK(dt == cases[i].dt, "\"%s\" parsed as %s", cases[i].name,
          kiln_dtype_name(dt));
  }
  /* Every numpy name round-trips. */
  for (int d = 0; d < KILN_DTYPE_COUNT; d++) {
    kiln_dtype dt;
    CHECK_OK(kiln_dtype_from_name(kiln_dtype_name((kiln_dtype)d), &dt));
    CHECK(dt == (kiln_dtype)d, "round trip of %s", kiln_dtype_name(dt));
  }
}

void test_dtype_bad_names(void) {
  const char *bad[] = {"", "float33", "Float32", "float32 ", " int",
                       "int128", "complex64", "float32x", "f4", "invalid"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kiln_dtype dt = KILN_INT16;
    kiln_status s = kiln_dtype_from_name(bad[i], &dt);
    CHECK(s == KILN_ERROR_INVALID_ARGUMENT,
          "\"%s\" gave %s, expected invalid argument", bad[i],
          kiln_status_string(s));
    CHECK(dt == KILN_INT16, "\"%s\": out untouched on failure", bad[i]);
    CHECK(strncmp(kiln_last_error(), "[kiln_dtype_from_name]", 22) == 0,
          "message names the function");
  }
  kiln_dtype dt;
  CHECK(kiln_dtype_from_name(NULL, &dt) != KILN_OK, "NULL name refused");
  CHECK(kiln_dtype_from_name("float32", NULL) != KILN_OK, "NULL out refused");
}

void test_device_info(void) {
  CHECK(kiln_device_count() >= 1, "at least the CPU");
  kiln_device *cpu = NULL, *d0 = NULL;
  CHECK_OK(kiln_device_find("cpu", &cpu));
  CHECK_OK(kiln_device_get(0, &d0));
  CHECK(cpu == d0, "device 0 is the CPU");
  kiln_device_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK_OK(kiln_device_get_info(cpu, &info));
  CHECK(info.kind == KILN_DEVICE_CPU && info.index == 0, "cpu kind/index");
  CHECK(strcmp(info.backend, "cpu") == 0, "backend \"%s\"", info.backend);
  CHECK(info.max_threads_per_threadgroup == 1024, "max threads %u",
        info.max_threads_per_threadgroup);
  CHECK(info.simd_width == 32, "simd width %u", info.simd_width);
  CHECK(info.memory_bytes > 0 && info.compute_units > 0 && info.name[0],
        "memory, units and name are filled");
  kiln_device *bad = NULL;
  CHECK_STATUS(kiln_device_get(kiln_device_count(), &bad),
               KILN_ERROR_INVALID_ARGUMENT);
  CHECK(kiln_device_find("tpu", &bad) == KILN_ERROR_INVALID_ARGUMENT,
        "unknown spec refused");
  CHECK_ERR_HAS("tpu");
  if (kiln_device_count() == 1) {
    CHECK_STATUS(kiln_device_find("gpu", &bad), KILN_ERROR_NOT_FOUND);
    CHECK(strlen(kiln_gpu_unavailable_reason()) > 0,
          "a reason is given when no GPU exists");
    CHECK(kiln_device_default() == cpu, "default is the CPU without GPUs");
  }
  CHECK(bad == NULL, "out untouched on failure");
}

/* kiln_dtype_read / kiln_dtype_write: exact round trips of representable
 * values, round to nearest even, saturation and NaN for integers, values
 * at odd addresses. */
void test_dtype_read_write(void) {
  unsigned char buf[16];
  static const kiln_dtype floats[] = {KILN_FLOAT16, KILN_BFLOAT16,
                                      KILN_FLOAT32, KILN_FLOAT64};
  for (int i = 0; i < 4; i++) {
    kiln_dtype_write(floats[i], -1.5, buf + 1);
    CHECK(kiln_dtype_read(floats[i], buf + 1) == -1.5, "%s: -1.5",
          kiln_dtype_name(floats[i]));
  }
  /* 1 + 2^-11 lies halfway between two float16 values: even wins (1). */
  kiln_dtype_write(KILN_FLOAT16, 1.0 + 0x1p-11, buf);
  CHECK(kiln_dtype_read(KILN_FLOAT16, buf) == 1.0, "float16 ties to even");
  kiln_dtype_write(KILN_FLOAT16, 1.0 + 0x1p-10, buf);
  CHECK(kiln_dtype_read(KILN_FLOAT16, buf) == 1.0 + 0x1p-10,
        "float16 keeps its last bit");
  kiln_dtype_write(KILN_INT8, 300.7, buf + 3);
  CHECK(kiln_dtype_read(KILN_INT8, buf + 3) == 127, "int8 saturates");
  kiln_dtype_write(KILN_INT8, -7.9, buf + 3);
  CHECK(kiln_dtype_read(KILN_INT8, buf + 3) == -7, "int8 truncates");
  kiln_dtype_write(KILN_UINT16, -5, buf);
  CHECK(kiln_dtype_read(KILN_UINT16, buf) == 0, "uint16 saturates at 0");
  kiln_dtype_write(KILN_INT32, NAN, buf);
  CHECK(kiln_dtype_read(KILN_INT32, buf) == 0, "NaN to int32 is 0");
  kiln_dtype_write(KILN_BOOL, 0.25, buf);
  CHECK(kiln_dtype_read(KILN_BOOL, buf) == 1, "bool is value != 0");
  kiln_dtype_write(KILN_INT64, 4e15, buf + 5);
  CHECK(kiln_dtype_read(KILN_INT64, buf + 5) == 4e15, "int64");
}

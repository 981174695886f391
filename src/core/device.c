/*
 * The device registry: the CPU first, then every GPU the CUDA backend finds,
 * probed once per process. Devices live in static storage for the whole
 * process, so a device pointer never dangles and the registry itself never
 * allocates.
 */
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The CPU plus up to 64 GPUs: more than any single host holds today. */
#define MAX_DEVICES 65

static struct kiln_device g_device_storage[MAX_DEVICES];
static kiln_device *g_devices[MAX_DEVICES];
static int g_count;
static int g_num_gpus;
static const char *g_gpu_why = "";

/* Initialisation may be retried after a failure (the CPU probe can run out
 * of memory under fault injection), so this is a mutex and a flag rather
 * than pthread_once. */
static pthread_mutex_t g_init_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool g_ready;

/* Sets the allocator's limits: a GPU may use all of its memory; the CPU
 * leaves 10% of RAM to the rest of the process and the system. */
static void allocator_init(kiln_device *dev) {
  kiln__allocator *a = &dev->alloc;
  pthread_mutex_init(&a->lock, NULL);
  a->free_list = NULL;
  a->active_bytes = a->peak_bytes = a->cached_bytes = 0;
  uint64_t total = dev->info.memory_bytes;
  if (total == 0)
    a->memory_limit = UINT64_MAX;
  else if (dev->kind == KILN_DEVICE_CPU)
    a->memory_limit = total / 10 * 9;
  else
    a->memory_limit = total;
  a->cache_limit = a->memory_limit;
}

/* Fills what the core owns in a probed device, whatever the backend set. */
static void device_finish(kiln_device *dev, int index, int ordinal,
                          kiln_device_kind kind,
                          const kiln__backend_ops *ops) {
  dev->index = index;
  dev->ordinal = ordinal;
  dev->kind = kind;
  dev->ops = ops;
  dev->info.struct_size = sizeof(kiln_device_info);
  dev->info.index = index;
  dev->info.ordinal = ordinal;
  dev->info.kind = kind;
  if (dev->info.backend[0] == '\0')
    snprintf(dev->info.backend, sizeof dev->info.backend, "%s", ops->name);
  pthread_mutex_init(&dev->streams_lock, NULL);
  dev->streams = NULL;
  pthread_mutex_init(&dev->side_lock, NULL);
  dev->side = NULL;
  allocator_init(dev);
}

/* Runs the probes; called once successfully, under g_init_lock. */
static kiln_status probe_all(void) {
  for (int i = 0; i < MAX_DEVICES; i++)
    g_devices[i] = &g_device_storage[i];
  const char *why = NULL;
  int n = kiln__cpu_backend.probe(g_devices, 1, &why);
  if (n != 1) {
    memset(&g_device_storage[0], 0, sizeof g_device_storage[0]);
    return kiln__error(KILN_ERROR_INTERNAL,
                       "the CPU device could not be initialised: %s",
                       why != NULL ? why : "its backend found no device.");
  }
  device_finish(g_devices[0], 0, 0, KILN_DEVICE_CPU, &kiln__cpu_backend);

  why = NULL;
  int gpus = kiln__cuda_backend.probe(g_devices + 1, MAX_DEVICES - 1, &why);
  if (gpus < 0)
    gpus = 0;
  for (int i = 0; i < gpus; i++)
    device_finish(g_devices[1 + i], 1 + i, i, KILN_DEVICE_GPU,
                  &kiln__cuda_backend);
  g_num_gpus = gpus;
  g_count = 1 + gpus;
  if (gpus == 0)
    g_gpu_why = why != NULL && why[0] != '\0' ? why : "no GPU was found.";
  return KILN_OK;
}

/* Probes every backend the first time it is called (thread-safe). */
kiln_status kiln__devices_init(void) {
  if (atomic_load_explicit(&g_ready, memory_order_acquire))
    return KILN_OK;
  kiln_status st = KILN_OK;
  pthread_mutex_lock(&g_init_lock);
  if (!atomic_load_explicit(&g_ready, memory_order_relaxed)) {
    st = probe_all();
    if (st == KILN_OK)
      atomic_store_explicit(&g_ready, true, memory_order_release);
  }
  pthread_mutex_unlock(&g_init_lock);
  return st;
}

/* The CPU device, or NULL (with the error set) if it could not be set up. */
kiln_device *kiln__device_cpu(void) {
  return kiln__devices_init() == KILN_OK ? g_devices[0] : NULL;
}

/* The first GPU if any, else the CPU; NULL only if the CPU failed. */
kiln_device *kiln__device_default(void) {
  if (kiln__devices_init() != KILN_OK)
    return NULL;
  return g_num_gpus > 0 ? g_devices[1] : g_devices[0];
}

/* True if `dev` is one of the registry's devices; catches stale or wild
 * pointers before they are used. Internal to the core. */
bool kiln__device_check(const kiln_device *dev) {
  if (kiln__devices_init() != KILN_OK)
    return false;
  for (int i = 0; i < g_count; i++)
    if (g_devices[i] == dev)
      return true;
  return false;
}

/* The number of devices in the registry (0 if even the CPU failed). */
int kiln__device_count(void) {
  return kiln__devices_init() == KILN_OK ? g_count : 0;
}

/* Device `i` of the registry, or NULL. */
kiln_device *kiln__device_at(int i) {
  if (kiln__devices_init() != KILN_OK || i < 0 || i >= g_count)
    return NULL;
  return g_devices[i];
}

/* ---- public -------------------------------------------------------------- */

int kiln_device_count(void) {
  KILN_API_ENTER();
  return kiln__device_count();
}

kiln_status kiln_device_get(int index, kiln_device **out) {
  KILN_API_ENTER();
  if (out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "out is NULL.");
  kiln_status st = kiln__devices_init();
  if (st != KILN_OK)
    return st;
  if (index < 0 || index >= g_count)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "device index %d is out of range; there %s %d "
                       "device%s (0 to %d).",
                       index, g_count == 1 ? "is" : "are", g_count,
                       g_count == 1 ? "" : "s", g_count - 1);
  *out = g_devices[index];
  return KILN_OK;
}

/* Parses the N of "gpu:N": decimal digits only, no sign or spaces. */
static bool parse_ordinal(const char *s, int *out) {
  if (*s == '\0')
    return false;
  long v = 0;
  for (; *s != '\0'; s++) {
    if (*s < '0' || *s > '9' || v > 100000)
      return false;
    v = v * 10 + (*s - '0');
  }
  *out = (int)v;
  return true;
}

static kiln_status find_gpu(int ordinal, const char *spec,
                            kiln_device **out) {
  if (g_num_gpus == 0)
    return kiln__error(KILN_ERROR_NOT_FOUND,
                       "no GPU is available for '%.32s': %s", spec,
                       g_gpu_why);
  if (ordinal >= g_num_gpus)
    return kiln__error(KILN_ERROR_NOT_FOUND,
                       "'%.32s' does not exist; this machine has %d GPU%s "
                       "(gpu:0 to gpu:%d).",
                       spec, g_num_gpus, g_num_gpus == 1 ? "" : "s",
                       g_num_gpus - 1);
  *out = g_devices[1 + ordinal];
  return KILN_OK;
}

kiln_status kiln_device_find(const char *spec, kiln_device **out) {
  KILN_API_ENTER();
  if (spec == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "spec is NULL.");
  if (out == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "out is NULL.");
  kiln_status st = kiln__devices_init();
  if (st != KILN_OK)
    return st;
  int ordinal;
  if (strcmp(spec, "cpu") == 0) {
    *out = g_devices[0];
    return KILN_OK;
  }
  if (strcmp(spec, "gpu") == 0)
    return find_gpu(0, spec, out);
  if (strncmp(spec, "gpu:", 4) == 0 && parse_ordinal(spec + 4, &ordinal))
    return find_gpu(ordinal, spec, out);
  return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "'%.32s' is not a device name; use \"cpu\", \"gpu\" or "
                     "\"gpu:N\".",
                     spec);
}

kiln_device *kiln_device_default(void) {
  KILN_API_ENTER();
  return kiln__device_default();
}

/* The size of the first published kiln_device_info; older callers may pass
 * no less than this. */
#define DEVICE_INFO_V1_SIZE                                                   \
  (offsetof(kiln_device_info, simd_width) + sizeof(uint32_t))

kiln_status kiln_device_get_info(kiln_device *device, kiln_device_info *info) {
  KILN_API_ENTER();
  if (info == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "info is NULL.");
  if (device == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "device is NULL.");
  if (!kiln__device_check(device))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "device is not a kiln device.");
  size_t size = info->struct_size;
  if (size < DEVICE_INFO_V1_SIZE)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "info->struct_size is %zu but must be at least %zu; "
                       "set it to sizeof(kiln_device_info).",
                       size, (size_t)DEVICE_INFO_V1_SIZE);
  /* A newer caller's struct may be larger: fill what we know of it and
   * leave the rest alone. */
  if (size > sizeof(kiln_device_info))
    size = sizeof(kiln_device_info);
  memcpy(info, &device->info, size);
  info->struct_size = size;
  return KILN_OK;
}

const char *kiln_gpu_unavailable_reason(void) {
  KILN_API_ENTER();
  if (kiln__devices_init() != KILN_OK)
    return "the device registry could not be initialised.";
  return g_num_gpus > 0 ? "" : g_gpu_why;
}

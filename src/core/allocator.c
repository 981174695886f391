/*
 * The per-device caching allocator. Device allocations are slow (cudaMalloc
 * synchronizes; large host mallocs fault pages in), and array sizes repeat,
 * so freed blocks are kept in a size-sorted list and handed out again.
 *
 * Sizes are rounded up so that nearby requests share blocks: to 256 bytes
 * up to 1 MiB (keeps vector loads aligned and small arrays cheap), to whole
 * MiB above (large arrays vary in their low bits; a finer grain would never
 * hit). A cached block is reused only if it is at most twice the rounded
 * request, so a tiny array never pins a huge block.
 */
#include "core/core.h"

#define SMALL_GRAIN ((size_t)256)
#define LARGE_GRAIN ((size_t)1 << 20)

/* Rounds a request to its block size; false if that overflows. */
static bool round_size(size_t bytes, size_t *out) {
  size_t grain = bytes <= LARGE_GRAIN ? SMALL_GRAIN : LARGE_GRAIN;
  size_t padded;
  if (bytes == 0)
    bytes = 1;
  if (!kiln__add_size(bytes, grain - 1, &padded))
    return false;
  *out = padded / grain * grain;
  return true;
}

/* Returns one cached block to the backend. Allocator lock held. */
static void release_block(kiln_device *dev, kiln__cached_block *b) {
  dev->ops->mem_free(dev, b->ptr, b->bytes);
  dev->alloc.cached_bytes -= b->bytes;
  kiln__free(b);
}

/* Empties the cache. Allocator lock held. */
static void clear_cache_locked(kiln_device *dev) {
  kiln__cached_block *b = dev->alloc.free_list;
  while (b != NULL) {
    kiln__cached_block *next = b->next;
    release_block(dev, b);
    b = next;
  }
  dev->alloc.free_list = NULL;
}

/* Frees the largest cached blocks until the cache fits `limit` (largest
 * first: they give back the most memory for the fewest future misses). */
static void trim_cache_locked(kiln_device *dev, uint64_t limit) {
  kiln__allocator *a = &dev->alloc;
  while (a->cached_bytes > limit && a->free_list != NULL) {
    kiln__cached_block **pp = &a->free_list;
    while ((*pp)->next != NULL)
      pp = &(*pp)->next;
    kiln__cached_block *last = *pp;
    *pp = NULL;
    release_block(dev, last);
  }
}

/* Takes a cached block of [want, 2*want] bytes out of the list, or NULL. */
static kiln__cached_block *take_cached_locked(kiln__allocator *a,
                                              size_t want) {
  for (kiln__cached_block **pp = &a->free_list; *pp != NULL;
       pp = &(*pp)->next) {
    kiln__cached_block *b = *pp;
    if (b->bytes < want)
      continue;
    if (b->bytes / 2 > want)
      return NULL; /* sorted: every later block is larger still */
    *pp = b->next;
    a->cached_bytes -= b->bytes;
    return b;
  }
  return NULL;
}

static void count_active_locked(kiln__allocator *a, size_t bytes) {
  a->active_bytes += bytes;
  if (a->active_bytes > a->peak_bytes)
    a->peak_bytes = a->active_bytes;
}

static kiln_status over_limit(kiln_device *dev, size_t bytes) {
  return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                     "cannot allocate %zu bytes on device %d (%s): %llu "
                     "bytes are in use and the memory limit is %llu bytes.",
                     bytes, dev->index, dev->info.backend,
                     (unsigned long long)dev->alloc.active_bytes,
                     (unsigned long long)dev->alloc.memory_limit);
}

/* Allocates from the backend, emptying the cache first when the limit or
 * the backend says memory is short. Allocator lock held. */
static kiln_status fresh_block_locked(kiln_device *dev, size_t rounded,
                                      void **out) {
  kiln__allocator *a = &dev->alloc;
  if (a->active_bytes + a->cached_bytes + rounded > a->memory_limit ||
      a->active_bytes + a->cached_bytes + rounded < rounded)
    clear_cache_locked(dev);
  if (a->active_bytes + rounded > a->memory_limit ||
      a->active_bytes + rounded < rounded)
    return over_limit(dev, rounded);
  kiln_status st = dev->ops->mem_alloc(dev, rounded, out);
  if (st == KILN_OK)
    return KILN_OK;
  /* Only a shortage is worth retrying after emptying the cache; any other
   * failure (a lost device above all) is the backend's to report. */
  if (st != KILN_ERROR_OUT_OF_MEMORY)
    return st;
  if (a->free_list != NULL) {
    clear_cache_locked(dev);
    st = dev->ops->mem_alloc(dev, rounded, out);
    if (st == KILN_OK)
      return KILN_OK;
    if (st != KILN_ERROR_OUT_OF_MEMORY)
      return st;
  }
  return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                     "cannot allocate %zu bytes on device %d (%s): the "
                     "device is out of memory (%llu bytes in use).",
                     rounded, dev->index, dev->info.backend,
                     (unsigned long long)a->active_bytes);
}

/* A cached block if one fits, else a fresh one. *node receives the cache
 * entry to free once the lock is dropped (the hooks may be slow).
 * Allocator lock held. */
static kiln_status alloc_locked(kiln_device *dev, size_t want, void **out,
                                size_t *rounded, kiln__cached_block **node) {
  kiln__allocator *a = &dev->alloc;
  kiln__cached_block *b = take_cached_locked(a, want);
  if (b != NULL) {
    *out = b->ptr;
    *rounded = b->bytes;
    count_active_locked(a, b->bytes);
    *node = b;
    return KILN_OK;
  }
  void *ptr = NULL;
  kiln_status st = fresh_block_locked(dev, want, &ptr);
  if (st == KILN_OK) {
    count_active_locked(a, want);
    *out = ptr;
    *rounded = want;
  }
  return st;
}

/* Allocates at least `bytes` of device memory, reusing the cache when it
 * can; *rounded receives the block's real size, to pass back on free. */
kiln_status kiln__device_alloc(kiln_device *dev, size_t bytes, void **out,
                               size_t *rounded) {
  size_t want;
  if (!round_size(bytes, &want))
    return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                       "cannot allocate %zu bytes: the size is too large.",
                       bytes);
  kiln__allocator *a = &dev->alloc;
  kiln__cached_block *node = NULL;
  pthread_mutex_lock(&a->lock);
  kiln_status st = alloc_locked(dev, want, out, rounded, &node);
  if (st == KILN_ERROR_OUT_OF_MEMORY && dev->ops->reclaim != NULL) {
    /* Finished work may still hold buffers in the backend's release
     * queues, which it polls lazily: run those releases and try once
     * more. The lock is dropped meanwhile since they free into it. */
    pthread_mutex_unlock(&a->lock);
    dev->ops->reclaim(dev);
    pthread_mutex_lock(&a->lock);
    st = alloc_locked(dev, want, out, rounded, &node);
  }
  pthread_mutex_unlock(&a->lock);
  kiln__free(node);
  return st;
}

/* Returns a block to the cache (or to the backend if it cannot be kept). */
void kiln__device_free(kiln_device *dev, void *ptr, size_t rounded) {
  if (ptr == NULL)
    return;
  kiln__allocator *a = &dev->alloc;
  /* Allocated outside the lock: the hooks may be slow, and a failure only
   * means this block is not cached. */
  kiln__cached_block *node = kiln__malloc(sizeof *node);
  pthread_mutex_lock(&a->lock);
  a->active_bytes -= rounded;
  if (node == NULL || rounded > a->cache_limit) {
    dev->ops->mem_free(dev, ptr, rounded);
    pthread_mutex_unlock(&a->lock);
    kiln__free(node);
    return;
  }
  node->ptr = ptr;
  node->bytes = rounded;
  kiln__cached_block **pp = &a->free_list;
  while (*pp != NULL && (*pp)->bytes < rounded)
    pp = &(*pp)->next;
  node->next = *pp;
  *pp = node;
  a->cached_bytes += rounded;
  trim_cache_locked(dev, a->cache_limit);
  pthread_mutex_unlock(&a->lock);
}

/* ---- public -------------------------------------------------------------- */

static kiln_status check_device(kiln_device *device) {
  if (device == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "device is NULL.");
  if (!kiln__device_check(device))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "device is not a kiln device.");
  return KILN_OK;
}

kiln_status kiln_memory_get_stats(kiln_device *device,
                                  kiln_memory_stats *stats) {
  KILN_API_ENTER();
  kiln_status st = check_device(device);
  if (st != KILN_OK)
    return st;
  if (stats == NULL)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT, "stats is NULL.");
  if (stats->struct_size < sizeof(kiln_memory_stats))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "stats->struct_size is %zu but must be at least %zu; "
                       "set it to sizeof(kiln_memory_stats).",
                       stats->struct_size, sizeof(kiln_memory_stats));
  kiln__allocator *a = &device->alloc;
  pthread_mutex_lock(&a->lock);
  stats->active_bytes = a->active_bytes;
  stats->peak_bytes = a->peak_bytes;
  stats->cached_bytes = a->cached_bytes;
  stats->memory_limit = a->memory_limit;
  stats->cache_limit = a->cache_limit;
  pthread_mutex_unlock(&a->lock);
  stats->struct_size = sizeof(kiln_memory_stats);
  return KILN_OK;
}

kiln_status kiln_memory_set_limit(kiln_device *device, uint64_t bytes,
                                  uint64_t *previous) {
  KILN_API_ENTER();
  kiln_status st = check_device(device);
  if (st != KILN_OK)
    return st;
  kiln__allocator *a = &device->alloc;
  pthread_mutex_lock(&a->lock);
  if (previous != NULL)
    *previous = a->memory_limit;
  a->memory_limit = bytes;
  /* Keep active + cached <= limit; live arrays are never taken back, so a
   * limit below active_bytes only makes later allocations fail. */
  trim_cache_locked(device, a->active_bytes >= bytes
                                ? 0
                                : bytes - a->active_bytes);
  pthread_mutex_unlock(&a->lock);
  return KILN_OK;
}

kiln_status kiln_memory_set_cache_limit(kiln_device *device, uint64_t bytes,
                                        uint64_t *previous) {
  KILN_API_ENTER();
  kiln_status st = check_device(device);
  if (st != KILN_OK)
    return st;
  kiln__allocator *a = &device->alloc;
  pthread_mutex_lock(&a->lock);
  if (previous != NULL)
    *previous = a->cache_limit;
  a->cache_limit = bytes;
  trim_cache_locked(device, bytes);
  pthread_mutex_unlock(&a->lock);
  return KILN_OK;
}

kiln_status kiln_memory_clear_cache(kiln_device *device) {
  KILN_API_ENTER();
  kiln_status st = check_device(device);
  if (st != KILN_OK)
    return st;
  pthread_mutex_lock(&device->alloc.lock);
  clear_cache_locked(device);
  pthread_mutex_unlock(&device->alloc.lock);
  return KILN_OK;
}

kiln_status kiln_memory_reset_peak(kiln_device *device) {
  KILN_API_ENTER();
  kiln_status st = check_device(device);
  if (st != KILN_OK)
    return st;
  pthread_mutex_lock(&device->alloc.lock);
  device->alloc.peak_bytes = device->alloc.active_bytes;
  pthread_mutex_unlock(&device->alloc.lock);
  return KILN_OK;
}

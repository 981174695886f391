/*
 * The CUDA backend's table of operations: probe, contexts, memory, streams,
 * events, host callbacks, fills, copies and launches, over the driver API
 * loaded by cuda_loader.c.
 *
 * Contexts. Every GPU uses its primary context, retained on first use (so
 * `kiln info` creates none) and made current at the top of each callback
 * on whatever thread calls in.
 *
 * Lost devices. A sticky error (a kernel fault, an uncorrectable ECC
 * error...) poisons the context for good: the first call that sees it
 * reports the fault naming the last kernel successfully enqueued (the
 * call that sees a fault is usually a later, innocent one), marks the
 * device lost, and every later callback returns KILN_ERROR_DEVICE_LOST at
 * once. Releases and host callbacks still pending are then run with that
 * status instead of waiting for a GPU that will never answer: nothing
 * hangs.
 *
 * Releases without host functions. enqueue_release is on every launch's
 * path, and a cuLaunchHostFunc per launch would cost a driver thread
 * round-trip each. Instead each stream keeps a FIFO of (point, fn, user),
 * a point being how much work had been enqueued, and polls it at the
 * start of later calls on the stream (launch, fill, copies, idle,
 * synchronize, destroy) against the stream's clock, which a few recorded
 * marks advance (one cuEventRecord and one cuEventQuery per POLL_BATCH
 * releases). A stream completes in order, so polling stops at the first
 * entry past the clock. A wait (cuStreamSynchronize, cuStreamQuery)
 * proves done only the work counted *before* it began, since other
 * threads may enqueue meanwhile; pollers come from several threads, so a
 * per-stream lock guards the marks. Before reporting out of memory, the
 * core's allocator calls reclaim, which polls every stream of the device.
 *
 * Events are lazy (see the events section): a point in a stream that is
 * recorded on the device only when something waits for it, so a launch
 * costs one driver call (cuLaunchKernel) besides a cuCtxGetCurrent.
 *
 * Why buffers are not simply reused on their own stream at once, as
 * PyTorch's caching allocator does: the core's allocator is per device and
 * shared by all streams, and a block freed after use on stream S is only
 * safe for work on S without waiting. Making the allocator stream-aware
 * would save the per-launch release entry (a malloc and a FIFO slot), but
 * a block handed to another stream, or to the host (kiln_array_to_host,
 * CPU reads), would then need exactly the event this FIFO provides; the
 * FIFO costs a few tens of nanoseconds per launch, so it stays.
 *
 * Host callbacks. cuLaunchHostFunc's function runs on a driver thread that
 * must not call CUDA, so it only hands the node to the device's callback
 * thread, which calls the user's function (which may then call kiln).
 */
#include <signal.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"
#include "core/util.h"

/* The most GPUs kiln drives (device.c's registry holds 64). */
#define MAX_GPUS 64
/* Threads per block of the builtin kernels, and the most blocks they use
 * (they loop over the rest). */
#define BUILTIN_THREADS 256u
#define BUILTIN_MAX_BLOCKS 65536u
/* Work-enqueuing calls poll the release FIFO only once this many entries
 * arrived since the last poll: a query per launch would cost more than
 * the releases are worth; synchronize, idle and destroy always drain it. */
#define POLL_BATCH 16u
/* Kernel arguments kept on the stack at launch; more use the heap. */
#define INLINE_ARGS 64

static kiln__cuda_device g_gpus[MAX_GPUS];

/* True on the callback thread and on CUDA's host-function threads. */
static _Thread_local bool tl_callback_thread;
static _Thread_local bool tl_host_fn_thread;

/* "gpu:N" for messages. */
#define GPU_FMT "gpu:%d"

/* ---- lost devices --------------------------------------------------------- */

static void copy_name(char *dst, size_t size, const char *src) {
  snprintf(dst, size, "%s", src != NULL ? src : "?");
}

/* The device-level name of the last kernel enqueued, "" if none (for
 * faults seen through events, which do not know their stream). */
static void last_kernel(kiln__cuda_device *d, char *out, size_t size) {
  pthread_mutex_lock(&d->lock);
  copy_name(out, size, d->last_kernel);
  pthread_mutex_unlock(&d->lock);
}

/* Who most likely faulted, for messages. Faults are asynchronous: any
 * later call may report one, so the best guess is the last kernel that
 * was enqueued successfully, or the fills and copies that followed it. */
static void culprit(const char *kernel, char *out, size_t size) {
  if (kernel[0] == '\0')
    snprintf(out, size, "work enqueued before any kernel");
  else
    snprintf(out, size, "kernel '%.100s' (or work enqueued after it)",
             kernel);
}

/* Marks the device lost after sticky error `r` and sets the error for the
 * call that found it. `kernel` is the last kernel enqueued successfully
 * (NULL: the device's; "": none). */
static kiln_status mark_lost(kiln__cuda_device *d, CUresult r,
                             const char *kernel) {
  char name[128], who[192];
  if (kernel == NULL) {
    last_kernel(d, name, sizeof name);
    kernel = name;
  }
  culprit(kernel, who, sizeof who);
  const char *ename = kiln__cu_error_name(r);
  const char *etext = kiln__cu_error_text(r);
  pthread_mutex_lock(&d->lock);
  bool first = !atomic_load(&d->lost);
  if (first) {
    snprintf(d->lost_msg, sizeof d->lost_msg,
             GPU_FMT " must be reset: %s faulted earlier (%s: %s), which "
             "left its CUDA context unusable; restart the process",
             d->ordinal, who, ename, etext);
    atomic_store(&d->lost, true);
  }
  pthread_mutex_unlock(&d->lock);
  /* Wake event waiters: callbacks of a lost device may never come. */
  pthread_mutex_lock(&d->cb_lock);
  pthread_cond_broadcast(&d->cb_done);
  pthread_mutex_unlock(&d->cb_lock);
  if (!first)
    return kiln__error(KILN_ERROR_DEVICE_LOST, "%s.", d->lost_msg);
  return kiln__error(KILN_ERROR_DEVICE_LOST,
                     "%s on " GPU_FMT " faulted (%s: %s); the CUDA context "
                     "is unusable and every later call on this device "
                     "fails; restart the process (run it with "
                     "CUDA_LAUNCH_BLOCKING=1 to find the launch that "
                     "faulted).",
                     who, d->ordinal, ename, etext);
}

static kiln_status lost_error(kiln__cuda_device *d) {
  pthread_mutex_lock(&d->lock);
  kiln_status st = kiln__error(KILN_ERROR_DEVICE_LOST, "%s.", d->lost_msg);
  pthread_mutex_unlock(&d->lock);
  return st;
}

/* Sets the error for a failed driver call; see cuda_internal.h. */
kiln_status kiln__cuda_fail(kiln__cuda_device *d, kiln_status status,
                            const char *fmt, ...) {
  CUresult r = kiln__cu_last_result();
  if (kiln__cu_is_sticky(r))
    return mark_lost(d, r, NULL);
  char head[768];
  va_list ap;
  va_start(ap, fmt);
  if (vsnprintf(head, sizeof head, fmt, ap) < 0)
    head[0] = '\0';
  va_end(ap);
  if (r == CUDA_ERROR_OUT_OF_MEMORY)
    status = KILN_ERROR_OUT_OF_MEMORY;
  return kiln__cu_error(status, "%s", head);
}

/* ---- contexts ------------------------------------------------------------- */

/* A context being opened on another thread. */
typedef struct context_job {
  kiln__cuda_device *d;
  CUcontext ctx;
  CUresult result;
} context_job;

static void *context_main(void *arg) {
  context_job *job = arg;
  job->result = job->d->cu->cuDevicePrimaryCtxRetain(&job->ctx,
                                                     job->d->handle);
  return NULL;
}

/* Starts a joinable thread with every signal blocked (signals meant for
 * the application never land on it). */
static bool start_thread(pthread_t *thread, void *(*fn)(void *), void *arg) {
  sigset_t all, old;
  sigfillset(&all);
  if (pthread_sigmask(SIG_SETMASK, &all, &old) != 0)
    return false;
  bool ok = pthread_create(thread, NULL, fn, arg) == 0;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return ok;
}

/*
 * Retains the primary context. The process's first context (~100 ms of
 * driver work) is opened on a short-lived thread while this one warms
 * NVRTC up, so that the first kernel compile finds it ready; both are
 * done before this returns (nothing of kiln's runs in the background).
 * A process that opens no context never loads NVRTC early.
 */
static CUresult open_context(kiln__cuda_device *d, CUcontext *out) {
  context_job job = {d, NULL, CUDA_SUCCESS};
  pthread_t thread;
  if (kiln__cuda_warm_up_claim() &&
      start_thread(&thread, context_main, &job)) {
    kiln__cuda_warm_up(d->arch);
    pthread_join(thread, NULL);
  } else {
    context_main(&job);
  }
  *out = job.ctx;
  return kiln__cu_note(job.result, "cuDevicePrimaryCtxRetain");
}

static kiln_status retain_context(kiln__cuda_device *d) {
  kiln_status st = KILN_OK;
  pthread_mutex_lock(&d->lock);
  if (atomic_load(&d->ctx) == NULL) {
    CUcontext ctx = NULL;
    if (open_context(d, &ctx) != CUDA_SUCCESS)
      st = kiln__cu_error(KILN_ERROR_UNSUPPORTED,
                          "could not open a CUDA context on " GPU_FMT,
                          d->ordinal);
    else
      atomic_store(&d->ctx, ctx);
  }
  pthread_mutex_unlock(&d->lock);
  return st;
}

/* Makes the primary context current; see cuda_internal.h. */
kiln_status kiln__cuda_enter(kiln__cuda_device *d) {
  if (atomic_load_explicit(&d->lost, memory_order_acquire))
    return lost_error(d);
  CUcontext ctx = atomic_load_explicit(&d->ctx, memory_order_acquire);
  if (ctx == NULL) {
    kiln_status st = retain_context(d);
    if (st != KILN_OK)
      return st;
    ctx = atomic_load(&d->ctx);
  }
  /* Asked every time (a thread-local read in the driver): the
   * application may have switched contexts behind kiln's back. */
  CUcontext cur = NULL;
  if (d->cu->cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == ctx)
    return KILN_OK;
  if (KILN__CU(d->cu, cuCtxSetCurrent, ctx) != CUDA_SUCCESS)
    return kiln__cuda_fail(d, KILN_ERROR_INTERNAL,
                           "could not make the CUDA context of " GPU_FMT
                           " current",
                           d->ordinal);
  return KILN_OK;
}

/* The context, without touching the error message: for queries that
 * answer a bool. False if the device is lost or unusable. */
static bool quiet_enter(kiln__cuda_device *d) {
  if (atomic_load_explicit(&d->lost, memory_order_acquire))
    return false;
  CUcontext ctx = atomic_load_explicit(&d->ctx, memory_order_acquire);
  CUcontext cur = NULL;
  if (ctx == NULL)
    return false; /* no object of this device can exist yet */
  if (d->cu->cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == ctx)
    return true;
  return d->cu->cuCtxSetCurrent(ctx) == CUDA_SUCCESS;
}

/* ---- probe ---------------------------------------------------------------- */

static char g_probe_why[640];

static int attribute(kiln__cuda_device *d, int attrib, int fallback) {
  int v = 0;
  if (d->cu->cuDeviceGetAttribute(&v, attrib, d->handle) != CUDA_SUCCESS)
    return fallback;
  return v;
}

/* The architecture NVRTC compiles for: the architecture-specific "a"
 * target on Hopper (9.0), so wgmma/setmaxnreg are reachable. */
static void arch_name(int major, int minor, char *out, size_t size) {
  snprintf(out, size, "sm_%d%d%s", major, minor,
           major == 9 && minor == 0 ? "a" : "");
}

static bool init_locks(kiln__cuda_device *d) {
  if (pthread_mutex_init(&d->lock, NULL) != 0)
    return false;
  if (pthread_mutex_init(&d->pool_lock, NULL) != 0 ||
      pthread_mutex_init(&d->free_lock, NULL) != 0 ||
      pthread_mutex_init(&d->cb_lock, NULL) != 0 ||
      pthread_mutex_init(&d->streams_lock, NULL) != 0 ||
      pthread_cond_init(&d->cb_work, NULL) != 0 ||
      pthread_cond_init(&d->cb_done, NULL) != 0)
    return false; /* static storage: a partial init is never reused */
  return true;
}

/* Fills one GPU's static data and its kiln_device_info; false (with the
 * error noted) if the driver would not describe it. */
static bool describe_gpu(const kiln__cu_api *cu, int ordinal,
                         struct kiln_device *dev) {
  kiln__cuda_device *d = &g_gpus[ordinal];
  memset(d, 0, sizeof *d);
  d->cu = cu;
  d->ordinal = ordinal;
  if (KILN__CU(cu, cuDeviceGet, &d->handle, ordinal) != CUDA_SUCCESS)
    return false;
  kiln_device_info *info = &dev->info;
  memset(info, 0, sizeof *info);
  if (KILN__CU(cu, cuDeviceGetName, info->name, (int)sizeof info->name,
               d->handle) != CUDA_SUCCESS)
    return false;
  info->name[sizeof info->name - 1] = '\0';
  size_t total = 0;
  if (KILN__CU(cu, cuDeviceTotalMem, &total, d->handle) != CUDA_SUCCESS)
    return false;
  d->cc_major = attribute(d, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0);
  d->cc_minor = attribute(d, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 0);
  arch_name(d->cc_major, d->cc_minor, d->arch, sizeof d->arch);
  static const int grid_attr[3] = {CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X,
                                   CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y,
                                   CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z};
  static const int block_attr[3] = {CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X,
                                    CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y,
                                    CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z};
  static const int grid_default[3] = {2147483647, 65535, 65535};
  static const int block_default[3] = {1024, 1024, 64};
  for (int i = 0; i < 3; i++) {
    d->max_grid[i] = (unsigned)attribute(d, grid_attr[i], grid_default[i]);
    d->max_block[i] = (unsigned)attribute(d, block_attr[i], block_default[i]);
  }
  if (!init_locks(d))
    return false;
  snprintf(info->backend, sizeof info->backend, "cuda");
  snprintf(info->arch, sizeof info->arch, "%s", d->arch);
  info->compute_units =
      attribute(d, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 0);
  info->memory_bytes = total;
  info->max_threads_per_threadgroup = (uint32_t)attribute(
      d, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 1024);
  /* The static limit (48 KiB), not the larger opt-in maximum: kiln's
   * threadgroup storage is static __shared__, and only dynamic shared
   * memory may go past it, so the launch-time check (kernel.c) refuses
   * a kernel whose module could never load. */
  info->max_threadgroup_memory = (uint64_t)attribute(
      d, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, 48 * 1024);
  info->simd_width = (uint32_t)attribute(d, CU_DEVICE_ATTRIBUTE_WARP_SIZE, 32);
  info->struct_size = sizeof *info;
  info->kind = KILN_DEVICE_GPU;
  info->ordinal = ordinal;
  dev->kind = KILN_DEVICE_GPU;
  dev->ordinal = ordinal;
  dev->ops = &kiln__cuda_backend;
  dev->impl = d;
  return true;
}

/* Lists every GPU the driver reports. Allocates nothing (device data is
 * static) and creates no context. */
static int cuda_probe(struct kiln_device **devices, int max,
                      const char **why) {
  const char *reason = NULL;
  const kiln__cu_api *cu = kiln__cu_load(&reason);
  if (cu == NULL) {
    *why = reason;
    return 0;
  }
  int count = 0;
  if (KILN__CU(cu, cuDeviceGetCount, &count) != CUDA_SUCCESS) {
    CUresult r = kiln__cu_last_result();
    snprintf(g_probe_why, sizeof g_probe_why,
             "the NVIDIA driver could not count its GPUs (cuDeviceGetCount "
             "failed: %s: %s)",
             kiln__cu_error_name(r), kiln__cu_error_text(r));
    *why = g_probe_why;
    return 0;
  }
  if (count <= 0) {
    snprintf(g_probe_why, sizeof g_probe_why,
             "the NVIDIA driver is installed but reports no GPU "
             "(CUDA_ERROR_NO_DEVICE)");
    *why = g_probe_why;
    return 0;
  }
  if (count > max)
    count = max;
  if (count > MAX_GPUS)
    count = MAX_GPUS;
  for (int i = 0; i < count; i++) {
    if (!describe_gpu(cu, i, devices[i])) {
      CUresult r = kiln__cu_last_result();
      snprintf(g_probe_why, sizeof g_probe_why,
               "the NVIDIA driver could not describe " GPU_FMT
               " (%s failed: %s: %s)",
               i, kiln__cu_last_call(), kiln__cu_error_name(r),
               kiln__cu_error_text(r));
      *why = g_probe_why;
      return i; /* the GPUs before it are fine */
    }
  }
  return count;
}

/* ---- memory --------------------------------------------------------------- */

/* Frees what mem_free had to defer. Context current. */
static void drain_deferred(kiln__cuda_device *d) {
  if (!atomic_load_explicit(&d->has_deferred, memory_order_acquire))
    return;
  pthread_mutex_lock(&d->free_lock);
  for (size_t i = 0; i < d->num_deferred; i++)
    (void)KILN__CU(d->cu, cuMemFree, d->deferred[i]);
  d->num_deferred = 0;
  atomic_store(&d->has_deferred, false);
  pthread_mutex_unlock(&d->free_lock);
}

static kiln_status cuda_mem_alloc(struct kiln_device *dev, size_t bytes,
                                  void **out) {
  kiln__cuda_device *d = kiln__cuda_dev(dev);
  kiln_status st = kiln__cuda_enter(d);
  if (st != KILN_OK)
    return st;
  drain_deferred(d);
  CUdeviceptr p = 0;
  if (KILN__CU(d->cu, cuMemAlloc, &p, bytes == 0 ? 1 : bytes) !=
      CUDA_SUCCESS)
    return kiln__cuda_fail(d, KILN_ERROR_OUT_OF_MEMORY,
                           "could not allocate %zu bytes on " GPU_FMT, bytes,
                           d->ordinal);
  *out = (void *)(uintptr_t)p;
  return KILN_OK;
}

/* Keeps a free for later: no CUDA call is allowed on a host-function
 * thread. Without memory for the list the block leaks (never seen in
 * practice: kiln's host functions never free). */
static void defer_free(kiln__cuda_device *d, CUdeviceptr p) {
  pthread_mutex_lock(&d->free_lock);
  if (d->num_deferred == d->cap_deferred) {
    size_t cap = d->cap_deferred ? d->cap_deferred * 2 : 16;
    CUdeviceptr *grown = kiln__realloc(d->deferred, cap * sizeof *grown);
    if (grown == NULL) {
      pthread_mutex_unlock(&d->free_lock);
      return;
    }
    d->deferred = grown;
    d->cap_deferred = cap;
  }
  d->deferred[d->num_deferred++] = p;
  atomic_store(&d->has_deferred, true);
  pthread_mutex_unlock(&d->free_lock);
}

static void cuda_mem_free(struct kiln_device *dev, void *ptr, size_t bytes) {
  (void)bytes;
  kiln__cuda_device *d = kiln__cuda_dev(dev);
  if (ptr == NULL || atomic_load(&d->lost))
    return; /* a lost context took its memory with it */
  CUdeviceptr p = (CUdeviceptr)(uintptr_t)ptr;
  if (tl_host_fn_thread) {
    defer_free(d, p);
    return;
  }
  if (!quiet_enter(d))
    return;
  (void)KILN__CU(d->cu, cuMemFree, p);
}

/* ---- events --------------------------------------------------------------- */

/*
 * Lazy events. The core asks for an event after every launch (the hazard
 * record of the buffers it wrote), but almost none is ever waited for: work
 * on one stream is ordered already. A cuEventRecord per launch cost about a
 * microsecond of host time, so an event is only a point in its stream, the
 * number of work items enqueued before it (`seq`), until someone needs it
 * on the device or the host: then it is recorded at the stream's current
 * tail. That later point covers the requested one (a stream runs in
 * order), so waiting for it is never wrong, only possibly longer; no
 * deadlock can follow, since a record or wait captures only work enqueued
 * before it. The stream's clock, shared with its events (which outlive the
 * stream), knows how much work is certainly complete (`done_seq`): any
 * event at or below it is done without asking the driver.
 */

/* The clock of one stream, refcounted by the stream and its events. It
 * also counts the stream's host callbacks: an event waits for the
 * callbacks enqueued before it too, as on the CPU. */
typedef struct cb_timeline {
  atomic_int refs;
  uint64_t enqueued;  /* callbacks, under the core's submit lock */
  uint64_t completed; /* callbacks, under dev->cb_lock */
  pthread_mutex_t lock; /* guards `handle` for records from any thread */
  CUstream handle;      /* NULL once the (idle) stream is destroyed */
  _Atomic uint64_t work_seq; /* work items enqueued on the stream */
  _Atomic uint64_t done_seq; /* work items known complete */
} cb_timeline;

static void timeline_release(cb_timeline *t) {
  if (t == NULL ||
      atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
    return;
  pthread_mutex_destroy(&t->lock);
  kiln__free(t);
}

/* Raises the clock's completed count to `seq` (never lowers it). */
static void timeline_done(cb_timeline *t, uint64_t seq) {
  uint64_t cur = atomic_load_explicit(&t->done_seq, memory_order_relaxed);
  while (cur < seq &&
         !atomic_compare_exchange_weak_explicit(&t->done_seq, &cur, seq,
                                                memory_order_release,
                                                memory_order_relaxed)) {
  }
}

struct kiln__event {
  atomic_int refs;
  kiln__cuda_device *dev;
  CUevent handle;         /* created at the first record; kept in the pool */
  atomic_bool recorded;   /* handle recorded for this use (under t->lock) */
  uint64_t seq;           /* the point: work items enqueued before it */
  uint64_t covers;        /* work items before the record (>= seq) */
  cb_timeline *callbacks; /* the stream's clock, retained; NULL in pool */
  uint64_t cb_ticket;     /* callbacks enqueued before the point */
  struct kiln__event *next_free;
};

/* An event from the pool, or a new one (without a CUevent yet). */
static kiln_status event_get(kiln__cuda_device *d, kiln__event **out) {
  pthread_mutex_lock(&d->pool_lock);
  kiln__event *e = d->pool;
  if (e != NULL)
    d->pool = e->next_free;
  pthread_mutex_unlock(&d->pool_lock);
  if (e == NULL) {
    e = kiln__calloc(1, sizeof *e);
    if (e == NULL)
      return kiln__oom("creating a CUDA event");
    e->dev = d;
  }
  atomic_init(&e->refs, 1);
  atomic_init(&e->recorded, false);
  e->next_free = NULL;
  *out = e;
  return KILN_OK;
}

/* Back to the pool: reusing CUevents keeps records cheap. */
static void event_put(kiln__event *e) {
  kiln__cuda_device *d = e->dev;
  timeline_release(e->callbacks);
  e->callbacks = NULL;
  pthread_mutex_lock(&d->pool_lock);
  e->next_free = d->pool;
  d->pool = e;
  pthread_mutex_unlock(&d->pool_lock);
}

static void cuda_event_retain(kiln__event *event) {
  atomic_fetch_add_explicit(&event->refs, 1, memory_order_relaxed);
}

static void cuda_event_release(kiln__event *event) {
  if (event == NULL ||
      atomic_fetch_sub_explicit(&event->refs, 1, memory_order_acq_rel) != 1)
    return;
  event_put(event);
}

/* Whether the clock already knows the event's point complete. */
static bool known_done(const kiln__event *e) {
  return e->seq <=
         atomic_load_explicit(&e->callbacks->done_seq, memory_order_acquire);
}

/* What materialise found. */
enum { MAT_RECORDED = 0, MAT_DONE = 1, MAT_FAILED = 2 };

/*
 * Records the event at its stream's tail if not yet recorded (see the top
 * of this section). MAT_DONE if the stream is gone (it was idle then);
 * MAT_FAILED with the driver call noted. Context current; any thread.
 */
static int materialise(kiln__event *e) {
  if (atomic_load_explicit(&e->recorded, memory_order_acquire))
    return MAT_RECORDED;
  kiln__cuda_device *d = e->dev;
  cb_timeline *t = e->callbacks;
  int result = MAT_RECORDED;
  pthread_mutex_lock(&t->lock);
  if (atomic_load_explicit(&e->recorded, memory_order_relaxed)) {
    /* another thread recorded it while we waited */
  } else if (t->handle == NULL) {
    result = MAT_DONE;
  } else if (e->handle == NULL &&
             KILN__CU(d->cu, cuEventCreate, &e->handle,
                      CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) {
    e->handle = NULL;
    result = MAT_FAILED;
  } else {
    /* Read before the record: the work counted was enqueued before it. */
    uint64_t covers = atomic_load_explicit(&t->work_seq, memory_order_acquire);
    if (KILN__CU(d->cu, cuEventRecord, e->handle, t->handle) !=
        CUDA_SUCCESS) {
      result = MAT_FAILED;
    } else {
      e->covers = covers;
      atomic_store_explicit(&e->recorded, true, memory_order_release);
    }
  }
  pthread_mutex_unlock(&t->lock);
  return result;
}

/* Whether the event's work has finished. A lost device counts as done:
 * nothing will ever run on it again, and waiting would hang. A record
 * that fails answers "not yet": the caller then waits the safe way. */
static bool cuda_event_done(kiln__event *event) {
  kiln__cuda_device *d = event->dev;
  if (known_done(event))
    return true;
  if (!quiet_enter(d))
    return true;
  int m = materialise(event);
  if (m != MAT_RECORDED)
    return m == MAT_DONE;
  CUresult r = d->cu->cuEventQuery(event->handle);
  if (r == CUDA_ERROR_NOT_READY)
    return false;
  if (kiln__cu_is_sticky(r)) {
    kiln__cu_note(r, "cuEventQuery");
    (void)mark_lost(d, r, NULL);
    return true;
  }
  if (r == CUDA_SUCCESS)
    timeline_done(event->callbacks, event->covers);
  return true;
}

static kiln_status cuda_event_synchronize(kiln__event *event) {
  kiln__cuda_device *d = event->dev;
  kiln_status st = kiln__cuda_enter(d);
  if (st != KILN_OK)
    return st;
  int m = known_done(event) ? MAT_DONE : materialise(event);
  if (m == MAT_FAILED)
    return kiln__cuda_fail(d, KILN_ERROR_INTERNAL,
                           "could not record an event on " GPU_FMT,
                           d->ordinal);
  if (m == MAT_RECORDED) {
    if (KILN__CU(d->cu, cuEventSynchronize, event->handle) != CUDA_SUCCESS)
      return kiln__cuda_fail(d, KILN_ERROR_LAUNCH,
                             "waiting for work on " GPU_FMT " failed",
                             d->ordinal);
    timeline_done(event->callbacks, event->covers);
  }
  /* The stream passed the point, so the callbacks before it are queued
   * on the callback thread: wait until they ran (unless we are it). */
  cb_timeline *t = event->callbacks;
  if (!tl_callback_thread) {
    pthread_mutex_lock(&d->cb_lock);
    while (t->completed < event->cb_ticket && !atomic_load(&d->lost))
      pthread_cond_wait(&d->cb_done, &d->cb_lock);
    pthread_mutex_unlock(&d->cb_lock);
  }
  return KILN_OK;
}

/* ---- streams -------------------------------------------------------------- */

/* A release waiting for its stream to pass `seq` work items. */
typedef struct release_entry {
  uint64_t seq;
  kiln__host_fn fn;
  void *user;
} release_entry;

/* Recorded points the release FIFO polls (see poll_releases). */
#define MAX_MARKS 4

typedef struct cuda_stream {
  kiln__cuda_device *dev;
  CUstream handle;
  /* Under the core's submit lock: the last event handed out and how much
   * work had been enqueued then, so an unchanged tail is reused; the work
   * count (published to the clock by work_added). */
  kiln__event *tail_event;
  uint64_t tail_seq;
  uint64_t work_seq;
  /* Recorded points, oldest first (poll_lock), and how many pending
   * releases make the launch path poll next. poll_lock serializes the
   * pollers, which do not all hold the submit lock (synchronize, idle,
   * reclaim); it is taken before `lock` and never with it held. */
  pthread_mutex_t poll_lock;
  kiln__event *marks[MAX_MARKS];
  int num_marks;
  atomic_size_t next_poll;
  struct cuda_stream *next_live; /* in dev->streams (dev->streams_lock) */
  /* The release FIFO, a ring buffer, and the last kernel's name. */
  pthread_mutex_t lock;
  release_entry *ring;
  size_t head, count, cap;
  atomic_size_t pending_releases;
  char last_kernel[128];
  /* Host callbacks enqueued but not yet run, and those of them the stream
   * has already reached (dev->cb_lock). */
  int cb_pending;
  int cb_posted;
  cb_timeline *callbacks; /* also the stream's clock */
  kiln__cuda_host_node *outstanding;
} cuda_stream;

static cuda_stream *impl_of(struct kiln_stream *stream) {
  return stream->impl;
}

/* One more work item went into the stream (under the submit lock). */
static void work_added(cuda_stream *s) {
  s->work_seq++;
  atomic_store_explicit(&s->callbacks->work_seq, s->work_seq,
                        memory_order_release);
}

/* The work count other threads may read: everything it counts was
 * enqueued before the load, so a wait that begins after it proves it
 * done. (s->work_seq is the submit lock's copy.) */
static uint64_t work_enqueued(cuda_stream *s) {
  return atomic_load_explicit(&s->callbacks->work_seq, memory_order_acquire);
}

/* Asks the oldest marks whether the device passed them, raising the
 * clock; stops at the first that has not. poll_lock held. */
static void query_marks(cuda_stream *s) {
  kiln__cuda_device *d = s->dev;
  while (s->num_marks > 0) {
    kiln__event *m = s->marks[0];
    CUresult r = d->cu->cuEventQuery(m->handle);
    if (r == CUDA_ERROR_NOT_READY)
      return;
    if (kiln__cu_is_sticky(r)) {
      kiln__cu_note(r, "cuEventQuery");
      (void)mark_lost(d, r, NULL);
      return;
    }
    if (r == CUDA_SUCCESS)
      timeline_done(s->callbacks, m->covers);
    cuda_event_release(m);
    s->num_marks--;
    memmove(s->marks, s->marks + 1, (size_t)s->num_marks * sizeof *s->marks);
  }
}

/* Records a mark at the tail, unless the newest mark is the tail already
 * or there is no room (the next poll tries again). Context current,
 * poll_lock held; safe without the submit lock (the driver orders the
 * record against concurrent launches, and `covers` is read before it). */
static void add_mark(cuda_stream *s) {
  uint64_t tail = work_enqueued(s);
  if (s->num_marks == MAX_MARKS ||
      (s->num_marks > 0 && s->marks[s->num_marks - 1]->seq == tail))
    return;
  kiln__event *e = NULL;
  if (event_get(s->dev, &e) != KILN_OK)
    return;
  atomic_fetch_add_explicit(&s->callbacks->refs, 1, memory_order_relaxed);
  e->callbacks = s->callbacks;
  e->seq = tail;
  /* Marks are only queried, never waited for, so they need no callback
   * ticket (reading the count would need the submit lock). */
  e->cb_ticket = 0;
  if (materialise(e) != MAT_RECORDED) {
    cuda_event_release(e);
    return;
  }
  s->marks[s->num_marks++] = e;
}

/* Drops the marks a wait has overtaken (covering at most `finished` work
 * items): the clock knows them done already. poll_lock held. */
static void drop_marks(cuda_stream *s, uint64_t finished) {
  int n = 0;
  while (n < s->num_marks && s->marks[n]->covers <= finished)
    cuda_event_release(s->marks[n++]);
  s->num_marks -= n;
  memmove(s->marks, s->marks + n, (size_t)s->num_marks * sizeof *s->marks);
}

/* What a poller knows: no wait proved anything, so ask the marks. (A
 * count of 0 proves nothing either: no work had been enqueued.) */
#define ASK_MARKS UINT64_C(0)
/* The stream is idle for good (destroyed) or lost: release everything. */
#define ALL_DONE UINT64_MAX

/*
 * Calls the releases whose point the stream has passed. `finished` is a
 * work count the caller proved complete, read with work_enqueued()
 * BEFORE the wait that proved it (work enqueued by other threads during
 * the wait is not covered), or ASK_MARKS: then it asks the oldest marks
 * (one cuEventQuery, usually) and leaves a new mark at the tail for the
 * next poll: one record and one query per POLL_BATCH releases, where an
 * event per launch used to be recorded. Any thread; the submit lock is
 * not needed. The release functions run with no lock of the stream held.
 */
static void poll_releases(cuda_stream *s, uint64_t finished) {
  kiln_status status = atomic_load(&s->dev->lost) ? KILN_ERROR_DEVICE_LOST
                                                  : KILN_OK;
  pthread_mutex_lock(&s->poll_lock);
  if (finished != ASK_MARKS) {
    if (finished != ALL_DONE)
      timeline_done(s->callbacks, finished);
    drop_marks(s, finished);
  } else {
    query_marks(s);
  }
  pthread_mutex_unlock(&s->poll_lock);
  uint64_t done =
      finished == ALL_DONE
          ? ALL_DONE
          : atomic_load_explicit(&s->callbacks->done_seq,
                                 memory_order_acquire);
  for (;;) {
    pthread_mutex_lock(&s->lock);
    if (s->count == 0 || s->ring[s->head].seq > done) {
      bool left = s->count > 0;
      atomic_store_explicit(&s->next_poll, s->count + POLL_BATCH,
                            memory_order_relaxed);
      pthread_mutex_unlock(&s->lock);
      if (left && finished == ASK_MARKS && !atomic_load(&s->dev->lost)) {
        pthread_mutex_lock(&s->poll_lock);
        add_mark(s);
        pthread_mutex_unlock(&s->poll_lock);
      }
      return;
    }
    release_entry e = s->ring[s->head];
    s->head = (s->head + 1) % s->cap;
    s->count--;
    atomic_fetch_sub(&s->pending_releases, 1);
    pthread_mutex_unlock(&s->lock);
    /* Outside the lock: fn frees buffers, which may reach the driver. */
    e.fn(e.user, status);
  }
}

static bool ring_grow(cuda_stream *s) {
  size_t cap = s->cap ? s->cap * 2 : 64;
  release_entry *ring = kiln__malloc(cap * sizeof *ring);
  if (ring == NULL)
    return false;
  for (size_t i = 0; i < s->count; i++)
    ring[i] = s->ring[(s->head + i) % s->cap];
  kiln__free(s->ring);
  s->ring = ring;
  s->head = 0;
  s->cap = cap;
  return true;
}

/* ---- host callbacks -------------------------------------------------------- */

/* One kiln_stream_add_callback in flight. `state` says who owns it once
 * the device is lost: the trampoline (PENDING -> POSTED) or the flush
 * (PENDING -> ABANDONED; the node is then never freed, since the driver
 * might still call the trampoline with it). */
enum { NODE_PENDING = 0, NODE_POSTED = 1, NODE_ABANDONED = 2 };

struct kiln__cuda_host_node {
  kiln__cuda_host_node *next;          /* in the device's run queue */
  kiln__cuda_host_node *out_prev, *out_next; /* in stream->outstanding */
  kiln__cuda_host_node *lost_next;     /* the flush's private list */
  kiln__cuda_device *dev; /* an abandoned node may outlive its stream */
  cuda_stream *stream;
  kiln__host_fn fn;
  void *user;
  int state; /* under dev->cb_lock */
};

static void unlink_outstanding(cuda_stream *s, kiln__cuda_host_node *n) {
  if (n->out_prev != NULL)
    n->out_prev->out_next = n->out_next;
  else
    s->outstanding = n->out_next;
  if (n->out_next != NULL)
    n->out_next->out_prev = n->out_prev;
  n->out_prev = n->out_next = NULL;
}

/* Runs on a driver thread: must not call CUDA, so it only queues the node
 * for the callback thread. */
static void host_trampoline(void *user) {
  kiln__cuda_host_node *n = user;
  kiln__cuda_device *d = n->dev;
  tl_host_fn_thread = true;
  pthread_mutex_lock(&d->cb_lock);
  if (n->state == NODE_PENDING) {
    n->state = NODE_POSTED;
    unlink_outstanding(n->stream, n);
    n->stream->cb_posted++;
    n->next = NULL;
    if (d->cb_tail != NULL)
      d->cb_tail->next = n;
    else
      d->cb_head = n;
    d->cb_tail = n;
    pthread_cond_signal(&d->cb_work);
  }
  pthread_mutex_unlock(&d->cb_lock);
}

static void *callback_main(void *arg) {
  kiln__cuda_device *d = arg;
  tl_callback_thread = true;
  pthread_mutex_lock(&d->cb_lock);
  for (;;) {
    while (d->cb_head == NULL)
      pthread_cond_wait(&d->cb_work, &d->cb_lock);
    kiln__cuda_host_node *n = d->cb_head;
    d->cb_head = n->next;
    if (d->cb_head == NULL)
      d->cb_tail = NULL;
    pthread_mutex_unlock(&d->cb_lock);
    kiln_status status =
        atomic_load(&d->lost) ? KILN_ERROR_DEVICE_LOST : KILN_OK;
    n->fn(n->user, status);
    pthread_mutex_lock(&d->cb_lock);
    /* The stream may be destroyed as soon as this drops to zero. */
    n->stream->cb_pending--;
    n->stream->cb_posted--;
    n->stream->callbacks->completed++;
    pthread_cond_broadcast(&d->cb_done);
    kiln__free(n);
  }
  return NULL;
}

/* Starts the device's callback thread once. cb_lock held. */
static kiln_status start_callback_thread(kiln__cuda_device *d) {
  if (d->cb_started)
    return KILN_OK;
  pthread_attr_t attr;
  pthread_t thread;
  if (pthread_attr_init(&attr) != 0)
    return kiln__error(KILN_ERROR_INTERNAL,
                       "could not start the host-callback thread of " GPU_FMT
                       ".",
                       d->ordinal);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&thread, &attr, callback_main, d);
  pthread_attr_destroy(&attr);
  if (rc != 0)
    return kiln__error(KILN_ERROR_INTERNAL,
                       "could not start the host-callback thread of " GPU_FMT
                       ": %s.",
                       d->ordinal, strerror(rc));
  d->cb_started = true;
  return KILN_OK;
}

/* On a lost device: runs the stream's callbacks that the driver will never
 * deliver, with KILN_ERROR_DEVICE_LOST, on the calling thread. */
static void flush_lost_callbacks(cuda_stream *s) {
  kiln__cuda_device *d = s->dev;
  kiln__cuda_host_node *list = NULL;
  pthread_mutex_lock(&d->cb_lock);
  while (s->outstanding != NULL) {
    kiln__cuda_host_node *n = s->outstanding;
    unlink_outstanding(s, n);
    n->state = NODE_ABANDONED;
    n->lost_next = list;
    list = n;
    s->cb_pending--;
    s->callbacks->completed++;
  }
  pthread_cond_broadcast(&d->cb_done);
  pthread_mutex_unlock(&d->cb_lock);
  for (kiln__cuda_host_node *n = list; n != NULL; n = n->lost_next)
    n->fn(n->user, KILN_ERROR_DEVICE_LOST);
}

/* Finishes what a lost device will never finish: callbacks and releases.
 * Callbacks already handed to the callback thread still run there. */
static void settle_lost(cuda_stream *s) {
  flush_lost_callbacks(s);
  poll_releases(s, ALL_DONE);
}

/* Waits until the callback thread has run the callbacks this stream has
 * reached (after a cuStreamSynchronize: all enqueued before it). The
 * callback thread itself does not wait (a callback that synchronizes
 * would otherwise wait for itself or for callbacks queued behind it). */
static void wait_callbacks(cuda_stream *s) {
  if (tl_callback_thread)
    return;
  kiln__cuda_device *d = s->dev;
  pthread_mutex_lock(&d->cb_lock);
  while (s->cb_posted > 0)
    pthread_cond_wait(&d->cb_done, &d->cb_lock);
  pthread_mutex_unlock(&d->cb_lock);
}

static kiln_status cuda_enqueue_host(struct kiln_stream *stream,
                                     kiln__host_fn fn, void *user) {
  cuda_stream *s = impl_of(stream);
  kiln__cuda_device *d = s->dev;
  kiln_status st = kiln__cuda_enter(d);
  if (st != KILN_OK)
    return st;
  kiln__cuda_host_node *n = kiln__calloc(1, sizeof *n);
  if (n == NULL)
    return kiln__oom("enqueuing a host callback on a CUDA stream");
  n->dev = d;
  n->stream = s;
  n->fn = fn;
  n->user = user;
  n->state = NODE_PENDING;
  pthread_mutex_lock(&d->cb_lock);
  st = start_callback_thread(d);
  if (st == KILN_OK) {
    /* Registered before the launch: the trampoline may run at once. */
    n->out_next = s->outstanding;
    if (s->outstanding != NULL)
      s->outstanding->out_prev = n;
    s->outstanding = n;
    s->cb_pending++;
    s->callbacks->enqueued++;
  }
  pthread_mutex_unlock(&d->cb_lock);
  if (st != KILN_OK) {
    kiln__free(n);
    return st;
  }
  if (KILN__CU(d->cu, cuLaunchHostFunc, s->handle, host_trampoline, n) !=
      CUDA_SUCCESS) {
    pthread_mutex_lock(&d->cb_lock);
    unlink_outstanding(s, n);
    s->cb_pending--;
    s->callbacks->enqueued--;
    pthread_mutex_unlock(&d->cb_lock);
    kiln__free(n);
    return kiln__cuda_fail(d, KILN_ERROR_INTERNAL,
                           "could not enqueue a host callback on " GPU_FMT,
                           d->ordinal);
  }
  work_added(s);
  return KILN_OK;
}

/* ---- stream objects --------------------------------------------------------- */

/* The stream's clock (see the events section). */
static cb_timeline *timeline_new(void) {
  cb_timeline *t = kiln__calloc(1, sizeof *t);
  if (t == NULL)
    return NULL;
  if (pthread_mutex_init(&t->lock, NULL) != 0) {
    kiln__free(t);
    return NULL;
  }
  atomic_init(&t->refs, 1);
  atomic_init(&t->work_seq, 0);
  atomic_init(&t->done_seq, 0);
  return t;
}

/* A non-blocking CUDA stream; with a priority hint > 0 (kiln_stream) the
 * context's highest priority, where the driver offers priorities (the
 * default, 0, is already the lowest: numerically greater is lower). */
static CUresult create_handle(kiln__cuda_device *d, int priority,
                              CUstream *out) {
  const kiln__cu_api *cu = d->cu;
  int least = 0, greatest = 0;
  if (priority > 0 && cu->cuStreamCreateWithPriority != NULL &&
      cu->cuCtxGetStreamPriorityRange(&least, &greatest) == CUDA_SUCCESS &&
      cu->cuStreamCreateWithPriority(out, CU_STREAM_NON_BLOCKING,
                                     greatest) == CUDA_SUCCESS)
    return CUDA_SUCCESS;
  return KILN__CU(cu, cuStreamCreate, out, CU_STREAM_NON_BLOCKING);
}

static kiln_status cuda_stream_create(struct kiln_stream *stream) {
  kiln__cuda_device *d = kiln__cuda_dev(stream->device);
  kiln_status st = kiln__cuda_enter(d);
  if (st != KILN_OK)
    return st;
  cuda_stream *s = kiln__calloc(1, sizeof *s);
  if (s == NULL)
    return kiln__oom("creating a CUDA stream");
  if (pthread_mutex_init(&s->lock, NULL) != 0) {
    kiln__free(s);
    return kiln__error(KILN_ERROR_INTERNAL,
                       "could not create a CUDA stream's lock.");
  }
  if (pthread_mutex_init(&s->poll_lock, NULL) != 0) {
    pthread_mutex_destroy(&s->lock);
    kiln__free(s);
    return kiln__error(KILN_ERROR_INTERNAL,
                       "could not create a CUDA stream's lock.");
  }
  s->dev = d;
  atomic_init(&s->next_poll, POLL_BATCH);
  atomic_init(&s->pending_releases, 0);
  s->callbacks = timeline_new();
  if (s->callbacks == NULL) {
    pthread_mutex_destroy(&s->poll_lock);
    pthread_mutex_destroy(&s->lock);
    kiln__free(s);
    return kiln__oom("creating a CUDA stream");
  }
  if (create_handle(d, stream->priority, &s->handle) != CUDA_SUCCESS) {
    pthread_mutex_destroy(&s->poll_lock);
    pthread_mutex_destroy(&s->lock);
    timeline_release(s->callbacks);
    kiln__free(s);
    return kiln__cuda_fail(d, KILN_ERROR_INTERNAL,
                           "could not create a CUDA stream on " GPU_FMT,
                           d->ordinal);
  }
  s->callbacks->handle = s->handle;
  /* Listed for reclaim, which polls every stream of the device. */
  pthread_mutex_lock(&d->streams_lock);
  s->next_live = d->streams;
  d->streams = s;
  pthread_mutex_unlock(&d->streams_lock);
  stream->impl = s;
  return KILN_OK;
}

/* Takes the stream off the device's list; once this returns, reclaim
 * (which polls under the list lock) no longer reaches it. */
static void unlist_stream(cuda_stream *s) {
  kiln__cuda_device *d = s->dev;
  pthread_mutex_lock(&d->streams_lock);
  for (cuda_stream **pp = &d->streams; *pp != NULL; pp = &(*pp)->next_live) {
    if (*pp == s) {
      *pp = s->next_live;
      break;
    }
  }
  pthread_mutex_unlock(&d->streams_lock);
}

/* Only called on an idle stream (or one of a lost device). Events of the
 * stream live on: its clock then says everything completed. */
static void cuda_stream_destroy(struct kiln_stream *stream) {
  cuda_stream *s = impl_of(stream);
  if (s == NULL)
    return;
  kiln__cuda_device *d = s->dev;
  unlist_stream(s);
  bool live = quiet_enter(d);
  if (!live)
    settle_lost(s);
  poll_releases(s, ALL_DONE); /* idle: everything enqueued has finished */
  if (s->tail_event != NULL)
    cuda_event_release(s->tail_event);
  pthread_mutex_lock(&s->callbacks->lock);
  s->callbacks->handle = NULL;
  timeline_done(s->callbacks, UINT64_MAX);
  pthread_mutex_unlock(&s->callbacks->lock);
  if (live)
    (void)KILN__CU(d->cu, cuStreamDestroy, s->handle);
  pthread_mutex_destroy(&s->poll_lock);
  pthread_mutex_destroy(&s->lock);
  timeline_release(s->callbacks);
  kiln__free(s->ring);
  kiln__free(s);
  stream->impl = NULL;
}

static bool callbacks_pending(cuda_stream *s) {
  pthread_mutex_lock(&s->dev->cb_lock);
  bool pending = s->cb_pending > 0;
  pthread_mutex_unlock(&s->dev->cb_lock);
  return pending;
}

/* Idle means no work and no callback pending. Even on a lost device, a
 * callback already handed to the callback thread keeps the stream busy:
 * that thread still writes the stream's counters when it finishes, so
 * destroying the stream earlier would be a use after free. */
static bool cuda_stream_idle(struct kiln_stream *stream) {
  cuda_stream *s = impl_of(stream);
  kiln__cuda_device *d = s->dev;
  if (!quiet_enter(d)) {
    settle_lost(s);
    return !callbacks_pending(s);
  }
  uint64_t seen = work_enqueued(s); /* before the query: see poll_releases */
  CUresult r = d->cu->cuStreamQuery(s->handle);
  if (r == CUDA_ERROR_NOT_READY)
    return false;
  if (kiln__cu_is_sticky(r)) {
    kiln__cu_note(r, "cuStreamQuery");
    (void)mark_lost(d, r, NULL);
    settle_lost(s);
    return !callbacks_pending(s);
  }
  poll_releases(s, r == CUDA_SUCCESS ? seen : ASK_MARKS);
  return !callbacks_pending(s);
}

/* The name of the stream's last kernel enqueued ("" if none), for fault
 * messages. */
static void stream_kernel(cuda_stream *s, char *out, size_t size) {
  pthread_mutex_lock(&s->lock);
  copy_name(out, size, s->last_kernel);
  pthread_mutex_unlock(&s->lock);
}

static kiln_status cuda_stream_synchronize(struct kiln_stream *stream) {
  cuda_stream *s = impl_of(stream);
  kiln__cuda_device *d = s->dev;
  kiln_status st = kiln__cuda_enter(d);
  if (st != KILN_OK) {
    settle_lost(s);
    wait_callbacks(s); /* those already on the callback thread */
    return st;
  }
  /* Only the work counted before the wait is proven done by it: without
   * the submit lock, another thread may enqueue meanwhile. */
  uint64_t seen = work_enqueued(s);
  CUresult r = KILN__CU(d->cu, cuStreamSynchronize, s->handle);
  if (r != CUDA_SUCCESS) {
    if (kiln__cu_is_sticky(r)) {
      char name[128];
      stream_kernel(s, name, sizeof name);
      st = mark_lost(d, r, name);
      settle_lost(s);
      wait_callbacks(s);
      return st;
    }
    return kiln__cuda_fail(d, KILN_ERROR_LAUNCH,
                           "waiting for the stream on " GPU_FMT " failed",
                           d->ordinal);
  }
  poll_releases(s, seen);
  wait_callbacks(s);
  return KILN_OK;
}

/* The backend's reclaim: runs the releases of every stream of the device
 * whose work has finished, so the allocator can reuse their buffers
 * before it reports out of memory. Never waits for the GPU. Called
 * without the allocator lock: releases free buffers, which take it. The
 * list lock is held while polling, so no stream is destroyed under it
 * (nothing a release does takes that lock). */
static void cuda_reclaim(struct kiln_device *dev) {
  kiln__cuda_device *d = kiln__cuda_dev(dev);
  if (!quiet_enter(d))
    return; /* lost (mem_alloc says so) or no stream yet */
  pthread_mutex_lock(&d->streams_lock);
  for (cuda_stream *s = d->streams; s != NULL; s = s->next_live) {
    if (atomic_load(&s->pending_releases) == 0)
      continue;
    uint64_t seen = work_enqueued(s); /* before the query */
    CUresult r = d->cu->cuStreamQuery(s->handle);
    /* A fault is left for the stream's own calls to report (settling it
     * here would run user callbacks inside an allocation). */
    if (r == CUDA_SUCCESS || r == CUDA_ERROR_NOT_READY)
      poll_releases(s, r == CUDA_SUCCESS ? seen : ASK_MARKS);
  }
  pthread_mutex_unlock(&d->streams_lock);
}

/* ---- event records and waits ---------------------------------------------------- */

/* Hands out the stream's current point as a lazy event: no driver call
 * (see the events section). Reused while nothing was enqueued since. */
static kiln_status cuda_event_record(struct kiln_stream *stream,
                                     kiln__event **out) {
  cuda_stream *s = impl_of(stream);
  if (s->tail_event != NULL && s->tail_seq == s->work_seq) {
    cuda_event_retain(s->tail_event);
    *out = s->tail_event;
    return KILN_OK;
  }
  kiln__event *e = NULL;
  kiln_status st = event_get(s->dev, &e);
  if (st != KILN_OK)
    return st;
  atomic_fetch_add_explicit(&s->callbacks->refs, 1, memory_order_relaxed);
  e->callbacks = s->callbacks;
  e->seq = s->work_seq;
  e->cb_ticket = s->callbacks->enqueued;
  if (s->tail_event != NULL)
    cuda_event_release(s->tail_event);
  cuda_event_retain(e); /* one for the tail, one for the caller */
  s->tail_event = e;
  s->tail_seq = s->work_seq;
  *out = e;
  return KILN_OK;
}

static kiln_status cuda_stream_wait_event(struct kiln_stream *stream,
                                          kiln__event *event) {
  cuda_stream *s = impl_of(stream);
  kiln__cuda_device *d = s->dev;
  if (event->callbacks == s->callbacks || cuda_event_done(event))
    return KILN_OK; /* in order already (same stream), or finished */
  kiln_status st = kiln__cuda_enter(d);
  if (st != KILN_OK)
    return st;
  int m = materialise(event);
  if (m == MAT_DONE)
    return KILN_OK;
  if (m == MAT_FAILED ||
      KILN__CU(d->cu, cuStreamWaitEvent, s->handle, event->handle, 0) !=
          CUDA_SUCCESS)
    return kiln__cuda_fail(d, KILN_ERROR_INTERNAL,
                           "could not order a stream of " GPU_FMT
                           " after another",
                           d->ordinal);
  work_added(s);
  return KILN_OK;
}

/* Queues fn until the stream passes its current point (see
 * poll_releases): no event and no driver call per release. */
static kiln_status cuda_enqueue_release(struct kiln_stream *stream,
                                        kiln__host_fn fn, void *user) {
  cuda_stream *s = impl_of(stream);
  pthread_mutex_lock(&s->lock);
  if (s->count == s->cap && !ring_grow(s)) {
    pthread_mutex_unlock(&s->lock);
    return kiln__oom("queuing a release on a CUDA stream");
  }
  release_entry *slot = &s->ring[(s->head + s->count) % s->cap];
  slot->seq = s->work_seq;
  slot->fn = fn;
  slot->user = user;
  s->count++;
  atomic_fetch_add(&s->pending_releases, 1);
  pthread_mutex_unlock(&s->lock);
  return KILN_OK;
}

/* The common start of work-enqueuing callbacks: the context, then the
 * releases that may have become due, once per POLL_BATCH new ones. */
static kiln_status stream_enter(cuda_stream *s) {
  kiln_status st = kiln__cuda_enter(s->dev);
  if (st != KILN_OK)
    return st;
  if (atomic_load_explicit(&s->pending_releases, memory_order_relaxed) >=
      atomic_load_explicit(&s->next_poll, memory_order_relaxed))
    poll_releases(s, ASK_MARKS);
  return KILN_OK;
}

/* ---- builtin launches -------------------------------------------------------------- */

static unsigned builtin_blocks(unsigned long long n) {
  unsigned long long blocks = (n + BUILTIN_THREADS - 1) / BUILTIN_THREADS;
  return blocks > BUILTIN_MAX_BLOCKS ? BUILTIN_MAX_BLOCKS : (unsigned)blocks;
}

static kiln_status launch_builtin(cuda_stream *s, kiln__cuda_builtin which,
                                  unsigned long long n, void **params,
                                  const char *what) {
  kiln__cuda_device *d = s->dev;
  CUfunction f;
  kiln_status st = kiln__cuda_builtin_get(d, which, &f);
  if (st != KILN_OK)
    return st;
  if (KILN__CU(d->cu, cuLaunchKernel, f, builtin_blocks(n), 1, 1,
               BUILTIN_THREADS, 1, 1, 0, s->handle, params,
               NULL) != CUDA_SUCCESS)
    return kiln__cuda_fail(d, KILN_ERROR_LAUNCH,
                           "could not launch kiln's %s kernel on " GPU_FMT,
                           what, d->ordinal);
  work_added(s);
  return KILN_OK;
}

/* ---- fill ---------------------------------------------------------------------------- */

/*
 * Fills `count` 8-byte elements whose halves differ: two 2D memsets of
 * 4-byte values, `count` rows 8 bytes apart and one value wide, the low
 * half at offset 0 and the high half at offset 4. A driver call, where a
 * kernel of kiln's own needed NVRTC in every process (and on driver-only
 * machines had none). If the second memset fails after the first went
 * in, waits for the first: the core treats a failed fill as enqueuing
 * nothing and may free the buffer at once.
 */
static kiln_status fill8(cuda_stream *s, CUdeviceptr p, const uint32_t half[2],
                         size_t count) {
  kiln__cuda_device *d = s->dev;
  for (int i = 0; i < 2; i++) {
    if (KILN__CU(d->cu, cuMemsetD2D32Async, p + 4u * (unsigned)i, 8, half[i],
                 1, count, s->handle) == CUDA_SUCCESS)
      continue;
    kiln_status st = kiln__cuda_fail(d, KILN_ERROR_LAUNCH,
                                     "could not fill %zu elements on " GPU_FMT,
                                     count, d->ordinal);
    if (i == 0 || st == KILN_ERROR_DEVICE_LOST)
      return st;
    CUresult r = KILN__CU(d->cu, cuStreamSynchronize, s->handle);
    if (kiln__cu_is_sticky(r))
      return mark_lost(d, r, NULL);
    return st;
  }
  work_added(s);
  return KILN_OK;
}

static kiln_status cuda_fill(struct kiln_stream *stream, void *dst,
                             size_t count, const void *pattern,
                             size_t pattern_size) {
  cuda_stream *s = impl_of(stream);
  kiln__cuda_device *d = s->dev;
  if (pattern_size != 1 && pattern_size != 2 && pattern_size != 4 &&
      pattern_size != 8)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "a fill pattern of %zu bytes is not supported; the "
                       "CUDA backend fills 1, 2, 4 or 8-byte elements",
                       pattern_size);
  if (count == 0)
    return KILN_OK;
  kiln_status st = stream_enter(s);
  if (st != KILN_OK)
    return st;
  CUdeviceptr p = (CUdeviceptr)(uintptr_t)dst;
  uint8_t b8;
  uint16_t b16;
  uint32_t b32[2];
  CUresult r;
  switch (pattern_size) {
  case 1:
    memcpy(&b8, pattern, 1);
    r = KILN__CU(d->cu, cuMemsetD8Async, p, b8, count, s->handle);
    break;
  case 2:
    memcpy(&b16, pattern, 2);
    r = KILN__CU(d->cu, cuMemsetD16Async, p, b16, count, s->handle);
    break;
  case 4:
    memcpy(b32, pattern, 4);
    r = KILN__CU(d->cu, cuMemsetD32Async, p, b32[0], count, s->handle);
    break;
  default:
    memcpy(b32, pattern, 8);
    if (b32[0] == b32[1] && count <= SIZE_MAX / 2) {
      /* Zero and other repeated halves: a plain 4-byte memset. */
      r = KILN__CU(d->cu, cuMemsetD32Async, p, b32[0], count * 2, s->handle);
      break;
    }
    return fill8(s, p, b32, count);
  }
  if (r != CUDA_SUCCESS)
    return kiln__cuda_fail(d, KILN_ERROR_LAUNCH,
                           "could not fill %zu elements on " GPU_FMT, count,
                           d->ordinal);
  work_added(s);
  return KILN_OK;
}

/* ---- copies ------------------------------------------------------------------------------- */

/* Drops size-1 dimensions and merges dimensions contiguous with each
 * other, in bytes. Returns the new ndim, 0 for an empty view. */
static int simplify_view(const kiln__strided *src, size_t elem,
                         long long *shape, long long *strides) {
  int n = 0;
  for (int i = 0; i < src->ndim; i++) {
    if (src->shape[i] == 0)
      return 0;
    if (src->shape[i] == 1)
      continue;
    long long stride = (long long)src->strides[i] * (long long)elem;
    if (n > 0 && strides[n - 1] == stride * src->shape[i]) {
      shape[n - 1] *= src->shape[i];
      strides[n - 1] = stride;
    } else {
      shape[n] = src->shape[i];
      strides[n] = stride;
      n++;
    }
  }
  if (n == 0) {
    shape[0] = 1;
    strides[0] = (long long)elem;
    n = 1;
  }
  return n;
}

/* The common start of a strided copy or fill (`what`): checks the view,
 * simplifies it into *g and enters the stream. KILN_OK with g->ndim == 0
 * means an empty view, so there is nothing to do. */
static kiln_status prepare_strided(cuda_stream *s, const kiln__strided *v,
                                   size_t elem, const char *what,
                                   kiln__cuda_gather_dims *g) {
  if (v->ndim < 0 || v->ndim > KILN_CUDA_MAX_NDIM ||
      (elem != 1 && elem != 2 && elem != 4 && elem != 8))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "a strided %s of %d dimensions of %zu-byte "
                       "elements is not supported on the GPU",
                       what, v->ndim, elem);
  memset(g, 0, sizeof *g);
  g->ndim = simplify_view(v, elem, g->shape, g->strides);
  if (g->ndim == 0)
    return KILN_OK;
  g->count = 1;
  for (int i = 0; i < g->ndim; i++)
    g->count *= (unsigned long long)g->shape[i];
  return stream_enter(s);
}

static kiln_status cuda_copy_strided(struct kiln_stream *stream,
                                     const kiln__strided *src, void *dst,
                                     size_t elem_size) {
  cuda_stream *s = impl_of(stream);
  kiln__cuda_device *d = s->dev;
  kiln__cuda_gather_dims g;
  kiln_status st = prepare_strided(s, src, elem_size, "copy", &g);
  if (st != KILN_OK || g.ndim == 0)
    return st;
  CUdeviceptr from = (CUdeviceptr)(uintptr_t)src->base;
  CUdeviceptr to = (CUdeviceptr)(uintptr_t)dst;
  if (g.ndim == 1 && g.strides[0] == (long long)elem_size) {
    if (KILN__CU(d->cu, cuMemcpyDtoDAsync, to, from,
                 (size_t)g.count * elem_size, s->handle) != CUDA_SUCCESS)
      return kiln__cuda_fail(d, KILN_ERROR_LAUNCH,
                             "could not copy %llu bytes on " GPU_FMT,
                             g.count * elem_size, d->ordinal);
    work_added(s);
    return KILN_OK;
  }
  kiln__cuda_builtin which = elem_size == 1   ? KILN__CUDA_GATHER1
                             : elem_size == 2 ? KILN__CUDA_GATHER2
                             : elem_size == 4 ? KILN__CUDA_GATHER4
                                              : KILN__CUDA_GATHER8;
  void *params[] = {&from, &to, &g};
  return launch_builtin(s, which, g.count, params, "strided copy");
}

/* Fills a strided view: the scatter twin of copy_strided. */
static kiln_status cuda_fill_strided(struct kiln_stream *stream,
                                     const kiln__strided *dst,
                                     const void *pattern,
                                     size_t pattern_size) {
  cuda_stream *s = impl_of(stream);
  kiln__cuda_gather_dims g;
  kiln_status st = prepare_strided(s, dst, pattern_size, "fill", &g);
  if (st != KILN_OK || g.ndim == 0)
    return st;
  CUdeviceptr to = (CUdeviceptr)(uintptr_t)dst->base;
  /* The value travels as a by-value parameter of the element's size. */
  unsigned char value[8];
  memcpy(value, pattern, pattern_size);
  kiln__cuda_builtin which = pattern_size == 1   ? KILN__CUDA_SFILL1
                             : pattern_size == 2 ? KILN__CUDA_SFILL2
                             : pattern_size == 4 ? KILN__CUDA_SFILL4
                                                 : KILN__CUDA_SFILL8;
  void *params[] = {&to, value, &g};
  return launch_builtin(s, which, g.count, params, "strided fill");
}

/* Host <-> device: enqueue in stream order, then wait for the stream. */
static kiln_status copy_and_wait(cuda_stream *s, void *dst, const void *src,
                                 size_t bytes, bool to_host) {
  kiln__cuda_device *d = s->dev;
  if (bytes == 0)
    return KILN_OK;
  kiln_status st = stream_enter(s);
  if (st != KILN_OK)
    return st;
  uint64_t seen = work_enqueued(s); /* what the wait below proves done */
  CUresult r =
      to_host ? KILN__CU(d->cu, cuMemcpyDtoHAsync, dst,
                         (CUdeviceptr)(uintptr_t)src, bytes, s->handle)
              : KILN__CU(d->cu, cuMemcpyHtoDAsync,
                         (CUdeviceptr)(uintptr_t)dst, src, bytes, s->handle);
  if (r == CUDA_SUCCESS)
    r = KILN__CU(d->cu, cuStreamSynchronize, s->handle);
  if (r != CUDA_SUCCESS) {
    if (kiln__cu_is_sticky(r)) {
      char name[128];
      stream_kernel(s, name, sizeof name);
      st = mark_lost(d, r, name);
      settle_lost(s);
      return st;
    }
    return kiln__cuda_fail(d, KILN_ERROR_IO,
                           "could not copy %zu bytes %s " GPU_FMT, bytes,
                           to_host ? "from" : "to", d->ordinal);
  }
  /* No work_seq step: the copy has finished, so an event recorded before
   * it still marks everything still pending. */
  poll_releases(s, seen);
  return KILN_OK;
}

static kiln_status cuda_copy_to_host(struct kiln_stream *stream,
                                     const void *src, void *dst,
                                     size_t bytes) {
  return copy_and_wait(impl_of(stream), dst, src, bytes, true);
}

static kiln_status cuda_copy_from_host(struct kiln_stream *stream, void *dst,
                                       const void *src, size_t bytes) {
  return copy_and_wait(impl_of(stream), dst, src, bytes, false);
}

/* ---- launch ------------------------------------------------------------------------------ */

/* Remembers the name of a kernel just enqueued, for fault messages (a
 * fault reported by a later call is blamed on it, not on the innocent
 * caller); copies only on change, so a loop of one kernel pays a compare.
 * Only launches write the name, under the core's submit lock, so this
 * thread may read it unlocked. */
static void note_kernel(cuda_stream *s, const char *name) {
  if (strncmp(s->last_kernel, name, sizeof s->last_kernel - 1) == 0)
    return;
  pthread_mutex_lock(&s->lock);
  copy_name(s->last_kernel, sizeof s->last_kernel, name);
  pthread_mutex_unlock(&s->lock);
  pthread_mutex_lock(&s->dev->lock);
  copy_name(s->dev->last_kernel, sizeof s->dev->last_kernel, name);
  pthread_mutex_unlock(&s->dev->lock);
}

/* Checks the launch shape against the function and device limits and
 * computes the blocks (Metal's dispatchThreads: ceil(grid / tg)). */
static kiln_status launch_shape(const kiln__cuda_device *d,
                                const kiln__cuda_module *m,
                                const kiln__launch_params *p, const char *name,
                                unsigned blocks[3]) {
  static const char axis[3] = {'x', 'y', 'z'};
  uint64_t threads = 1;
  for (int i = 0; i < 3; i++) {
    if (p->tg[i] == 0)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s' was launched with a threadgroup "
                         "dimension of 0",
                         name);
    if (p->tg[i] > d->max_block[i])
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': a threadgroup %c size of %u exceeds "
                         "the %u that " GPU_FMT " allows in that dimension",
                         name, axis[i], p->tg[i], d->max_block[i],
                         d->ordinal);
    threads *= p->tg[i];
    blocks[i] = p->grid[i] / p->tg[i] + (p->grid[i] % p->tg[i] != 0);
    if (blocks[i] > d->max_grid[i])
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': the grid needs %u threadgroups along "
                         "%c but " GPU_FMT " allows at most %u; use larger "
                         "threadgroups or another axis",
                         name, blocks[i], axis[i], d->ordinal,
                         d->max_grid[i]);
  }
  if (threads > (uint64_t)m->max_threads)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s' was launched with threadgroups of %llu "
                       "threads, but it can run at most %d per threadgroup "
                       "on " GPU_FMT " (it uses %d registers per thread); "
                       "use smaller threadgroups",
                       name, (unsigned long long)threads, m->max_threads,
                       d->ordinal, m->registers);
  return KILN_OK;
}

/* One launch region (cuda_abi.h): blocks, their size and the first group,
 * per dimension. */
typedef struct launch_region {
  unsigned blocks[3];
  unsigned size[3];
  unsigned first[3];
} launch_region;

/* Whether dimension d must be launched as separate full and partial parts:
 * it has a partial group and a later dimension's groups are above 1 thread,
 * the only case where CUDA's warps (cut from the linear id over blockDim)
 * differ from Metal's SIMD groups (cut over the group's real size). */
static bool split_dim(const kiln__launch_params *p, int d) {
  if (p->grid[d] % p->tg[d] == 0)
    return false;
  for (int e = d + 1; e < 3; e++)
    if (p->tg[e] > 1)
      return true;
  return false;
}

/* Cuts the dispatch into regions whose blocks all have their real size:
 * one region unless a dimension is split (split_dim), then up to 8.
 * Returns how many. */
static int launch_regions(const kiln__launch_params *p,
                          const unsigned blocks[3], launch_region out[8]) {
  /* Per dimension, up to two parts: [start, start + n) of size `size`. */
  unsigned n[3][2], size[3][2], start[3][2];
  int parts[3];
  for (int d = 0; d < 3; d++) {
    unsigned full = p->grid[d] / p->tg[d];
    if (!split_dim(p, d) || full == 0) {
      /* One part (a lone group is its real size already: tg <= grid). */
      n[d][0] = blocks[d], size[d][0] = p->tg[d], start[d][0] = 0;
      parts[d] = 1;
      continue;
    }
    n[d][0] = full, size[d][0] = p->tg[d], start[d][0] = 0;
    n[d][1] = 1, size[d][1] = p->grid[d] - full * p->tg[d];
    start[d][1] = full;
    parts[d] = 2;
  }
  int count = 0;
  for (int i = 0; i < parts[0]; i++)
    for (int j = 0; j < parts[1]; j++)
      for (int k = 0; k < parts[2]; k++) {
        const int pick[3] = {i, j, k};
        for (int d = 0; d < 3; d++) {
          out[count].blocks[d] = n[d][pick[d]];
          out[count].size[d] = size[d][pick[d]];
          out[count].first[d] = start[d][pick[d]];
        }
        count++;
      }
  return count;
}

/* The error of a failed cuLaunchKernel. */
static kiln_status launch_error(kiln__cuda_device *d, CUresult r,
                                const char *name,
                                const kiln__launch_params *p) {
  if (r == CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES)
    return kiln__cu_error(KILN_ERROR_LAUNCH,
                          "kernel '%s' could not be launched on " GPU_FMT
                          " with threadgroups of %ux%ux%u: the kernel "
                          "needs more registers or shared memory than the "
                          "device has for that many threads; use smaller "
                          "threadgroups",
                          name, d->ordinal, p->tg[0], p->tg[1], p->tg[2]);
  if (r == CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE)
    return kiln__cu_error(KILN_ERROR_LAUNCH,
                          "kernel '%s' needs all its %ux%ux%u threadgroups "
                          "resident at once, more than " GPU_FMT " can hold "
                          "(it may be shared with other work)",
                          name, p->grid[0] / p->tg[0], p->grid[1] / p->tg[1],
                          p->grid[2] / p->tg[2], d->ordinal);
  return kiln__cuda_fail(d, KILN_ERROR_LAUNCH,
                         "kernel '%s' could not be launched on " GPU_FMT,
                         name, d->ordinal);
}

/* Checks every region against the device's and the function's limits
 * before any is launched, so that a split launch goes in whole or not at
 * all (launch_shape checked the whole; this guards each part as cut). */
static kiln_status check_regions(const kiln__cuda_device *d,
                                 const kiln__cuda_module *m,
                                 const launch_region *regions, int count,
                                 const char *name) {
  for (int i = 0; i < count; i++) {
    const launch_region *g = &regions[i];
    uint64_t threads = 1;
    bool fits = true;
    for (int k = 0; k < 3; k++) {
      fits = fits && g->blocks[k] >= 1 && g->blocks[k] <= d->max_grid[k] &&
             g->size[k] >= 1 && g->size[k] <= d->max_block[k];
      threads *= g->size[k];
    }
    if (!fits || threads > (uint64_t)m->max_threads)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s': part %d of its split launch (%ux%ux%u "
                         "threadgroups of %ux%ux%u threads) exceeds the "
                         "limits of " GPU_FMT " or of the kernel (at most %d "
                         "threads per threadgroup); nothing was launched",
                         name, i + 1, g->blocks[0], g->blocks[1],
                         g->blocks[2], g->size[0], g->size[1], g->size[2],
                         d->ordinal, m->max_threads);
  }
  return KILN_OK;
}

/* Part `failed` (of `count`) could not be launched after the parts before
 * it went in. The core treats a failed launch as enqueuing nothing and may
 * free its buffers at once, so wait for those parts; the wait's own
 * result is reported too, and a fault it finds is DEVICE_LOST. */
static kiln_status drain_parts(cuda_stream *s, kiln_status st, int failed,
                               int count) {
  kiln__cuda_device *d = s->dev;
  if (st == KILN_ERROR_DEVICE_LOST)
    return st; /* nothing runs on a lost context any more */
  CUresult r = KILN__CU(d->cu, cuStreamSynchronize, s->handle);
  if (r == CUDA_SUCCESS) {
    kiln__error_append("Its first %d of %d parts had been enqueued; they "
                       "have finished.",
                       failed, count);
    return st;
  }
  if (kiln__cu_is_sticky(r)) {
    st = mark_lost(d, r, NULL);
    kiln__error_append("This was found while waiting for the first %d of "
                       "%d parts of a launch whose part %d could not be "
                       "launched.",
                       failed, count, failed + 1);
    return st;
  }
  kiln__error_append("Waiting for its first %d of %d parts, which had been "
                     "enqueued, also failed (cuStreamSynchronize: %s: %s), "
                     "so they may still be running.",
                     failed, count, kiln__cu_error_name(r),
                     kiln__cu_error_text(r));
  return st;
}

/* A kernel with dynamic shared memory (kiln__launch_params.dynamic_shared)
 * may use more than the default 48 KiB only after its function's limit is
 * raised. Setting the attribute on every such launch costs one driver call
 * and needs no state shared between threads; the call is idempotent. */
static kiln_status allow_dynamic_shared(kiln__cuda_device *d,
                                        const kiln__cuda_module *m,
                                        const kiln__launch_params *p,
                                        const char *name) {
  if (p->dynamic_shared == 0)
    return KILN_OK;
  CUresult r = KILN__CU(d->cu, cuFuncSetAttribute, m->function,
                        CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        (int)p->dynamic_shared);
  if (r == CUDA_SUCCESS)
    return KILN_OK;
  return kiln__cu_error(KILN_ERROR_LAUNCH,
                        "kernel '%s' needs %u bytes of dynamic shared "
                        "memory per threadgroup, more than " GPU_FMT
                        " allows",
                        name, p->dynamic_shared, d->ordinal);
}

/*
 * Programmatic dependent launch (Hopper, sm_90+). Each kernel of a stream
 * normally starts only after the one before it has finished and the
 * launch has gone through the front end: a few microseconds a boundary,
 * which a chain of short kernels (CholeskyQR's ~12 launches of 4-70 us,
 * LU's ~16 a panel) pays at every step. Launched with programmatic stream
 * serialization, a kernel's groups may be placed as soon as every group
 * of the previous grid has executed griddepcontrol.launch_dependents, and
 * each then waits in griddepcontrol.wait until that grid has completed
 * and its memory is visible. Every kernel kiln generates begins with that
 * wait and then the trigger (codegen.c's emit_cuda_glue), so ordering is
 * exactly that of plain launches while the launch latency overlaps the
 * previous grid. Only kernel-to-kernel edges are relaxed; fills, copies,
 * host functions and event waits order as before (a driver that wants a
 * chain without gaps makes its scalars first: linalg.h's scalar pool).
 * Not used for cooperative launches (kept on cuLaunchCooperativeKernel:
 * launched with both attributes, LU's strips measured no faster), on
 * devices below sm_90, on drivers without cuLaunchKernelEx, or when the
 * environment sets KILN_PDL=0 (read once: for A/B timing in one build),
 * nor after a driver refused the attribute once (the launch is then
 * made plainly: see launch_region_now).
 * Measured (NVIDIA H200, 2026-11-27, one build, KILN_PDL=0 against 1 in
 * one process each, twice): QR 100000 x 64 float32 0.315 / 0.317 ->
 * 0.302 / 0.303 ms, 1000000 x 32 0.507 / 0.509 -> 0.495 / 0.494 ms; with
 * the scalar pool, LU 8192^2 float32 28.22 / 28.23 -> 27.76 / 27.86 ms,
 * solve with 16 right-hand sides 30.23 / 30.36 -> 29.93 / 29.98 ms.
 */
static bool pdl_env_allows(void) {
  static atomic_int cached = -1; /* -1 unread, else 0 / 1 */
  int v = atomic_load_explicit(&cached, memory_order_relaxed);
  if (v < 0) {
    const char *e = getenv("KILN_PDL");
    v = !(e != NULL && strcmp(e, "0") == 0);
    atomic_store_explicit(&cached, v, memory_order_relaxed);
  }
  return v != 0;
}

/* Set once a driver refused the attribute (below): plain launches from
 * then on. */
static atomic_bool g_pdl_refused;

static bool use_pdl(const kiln__cuda_device *d, const kiln__launch_params *p) {
  return !p->cooperative && d->cc_major >= 9 &&
         d->cu->cuLaunchKernelEx != NULL && pdl_env_allows() &&
         !atomic_load_explicit(&g_pdl_refused, memory_order_relaxed);
}

/* One region's launch: cooperative, with programmatic serialization
 * (use_pdl), or plain. */
static CUresult launch_region_now(cuda_stream *s, const kiln__cuda_module *m,
                                  const kiln__launch_params *p,
                                  const launch_region *g, void **params) {
  kiln__cuda_device *d = s->dev;
  /* A cooperative launch starts only with every group resident (or
   * fails), where a plain one could leave groups waiting on SMs that
   * the spinning others hold. */
  if (p->cooperative)
    return KILN__CU(d->cu, cuLaunchCooperativeKernel, m->function,
                    g->blocks[0], g->blocks[1], g->blocks[2], g->size[0],
                    g->size[1], g->size[2], p->dynamic_shared, s->handle,
                    params);
  if (use_pdl(d, p)) {
    CUlaunchAttribute attr;
    CUlaunchConfig cfg;
    memset(&attr, 0, sizeof attr);
    memset(&cfg, 0, sizeof cfg);
    attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmatic_serialization_allowed = 1;
    cfg.gridDimX = g->blocks[0];
    cfg.gridDimY = g->blocks[1];
    cfg.gridDimZ = g->blocks[2];
    cfg.blockDimX = g->size[0];
    cfg.blockDimY = g->size[1];
    cfg.blockDimZ = g->size[2];
    cfg.sharedMemBytes = p->dynamic_shared;
    cfg.hStream = s->handle;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    CUresult r =
        KILN__CU(d->cu, cuLaunchKernelEx, &cfg, m->function, params, NULL);
    if (r != CUDA_ERROR_NOT_SUPPORTED && r != CUDA_ERROR_INVALID_VALUE)
      return r;
    /* A driver that has cuLaunchKernelEx but refuses the attribute:
     * nothing was enqueued, so launch plainly (the kernel's wait is then
     * a no-op), and if that works, stop asking. A launch that is itself
     * invalid fails again below and is reported as usual. */
    r = KILN__CU(d->cu, cuLaunchKernel, m->function, g->blocks[0],
                 g->blocks[1], g->blocks[2], g->size[0], g->size[1],
                 g->size[2], p->dynamic_shared, s->handle, params, NULL);
    if (r == CUDA_SUCCESS)
      atomic_store_explicit(&g_pdl_refused, true, memory_order_relaxed);
    return r;
  }
  return KILN__CU(d->cu, cuLaunchKernel, m->function, g->blocks[0],
                  g->blocks[1], g->blocks[2], g->size[0], g->size[1],
                  g->size[2], p->dynamic_shared, s->handle, params, NULL);
}

/* Launches every region with `params` (whose last entry is &dims), after
 * checking them all. If a later region still fails, drain_parts waits for
 * the earlier ones. The kernel's name is noted once a part went in. */
static kiln_status launch_all(cuda_stream *s, const kiln__cuda_module *m,
                              const kiln__launch_params *p,
                              const unsigned blocks[3], void **params,
                              kiln_cuda_dims *dims, const char *name) {
  kiln__cuda_device *d = s->dev;
  launch_region regions[8];
  int count = launch_regions(p, blocks, regions);
  kiln_status st = check_regions(d, m, regions, count, name);
  if (st == KILN_OK && p->cooperative && count != 1)
    st = kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                     "kernel '%s': its threadgroups wait for each other, so "
                     "its launch cannot be split into %d parts as " GPU_FMT
                     "'s grid limits require; nothing was launched",
                     name, count, d->ordinal);
  if (st == KILN_OK)
    st = allow_dynamic_shared(d, m, p, name);
  if (st != KILN_OK)
    return st;
  for (int i = 0; i < count; i++) {
    const launch_region *g = &regions[i];
    memcpy(dims->group_offset, g->first, sizeof dims->group_offset);
    CUresult r = launch_region_now(s, m, p, g, params);
    if (r != CUDA_SUCCESS) {
      /* A sticky error here is an earlier launch's fault, blamed on the
       * last kernel noted: this one's name is noted only on success. */
      st = launch_error(d, r, name, p);
      return i == 0 ? st : drain_parts(s, st, i, count);
    }
    if (i == 0)
      note_kernel(s, name);
  }
  return KILN_OK;
}

static kiln_status cuda_launch(struct kiln_stream *stream, void *module,
                               const kiln__launch_params *p) {
  cuda_stream *s = impl_of(stream);
  const kiln__cuda_module *m = module;
  const char *name = p->kernel_name != NULL ? p->kernel_name : "?";
  unsigned blocks[3];
  kiln_status st = launch_shape(s->dev, m, p, name, blocks);
  if (st != KILN_OK)
    return st;
  if (p->grid[0] == 0 || p->grid[1] == 0 || p->grid[2] == 0)
    return KILN_OK; /* no threads: nothing runs */
  if (p->num_args < 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s' was launched with invalid arguments",
                       name);
  st = stream_enter(s);
  if (st != KILN_OK)
    return st;
  /* kernelParams: one pointer per argument, then the dims. The driver
   * copies the values during cuLaunchKernel, so stack storage is fine. */
  void *inline_params[INLINE_ARGS + 1];
  CUdeviceptr inline_ptrs[INLINE_ARGS];
  void **params = inline_params;
  CUdeviceptr *ptrs = inline_ptrs;
  if (p->num_args > INLINE_ARGS) {
    params = kiln__malloc((size_t)(p->num_args + 1) * sizeof *params);
    ptrs = kiln__malloc((size_t)p->num_args * sizeof *ptrs);
    if (params == NULL || ptrs == NULL) {
      kiln__free(params);
      kiln__free(ptrs);
      return kiln__oom("launching a kernel with many arguments");
    }
  }
  for (int i = 0; i < p->num_args; i++) {
    if (p->args[i].kind == KILN__ARG_BUFFER) {
      ptrs[i] = (CUdeviceptr)(uintptr_t)p->args[i].ptr;
      params[i] = &ptrs[i];
    } else {
      params[i] = (void *)p->args[i].bytes;
    }
  }
  kiln_cuda_dims dims;
  for (int i = 0; i < 3; i++) {
    dims.grid[i] = p->grid[i];
    dims.tg[i] = p->tg[i];
    dims.group_offset[i] = 0;
  }
  params[p->num_args] = &dims;
  st = launch_all(s, m, p, blocks, params, &dims, name);
  if (params != inline_params) {
    kiln__free(params);
    kiln__free(ptrs);
  }
  if (st != KILN_OK)
    return st;
  work_added(s);
  return KILN_OK;
}

/* ---- kernels --------------------------------------------------------------------------------- */

static const char *cuda_prelude(struct kiln_device *dev) {
  (void)dev;
  return kiln__prelude_cuda_text;
}

static const char *cuda_target_prelude(const char *target) {
  (void)target;
  return kiln__prelude_cuda_text;
}

/*
 * The CUDA backend: every NVIDIA GPU the driver lists, streams as CUDA
 * streams, kernels compiled by NVRTC to cubins.
 */
const kiln__backend_ops kiln__cuda_backend = {
    .name = "cuda",
    .probe = cuda_probe,
    .mem_alloc = cuda_mem_alloc,
    .mem_free = cuda_mem_free,
    .stream_create = cuda_stream_create,
    .stream_destroy = cuda_stream_destroy,
    .stream_idle = cuda_stream_idle,
    .stream_synchronize = cuda_stream_synchronize,
    .reclaim = cuda_reclaim,
    .event_record = cuda_event_record,
    .event_done = cuda_event_done,
    .event_synchronize = cuda_event_synchronize,
    .stream_wait_event = cuda_stream_wait_event,
    .event_retain = cuda_event_retain,
    .event_release = cuda_event_release,
    .enqueue_host = cuda_enqueue_host,
    .enqueue_release = cuda_enqueue_release,
    .fill = cuda_fill,
    .copy_strided = cuda_copy_strided,
    .fill_strided = cuda_fill_strided,
    .copy_to_host = cuda_copy_to_host,
    .copy_from_host = cuda_copy_from_host,
    .prelude = cuda_prelude,
    .build_id = kiln__cuda_build_id,
    .compile = kiln__cuda_compile,
    .load = kiln__cuda_load,
    .unload = kiln__cuda_unload,
    .launch = cuda_launch,
    .compile_for_target = kiln__cuda_compile_for_target,
    .target_prelude = cuda_target_prelude,
};

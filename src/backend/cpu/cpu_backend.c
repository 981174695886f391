/*
 * The CPU backend's table of operations: the device probe, host memory,
 * streams, events, copies and fills, and kernel launches.
 *
 * Streams. Each stream is one OS thread that runs tasks from a FIFO queue.
 * Every task gets the next sequence number when it is enqueued; the stream
 * thread publishes the number of the last task it finished as `completed`.
 * That counter lives in a separate, reference-counted `timeline` (with the
 * lock and condition variables), so an event, which is just (timeline,
 * sequence number), stays valid after its stream is destroyed.
 *
 * Launch cost. Enqueuing is one allocation and one uncontended lock; the
 * stream thread spins for a short while after it runs dry, and an enqueue
 * signals the condition variable only when the thread really sleeps, so a
 * loop of launches makes no system call at all.
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "backend/cpu/cpu.h"
#include "core/util.h"

/* Alignment of device memory: a cache line, and enough for any vector. */
#define MEM_ALIGN 64u
/* How long a stream thread (or a host waiter) spins before sleeping. */
#define SPIN_NS 50000u
/* Copies and fills at least this big are spread over the worker pool. */
#define PARALLEL_BYTES ((size_t)4 << 20)
#define CHUNK_BYTES ((size_t)1 << 20)
/* The largest fill pattern (the contract uses 1, 2, 4 or 8 bytes). */
#define MAX_PATTERN 16u

/* ---- probe -------------------------------------------------------------- */

static void copy_trimmed(char *dst, size_t dst_size, const char *src) {
  while (*src == ' ' || *src == '\t')
    src++;
  size_t n = strcspn(src, "\r\n");
  while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\t'))
    n--;
  if (n >= dst_size)
    n = dst_size - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* The CPU model from /proc/cpuinfo ("model name"); false if absent, as on
 * most aarch64 kernels. */
static bool read_cpu_model(char *out, size_t out_size) {
  FILE *f = fopen("/proc/cpuinfo", "re");
  if (f == NULL)
    return false;
  char line[512];
  bool found = false;
  while (!found && fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, "model name", 10) != 0)
      continue;
    const char *colon = strchr(line, ':');
    if (colon != NULL && colon[1] != '\0') {
      copy_trimmed(out, out_size, colon + 1);
      found = out[0] != '\0';
    }
  }
  fclose(f);
  return found;
}

static uint64_t physical_memory(void) {
  long pages = sysconf(_SC_PHYS_PAGES);
  long page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0)
    return 0;
  return (uint64_t)pages * (uint64_t)page;
}

static int cpu_probe(struct kiln_device **devices, int max, const char **why) {
  if (max < 1 || devices == NULL || devices[0] == NULL) {
    *why = "there was no room to register the CPU device";
    return 0;
  }
  kiln_device *dev = devices[0];
  kiln_device_info *info = &dev->info;
  struct utsname u;
  memset(info, 0, sizeof *info);
  info->struct_size = sizeof *info;
  info->kind = KILN_DEVICE_CPU;
  info->index = dev->index;
  info->ordinal = 0;
  copy_trimmed(info->backend, sizeof info->backend, "cpu");
  copy_trimmed(info->arch, sizeof info->arch,
               uname(&u) == 0 ? u.machine : "unknown");
  if (!read_cpu_model(info->name, sizeof info->name))
    copy_trimmed(info->name, sizeof info->name, info->arch);
  info->compute_units = kiln__cpu_pool_size();
  info->memory_bytes = physical_memory();
  info->max_threads_per_threadgroup = KILN_CPU_MAX_THREADS;
  /* Kernels written for GPUs must fit GPU limits, so the CPU claims the
   * same budget even though thread-local storage could hold more. */
  info->max_threadgroup_memory = 256u * 1024u;
  info->simd_width = KILN_CPU_SIMD_WIDTH;
  dev->kind = KILN_DEVICE_CPU;
  dev->ordinal = 0;
  dev->ops = &kiln__cpu_backend;
  dev->impl = NULL;
  return 1;
}

/* ---- memory ------------------------------------------------------------- */

/* Aligned by hand on top of kiln__malloc so that the allocation hooks (and
 * the tests' failure injection) see device memory too. The raw pointer is
 * kept in the word just below the aligned address. */
static kiln_status cpu_mem_alloc(struct kiln_device *dev, size_t bytes,
                                 void **out) {
  (void)dev;
  size_t total;
  if (!kiln__add_size(bytes, MEM_ALIGN + sizeof(void *), &total))
    return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                       "cannot allocate %zu bytes of CPU device memory: "
                       "the size is too large",
                       bytes);
  char *raw = kiln__malloc(total);
  if (raw == NULL)
    return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                       "out of host memory allocating %zu bytes of CPU "
                       "device memory",
                       bytes);
  uintptr_t base = (uintptr_t)raw + sizeof(void *);
  uintptr_t aligned = (base + MEM_ALIGN - 1) & ~(uintptr_t)(MEM_ALIGN - 1);
  char *p = raw + (aligned - (uintptr_t)raw);
  memcpy(p - sizeof(void *), &raw, sizeof raw);
  *out = p;
  return KILN_OK;
}

static void cpu_mem_free(struct kiln_device *dev, void *ptr, size_t bytes) {
  (void)dev;
  (void)bytes;
  if (ptr == NULL)
    return;
  void *raw;
  memcpy(&raw, (char *)ptr - sizeof(void *), sizeof raw);
  kiln__free(raw);
}

/* ---- timelines and events ------------------------------------------------ */

typedef struct timeline {
  atomic_int refs;
  pthread_mutex_t lock; /* also guards the owning stream's queue */
  pthread_cond_t done;  /* broadcast when `completed` reaches wake_at */
  _Atomic uint64_t completed;
  uint64_t wake_at; /* smallest sequence number a waiter needs */
} timeline;

struct kiln__event {
  atomic_int refs;
  timeline *tl;
  uint64_t seq;
};

static timeline *timeline_new(void) {
  timeline *tl = kiln__calloc(1, sizeof *tl);
  if (tl == NULL)
    return NULL;
  if (pthread_mutex_init(&tl->lock, NULL) != 0) {
    kiln__free(tl);
    return NULL;
  }
  if (pthread_cond_init(&tl->done, NULL) != 0) {
    pthread_mutex_destroy(&tl->lock);
    kiln__free(tl);
    return NULL;
  }
  atomic_init(&tl->refs, 1);
  atomic_init(&tl->completed, 0);
  tl->wake_at = UINT64_MAX;
  return tl;
}

static void timeline_release(timeline *tl) {
  if (atomic_fetch_sub_explicit(&tl->refs, 1, memory_order_acq_rel) != 1)
    return;
  pthread_cond_destroy(&tl->done);
  pthread_mutex_destroy(&tl->lock);
  kiln__free(tl);
}

static bool timeline_reached(timeline *tl, uint64_t seq) {
  return atomic_load_explicit(&tl->completed, memory_order_acquire) >= seq;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One step of a spin-wait. After a few pause instructions it yields the
 * core: when threads outnumber cores, the thread we wait for may need this
 * very core, and a pure spin would only burn its time slice. */
static inline void spin_step(unsigned i) {
  if (i >= 256) {
    sched_yield();
    return;
  }
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Blocks until the timeline completed `seq`. A short spin first: a sync
 * right after a small launch then costs no sleep and wake-up. */
static void timeline_wait(timeline *tl, uint64_t seq) {
  uint64_t deadline = 0;
  for (unsigned i = 0; !timeline_reached(tl, seq); i++) {
    if ((i & 63u) == 0) {
      uint64_t t = now_ns();
      if (deadline == 0)
        deadline = t + SPIN_NS;
      else if (t > deadline)
        break;
    }
    spin_step(i);
  }
  pthread_mutex_lock(&tl->lock);
  while (!timeline_reached(tl, seq)) {
    if (seq < tl->wake_at)
      tl->wake_at = seq;
    pthread_cond_wait(&tl->done, &tl->lock);
  }
  pthread_mutex_unlock(&tl->lock);
}

/* ---- streams ------------------------------------------------------------ */

typedef struct cpu_stream cpu_stream;
typedef struct task task;
typedef void (*task_run_fn)(task *t, cpu_stream *s);

/* The header of every queued task; the kind-specific data follows it in
 * the same allocation. */
struct task {
  task *next;
  task_run_fn run;
  uint64_t seq;
};

struct cpu_stream {
  timeline *tl;        /* tl->lock guards everything below but the atomics */
  pthread_cond_t work; /* signalled when a task arrives for a sleeper */
  task *head;
  task *tail;
  _Atomic uint64_t enqueued; /* sequence number of the last task queued */
  bool sleeping;
  bool shutdown;
  atomic_int sticky_status; /* the first asynchronous error */
  char *sticky_message;     /* its message (kiln__malloc'ed, may be NULL) */
  pthread_t thread;
};

static cpu_stream *impl_of(struct kiln_stream *stream) {
  return stream->impl;
}

/* Drops a leading "[kiln_xxx] " so a re-raised message is not prefixed
 * twice. */
static const char *strip_api_prefix(const char *msg) {
  if (msg[0] == '[') {
    const char *end = strstr(msg, "] ");
    if (end != NULL)
      return end + 2;
  }
  return msg;
}

/* Records an asynchronous failure; only the first one is kept. The
 * message is this (stream) thread's current error message. */
static void stream_fail(cpu_stream *s, kiln_status status) {
  pthread_mutex_lock(&s->tl->lock);
  if (atomic_load(&s->sticky_status) == KILN_OK) {
    s->sticky_message = kiln__strdup(strip_api_prefix(kiln__error_message()));
    atomic_store(&s->sticky_status, status);
  }
  pthread_mutex_unlock(&s->tl->lock);
}

/* Takes the next task, spinning briefly and then sleeping while the queue
 * is empty. Called and returns with tl->lock held; NULL means shut down. */
static task *next_task(cpu_stream *s) {
  timeline *tl = s->tl;
  if (s->head == NULL && !s->shutdown) {
    uint64_t done = atomic_load_explicit(&tl->completed, memory_order_relaxed);
    pthread_mutex_unlock(&tl->lock);
    uint64_t deadline = now_ns() + SPIN_NS;
    for (unsigned i = 1;; i++) {
      if (atomic_load_explicit(&s->enqueued, memory_order_relaxed) != done)
        break;
      if ((i & 63u) == 0 && now_ns() > deadline)
        break;
      spin_step(i);
    }
    pthread_mutex_lock(&tl->lock);
  }
  while (s->head == NULL && !s->shutdown) {
    s->sleeping = true;
    pthread_cond_wait(&s->work, &tl->lock);
    s->sleeping = false;
  }
  task *t = s->head;
  if (t != NULL) {
    s->head = t->next;
    if (s->head == NULL)
      s->tail = NULL;
  }
  return t;
}

static void *stream_main(void *arg) {
  cpu_stream *s = arg;
  timeline *tl = s->tl;
  pthread_mutex_lock(&tl->lock);
  task *t;
  while ((t = next_task(s)) != NULL) {
    pthread_mutex_unlock(&tl->lock);
    uint64_t seq = t->seq;
    t->run(t, s);
    kiln__free(t);
    pthread_mutex_lock(&tl->lock);
    atomic_store_explicit(&tl->completed, seq, memory_order_release);
    if (seq >= tl->wake_at) {
      tl->wake_at = UINT64_MAX;
      pthread_cond_broadcast(&tl->done);
    }
  }
  pthread_mutex_unlock(&tl->lock);
  return NULL;
}

/* Appends a task (allocated by the caller with kiln__malloc) and returns
 * its sequence number. Wakes the thread only if it sleeps. */
static uint64_t stream_push(cpu_stream *s, task *t, task_run_fn run) {
  t->next = NULL;
  t->run = run;
  pthread_mutex_lock(&s->tl->lock);
  uint64_t seq = atomic_load_explicit(&s->enqueued, memory_order_relaxed) + 1;
  t->seq = seq;
  if (s->tail != NULL)
    s->tail->next = t;
  else
    s->head = t;
  s->tail = t;
  atomic_store_explicit(&s->enqueued, seq, memory_order_relaxed);
  if (s->sleeping)
    pthread_cond_signal(&s->work);
  pthread_mutex_unlock(&s->tl->lock);
  return seq;
}

static void stream_free(cpu_stream *s) {
  pthread_cond_destroy(&s->work);
  timeline_release(s->tl);
  kiln__free(s->sticky_message);
  kiln__free(s);
}

static kiln_status cpu_stream_create(struct kiln_stream *stream) {
  cpu_stream *s = kiln__calloc(1, sizeof *s);
  if (s == NULL)
    return kiln__oom("creating a CPU stream");
  s->tl = timeline_new();
  if (s->tl == NULL) {
    kiln__free(s);
    return kiln__oom("creating a CPU stream");
  }
  if (pthread_cond_init(&s->work, NULL) != 0) {
    timeline_release(s->tl);
    kiln__free(s);
    return kiln__oom("creating a CPU stream");
  }
  atomic_init(&s->enqueued, 0);
  atomic_init(&s->sticky_status, KILN_OK);
  /* The thread blocks every signal so that the application's handlers
   * keep running on the application's own threads. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&s->thread, NULL, stream_main, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    stream_free(s);
    return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                       "could not start the thread of a CPU stream: %s",
                       strerror(rc));
  }
  pthread_setname_np(s->thread, "kiln-stream");
  stream->impl = s;
  return KILN_OK;
}

static void cpu_stream_destroy(struct kiln_stream *stream) {
  cpu_stream *s = impl_of(stream);
  if (s == NULL)
    return;
  pthread_mutex_lock(&s->tl->lock);
  s->shutdown = true;
  pthread_cond_signal(&s->work);
  pthread_mutex_unlock(&s->tl->lock);
  pthread_join(s->thread, NULL);
  stream_free(s);
  stream->impl = NULL;
}

static bool cpu_stream_idle(struct kiln_stream *stream) {
  cpu_stream *s = impl_of(stream);
  return timeline_reached(s->tl, atomic_load(&s->enqueued));
}

static kiln_status cpu_stream_synchronize(struct kiln_stream *stream) {
  cpu_stream *s = impl_of(stream);
  timeline_wait(s->tl, atomic_load(&s->enqueued));
  pthread_mutex_lock(&s->tl->lock);
  kiln_status st = atomic_load(&s->sticky_status);
  char *msg = s->sticky_message;
  s->sticky_message = NULL;
  atomic_store(&s->sticky_status, KILN_OK);
  pthread_mutex_unlock(&s->tl->lock);
  if (st != KILN_OK)
    kiln__error(st, "%s",
                msg ? msg
                    : "work on the stream failed (the error's details "
                      "were lost for lack of memory)");
  kiln__free(msg);
  return st;
}

/* ---- events ------------------------------------------------------------- */

static kiln_status cpu_event_record(struct kiln_stream *stream,
                                    kiln__event **out) {
  cpu_stream *s = impl_of(stream);
  kiln__event *e = kiln__malloc(sizeof *e);
  if (e == NULL)
    return kiln__oom("recording a CPU stream event");
  atomic_init(&e->refs, 1);
  atomic_fetch_add_explicit(&s->tl->refs, 1, memory_order_relaxed);
  e->tl = s->tl;
  /* Submissions to one stream are serialized by the core, so this is the
   * last task enqueued so far. */
  e->seq = atomic_load_explicit(&s->enqueued, memory_order_relaxed);
  *out = e;
  return KILN_OK;
}

static bool cpu_event_done(kiln__event *event) {
  return timeline_reached(event->tl, event->seq);
}

static kiln_status cpu_event_synchronize(kiln__event *event) {
  timeline_wait(event->tl, event->seq);
  return KILN_OK;
}

static void cpu_event_retain(kiln__event *event) {
  atomic_fetch_add_explicit(&event->refs, 1, memory_order_relaxed);
}

static void cpu_event_release(kiln__event *event) {
  if (event == NULL ||
      atomic_fetch_sub_explicit(&event->refs, 1, memory_order_acq_rel) != 1)
    return;
  timeline_release(event->tl);
  kiln__free(event);
}

typedef struct wait_task {
  task base;
  kiln__event *event;
} wait_task;

static void run_wait(task *t, cpu_stream *s) {
  (void)s;
  wait_task *w = (wait_task *)t;
  cpu_event_synchronize(w->event);
  cpu_event_release(w->event);
}

/* The event can only name work already enqueued on its stream, which
 * never waits for work enqueued after it, so this cannot deadlock. */
static kiln_status cpu_stream_wait_event(struct kiln_stream *stream,
                                         kiln__event *event) {
  cpu_stream *s = impl_of(stream);
  if (event->tl == s->tl || cpu_event_done(event))
    return KILN_OK; /* a stream runs in order; done is done */
  wait_task *w = kiln__malloc(sizeof *w);
  if (w == NULL)
    return kiln__oom("making a CPU stream wait for an event");
  cpu_event_retain(event);
  w->event = event;
  stream_push(s, &w->base, run_wait);
  return KILN_OK;
}

/* ---- host callbacks ----------------------------------------------------- */

typedef struct host_task {
  task base;
  kiln__host_fn fn;
  void *user;
} host_task;

static void run_host(task *t, cpu_stream *s) {
  host_task *h = (host_task *)t;
  h->fn(h->user, atomic_load(&s->sticky_status));
}

static kiln_status cpu_enqueue_host(struct kiln_stream *stream,
                                    kiln__host_fn fn, void *user) {
  host_task *h = kiln__malloc(sizeof *h);
  if (h == NULL)
    return kiln__oom("enqueuing a host callback on a CPU stream");
  h->fn = fn;
  h->user = user;
  stream_push(impl_of(stream), &h->base, run_host);
  return KILN_OK;
}

/* ---- fill --------------------------------------------------------------- */

/* Writes the pattern once, then doubles the filled prefix with memcpy:
 * any pattern size, any alignment, and only log2(count) calls. */
static void fill_range(char *dst, size_t count, const unsigned char *pattern,
                       size_t psize) {
  if (count == 0)
    return;
  if (psize == 1) {
    memset(dst, pattern[0], count);
    return;
  }
  size_t total = count * psize;
  size_t done = psize;
  memcpy(dst, pattern, psize);
  while (done < total) {
    size_t n = done < total - done ? done : total - done;
    memcpy(dst + done, dst, n);
    done += n;
  }
}

typedef struct fill_task {
  task base;
  char *dst;
  size_t count;
  size_t psize;
  unsigned char pattern[MAX_PATTERN];
} fill_task;

static void fill_chunk(void *ctx, uint64_t item, int worker) {
  (void)worker;
  fill_task *f = ctx;
  size_t per = CHUNK_BYTES / f->psize; /* elements per chunk */
  size_t first = (size_t)item * per;
  size_t n = f->count - first < per ? f->count - first : per;
  fill_range(f->dst + first * f->psize, n, f->pattern, f->psize);
}

static void run_fill(task *t, cpu_stream *s) {
  (void)s;
  fill_task *f = (fill_task *)t;
  size_t bytes = f->count * f->psize;
  if (bytes >= PARALLEL_BYTES) {
    size_t per = CHUNK_BYTES / f->psize;
    uint64_t chunks = (f->count + per - 1) / per;
    if (kiln__cpu_parallel_for(chunks, fill_chunk, f) == KILN_OK)
      return;
  }
  fill_range(f->dst, f->count, f->pattern, f->psize);
}

static kiln_status cpu_fill(struct kiln_stream *stream, void *dst, size_t count,
                            const void *pattern, size_t pattern_size) {
  size_t bytes;
  if (pattern_size == 0 || pattern_size > MAX_PATTERN)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "a fill pattern of %zu bytes is not supported; the "
                       "CPU backend fills 1 to %u-byte elements",
                       pattern_size, MAX_PATTERN);
  if (!kiln__mul_size(count, pattern_size, &bytes))
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "a fill of %zu elements of %zu bytes overflows", count,
                       pattern_size);
  if (count == 0)
    return KILN_OK;
  fill_task *f = kiln__malloc(sizeof *f);
  if (f == NULL)
    return kiln__oom("enqueuing a fill on a CPU stream");
  f->dst = dst;
  f->count = count;
  f->psize = pattern_size;
  memcpy(f->pattern, pattern, pattern_size);
  stream_push(impl_of(stream), &f->base, run_fill);
  return KILN_OK;
}

/* ---- contiguous copies --------------------------------------------------- */

typedef struct memcpy_job {
  char *dst;
  const char *src;
  size_t bytes;
} memcpy_job;

static void memcpy_chunk(void *ctx, uint64_t item, int worker) {
  (void)worker;
  memcpy_job *j = ctx;
  size_t off = (size_t)item * CHUNK_BYTES;
  size_t n = j->bytes - off < CHUNK_BYTES ? j->bytes - off : CHUNK_BYTES;
  memcpy(j->dst + off, j->src + off, n);
}

/* memcpy, spread over the pool when large. */
static void big_memcpy(void *dst, const void *src, size_t bytes) {
  if (bytes >= PARALLEL_BYTES) {
    memcpy_job j = {dst, src, bytes};
    uint64_t chunks = (bytes + CHUNK_BYTES - 1) / CHUNK_BYTES;
    if (kiln__cpu_parallel_for(chunks, memcpy_chunk, &j) == KILN_OK)
      return;
  }
  if (bytes > 0)
    memcpy(dst, src, bytes);
}

typedef struct memcpy_task {
  task base;
  memcpy_job job;
} memcpy_task;

static void run_memcpy(task *t, cpu_stream *s) {
  (void)s;
  memcpy_task *m = (memcpy_task *)t;
  big_memcpy(m->job.dst, m->job.src, m->job.bytes);
}

/* Copies in stream order and returns once done. With nothing pending the
 * calling thread copies itself: the same order, without a hand-off. */
static kiln_status copy_now(struct kiln_stream *stream, void *dst,
                            const void *src, size_t bytes) {
  cpu_stream *s = impl_of(stream);
  if (bytes == 0)
    return KILN_OK;
  if (timeline_reached(s->tl, atomic_load(&s->enqueued))) {
    big_memcpy(dst, src, bytes);
    return KILN_OK;
  }
  memcpy_task *m = kiln__malloc(sizeof *m);
  if (m == NULL)
    return kiln__oom("enqueuing a copy on a CPU stream");
  m->job.dst = dst;
  m->job.src = src;
  m->job.bytes = bytes;
  uint64_t seq = stream_push(s, &m->base, run_memcpy);
  timeline_wait(s->tl, seq);
  return KILN_OK;
}

static kiln_status cpu_copy_to_host(struct kiln_stream *stream, const void *src,
                                    void *dst, size_t bytes) {
  return copy_now(stream, dst, src, bytes);
}

static kiln_status cpu_copy_from_host(struct kiln_stream *stream, void *dst,
                                      const void *src, size_t bytes) {
  return copy_now(stream, dst, src, bytes);
}

/* ---- strided copies ----------------------------------------------------- */

/*
 * A strided gather after simplification: dimensions of size 1 dropped and
 * neighbours that are contiguous with each other merged, so a view that
 * is contiguous after all becomes one row. Rows are the last dimension;
 * the task's trailing storage holds shape and strides.
 */
typedef struct strided_task {
  task base;
  const char *src;
  char *dst;
  size_t elem;
  int ndim; /* >= 1 */
  uint64_t rows;
  int64_t *shape;
  int64_t *strides; /* bytes */
} strided_task;

/* Copies one row of n elements `stride` bytes apart. */
static void gather_row(char *dst, const char *src, int64_t n, int64_t stride,
                       size_t elem) {
  if (stride == (int64_t)elem) {
    memcpy(dst, src, (size_t)n * elem);
    return;
  }
  switch (elem) {
#define KILN_GATHER_(T)                                                        \
  for (int64_t i = 0; i < n; i++)                                              \
    memcpy(dst + i * (int64_t)sizeof(T), src + i * stride, sizeof(T));         \
  return;
  case 1:
    KILN_GATHER_(uint8_t)
  case 2:
    KILN_GATHER_(uint16_t)
  case 4:
    KILN_GATHER_(uint32_t)
  case 8:
    KILN_GATHER_(uint64_t)
#undef KILN_GATHER_
  default:
    for (int64_t i = 0; i < n; i++)
      memcpy(dst + i * (int64_t)elem, src + i * stride, elem);
  }
}

/* Copies rows [first, first + count) of the view. */
static void gather_rows(const strided_task *c, uint64_t first, uint64_t count) {
  int64_t idx[KILN_MAX_NDIM + 1];
  int outer = c->ndim - 1;
  int64_t n = c->shape[outer];
  int64_t off = 0;
  uint64_t r = first;
  for (int d = outer - 1; d >= 0; d--) {
    idx[d] = (int64_t)(r % (uint64_t)c->shape[d]);
    r /= (uint64_t)c->shape[d];
    off += idx[d] * c->strides[d];
  }
  char *dst = c->dst + first * (uint64_t)n * c->elem;
  for (uint64_t row = 0; row < count; row++) {
    gather_row(dst, c->src + off, n, c->strides[outer], c->elem);
    dst += (size_t)n * c->elem;
    /* Step the odometer over the outer dimensions. */
    for (int d = outer - 1; d >= 0; d--) {
      off += c->strides[d];
      if (++idx[d] < c->shape[d])
        break;
      off -= idx[d] * c->strides[d];
      idx[d] = 0;
    }
  }
}

static uint64_t rows_per_chunk(const strided_task *c) {
  uint64_t row_bytes = (uint64_t)c->shape[c->ndim - 1] * c->elem;
  uint64_t per = row_bytes >= CHUNK_BYTES ? 1 : CHUNK_BYTES / row_bytes;
  return per;
}

static void gather_chunk(void *ctx, uint64_t item, int worker) {
  (void)worker;
  const strided_task *c = ctx;
  uint64_t per = rows_per_chunk(c);
  uint64_t first = item * per;
  uint64_t n = c->rows - first < per ? c->rows - first : per;
  gather_rows(c, first, n);
}

static void run_strided(task *t, cpu_stream *s) {
  (void)s;
  strided_task *c = (strided_task *)t;
  uint64_t bytes = c->rows * (uint64_t)c->shape[c->ndim - 1] * c->elem;
  if (c->ndim == 1 && c->strides[0] == (int64_t)c->elem) {
    big_memcpy(c->dst, c->src, (size_t)bytes);
    return;
  }
  if (bytes >= PARALLEL_BYTES && c->rows > 1) {
    uint64_t per = rows_per_chunk(c);
    if (kiln__cpu_parallel_for((c->rows + per - 1) / per, gather_chunk, c) ==
        KILN_OK)
      return;
  }
  gather_rows(c, 0, c->rows);
}

/* Simplifies the view into shape/strides (bytes); returns the new ndim,
 * 0 for an empty view. A 0-d view becomes one element. */
static int simplify_view(const kiln__strided *src, size_t elem, int64_t *shape,
                         int64_t *strides) {
  int n = 0;
  for (int d = 0; d < src->ndim; d++) {
    if (src->shape[d] == 0)
      return 0;
    if (src->shape[d] == 1)
      continue;
    int64_t stride = src->strides[d] * (int64_t)elem;
    if (n > 0 && strides[n - 1] == stride * src->shape[d]) {
      /* Contiguous with the previous dimension: one longer dimension. */
      shape[n - 1] *= src->shape[d];
      strides[n - 1] = stride;
    } else {
      shape[n] = src->shape[d];
      strides[n] = stride;
      n++;
    }
  }
  if (n == 0) {
    shape[0] = 1;
    strides[0] = (int64_t)elem;
    n = 1;
  }
  return n;
}

static kiln_status cpu_copy_strided(struct kiln_stream *stream,
                                    const kiln__strided *src, void *dst,
                                    size_t elem_size) {
  if (src->ndim < 0 || src->ndim > KILN_MAX_NDIM || elem_size == 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "a strided copy of %d dimensions of %zu-byte "
                       "elements is not supported",
                       src->ndim, elem_size);
  int64_t shape[KILN_MAX_NDIM + 1], strides[KILN_MAX_NDIM + 1];
  int ndim = simplify_view(src, elem_size, shape, strides);
  if (ndim == 0)
    return KILN_OK; /* empty: nothing to move */
  size_t dims = (size_t)ndim * sizeof(int64_t);
  strided_task *c = kiln__malloc(sizeof *c + 2 * dims);
  if (c == NULL)
    return kiln__oom("enqueuing a strided copy on a CPU stream");
  c->shape = (int64_t *)(c + 1);
  c->strides = c->shape + ndim;
  memcpy(c->shape, shape, dims);
  memcpy(c->strides, strides, dims);
  c->src = src->base;
  c->dst = dst;
  c->elem = elem_size;
  c->ndim = ndim;
  c->rows = 1;
  for (int d = 0; d < ndim - 1; d++)
    c->rows *= (uint64_t)shape[d];
  stream_push(impl_of(stream), &c->base, run_strided);
  return KILN_OK;
}

/* ---- launch ------------------------------------------------------------- */

/* One allocation carries everything: the header, the argument pointers,
 * copies of by-value arguments and the kernel's name. */
typedef struct launch_task {
  task base;
  const kiln__cpu_module *module;
  const char *name;
  kiln_cpu_launch L;
  void *args[];
} launch_task;

#define BYTES_ALIGN 16u

static size_t round_up(size_t n, size_t a) {
  return (n + a - 1) / a * a;
}

static void run_launch(task *t, cpu_stream *s) {
  launch_task *l = (launch_task *)t;
  kiln_status st = kiln__cpu_execute(l->module, &l->L, l->name);
  if (st != KILN_OK)
    stream_fail(s, st);
}

/* Bytes of the task for these params, or 0 if they are unreasonable. */
static size_t launch_task_size(const kiln__launch_params *p, size_t name_len) {
  size_t size = round_up(
      sizeof(launch_task) + (size_t)p->num_args * sizeof(void *), BYTES_ALIGN);
  for (int i = 0; i < p->num_args; i++)
    if (p->args[i].kind == KILN__ARG_BYTES &&
        !kiln__add_size(size, round_up(p->args[i].size, BYTES_ALIGN), &size))
      return 0;
  if (!kiln__add_size(size, name_len + 1, &size))
    return 0;
  return size;
}

static kiln_status cpu_launch(struct kiln_stream *stream, void *module,
                              const kiln__launch_params *p) {
  const char *name = p->kernel_name ? p->kernel_name : "?";
  for (int d = 0; d < 3; d++)
    if (p->tg[d] == 0)
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s' was launched with a threadgroup "
                         "dimension of 0",
                         name);
  if (p->grid[0] == 0 || p->grid[1] == 0 || p->grid[2] == 0)
    return KILN_OK; /* no threads: nothing runs */
  /* Refuse a fiber kernel whose frame cannot fit now, not at the next
   * synchronize: the caller still gets the error from the launch. */
  kiln_status st = kiln__cpu_check_stack(module, name);
  if (st != KILN_OK)
    return st;
  size_t name_len = strlen(name);
  size_t size = p->num_args < 0 ? 0 : launch_task_size(p, name_len);
  if (size == 0)
    return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                       "kernel '%s' was launched with invalid arguments", name);
  launch_task *l = kiln__malloc(size);
  if (l == NULL)
    return kiln__oom("enqueuing a kernel launch on a CPU stream");
  char *extra = (char *)l + round_up(sizeof(launch_task) +
                                         (size_t)p->num_args * sizeof(void *),
                                     BYTES_ALIGN);
  for (int i = 0; i < p->num_args; i++) {
    if (p->args[i].kind == KILN__ARG_BYTES) {
      if (p->args[i].size > 0)
        memcpy(extra, p->args[i].bytes, p->args[i].size);
      l->args[i] = extra;
      extra += round_up(p->args[i].size, BYTES_ALIGN);
    } else {
      l->args[i] = p->args[i].ptr;
    }
  }
  memcpy(extra, name, name_len + 1);
  l->name = extra;
  l->module = module;
  for (int d = 0; d < 3; d++) {
    l->L.grid[d] = p->grid[d];
    l->L.tg[d] = p->tg[d];
    /* Metal's dispatchThreads: the last group in a dimension may be
     * partial. Written so that it cannot overflow near UINT32_MAX. */
    l->L.groups[d] = p->grid[d] / p->tg[d] + (p->grid[d] % p->tg[d] != 0);
  }
  l->L.args = l->args;
  stream_push(impl_of(stream), &l->base, run_launch);
  return KILN_OK;
}

/* ---- kernels ------------------------------------------------------------ */

static const char *cpu_target_prelude(const char *target) {
  (void)target;
  return kiln__prelude_cpu_text;
}

static const char *cpu_prelude(struct kiln_device *dev) {
  (void)dev;
  return kiln__prelude_cpu_text;
}

/*
 * The CPU backend: one device (the host), streams as OS threads, kernels
 * compiled by the host C++ compiler and run by exec.c on a worker pool.
 */
const kiln__backend_ops kiln__cpu_backend = {
    .name = "cpu",
    .probe = cpu_probe,
    .mem_alloc = cpu_mem_alloc,
    .mem_free = cpu_mem_free,
    .stream_create = cpu_stream_create,
    .stream_destroy = cpu_stream_destroy,
    .stream_idle = cpu_stream_idle,
    .stream_synchronize = cpu_stream_synchronize,
    .event_record = cpu_event_record,
    .event_done = cpu_event_done,
    .event_synchronize = cpu_event_synchronize,
    .stream_wait_event = cpu_stream_wait_event,
    .event_retain = cpu_event_retain,
    .event_release = cpu_event_release,
    .enqueue_host = cpu_enqueue_host,
    /* A CPU stream runs host tasks cheaply; no need to defer releases. */
    .enqueue_release = cpu_enqueue_host,
    .fill = cpu_fill,
    .copy_strided = cpu_copy_strided,
    .copy_to_host = cpu_copy_to_host,
    .copy_from_host = cpu_copy_from_host,
    .prelude = cpu_prelude,
    .build_id = kiln__cpu_build_id,
    .compile = kiln__cpu_compile,
    .load = kiln__cpu_load,
    .unload = kiln__cpu_unload,
    .launch = cpu_launch,
    .compile_for_target = kiln__cpu_compile_for_target,
    .target_prelude = cpu_target_prelude,
};

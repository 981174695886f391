/*
 * The CPU worker pool (PoCL's pthread scheduler, simplified): background
 * threads started on first use that help with whatever
 * kiln__cpu_parallel_for calls are in flight.
 *
 * Each call publishes a job on the pool's list and works on it itself.
 * Items are handed out in chunks through an atomic counter, so the pool
 * lock is taken only to join or leave a job, never per item. Several
 * streams may run jobs at once; idle workers join the oldest job that
 * still has items, and every caller finishes its own job even if no
 * worker ever comes, so nothing can deadlock.
 *
 * Sizing: KILN_CPU_THREADS (or the number of online processors) is the
 * number of threads one launch uses, the caller included, so the pool
 * starts one thread fewer and KILN_CPU_THREADS=1 runs everything on the
 * calling thread.
 */
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "backend/cpu/cpu.h"
#include "core/util.h"

/* More threads than this would only add contention. */
#define KILN__POOL_MAX_THREADS 1024
/* Stack of a pool thread: loop-mode kernels run directly on it. */
#define KILN__POOL_STACK_BYTES ((size_t)8 * 1024 * 1024)
/* Aim for this many chunks per thread, so a slow chunk near the end
 * leaves the others little to wait for. */
#define KILN__CHUNKS_PER_THREAD 8
#define KILN__MAX_CHUNK 1024

typedef struct pool_job {
  kiln__cpu_job_fn fn;
  void *ctx;
  uint64_t count;
  uint64_t chunk;
  _Atomic uint64_t next; /* first item not yet handed out */
  /* Guarded by the pool lock: */
  int helpers;           /* pool threads working on this job now */
  bool listed;           /* still on the pool's list (joinable) */
  pthread_cond_t done;   /* signalled when helpers drops to 0 */
  struct pool_job *prev, *next_job;
} pool_job;

static struct {
  pthread_once_t size_once;
  pthread_once_t start_once;
  int size;    /* threads per launch, caller included */
  int threads; /* background threads actually started */
  pthread_mutex_t lock;
  pthread_cond_t wake; /* a job was published */
  pool_job *head, *tail;
} pool = {PTHREAD_ONCE_INIT, PTHREAD_ONCE_INIT, 1, 0,
          PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL};

/* KILN_CPU_THREADS if it is a positive integer, else the processors. */
static void pool_size_init(void)
{
  const char *env = getenv("KILN_CPU_THREADS");
  long n = 0;

  if (env != NULL && *env != '\0') {
    char *end = NULL;
    n = strtol(env, &end, 10);
    if (*end != '\0')
      n = 0;
  }
  if (n <= 0)
    n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n <= 0)
    n = 1;
  pool.size = n > KILN__POOL_MAX_THREADS ? KILN__POOL_MAX_THREADS : (int)n;
}

/* The number of threads that run one launch, caller included. */
int kiln__cpu_pool_size(void)
{
  pthread_once(&pool.size_once, pool_size_init);
  return pool.size;
}

/* Takes items in chunks until none are left. */
static void job_work(pool_job *job, int worker)
{
  for (;;) {
    uint64_t first = atomic_fetch_add_explicit(&job->next, job->chunk,
                                               memory_order_relaxed);
    uint64_t end;
    if (first >= job->count)
      return;
    end = job->count - first < job->chunk ? job->count : first + job->chunk;
    for (uint64_t i = first; i < end; i++)
      job->fn(job->ctx, i, worker);
  }
}

/* Takes `job` off the list; call with the pool lock held. */
static void job_unlink(pool_job *job)
{
  if (!job->listed)
    return;
  if (job->prev != NULL)
    job->prev->next_job = job->next_job;
  else
    pool.head = job->next_job;
  if (job->next_job != NULL)
    job->next_job->prev = job->prev;
  else
    pool.tail = job->prev;
  job->listed = false;
}

/* The oldest job with items left, dropping exhausted ones on the way;
 * call with the pool lock held. */
static pool_job *job_find(void)
{
  while (pool.head != NULL) {
    pool_job *job = pool.head;
    if (atomic_load_explicit(&job->next, memory_order_relaxed) < job->count)
      return job;
    job_unlink(job);
  }
  return NULL;
}

static void *pool_thread(void *arg)
{
  int worker = (int)(intptr_t)arg;

  pthread_mutex_lock(&pool.lock);
  for (;;) {
    pool_job *job = job_find();
    if (job == NULL) {
      pthread_cond_wait(&pool.wake, &pool.lock);
      continue;
    }
    job->helpers++;
    pthread_mutex_unlock(&pool.lock);
    job_work(job, worker);
    pthread_mutex_lock(&pool.lock);
    /* The caller waits for this under the lock, so once it is unlocked
     * the job (on the caller's stack) may be gone: touch it no more. */
    if (--job->helpers == 0)
      pthread_cond_signal(&job->done);
  }
  return NULL;
}

/* Starts the background threads. They block every signal, so signals go
 * to the application's threads, and live as long as the process. If the
 * system refuses some, the pool works with fewer. */
static void pool_start(void)
{
  int want = kiln__cpu_pool_size() - 1;
  sigset_t all, old;
  pthread_attr_t attr;

  if (want <= 0 || pthread_attr_init(&attr) != 0)
    return;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, KILN__POOL_STACK_BYTES);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  for (int i = 0; i < want; i++) {
    pthread_t t;
    /* Worker 0 is the calling thread of each job. */
    if (pthread_create(&t, &attr, pool_thread, (void *)(intptr_t)(i + 1)))
      break;
    pool.threads++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
}

static uint64_t chunk_for(uint64_t count, int threads)
{
  uint64_t chunk = count / ((uint64_t)threads * KILN__CHUNKS_PER_THREAD);
  if (chunk < 1)
    chunk = 1;
  return chunk > KILN__MAX_CHUNK ? KILN__MAX_CHUNK : chunk;
}

/* Publishes the job and wakes as many workers as can have an item. */
static void job_publish(pool_job *job)
{
  uint64_t extra = job->count - 1;

  pthread_mutex_lock(&pool.lock);
  job->prev = pool.tail;
  job->next_job = NULL;
  if (pool.tail != NULL)
    pool.tail->next_job = job;
  else
    pool.head = job;
  pool.tail = job;
  job->listed = true;
  if (extra >= (uint64_t)pool.threads)
    pthread_cond_broadcast(&pool.wake);
  else
    for (uint64_t i = 0; i < extra; i++)
      pthread_cond_signal(&pool.wake);
  pthread_mutex_unlock(&pool.lock);
}

/* Runs fn over [0, count) with the pool's help; see cpu.h. */
kiln_status kiln__cpu_parallel_for(uint64_t count, kiln__cpu_job_fn fn,
                                   void *ctx)
{
  pool_job job;

  if (count == 0)
    return KILN_OK;
  pthread_once(&pool.start_once, pool_start);
  if (count == 1 || pool.threads == 0) {
    for (uint64_t i = 0; i < count; i++)
      fn(ctx, i, 0);
    return KILN_OK;
  }
  job.fn = fn;
  job.ctx = ctx;
  job.count = count;
  job.chunk = chunk_for(count, pool.threads + 1);
  atomic_init(&job.next, 0);
  job.helpers = 0;
  if (pthread_cond_init(&job.done, NULL) != 0) {
    /* Without a condition variable nobody can wait for helpers: run the
     * job alone, which is slower but correct. */
    for (uint64_t i = 0; i < count; i++)
      fn(ctx, i, 0);
    return KILN_OK;
  }
  job_publish(&job);
  job_work(&job, 0);
  pthread_mutex_lock(&pool.lock);
  job_unlink(&job);
  while (job.helpers > 0)
    pthread_cond_wait(&job.done, &pool.lock);
  pthread_mutex_unlock(&pool.lock);
  pthread_cond_destroy(&job.done);
  return KILN_OK;
}

/*
 * Running one launch on the CPU: threadgroups spread over the worker pool,
 * each group run either as one call that loops over its threads or as one
 * fiber per thread.
 *
 * Barrier strategy. A group whose kernel uses barriers or SIMD-group
 * functions runs every thread on its own fiber, all on the worker's OS
 * thread, scheduled cooperatively: a thread runs until it reaches a
 * barrier or a SIMD exchange (or returns), then picks the next runnable
 * thread in index order and switches straight to it (direct handoff). When
 * no thread is runnable, the thread that found none first completes every
 * pending SIMD round and, only if there was none, releases the barrier,
 * then hands off to the lowest-indexed thread so woken (or simply carries
 * on, if that is itself). A barrier thus costs one context switch per
 * thread and no locking at all: one group never spans two OS threads. The
 * worker's own context (the scheduler) only starts the group's first
 * fiber and is resumed by the fiber that finds nothing left to run.
 * Handing off directly also means every switch suspends and resumes at
 * the same call site (fiber_wait's jump), so the CPU's return-address
 * prediction stays right; bouncing through the scheduler made each switch
 * return somewhere other than where its call came from. Together that
 * took a barrier from about 31 ns to about 6 ns per thread (x86_64).
 *
 * Divergent SIMD calls. Metal runs a SIMD function with the lanes that
 * reach that very call together; lanes on another path of a branch are
 * inactive for it and make their own call later. The fibers know nothing
 * of branches, so each SIMD call names its call site (a number ordered as
 * the source: header, then body, by line and column; cpu_abi.h) and a
 * round only gathers lanes waiting at one site: when no fiber is runnable,
 * each SIMD group completes the round of its lanes waiting at the
 * *smallest* site, and its other waiting lanes stay blocked for a later
 * round. Source order stands in for the reconvergence order of structured
 * code: an if-branch's call runs before the code after the if, the if
 * before the else, a loop's call (iteration after iteration, with the
 * lanes still looping) before the code after the loop. Its limits: a site
 * is a place in the text, not a path, so
 *   - calls from one helper function (in the header) share that helper's
 *     site whoever calls it: two branches that both call the helper are
 *     merged into one round, as before this rule existed;
 *   - a helper in the header has a smaller site than any body code, so
 *     lanes that call it after a loop in the body may run their round
 *     before the lanes still in the loop run theirs;
 *   - code that jumps backwards in the text other than by a loop (goto),
 *     or calls on one line with a compiler that gives no column, can
 *     order rounds differently from Metal.
 * In each case every lane still takes part in exactly one round per call
 * it makes, and a round never mixes lanes of two sites.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/cpu/fiber.h"
#include "core/util.h"

#define KILN__SIMD_BUF_BYTES                                                 \
  ((size_t)KILN_CPU_MAX_THREADS * KILN_CPU_SIMD_SLOT_BYTES)
#define KILN__SIMD_GROUP_BYTES                                               \
  ((size_t)KILN_CPU_SIMD_WIDTH * KILN_CPU_SIMD_SLOT_BYTES)

/*
 * What one OS thread needs to run threadgroups. It belongs to the thread
 * (thread-local, created on first use, freed at thread exit), so two groups
 * can never share it: a thread runs one group at a time. Fiber states are
 * kept as one bit per lane in a mask per SIMD group; a lane in none of the
 * three masks has returned.
 */
typedef struct kiln__cpu_scratch {
  kiln_cpu_group group;
  const kiln__cpu_module *module;
  const kiln_cpu_launch *launch;

  kiln__fiber scheduler; /* the OS thread's own context */
  /* The scheduler while the group's first fiber is being entered, whose
   * stack bounds it learns for ASan; NULL afterwards. See fiber_main. */
  kiln__fiber *learn_from;
  kiln__fiber_stacks stacks;
  uint32_t num_sg;  /* SIMD groups in the running group */
  uint32_t next_sg; /* no SIMD group below this one has a runnable lane */
  uint32_t runnable[KILN_CPU_MAX_SIMDGROUPS];
  uint32_t at_simd[KILN_CPU_MAX_SIMDGROUPS];
  uint32_t at_barrier[KILN_CPU_MAX_SIMDGROUPS];
  /* The site of the lanes in at_simd while they all wait at one site;
   * valid only while site_mixed is false. */
  uint32_t at_site[KILN_CPU_MAX_SIMDGROUPS];
  bool site_mixed[KILN_CPU_MAX_SIMDGROUPS]; /* at_simd spans several sites */
  unsigned char simd_side[KILN_CPU_MAX_SIMDGROUPS]; /* buffer written now */

  void *simd_mem;                /* the allocation behind simd_buf */
  unsigned char *simd_buf[2];    /* 32-byte aligned double buffer */
  kiln__fiber fibers[KILN_CPU_MAX_THREADS];
} kiln__cpu_scratch;

/* ---- per-thread scratch -------------------------------------------------- */

static pthread_once_t scratch_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t scratch_key;
static bool scratch_key_ok;
static _Thread_local kiln__cpu_scratch *scratch_tls;

static void scratch_destroy(void *p)
{
  kiln__cpu_scratch *s = p;

  if (s == NULL)
    return;
  /* Runs on the exiting thread: forget the pointer too, in case a later
   * destructor launches work on this thread again. */
  scratch_tls = NULL;
  kiln__fiber_stacks_release(&s->stacks);
  kiln__free(s->simd_mem);
  kiln__free(s);
}

static void scratch_key_init(void)
{
  scratch_key_ok = pthread_key_create(&scratch_key, scratch_destroy) == 0;
}

/* Points each SIMD group's slots into side `side` of the double buffer for
 * writes and the other side for reads. */
static void simd_point(kiln__cpu_scratch *s, uint32_t sg, unsigned side)
{
  size_t off = (size_t)sg * KILN__SIMD_GROUP_BYTES;

  s->simd_side[sg] = (unsigned char)side;
  s->group.simd_write[sg] = s->simd_buf[side] + off;
  s->group.simd_read[sg] = s->simd_buf[side ^ 1u] + off;
}

static kiln__cpu_scratch *scratch_create(void)
{
  kiln__cpu_scratch *s;
  uintptr_t aligned;

  pthread_once(&scratch_key_once, scratch_key_init);
  if (!scratch_key_ok)
    return NULL;
  s = kiln__calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  /* Both halves in one allocation, over-allocated for 32-byte alignment
   * (the slots hold up to double4/long4). */
  s->simd_mem = kiln__malloc(2 * KILN__SIMD_BUF_BYTES + 31);
  if (s->simd_mem == NULL || pthread_setspecific(scratch_key, s) != 0) {
    kiln__free(s->simd_mem);
    kiln__free(s);
    return NULL;
  }
  aligned = ((uintptr_t)s->simd_mem + 31) & ~(uintptr_t)31;
  s->simd_buf[0] = (unsigned char *)aligned;
  s->simd_buf[1] = s->simd_buf[0] + KILN__SIMD_BUF_BYTES;
  /* Loop-mode kernels never exchange, but one that misuses a SIMD
   * function still writes and reads slots before noticing: keep them
   * valid. */
  for (uint32_t sg = 0; sg < KILN_CPU_MAX_SIMDGROUPS; sg++)
    simd_point(s, sg, 0);
  s->group.runtime = s;
  scratch_tls = s;
  return s;
}

/* The calling thread's scratch, created on first use; NULL if out of
 * memory. */
static kiln__cpu_scratch *scratch_get(void)
{
  kiln__cpu_scratch *s = scratch_tls;
  return s != NULL ? s : scratch_create();
}

/* Makes at least `threads` fiber stacks usable; they stay for later groups
 * and launches, so this is a no-op after the first large group. */
static bool scratch_fit_stacks(kiln__cpu_scratch *s, uint32_t threads)
{
  if (s->stacks.base == NULL &&
      !kiln__fiber_stacks_reserve(&s->stacks, KILN_CPU_MAX_THREADS))
    return false;
  return kiln__fiber_stacks_grow(&s->stacks, threads);
}

/* ---- loop mode ----------------------------------------------------------- */

/* The barrier and SIMD entry points of a loop-mode group. Its threads are
 * not fibers, so there is nothing to wait for: record the misuse, which
 * kiln__cpu_execute reports after the launch, and carry on. */
static void sync_in_loop(kiln_cpu_group *g)
{
  g->error = KILN_CPU_ERR_SYNC_IN_LOOP;
}

/* ---- fiber mode ---------------------------------------------------------- */

/* next_fiber's answer when every fiber of the group has returned. */
#define KILN__NO_FIBER UINT32_MAX

/* The lanes of `waiting` (SIMD group sg) whose call site is the smallest
 * (see the top of the file). */
static uint32_t first_site_lanes(const kiln__cpu_scratch *s, uint32_t sg,
                                 uint32_t waiting)
{
  const uint32_t *site = s->group.simd_site + sg * 32;
  uint32_t best = UINT32_MAX, lanes = 0;

  for (uint32_t m = waiting; m != 0; m &= m - 1) {
    uint32_t l = (uint32_t)__builtin_ctz(m);
    if (site[l] < best) {
      best = site[l];
      lanes = 0;
    }
    if (site[l] == best)
      lanes |= 1u << l;
  }
  return lanes;
}

/* Lanes that keep waiting after a partial round wrote their operands to
 * the side that now becomes the read side: carry them over to the new
 * write side, where their own round will read them after the next flip.
 * The slots are theirs alone, so nothing else is overwritten. */
static void carry_operands(kiln__cpu_scratch *s, uint32_t sg, uint32_t lanes)
{
  const unsigned char *from = s->group.simd_read[sg];
  unsigned char *to = s->group.simd_write[sg];

  for (uint32_t m = lanes; m != 0; m &= m - 1) {
    size_t off = (size_t)__builtin_ctz(m) * KILN_CPU_SIMD_SLOT_BYTES;
    memcpy(to + off, from + off, KILN_CPU_SIMD_SLOT_BYTES);
  }
}

/*
 * Called when no fiber is runnable. Completes one pending round in every
 * SIMD group that has one: its participants are the lanes waiting in
 * simd_sync at the smallest call site (the others returned, wait at a
 * barrier, or wait at another site, and are inactive for this round).
 * The double buffer flips so the lanes read what they just wrote, and the
 * next round writes the other side. That is safe: round k+1 can only
 * complete when no fiber is runnable, i.e. after every lane of round k
 * has resumed, read its result and blocked or returned again; so when
 * round k+1's writers reuse round k's side (in round k+2), nobody still
 * reads it. Returns whether any lane was woken.
 */
static bool release_simd_rounds(kiln__cpu_scratch *s)
{
  bool woke = false;

  for (uint32_t sg = 0; sg < s->num_sg; sg++) {
    uint32_t waiting = s->at_simd[sg];
    uint32_t go = waiting;
    if (waiting == 0)
      continue;
    if (s->site_mixed[sg])
      go = first_site_lanes(s, sg, waiting);
    s->group.simd_active[sg] = go;
    simd_point(s, sg, s->simd_side[sg] ^ 1u);
    /* Lanes left behind keep site_mixed set, so the next round scans
     * their sites again. */
    s->at_simd[sg] = waiting & ~go;
    if (waiting != go)
      carry_operands(s, sg, waiting & ~go);
    s->runnable[sg] = go;
    woke = true;
  }
  return woke;
}

/* Called when no fiber is runnable and no SIMD round is pending: every
 * live fiber waits at the barrier (returned ones count as arrived), so
 * all of them go on. Returns whether any fiber was left. */
static bool release_barrier(kiln__cpu_scratch *s)
{
  uint32_t any = 0;

  for (uint32_t sg = 0; sg < s->num_sg; sg++) {
    s->runnable[sg] = s->at_barrier[sg];
    any |= s->at_barrier[sg];
    s->at_barrier[sg] = 0;
  }
  return any != 0;
}

/*
 * Takes the lowest-indexed runnable fiber out of the runnable set and
 * returns its index; if none is runnable, first wakes the lanes of the
 * pending SIMD rounds or, if there are none, the barrier's waiters.
 * Returns KILN__NO_FIBER when every fiber has returned.
 *
 * This is the order the scheduler always used: between two releases the
 * runnable set only shrinks (a running fiber can only block or finish,
 * never wake another), so taking the lowest bit each time runs the woken
 * fibers in index order, and next_sg only moves up until the next
 * release.
 */
static inline uint32_t next_fiber(kiln__cpu_scratch *s)
{
  for (;;) {
    for (uint32_t sg = s->next_sg; sg < s->num_sg; sg++) {
      uint32_t mask = s->runnable[sg];
      if (mask != 0) {
        s->runnable[sg] = mask & (mask - 1);
        s->next_sg = sg;
        return sg * 32 + (uint32_t)__builtin_ctz(mask);
      }
    }
    s->next_sg = 0;
    if (!release_simd_rounds(s) && !release_barrier(s))
      return KILN__NO_FIBER;
  }
}

/* The running fiber `i` has just recorded itself as waiting: hands off to
 * the next fiber to run. Since `i` waits, some fiber is always left, and
 * when the release wakes `i` first there is nothing to switch. Whoever
 * resumes `i` has set group.current to `i`. */
static inline void fiber_wait(kiln__cpu_scratch *s, uint32_t i)
{
  uint32_t j = next_fiber(s);

  if (j == i)
    return;
  s->group.current = j;
  kiln__fiber_jump(&s->fibers[i], &s->fibers[j]);
}

static void fiber_barrier(kiln_cpu_group *g)
{
  kiln__cpu_scratch *s = g->runtime;
  uint32_t i = g->current;

  s->at_barrier[i / 32] |= 1u << (i % 32);
  fiber_wait(s, i);
}

/* Records lane i as waiting at its call site; the first lane to wait in
 * a SIMD group sets the site, and any other site marks the group mixed
 * (which release_simd_rounds then sorts out). */
static void fiber_simd_sync(kiln_cpu_group *g)
{
  kiln__cpu_scratch *s = g->runtime;
  uint32_t i = g->current, sg = i / 32;
  uint32_t site = g->simd_site[i];

  if (s->at_simd[sg] == 0) {
    s->at_site[sg] = site;
    s->site_mixed[sg] = false;
  } else if (site != s->at_site[sg]) {
    s->site_mixed[sg] = true;
  }
  s->at_simd[sg] |= 1u << (i % 32);
  fiber_wait(s, i);
}

/*
 * Every fiber starts here; the thread index is `current`, which whoever
 * switched here set just before. A fresh fiber is entered either from the
 * scheduler (the group's first fiber) or from another fiber (direct
 * handoff). Under ASan a jump must name its target's stack bounds, and
 * only the scheduler's are not known in advance: the group's first fiber
 * learns them, as learn_from says, before any fiber can jump back there.
 */
static void fiber_main(void *arg)
{
  kiln__cpu_scratch *s = arg;
  uint32_t i, j;

  kiln__fiber_entered(s->learn_from);
  s->learn_from = NULL;
  i = s->group.current;
  s->module->run_thread(s->launch, &s->group, i);
  /* In none of the state masks now: returned, so inactive in SIMD rounds
   * and counted as arrived at barriers. The stack is not reused before
   * the next group, so leaving it for another fiber is safe. */
  j = next_fiber(s);
  if (j == KILN__NO_FIBER)
    kiln__fiber_exit(&s->fibers[i], &s->scheduler);
  s->group.current = j;
  kiln__fiber_exit(&s->fibers[i], &s->fibers[j]);
}

/* Runs the group in s->group as fibers; the stacks are already usable. */
static void run_fibers(kiln__cpu_scratch *s)
{
  kiln_cpu_group *g = &s->group;
  uint32_t n = g->num_threads;
  uint32_t num_sg = (n + 31) / 32;
  uint64_t fp_control;

  for (uint32_t sg = 0; sg < num_sg; sg++) {
    uint32_t lanes = n - sg * 32 < 32 ? n - sg * 32 : 32;
    uint32_t mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    s->runnable[sg] = mask;
    s->at_simd[sg] = 0;
    s->at_barrier[sg] = 0;
    s->site_mixed[sg] = false;
    g->simd_active[sg] = mask;
    simd_point(s, sg, 0);
  }
  s->num_sg = num_sg;
  s->next_sg = 0;
  for (uint32_t i = 0; i < n; i++) {
    kiln__fiber_stacks_assign(&s->stacks, i, &s->fibers[i]);
    kiln__fiber_start(&s->fibers[i], fiber_main, s);
  }
  /* The fibers run in this thread's FP environment, and whatever they do
   * to it ends with the group (fiber.h). */
  fp_control = kiln__fiber_fp_control();
  s->learn_from = &s->scheduler;
  g->current = next_fiber(s); /* thread 0: a group has at least one */
  /* Returns when the last fiber finds nothing left to run. */
  kiln__fiber_jump(&s->scheduler, &s->fibers[g->current]);
  kiln__fiber_set_fp_control(fp_control);
}

/* ---- the launch ---------------------------------------------------------- */

/* Why a group could not run at all. */
enum { EXEC_OK = 0, EXEC_NO_SCRATCH = 1, EXEC_NO_STACKS = 2 };

typedef struct exec_job {
  const kiln__cpu_module *module;
  const kiln_cpu_launch *launch;
  uint32_t tg_threads; /* threads in a full group */
  atomic_int sync_error; /* first KILN_CPU_ERR_* a group reported */
  atomic_int failure;    /* first EXEC_* failure; later groups skip */
} exec_job;

/* Fills the group's position and real size from its linear index (x
 * fastest); the last group in a dimension may be smaller. */
static void fill_group(const kiln_cpu_launch *L, uint64_t item,
                       kiln_cpu_group *g)
{
  uint64_t gx = L->groups[0], gy = L->groups[1];

  g->group_pos[0] = (uint32_t)(item % gx);
  g->group_pos[1] = (uint32_t)(item / gx % gy);
  g->group_pos[2] = (uint32_t)(item / gx / gy);
  g->num_threads = 1;
  for (int d = 0; d < 3; d++) {
    uint32_t left = L->grid[d] - g->group_pos[d] * L->tg[d];
    g->group_size[d] = left < L->tg[d] ? left : L->tg[d];
    g->num_threads *= g->group_size[d];
  }
  g->current = 0;
  g->error = KILN_CPU_ERR_NONE;
}

static void exec_fail(exec_job *job, int why)
{
  int none = EXEC_OK;
  atomic_compare_exchange_strong(&job->failure, &none, why);
}

/* Runs threadgroup `item` on the calling OS thread (a kiln__cpu_job_fn). */
static void exec_group(void *ctx, uint64_t item, int worker)
{
  exec_job *job = ctx;
  const kiln__cpu_module *m = job->module;
  kiln__cpu_scratch *s;
  kiln_cpu_group *g;

  (void)worker; /* scratch is per OS thread, not per worker index */
  if (atomic_load_explicit(&job->failure, memory_order_relaxed) != EXEC_OK)
    return;
  s = scratch_get();
  if (s == NULL) {
    exec_fail(job, EXEC_NO_SCRATCH);
    return;
  }
  g = &s->group;
  fill_group(job->launch, item, g);
  s->module = m;
  s->launch = job->launch;
  if (m->flags & KILN_CPU_NEEDS_FIBERS) {
    if (!scratch_fit_stacks(s, job->tg_threads)) {
      exec_fail(job, EXEC_NO_STACKS);
      return;
    }
    g->barrier = fiber_barrier;
    g->simd_sync = fiber_simd_sync;
    run_fibers(s);
  } else {
    g->barrier = sync_in_loop;
    g->simd_sync = sync_in_loop;
    m->run_group(job->launch, g);
  }
  if (g->error != KILN_CPU_ERR_NONE) {
    int none = KILN_CPU_ERR_NONE;
    atomic_compare_exchange_strong(&job->sync_error, &none, g->error);
  }
}

/* Checks what the caller promised about the launch; a violation is a bug
 * in kiln, not in the user's code. */
static kiln_status check_launch(const kiln__cpu_module *module,
                                const kiln_cpu_launch *L, const char *name,
                                uint64_t *groups)
{
  uint64_t total = 1, threads = 1;

  /* An empty grid runs nothing (the core refuses it earlier anyway). */
  if (L->grid[0] == 0 || L->grid[1] == 0 || L->grid[2] == 0) {
    *groups = 0;
    return KILN_OK;
  }
  for (int d = 0; d < 3; d++) {
    uint64_t want = L->tg[d] == 0
                        ? 0
                        : ((uint64_t)L->grid[d] + L->tg[d] - 1) / L->tg[d];
    if (L->tg[d] == 0 || L->tg[d] > L->grid[d] || L->groups[d] != want)
      return kiln__error(KILN_ERROR_INTERNAL,
                         "kernel '%s' reached the CPU with an inconsistent "
                         "launch size in dimension %d (grid %u, "
                         "threadgroup %u, %u threadgroups)",
                         name, d, L->grid[d], L->tg[d], L->groups[d]);
    threads *= L->tg[d];
    if (__builtin_mul_overflow(total, (uint64_t)L->groups[d], &total))
      return kiln__error(KILN_ERROR_INVALID_ARGUMENT,
                         "kernel '%s' has more threadgroups than can be "
                         "counted in 64 bits", name);
  }
  if (threads > KILN_CPU_MAX_THREADS)
    return kiln__error(KILN_ERROR_INTERNAL,
                       "kernel '%s' reached the CPU with %llu threads per "
                       "threadgroup, more than the limit of %u",
                       name, (unsigned long long)threads,
                       KILN_CPU_MAX_THREADS);
  if ((module->flags & KILN_CPU_NEEDS_FIBERS) ? module->run_thread == NULL
                                              : module->run_group == NULL)
    return kiln__error(KILN_ERROR_INTERNAL,
                       "kernel '%s' was loaded without the entry point its "
                       "execution mode needs", name);
  *groups = total;
  return KILN_OK;
}

/* Room on a fiber stack kept for the runtime's own frames (fiber_main,
 * the entry glue, the barrier and SIMD calls) and the compiler's
 * estimate being off a little. */
#define KILN__STACK_MARGIN ((uint64_t)32 * 1024)

/* Whether the module's threads fit their stacks; see cpu.h. */
kiln_status kiln__cpu_check_stack(const kiln__cpu_module *module,
                                  const char *name)
{
  uint64_t have = kiln__fiber_stack_bytes();

  if (!(module->flags & KILN_CPU_NEEDS_FIBERS) ||
      module->stack_bytes + KILN__STACK_MARGIN <= have)
    return KILN_OK;
  return kiln__error(KILN_ERROR_LAUNCH,
                     "kernel '%s' needs about %llu KiB of stack per thread "
                     "(a large per-thread array?), more than the %llu KiB "
                     "each thread has when it runs as a fiber; move large "
                     "arrays to threadgroup or device memory",
                     name,
                     (unsigned long long)((module->stack_bytes + 1023) / 1024),
                     (unsigned long long)(have / 1024));
}

/* Readies the calling thread before anything runs, so the common failures
 * (no memory for scratch or stacks) are refused with nothing written. */
static kiln_status prepare_caller(const kiln__cpu_module *module,
                                  uint32_t tg_threads, const char *name)
{
  kiln__cpu_scratch *s = scratch_get();

  if (s == NULL)
    return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                       "out of memory while preparing a CPU worker to run "
                       "kernel '%s'", name);
  if ((module->flags & KILN_CPU_NEEDS_FIBERS) &&
      !scratch_fit_stacks(s, tg_threads))
    return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                       "out of memory while mapping %u fiber stacks to run "
                       "the threads of kernel '%s'", tg_threads, name);
  return KILN_OK;
}

static kiln_status report(exec_job *job, const char *name)
{
  int failure = atomic_load(&job->failure);
  int sync = atomic_load(&job->sync_error);

  if (failure == EXEC_NO_SCRATCH)
    return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                       "out of memory while preparing a CPU worker to run "
                       "kernel '%s'; some threadgroups did not run", name);
  if (failure == EXEC_NO_STACKS)
    return kiln__error(KILN_ERROR_OUT_OF_MEMORY,
                       "out of memory while mapping fiber stacks for kernel "
                       "'%s'; some threadgroups did not run", name);
  if (sync == KILN_CPU_ERR_SYNC_IN_LOOP)
    return kiln__error(KILN_ERROR_LAUNCH,
                       "kernel '%s' called threadgroup_barrier or a "
                       "SIMD-group function although kiln compiled it to run "
                       "its threads as a plain loop, because kiln detects "
                       "these calls by their names in the source and found "
                       "none; write the call by name in the body or header "
                       "rather than through a macro or function pointer",
                       name);
  if (sync != KILN_CPU_ERR_NONE)
    return kiln__error(KILN_ERROR_LAUNCH,
                       "kernel '%s' reported an unknown runtime error (code "
                       "%d) from its CPU code", name, sync);
  return KILN_OK;
}

/* Runs a whole launch; see cpu.h. */
kiln_status kiln__cpu_execute(const kiln__cpu_module *module,
                              const kiln_cpu_launch *launch,
                              const char *kernel_name)
{
  const char *name = kernel_name != NULL ? kernel_name : "(unnamed)";
  uint64_t groups = 0;
  exec_job job;
  kiln_status st;

  st = check_launch(module, launch, name, &groups);
  if (st == KILN_OK && groups != 0)
    st = kiln__cpu_check_stack(module, name);
  if (st != KILN_OK || groups == 0)
    return st;
  job.module = module;
  job.launch = launch;
  job.tg_threads = launch->tg[0] * launch->tg[1] * launch->tg[2];
  atomic_init(&job.sync_error, KILN_CPU_ERR_NONE);
  atomic_init(&job.failure, EXEC_OK);
  st = prepare_caller(module, job.tg_threads, name);
  if (st != KILN_OK)
    return st;
  if (groups == 1)
    exec_group(&job, 0, 0); /* no pool round trip for tiny launches */
  else if ((st = kiln__cpu_parallel_for(groups, exec_group, &job)) != KILN_OK)
    return st;
  return report(&job, name);
}

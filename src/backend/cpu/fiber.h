/*
 * Cooperative fibers for the CPU backend: a hand-written context switch
 * (fiber_switch.S) and the stacks it runs on (fiber.c).
 *
 * A fiber is a stack plus the stack pointer saved when it last switched
 * away. The callee-saved registers live on the fiber's own stack, so a
 * switch is a handful of pushes, one stack-pointer swap and a handful of
 * pops: no system call, no signal mask, no ucontext. All fibers of one
 * set run on one OS thread; nothing here is thread-safe, by design.
 *
 * Under AddressSanitizer every switch is announced with
 * __sanitizer_start_switch_fiber / __sanitizer_finish_switch_fiber so ASan
 * knows which stack is live; this is why switches go through
 * kiln__fiber_jump() and friends rather than the bare assembly routine.
 * Without ASan kiln__fiber_jump is an inline call of that routine.
 *
 * Any context may jump to any other (fiber to fiber included), as long as
 * every jump's target is suspended (or freshly started) and each fiber
 * set is used by one OS thread only.
 *
 * The floating-point control state is not part of a switch; see
 * kiln__fiber_fp_control below.
 */
#ifndef KILN_BACKEND_CPU_FIBER_H
#define KILN_BACKEND_CPU_FIBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if !defined(__x86_64__) && !defined(__aarch64__)
#error "kiln's CPU fibers support x86_64 (System V) and aarch64 only"
#endif

#if defined(__SANITIZE_ADDRESS__)
#define KILN__FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KILN__FIBER_ASAN 1
#endif
#endif

/* A fiber's entry function; it must never return (it ends with
 * kiln__fiber_exit). */
typedef void (*kiln__fiber_entry)(void *arg);

/*
 * One execution context. For a fiber, stack_lo/stack_size describe its
 * stack; for the OS thread's own context (the scheduler) they are learnt
 * from ASan on the first switch and only matter under ASan.
 */
typedef struct kiln__fiber {
  void *sp;               /* saved stack pointer while switched away */
  const void *stack_lo;   /* lowest usable address of the stack */
  size_t stack_size;      /* usable bytes above stack_lo */
  void *asan_fake_stack;  /* ASan's fake-stack handle while suspended */
} kiln__fiber;

/*
 * Makes `f` (whose stack_lo/stack_size are set) start at fn(arg) on its
 * next kiln__fiber_jump. Any previous contents of the stack are discarded,
 * so a finished fiber's stack can be reused for a new one.
 */
void kiln__fiber_start(kiln__fiber *f, kiln__fiber_entry fn, void *arg);

/* In fiber_switch.S: saves the callee-saved registers on the running
 * stack, stores its pointer into *save_sp and resumes the frame at to_sp. */
void kiln__fiber_switch(void **save_sp, void *to_sp);

/*
 * Saves the running context into `from` and resumes `to`; returns when some
 * context jumps back to `from`.
 */
#if defined(KILN__FIBER_ASAN)
void kiln__fiber_jump(kiln__fiber *from, kiln__fiber *to);
#else
static inline void kiln__fiber_jump(kiln__fiber *from, kiln__fiber *to)
{
  kiln__fiber_switch(&from->sp, to->sp);
}
#endif

/*
 * Leaves the running fiber `from` for good and resumes `to`. Never returns;
 * `from`'s stack may then be reused by kiln__fiber_start.
 */
void kiln__fiber_exit(kiln__fiber *from, kiln__fiber *to)
    __attribute__((noreturn));

/*
 * The first thing a fiber's entry function calls: completes the switch
 * that started it. If `from` is not NULL it must be the context that
 * jumped here; its stack bounds (which the OS thread's own context cannot
 * know otherwise) are recorded so that jumping back to it is announced
 * correctly under ASan. A no-op without ASan.
 */
void kiln__fiber_entered(kiln__fiber *from);

/* ---- floating-point control state ---------------------------------------
 *
 * The MXCSR and x87 control word (x86_64) or FPCR (aarch64) are
 * callee-saved in the ABI, yet a switch does not carry them: the caller
 * that runs a set of fibers reads the state once with
 * kiln__fiber_fp_control() before the first jump into the set and puts it
 * back with kiln__fiber_set_fp_control() after the last jump out. This is
 * correct because
 *   - every fiber of a set runs the same kernel and starts in the
 *     environment of the OS thread that runs it, exactly the state a
 *     per-switch save would have given it;
 *   - Metal has no per-thread floating-point environment, so a kernel
 *     never changes rounding or flush-to-zero in one thread but not in
 *     the others (a fast-math object that sets FTZ/DAZ does so in a
 *     constructor when it is loaded, not per thread);
 *   - the runtime code that runs between fibers (exec.c's scheduling) is
 *     integer-only and never changes the state;
 *   - the restore after the set leaves the OS thread's state as its
 *     caller had it, which is all the ABI's callee-saved rule asks, even
 *     if some kernel did change the state.
 * A kernel that changes it anyway only shares the change with the other
 * threads of its own group.
 */

/* The running thread's floating-point control state, packed. */
uint64_t kiln__fiber_fp_control(void);

/* Restores a state read by kiln__fiber_fp_control(); writes (which
 * serialise the pipeline) only if it differs from the running one. */
void kiln__fiber_set_fp_control(uint64_t state);

/* ---- stacks ------------------------------------------------------------- */

/*
 * A reservation of address space for up to `capacity` fiber stacks, each
 * below a guard page. Stacks are made usable on demand (grow) and kept for
 * reuse until release.
 */
typedef struct kiln__fiber_stacks {
  unsigned char *base; /* the reservation; NULL before reserve */
  size_t map_bytes;    /* bytes reserved */
  size_t slot_bytes;   /* guard page + stack */
  size_t guard_bytes;
  uint32_t capacity;   /* stacks the reservation can hold */
  uint32_t usable;     /* stacks made readable and writable so far */
} kiln__fiber_stacks;

/* The usable size of each fiber stack, in bytes. */
size_t kiln__fiber_stack_bytes(void);

/* Reserves address space for `capacity` stacks (none usable yet). Returns
 * false if the system refuses the mapping. */
bool kiln__fiber_stacks_reserve(kiln__fiber_stacks *s, uint32_t capacity);

/* Makes the first `count` stacks usable (count <= capacity). Returns false
 * if the system refuses; stacks made usable before stay usable. */
bool kiln__fiber_stacks_grow(kiln__fiber_stacks *s, uint32_t count);

/* Points f->stack_lo/stack_size at stack `index` (< usable). */
void kiln__fiber_stacks_assign(const kiln__fiber_stacks *s, uint32_t index,
                               kiln__fiber *f);

/* Unmaps everything; `s` may be reserved again afterwards. */
void kiln__fiber_stacks_release(kiln__fiber_stacks *s);

#endif /* KILN_BACKEND_CPU_FIBER_H */

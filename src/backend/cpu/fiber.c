/*
 * Fiber stacks and the C side of the context switch. The switch itself is
 * in fiber_switch.S; this file lays out a new fiber's first frame to match
 * it and tells AddressSanitizer about every change of stack.
 */
#include "backend/cpu/fiber.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(KILN__FIBER_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

/* In fiber_switch.S (kiln__fiber_switch is declared in fiber.h). */
void kiln__fiber_trampoline(void);

/*
 * Each fiber gets 256 KiB. A Metal thread has very little private memory,
 * so kernels keep their per-thread arrays small; 256 KiB leaves room for
 * those, deep helper calls, the C library's math and ASan's larger frames.
 * The stacks are reserved with MAP_NORESERVE and only touched pages become
 * resident, so 1024 of them (256 MiB of address space per worker) cost
 * memory only for what kernels really use. A fiber that overruns its stack
 * hits the guard page below it and faults rather than corrupting a
 * neighbour.
 */
#define KILN__FIBER_STACK_BYTES ((size_t)256 * 1024)

/* Words in the frame that kiln__fiber_switch pops (see fiber_switch.S). */
#if defined(__x86_64__)
#define KILN__FRAME_WORDS 7 /* r15..r12, rbx, rbp, return */
#elif defined(__aarch64__)
#define KILN__FRAME_WORDS 20 /* x19..x30, d8..d15 */
#endif

/* The usable size of each stack (before cache colouring, see below). */
size_t kiln__fiber_stack_bytes(void) { return KILN__FIBER_STACK_BYTES; }

/* See fiber.h for why this is not part of each switch. On x86_64 the
 * MXCSR is in the low half and the x87 control word above it. */
uint64_t kiln__fiber_fp_control(void)
{
#if defined(__x86_64__)
  uint32_t mxcsr;
  uint16_t fpucw;
  __asm__ volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(fpucw));
  return (uint64_t)mxcsr | ((uint64_t)fpucw << 32);
#elif defined(__aarch64__)
  uint64_t fpcr;
  __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
  return fpcr;
#endif
}

void kiln__fiber_set_fp_control(uint64_t state)
{
  if (kiln__fiber_fp_control() == state)
    return;
#if defined(__x86_64__)
  {
    uint32_t mxcsr = (uint32_t)state;
    uint16_t fpucw = (uint16_t)(state >> 32);
    __asm__ volatile("ldmxcsr %0\n\tfldcw %1" : : "m"(mxcsr), "m"(fpucw));
  }
#elif defined(__aarch64__)
  __asm__ volatile("msr fpcr, %0" : : "r"(state));
#endif
}

/*
 * Builds, at the top of the fiber's stack, the frame kiln__fiber_switch
 * pops, so the first switch "returns" into kiln__fiber_trampoline with the
 * entry and its argument in callee-saved registers.
 */
void kiln__fiber_start(kiln__fiber *f, kiln__fiber_entry fn, void *arg)
{
  uintptr_t top = (uintptr_t)f->stack_lo + f->stack_size;
  uint64_t *frame;

#if defined(KILN__FIBER_ASAN)
  /* A finished fiber never unwound its frames, so their redzones are
   * still poisoned; clear them before the stack is used again. */
  ASAN_UNPOISON_MEMORY_REGION(f->stack_lo, f->stack_size);
#endif
  /* 16 bytes of slack above the frame give debuggers a zero word to stop
   * at. The frame ends at a 16-byte boundary, so the stack pointer is
   * 16-byte aligned once it is popped (x86_64: after the `ret` into the
   * trampoline, as a call requires; aarch64: always). */
  top = (top & ~(uintptr_t)15) - 16;
  frame = (uint64_t *)top - KILN__FRAME_WORDS;
  memset(frame, 0, (KILN__FRAME_WORDS + 2) * sizeof(uint64_t));
#if defined(__x86_64__)
  frame[2] = (uint64_t)(uintptr_t)arg; /* r13 */
  frame[3] = (uint64_t)(uintptr_t)fn;  /* r12 */
  frame[6] = (uint64_t)(uintptr_t)kiln__fiber_trampoline;
#elif defined(__aarch64__)
  frame[0] = (uint64_t)(uintptr_t)fn;  /* x19 */
  frame[1] = (uint64_t)(uintptr_t)arg; /* x20 */
  frame[11] = (uint64_t)(uintptr_t)kiln__fiber_trampoline; /* x30 */
#endif
  f->sp = frame;
  f->asan_fake_stack = NULL;
}

#if defined(KILN__FIBER_ASAN)
/* Switches contexts, announcing the new stack to ASan before and
 * completing the announcement once control comes back (without ASan this
 * is the inline function in fiber.h). */
void kiln__fiber_jump(kiln__fiber *from, kiln__fiber *to)
{
  __sanitizer_start_switch_fiber(&from->asan_fake_stack, to->stack_lo,
                                 to->stack_size);
  kiln__fiber_switch(&from->sp, to->sp);
  __sanitizer_finish_switch_fiber(from->asan_fake_stack, NULL, NULL);
}
#endif

/* Like kiln__fiber_jump, but a NULL fake-stack slot tells ASan that the
 * fiber is gone, so it frees the fiber's fake stack. */
void kiln__fiber_exit(kiln__fiber *from, kiln__fiber *to)
{
#if defined(KILN__FIBER_ASAN)
  __sanitizer_start_switch_fiber(NULL, to->stack_lo, to->stack_size);
#endif
  kiln__fiber_switch(&from->sp, to->sp);
  __builtin_unreachable();
}

/* Completes the switch that started this fiber and, if asked, learns the
 * bounds of the stack it came from (the OS thread's), for jumps back. */
void kiln__fiber_entered(kiln__fiber *from)
{
#if defined(KILN__FIBER_ASAN)
  const void *lo = NULL;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(NULL, &lo, &size);
  if (from != NULL) {
    from->stack_lo = lo;
    from->stack_size = size;
  }
#else
  (void)from;
#endif
}

/* ---- stacks ------------------------------------------------------------- */

static size_t page_bytes(void)
{
  long page = sysconf(_SC_PAGESIZE);
  return page > 0 ? (size_t)page : 4096;
}

/* The whole reservation starts inaccessible: guard pages simply stay so,
 * and stacks are opened one by one as groups need them. */
bool kiln__fiber_stacks_reserve(kiln__fiber_stacks *s, uint32_t capacity)
{
  size_t page = page_bytes();
  size_t stack = (KILN__FIBER_STACK_BYTES + page - 1) / page * page;
  size_t slot = page + stack;
  void *base;

  memset(s, 0, sizeof(*s));
  if (capacity == 0 || slot > SIZE_MAX / capacity)
    return false;
  base = mmap(NULL, slot * capacity, PROT_NONE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED)
    return false;
  s->base = base;
  s->map_bytes = slot * capacity;
  s->slot_bytes = slot;
  s->guard_bytes = page;
  s->capacity = capacity;
  return true;
}

/* Opens stacks [usable, count) for reading and writing, one mprotect each;
 * their guard pages stay inaccessible. */
bool kiln__fiber_stacks_grow(kiln__fiber_stacks *s, uint32_t count)
{
  if (count > s->capacity)
    return false;
  while (s->usable < count) {
    unsigned char *lo = s->base + (size_t)s->usable * s->slot_bytes +
                        s->guard_bytes;
    if (mprotect(lo, s->slot_bytes - s->guard_bytes,
                 PROT_READ | PROT_WRITE) != 0)
      return false;
    s->usable++;
  }
  return true;
}

/*
 * The stacks are a whole number of pages apart, so their tops would all
 * fall into the same few cache sets and evict each other on every switch.
 * Starting each fiber a different number of cache lines below its top
 * (varying the bits above those the page offset of the slot already
 * varies) spreads the hot frames over the cache.
 */
void kiln__fiber_stacks_assign(const kiln__fiber_stacks *s, uint32_t index,
                               kiln__fiber *f)
{
  size_t color = (size_t)((index >> 4) & 63) * 64;

  f->stack_lo = s->base + (size_t)index * s->slot_bytes + s->guard_bytes;
  f->stack_size = s->slot_bytes - s->guard_bytes - color;
  f->sp = NULL;
  f->asan_fake_stack = NULL;
}

/* Unmaps the whole reservation, stacks and guards alike. */
void kiln__fiber_stacks_release(kiln__fiber_stacks *s)
{
  if (s->base != NULL)
    munmap(s->base, s->map_bytes);
  memset(s, 0, sizeof(*s));
}

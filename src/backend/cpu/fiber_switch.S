/*
 * The fiber context switch (see fiber.h):
 *
 *   void kiln__fiber_switch(void **save_sp, void *to_sp);
 *
 * pushes the callee-saved general-purpose (and, on aarch64, FP/SIMD)
 * registers onto the running stack, stores the stack pointer into
 * *save_sp, loads to_sp and pops the same frame from there. Caller-saved
 * registers need no saving: the C caller already assumes the call
 * clobbers them.
 *
 * The floating-point control state (MXCSR and the x87 control word;
 * FPCR) is callee-saved too, but deliberately not switched here: all
 * fibers of one set run the same kernel on one OS thread in one FP
 * environment, so it is saved once before a group's fibers run and
 * restored once after (kiln__fiber_fp_control and
 * kiln__fiber_set_fp_control, fiber.h says why that is correct).
 * ldmxcsr/fldcw (and msr fpcr) serialise the pipeline on many cores;
 * dropping them cut a barrier round trip by about a tenth on x86_64.
 *
 * A new fiber's stack is laid out by kiln__fiber_start (fiber.c) as such a
 * frame whose return address is kiln__fiber_trampoline and whose first two
 * callee-saved registers hold the entry function and its argument.
 *
 * This is a separate assembly file, not top-level asm in fiber.c, so the
 * object carries no GNU property note: switching stacks is incompatible
 * with a hardware shadow stack (CET), and the linker must not mark the
 * library as shadow-stack compatible.
 */

#if defined(__APPLE__)
#define KILN_SYM(name) _##name
#define KILN_FUNC(name)                                                     \
  .private_extern KILN_SYM(name) ;                                          \
  .globl KILN_SYM(name) ;                                                   \
  .p2align 4 ;                                                              \
  KILN_SYM(name):
#define KILN_END(name)
#else
#define KILN_SYM(name) name
#define KILN_FUNC(name)                                                     \
  .globl name ;                                                             \
  .hidden name ;                                                            \
  .type name, %function ;                                                   \
  .p2align 4 ;                                                              \
  name:
#define KILN_END(name) .size name, . - name
#endif

#if defined(__x86_64__)

/* Frame, from the saved stack pointer up:
 *   +0 r15, +8 r14, +16 r13, +24 r12, +32 rbx, +40 rbp, +48 return address
 * (7 words: a frame starts 8 bytes off 16-byte alignment, as after a
 * call, so the `ret` leaves the stack pointer 16-byte aligned). */
  .text
KILN_FUNC(kiln__fiber_switch)
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
KILN_END(kiln__fiber_switch)

/* Entered by the `ret` above on a fresh stack: r12 = entry, r13 = argument,
 * and the stack pointer 16-byte aligned, as a call requires. The entry
 * never returns; ud2 traps if it does. */
KILN_FUNC(kiln__fiber_trampoline)
  .cfi_startproc
  .cfi_undefined rip
  movq %r13, %rdi
  callq *%r12
  ud2
  .cfi_endproc
KILN_END(kiln__fiber_trampoline)

#elif defined(__aarch64__)

/* Frame, from the saved stack pointer up (160 bytes, keeps sp 16-aligned):
 *   +0 x19 x20, +16 x21 x22, +32 x23 x24, +48 x25 x26, +64 x27 x28,
 *   +80 x29 x30 (frame pointer, return address), +96 d8 d9, +112 d10 d11,
 *   +128 d12 d13, +144 d14 d15.
 * AAPCS64 makes only the low halves of v8-v15 callee-saved. */
  .text
KILN_FUNC(kiln__fiber_switch)
  sub sp, sp, #160
  stp x19, x20, [sp, #0]
  stp x21, x22, [sp, #16]
  stp x23, x24, [sp, #32]
  stp x25, x26, [sp, #48]
  stp x27, x28, [sp, #64]
  stp x29, x30, [sp, #80]
  stp d8, d9, [sp, #96]
  stp d10, d11, [sp, #112]
  stp d12, d13, [sp, #128]
  stp d14, d15, [sp, #144]
  mov x10, sp
  str x10, [x0]
  mov sp, x1
  ldp x19, x20, [sp, #0]
  ldp x21, x22, [sp, #16]
  ldp x23, x24, [sp, #32]
  ldp x25, x26, [sp, #48]
  ldp x27, x28, [sp, #64]
  ldp x29, x30, [sp, #80]
  ldp d8, d9, [sp, #96]
  ldp d10, d11, [sp, #112]
  ldp d12, d13, [sp, #128]
  ldp d14, d15, [sp, #144]
  add sp, sp, #160
  ret
KILN_END(kiln__fiber_switch)

/* Entered by the `ret` above on a fresh stack: x19 = entry, x20 = argument.
 * The entry never returns; brk traps if it does. */
KILN_FUNC(kiln__fiber_trampoline)
  .cfi_startproc
  .cfi_undefined x30
  mov x0, x20
  blr x19
  brk #1000
  .cfi_endproc
KILN_END(kiln__fiber_trampoline)

#else
#error "kiln's CPU fibers support x86_64 (System V) and aarch64 only"
#endif

#if defined(__linux__) && defined(__ELF__)
/* The stack need not be executable. */
  .section .note.GNU-stack, "", %progbits
#endif

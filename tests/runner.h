/*
 * The test registry (libuv's test-list.h): every test, its function and its
 * timeout in seconds, in one list. runner.c runs each in a forked child.
 * A test is `void test_NAME(void)`; it fails through CHECK (check.h), skips
 * through kt_skip, and passes by returning.
 *
 * Helpers that a test runs in a separate process (fork + exec of this
 * binary with `--child NAME ARGS...`) are listed in KT_CHILD_LIST as
 * `int child_NAME(int argc, char **argv)`; they never appear in --list.
 */
#ifndef KILN_TESTS_RUNNER_H
#define KILN_TESTS_RUNNER_H

/* X(name, timeout_seconds) */
#define KT_TEST_LIST(X)                                                       \
  X(errors_status_strings, 10)                                                \
  X(errors_last_error_prefix, 10)                                             \
  X(errors_thread_isolation, 10)                                              \
  X(dtype_sizes_names, 10)                                                    \
  X(dtype_from_name, 10)                                                      \
  X(dtype_bad_names, 10)                                                      \
  X(dtype_read_write, 10)                                                     \
  X(device_info, 10)                                                          \
  X(array_roundtrip_all_dtypes, 20)                                           \
  X(array_scalar, 10)                                                         \
  X(array_empty, 10)                                                          \
  X(array_views, 20)                                                          \
  X(array_view_bounds, 10)                                                    \
  X(array_contiguous_copy, 20)                                                \
  X(array_fill_all_dtypes, 20)                                                \
  X(array_fill_rounding, 10)                                                  \
  X(array_fill_view, 10)                                                      \
  X(array_wrap, 10)                                                           \
  X(array_shape_limits, 10)                                                   \
  X(stream_in_order, 60)                                                      \
  X(stream_callback_error, 60)                                                \
  X(stream_cross_read_after_write, 60)                                        \
  X(stream_cross_write_after_read, 60)                                        \
  X(stream_synchronize_all, 60)                                               \
  X(stream_destroy_busy, 60)                                                  \
  X(stream_default_per_thread, 20)                                            \
  X(memory_stats, 10)                                                         \
  X(memory_cache_reuse, 10)                                                   \
  X(memory_limit, 10)                                                         \
  X(alloc_fail_array_create, 60)                                              \
  X(alloc_fail_array_view, 60)                                                \
  X(alloc_fail_array_from_host, 60)                                           \
  X(alloc_fail_kernel_create, 60)                                             \
  X(alloc_fail_kernel_launch, 120)                                            \
  X(kernel_basic_copy, 60)                                                    \
  X(kernel_generate_source, 30)                                               \
  X(kernel_reuse_and_scalars, 60)                                             \
  X(conf_elementwise_exp_template, 90)                                        \
  X(conf_gemm_tiled, 90)                                                      \
  X(conf_simd_reduction, 90)                                                  \
  X(conf_simd_functions, 120)                                                 \
  X(conf_simd_divergent_if, 90)                                               \
  X(conf_simd_divergent_else, 90)                                             \
  X(conf_simd_divergent_loop, 90)                                             \
  X(conf_simd_divergent_nested, 90)                                           \
  X(cpu_fiber_stack_limit, 120)                                               \
  X(conf_atomics_device, 90)                                                  \
  X(conf_atomics_threadgroup, 90)                                             \
  X(conf_templates, 90)                                                       \
  X(conf_strided_implicit, 90)                                                \
  X(conf_attributes, 90)                                                      \
  X(conf_half_double_bfloat, 90)                                              \
  X(conf_vectors, 90)                                                         \
  X(conf_as_type, 90)                                                         \
  X(conf_math, 120)                                                           \
  X(conf_fast_math, 90)                                                       \
  X(conf_limits_helpers_barriers, 90)                                         \
  X(kerr_compile_body_line, 60)                                               \
  X(kerr_compile_header_line, 60)                                             \
  X(kerr_full_signature, 20)                                                  \
  X(kerr_bad_descriptions, 20)                                                \
  X(kerr_input_count, 60)                                                     \
  X(kerr_bad_dtype, 60)                                                       \
  X(kerr_launch_sizes, 60)                                                    \
  X(kerr_threadgroup_memory, 60)                                              \
  X(kerr_missing_compiler, 30)                                                \
  X(kerr_create_names, 20)                                                    \
  X(kerr_atomic_output_dtype, 20)                                             \
  X(compile_cpu_report, 60)                                                   \
  X(compile_specs_and_outputs, 60)                                            \
  X(compile_bad_target, 20)                                                   \
  X(compile_error_mapping, 60)                                                \
  X(compile_cuda_target, 120)                                                 \
  X(compile_cuda_local_memory, 120)                                           \
  X(compile_alloc_failures, 120)                                              \
  X(cli_compile_cpu, 90)                                                      \
  X(cli_compile_cuda, 120)                                                    \
  X(cli_compile_errors, 60)                                                   \
  X(cache_disk_roundtrip, 120)                                                \
  X(cache_corrupt_files, 120)                                                 \
  X(cache_dir_refused, 60)                                                    \
  X(cache_off, 60)                                                            \
  X(cli_info, 30)                                                             \
  X(cli_info_json, 30)                                                        \
  X(cli_run, 90)                                                              \
  X(cli_run_numpy, 90)                                                        \
  X(cli_errors, 90)                                                           \
  X(cli_npy_errors, 60)                                                       \
  X(doc_myexp, 60)                                                            \
  X(doc_axpy, 60)                                                             \
  X(doc_strided, 60)                                                          \
  X(doc_gemm, 60)                                                             \
  X(doc_rowsum, 60)                                                           \
  X(doc_histogram, 60)                                                        \
  X(fault_out_of_memory, 60)                                                  \
  X(fault_grid_over_device_limits, 60)                                        \
  X(fault_illegal_address, 60)                                               \
  X(linalg_gemm_dtypes, 120)                                                  \
  X(linalg_gemm_exact_sums, 120)                                              \
  X(linalg_gemm_random_vector, 180)                                           \
  X(linalg_gemm_transposes, 180)                                              \
  X(linalg_gemm_alpha_beta, 120)                                              \
  X(linalg_gemm_batched, 180)                                                 \
  X(linalg_gemm_strided, 180)                                                 \
  X(linalg_gemm_small_and_empty, 180)                                         \
  X(linalg_matmul, 180)                                                       \
  X(linalg_gemm_precision, 120)                                               \
  X(linalg_gemm_paths, 180)                                                   \
  X(linalg_gemm_f32, 180)                                                     \
  X(linalg_gemm_f64_tc, 180)                                                  \
  X(linalg_gemm_f64_tri_deep, 120)                                            \
  X(linalg_gemm_tc_pipelined, 180)                                            \
  X(linalg_gemm_wg, 180)                                                      \
  X(linalg_gemm_errors, 60)                                                   \
  X(linalg_cli_gemm, 120)                                                     \
  X(linalg_cli_gemm_numpy, 180)                                               \
  X(linalg_cli_errors, 120)                                                   \
  X(linalg_cholesky_sizes, 240)                                               \
  X(linalg_cholesky_batched, 240)                                             \
  X(linalg_cholesky_paths, 240)                                               \
  X(linalg_cholesky_strided, 240)                                             \
  X(linalg_cholesky_ill_conditioned, 240)                                     \
  X(linalg_cholesky_not_pd, 240)                                              \
  X(linalg_cholesky_errors, 60)                                               \
  X(linalg_cholesky_nvrtc, 300)                                               \
  X(linalg_cholesky_gemm, 240)                                                \
  X(linalg_cholesky_fuse, 240)                                                \
  X(linalg_cholesky_splitk, 240)                                              \
  X(linalg_cholesky_narrow, 240)                                              \
  X(linalg_cholesky_panel, 240)                                               \
  X(linalg_syrk_tri, 240)                                                     \
  X(linalg_syrk_tri_batched, 120)                                             \
  X(linalg_syrk_tri_errors, 60)                                               \
  X(linalg_syrk_cholesky, 240)                                                \
  /* ---- qr tests ---- */                                                    \
  X(linalg_qr_small, 240)                                                     \
  X(linalg_qr_batched, 240)                                                   \
  X(linalg_qr_tall_skinny, 240)                                               \
  X(linalg_qr_paths, 240)                                                     \
  X(linalg_qr_strided, 240)                                                   \
  X(linalg_qr_ill_conditioned, 240)                                           \
  X(linalg_qr_empty, 60)                                                      \
  X(linalg_qr_errors, 60)                                                     \
  X(linalg_qr_tsqr_panel, 120)                                                \
  X(linalg_qr_nvrtc, 600)                                                     \
  X(linalg_qr_cholqr, 240)                                                    \
  X(linalg_qr_cholqr_ill_conditioned, 240)                                    \
  X(linalg_qr_cholqr_passes, 240)                                             \
  X(linalg_qr_cholqr_fallback, 240)                                           \
  X(linalg_qr_cholqr_strided, 240)                                            \
  X(linalg_qr_cholqr_errors, 60)                                              \
  X(linalg_qr_cholqr_nvrtc, 600)                                              \
  X(linalg_qr_fallback_tree, 240)                                             \
  X(linalg_qr_fallback_batched, 240)                                          \
  X(linalg_qr_fallback_strided, 240)                                          \
  X(linalg_qr_fallback_errors, 60)                                            \
  X(linalg_qr_fallback_nvrtc, 600)                                            \
  /* qr blocked */                                                            \
  X(linalg_qr_blocked_square, 240)                                            \
  X(linalg_qr_blocked_tall_wide, 240)                                         \
  X(linalg_qr_blocked_batched, 240)                                           \
  X(linalg_qr_blocked_panels, 240)                                            \
  X(linalg_qr_blocked_small, 240)                                             \
  X(linalg_qr_blocked_empty, 60)                                              \
  X(linalg_qr_blocked_ill_conditioned, 240)                                   \
  X(linalg_qr_blocked_rank_deficient, 240)                                    \
  X(linalg_qr_blocked_strided, 240)                                           \
  X(linalg_qr_blocked_nan, 60)                                                \
  X(linalg_qr_blocked_errors, 60)                                             \
  X(linalg_qr_blocked_public, 240)                                            \
  X(linalg_qr_blocked_outer, 240)                                             \
  X(linalg_qr_blocked_recon, 240)                                             \
  X(linalg_qr_blocked_nvrtc, 300)                                             \
  /* ---- triangular tests ---- */                                            \
  X(linalg_triangular_cases, 240)                                             \
  X(linalg_triangular_rhs, 240)                                               \
  X(linalg_triangular_batched, 240)                                           \
  X(linalg_triangular_strided, 240)                                           \
  X(linalg_triangular_ill_conditioned, 240)                                   \
  X(linalg_triangular_trsm, 240)                                              \
  X(linalg_triangular_tri_inv, 240)                                           \
  X(linalg_triangular_cholesky_inv, 240)                                      \
  X(linalg_triangular_singular, 240)                                          \
  X(linalg_triangular_errors, 60)                                             \
  X(linalg_triangular_alloc_fail, 120)                                        \
  X(linalg_triangular_nvrtc, 600)                                             \
  /* ---- lu tests ---- */                                                    \
  X(linalg_lu_factor_shapes, 240)                                             \
  X(linalg_lu_factor_batched, 240)                                            \
  X(linalg_lu_factor_paths, 300)                                              \
  X(linalg_lu_strided, 240)                                                   \
  X(linalg_lu_ill_conditioned, 240)                                           \
  X(linalg_lu_solve, 240)                                                     \
  X(linalg_lu_solve_hard, 240)                                                \
  X(linalg_lu_inv, 240)                                                       \
  X(linalg_lu_det, 240)                                                       \
  X(linalg_lu_singular, 240)                                                  \
  X(linalg_lu_nonfinite, 120)                                                 \
  X(linalg_lu_errors, 120)                                                    \
  X(linalg_lu_small_reg, 240)                                                 \
  X(linalg_lu_small_reg_semantics, 120)                                       \
  X(linalg_lu_blocked_nonfinite, 120)                                         \
  X(linalg_lu_perm_chunks, 120)                                               \
  X(linalg_lu_grid, 240)                                                      \
  X(linalg_lu_rows, 240)                                                      \
  X(linalg_lu_nvrtc, 600)                                                     \
  X(linalg_lu_ahead, 240)                                                     \
  X(linalg_lu_ahead_streams, 60)                                              \
  X(linalg_lu_ahead_lifetime, 120)                                            \
  X(linalg_lu_ahead_async, 120)                                               \
  X(linalg_lu_ahead_threads, 120)                                             \
  X(linalg_lu_ahead_alloc_fail, 240)                                          \
  /* ---- norm tests ---- */                                                  \
  X(linalg_norm_vectors, 120)                                                 \
  X(linalg_norm_matrices, 120)                                                \
  X(linalg_norm_paths, 120)                                                   \
  X(linalg_norm_strided, 120)                                                 \
  X(linalg_norm_extremes, 120)                                                \
  X(linalg_norm_empty, 60)                                                    \
  X(linalg_norm_errors, 60)                                                   \
  X(linalg_norm_nvrtc, 300)                                                   \
  /* ---- linalg cli tests ---- */                                            \
  X(linalg_cli_qr, 180)                                                       \
  X(linalg_cli_solve_triangular, 180)                                         \
  X(linalg_cli_lu, 180)                                                       \
  X(linalg_cli_solve_inv_det, 180)                                            \
  X(linalg_cli_numpy, 240)                                                    \
  X(linalg_cli_op_errors, 180)                                                \
  X(linalg_cli_cholesky, 180)                                                 \
  X(linalg_cli_cholesky_numpy, 180)                                           \
  X(linalg_cli_cholesky_errors, 120)                                          \
  X(linalg_gemm_nvrtc, 600)

/* X(name) */
#define KT_CHILD_LIST(X) X(cache_probe)

#define KT_DECLARE_TEST_(name, timeout) void test_##name(void);
KT_TEST_LIST(KT_DECLARE_TEST_)
#undef KT_DECLARE_TEST_

#define KT_DECLARE_CHILD_(name) int child_##name(int argc, char **argv);
KT_CHILD_LIST(KT_DECLARE_CHILD_)
#undef KT_DECLARE_CHILD_

#endif /* KILN_TESTS_RUNNER_H */

// Linear recurrence h_t = a_t · h_{t−1} + b_t over [B, T, D], forward and backward.
#pragma once

#include "common.hpp"

namespace ls {

// a, b: [B, T, D] contiguous, element type `dtype`; h0: [B, D] or null; h: [B, T, D] output.
// h0 and h have the accumulation type: float64 for float64 inputs, float32 otherwise.
void scan_forward(const void* a, const void* b, DType dtype, const void* h0, void* h, i64 B, i64 T, i64 D,
                  int num_threads);

// Gradients of L(h) given grad_h = ∂L/∂h ([B, T, D], element type `dtype`):
//   g_t = grad_h_t + a_{t+1} · g_{t+1}  (a reverse scan with a shifted by one; g_{T−1} = grad_h_{T−1})
//   grad_b_t = g_t,   grad_a_t = g_t · h_{t−1} (h_{−1} = h0, or 0),   grad_h0 = a_0 · g_0.
// grad_a, grad_b [B, T, D] and grad_h0 [B, D] (may be null) have the accumulation type.
void scan_backward(const void* a, const void* h, const void* h0, const void* grad_h, DType dtype,
                   void* grad_a, void* grad_b, void* grad_h0, i64 B, i64 T, i64 D, int num_threads);

}  // namespace ls

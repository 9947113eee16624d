// RLeaky's elementwise step (snnTorch convention) for kernels/rleaky.py, forward and backward;
// the feedback matmul stays a torch GEMM between calls.
#include "neuron_math.h"

// One RLeaky step (snnTorch), elementwise over N, in the reference's operation order:
// R = Θ(U − thr); base = β·U + X + FB; U' = base − R·thr (subtract) or base − R·base (zero);
// S = Θ(U' − thr). beta is given per element.
template <bool ZERO>
static void rleaky_step_forward_impl(const float* __restrict u, const float* __restrict x,
                                     const float* __restrict fb, const float* __restrict beta,
                                     float* __restrict u_out, float* __restrict s_out, i64 N,
                                     float thr) {
    for (i64 i = 0; i < N; ++i) {
        const float r = (u[i] - thr > 0.0f) ? 1.0f : 0.0f;
        const float base = beta[i] * u[i] + x[i] + fb[i];
        const float un = ZERO ? base - r * base : base - r * thr;
        u_out[i] = un;
        s_out[i] = (un - thr > 0.0f) ? 1.0f : 0.0f;
    }
}

extern "C" void rleaky_step_forward(const float* u, const float* x, const float* fb,
                                    const float* beta, float* u_out, float* s_out, i64 N,
                                    float thr, int reset_zero) {
    if (reset_zero)
        rleaky_step_forward_impl<true>(u, x, fb, beta, u_out, s_out, N, thr);
    else
        rleaky_step_forward_impl<false>(u, x, fb, beta, u_out, s_out, N, thr);
}

// Its backward at step t: G = (gU + gS·Θ'(U − thr) + carry)·(1 − R if zero), R from U[t−1];
// writes G, carry' = β·G and adds G·U[t−1] to gbeta. gu/gs may be NULL (zero). Specialised on
// which of them are there and on the reset, so the loop is branch-free and vectorises.
template <int SG, bool GU, bool GS, bool ZERO>
static void rleaky_step_backward_impl(const float* __restrict u, const float* __restrict u_prev,
                                      const float* __restrict beta, const float* __restrict gu,
                                      const float* __restrict gs, float* __restrict carry,
                                      float* __restrict g, float* __restrict gbeta, i64 N,
                                      float thr, float c1, float c2) {
    for (i64 i = 0; i < N; ++i) {
        float gi = GU ? gu[i] + carry[i] : carry[i];
        if (GS) gi = gi + gs[i] * surrogate_grad<SG>(c1, c2, u[i] - thr);
        if (ZERO) gi = gi * ((u_prev[i] - thr <= 0.0f) ? 1.0f : 0.0f);
        g[i] = gi;
        carry[i] = beta[i] * gi;
        gbeta[i] += gi * u_prev[i];
    }
}

typedef void (*rleaky_backward_fn)(const float*, const float*, const float*, const float*,
                                   const float*, float*, float*, float*, i64, float, float, float);

template <int SG>
static rleaky_backward_fn rleaky_backward_for(bool gu, bool gs, bool zero) {
    static const rleaky_backward_fn table[8] = {
        rleaky_step_backward_impl<SG, false, false, false>,
        rleaky_step_backward_impl<SG, false, false, true>,
        rleaky_step_backward_impl<SG, false, true, false>,
        rleaky_step_backward_impl<SG, false, true, true>,
        rleaky_step_backward_impl<SG, true, false, false>,
        rleaky_step_backward_impl<SG, true, false, true>,
        rleaky_step_backward_impl<SG, true, true, false>,
        rleaky_step_backward_impl<SG, true, true, true>,
    };
    return table[(gu ? 4 : 0) + (gs ? 2 : 0) + (zero ? 1 : 0)];
}

extern "C" void rleaky_step_backward(const float* u, const float* u_prev, const float* beta,
                                     const float* gu, const float* gs, float* carry, float* g,
                                     float* gbeta, i64 N, float thr, int reset_zero, int sg_kind,
                                     float c1, float c2) {
    const bool has_gu = gu != NULL, has_gs = gs != NULL, zero = reset_zero != 0;
    const rleaky_backward_fn fn =
        sg_kind == SG_ATAN      ? rleaky_backward_for<SG_ATAN>(has_gu, has_gs, zero)
        : sg_kind == SG_SIGMOID ? rleaky_backward_for<SG_SIGMOID>(has_gu, has_gs, zero)
                                : rleaky_backward_for<SG_FAST_SIGMOID>(has_gu, has_gs, zero);
    fn(u, u_prev, beta, gu, gs, carry, g, gbeta, N, thr, c1, c2);
}

// The whole backward pass of a layer whose feedback is cheap enough to compute here rather than
// as a torch GEMM per step: one-to-one (W = w ⊙) or all-to-all with few neurons. Steps t = T−1
// … 0 of M rows of n neurons; gs_t = gS[t] + V'(G[t+1]), V'(G) = G·W (W [n, n] row-major) or
// G ⊙ w, then the elementwise step above. gm, gs may be NULL (zero); buf holds M·n floats.
extern "C" void rleaky_backward_sequence(const float* mems, const float* u0, const float* beta,
                                         const float* gm, const float* gs, const float* w,
                                         int one_to_one, float* carry, float* g, float* gbeta,
                                         float* buf, i64 T, i64 M, i64 n, float thr,
                                         int reset_zero, int sg_kind, float c1, float c2) {
    const i64 N = M * n;
    for (i64 t = T - 1; t >= 0; --t) {
        const float* gs_t = gs ? gs + t * N : NULL;
        if (t + 1 < T) {
            const float* next = g + (t + 1) * N;
            for (i64 m = 0; m < M; ++m) {
                float* row = buf + m * n;
                const float* gn = next + m * n;
                for (i64 j = 0; j < n; ++j) row[j] = one_to_one ? gn[j] * w[j] : 0.0f;
                if (!one_to_one)
                    for (i64 i = 0; i < n; ++i)
                        for (i64 j = 0; j < n; ++j) row[j] += gn[i] * w[i * n + j];
                if (gs_t)
                    for (i64 j = 0; j < n; ++j) row[j] = gs_t[m * n + j] + row[j];
            }
            gs_t = buf;
        }
        rleaky_step_backward(mems + t * N, t > 0 ? mems + (t - 1) * N : u0, beta,
                             gm ? gm + t * N : NULL, gs_t, carry, g + t * N, gbeta, N, thr,
                             reset_zero, sg_kind, c1, c2);
    }
}

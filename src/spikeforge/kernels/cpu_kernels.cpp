// Fused multi-step neuron loops for the CPU (float32, OpenMP over blocks of neurons).
//
// Layout: a sequence is [T, N] (N = every axis after time, contiguous); the input may repeat one
// step for every t (x_stride_t = 0, a direct-encoded image). Each thread owns a block of neurons
// and runs the whole time loop with the state in a small local array, so every tensor is read or
// written once. Equations: spikeforge/kernels/reference.py and DESIGN §3. Built with
// -ffp-contract=off and no fast-math, so every forward op rounds exactly as the reference loop's.
#include "neuron_math.h"

enum { BLOCK = 256 };

// IF/LIF forward. h_out may be NULL (no backward needed). soft: v_reset unused, V = H − V_th·S.
extern "C" void if_lif_forward(const float* x, i64 x_stride_t, const float* v0, float* s_out,
                               float* v_out, float* h_out, i64 T, i64 N, int mode, float tau,
                               float v_th, float v_reset, int soft, int nthreads) {
    const float v_r = soft ? 0.0f : v_reset;
    const i64 nblocks = (N + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) num_threads(threads_for(T * N, nthreads))
    for (i64 b = 0; b < nblocks; ++b) {
        const i64 lo = b * BLOCK;
        const i64 n = (N - lo) < BLOCK ? (N - lo) : BLOCK;
        float v[BLOCK];
        memcpy(v, v0 + lo, n * sizeof(float));
        for (i64 t = 0; t < T; ++t) {
            const float* xt = x + t * x_stride_t + lo;
            float* st = s_out + t * N + lo;
            float* vt = v_out + t * N + lo;
            float* ht = h_out ? h_out + t * N + lo : nullptr;
            for (i64 i = 0; i < n; ++i) {
                const float h = lif_charge(mode, v[i], xt[i], tau, v_r);
                const float s = lif_fire(h, v_th);
                const float vn = lif_reset(soft, h, s, v_th, v_reset);
                st[i] = s;
                vt[i] = vn;
                v[i] = vn;
                if (ht) ht[i] = h;
            }
        }
    }
}

// IF/LIF backward from the saved H. gs/gv (dL/dS, dL/dV) are read with a time stride (0 when
// one step's gradient is repeated over T, e.g. the gradient of a mean over time).
// dL/dH[t] = gS·Θ'(H−V_th) + (gV[t] + dL/dH[t+1]·∂H[t+1]/∂V[t])·∂V[t]/∂H[t], evaluated term by
// term in the order autograd evaluates the reference loop, so the rounding matches closely.
template <int MODE, bool SOFT, bool DETACH, int SG>
static void if_lif_backward_impl(const float* h, const float* gs, i64 gs_stride_t,
                                 const float* gv, i64 gv_stride_t, float* gx, float* gv0, i64 T,
                                 i64 N, float tau, float v_th, float v_reset, float c1, float c2,
                                 int nthreads) {
    const i64 nblocks = (N + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) num_threads(threads_for(T * N, nthreads))
    for (i64 b = 0; b < nblocks; ++b) {
        const i64 lo = b * BLOCK;
        const i64 n = (N - lo) < BLOCK ? (N - lo) : BLOCK;
        float carry[BLOCK];
        memset(carry, 0, sizeof(carry));
        for (i64 t = T - 1; t >= 0; --t) {
            const i64 off = t * N + lo;
            const float* gst = gs + t * gs_stride_t + lo;
            const float* gvt = gv + t * gv_stride_t + lo;
            for (i64 i = 0; i < n; ++i)
                gx[off + i] = lif_backward_step<MODE, SOFT, DETACH, SG>(
                    h[off + i], gst[i], gvt[i] + carry[i], tau, v_th, v_reset, c1, c2, &carry[i]);
        }
        if (gv0) memcpy(gv0 + lo, carry, n * sizeof(float));
    }
}

template <int MODE, bool SOFT, bool DETACH>
static void if_lif_backward_sg(int sg, const float* h, const float* gs, i64 gs_st, const float* gv,
                               i64 gv_st, float* gx, float* gv0, i64 T, i64 N, float tau,
                               float v_th, float v_reset, float c1, float c2, int nthreads) {
    if (sg == SG_ATAN)
        if_lif_backward_impl<MODE, SOFT, DETACH, SG_ATAN>(h, gs, gs_st, gv, gv_st, gx, gv0, T, N,
                                                          tau, v_th, v_reset, c1, c2, nthreads);
    else if (sg == SG_SIGMOID)
        if_lif_backward_impl<MODE, SOFT, DETACH, SG_SIGMOID>(h, gs, gs_st, gv, gv_st, gx, gv0, T,
                                                             N, tau, v_th, v_reset, c1, c2,
                                                             nthreads);
    else
        if_lif_backward_impl<MODE, SOFT, DETACH, SG_FAST_SIGMOID>(h, gs, gs_st, gv, gv_st, gx, gv0,
                                                                  T, N, tau, v_th, v_reset, c1,
                                                                  c2, nthreads);
}

template <int MODE>
static void if_lif_backward_mode(int soft, int detach, int sg, const float* h, const float* gs,
                                 i64 gs_st, const float* gv, i64 gv_st, float* gx, float* gv0,
                                 i64 T, i64 N, float tau, float v_th, float v_reset, float c1,
                                 float c2, int nthreads) {
    if (soft && detach)
        if_lif_backward_sg<MODE, true, true>(sg, h, gs, gs_st, gv, gv_st, gx, gv0, T, N, tau, v_th,
                                             v_reset, c1, c2, nthreads);
    else if (soft)
        if_lif_backward_sg<MODE, true, false>(sg, h, gs, gs_st, gv, gv_st, gx, gv0, T, N, tau,
                                              v_th, v_reset, c1, c2, nthreads);
    else if (detach)
        if_lif_backward_sg<MODE, false, true>(sg, h, gs, gs_st, gv, gv_st, gx, gv0, T, N, tau,
                                              v_th, v_reset, c1, c2, nthreads);
    else
        if_lif_backward_sg<MODE, false, false>(sg, h, gs, gs_st, gv, gv_st, gx, gv0, T, N, tau,
                                               v_th, v_reset, c1, c2, nthreads);
}

extern "C" void if_lif_backward(const float* h, const float* gs, i64 gs_stride_t, const float* gv,
                                i64 gv_stride_t, float* gx, float* gv0, i64 T, i64 N, int mode,
                                float tau, float v_th, float v_reset, int soft, int detach_reset,
                                int sg_kind, float c1, float c2, int nthreads) {
    if (mode == IF_MODE)
        if_lif_backward_mode<IF_MODE>(soft, detach_reset, sg_kind, h, gs, gs_stride_t, gv,
                                      gv_stride_t, gx, gv0, T, N, tau, v_th, v_reset, c1, c2,
                                      nthreads);
    else if (mode == LIF_DECAY_INPUT)
        if_lif_backward_mode<LIF_DECAY_INPUT>(soft, detach_reset, sg_kind, h, gs, gs_stride_t, gv,
                                              gv_stride_t, gx, gv0, T, N, tau, v_th, v_reset, c1,
                                              c2, nthreads);
    else
        if_lif_backward_mode<LIF_NO_DECAY_INPUT>(soft, detach_reset, sg_kind, h, gs, gs_stride_t,
                                                 gv, gv_stride_t, gx, gv0, T, N, tau, v_th,
                                                 v_reset, c1, c2, nthreads);
}

// Leaky forward (snnTorch): R = Θ(U[t−1] − thr) strict; subtract U = β·U + X − R·thr,
// zero U = β·(1 − R)·U + X; S = Θ(U − thr) strict. beta is per neuron [N].
extern "C" void leaky_forward(const float* x, i64 x_stride_t, const float* u0,
                              const float* beta, float* s_out, float* u_out, i64 T, i64 N,
                              float thr, int reset_zero, int nthreads) {
    const i64 nblocks = (N + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) num_threads(threads_for(T * N, nthreads))
    for (i64 b = 0; b < nblocks; ++b) {
        const i64 lo = b * BLOCK;
        const i64 n = (N - lo) < BLOCK ? (N - lo) : BLOCK;
        float u[BLOCK];
        memcpy(u, u0 + lo, n * sizeof(float));
        for (i64 t = 0; t < T; ++t) {
            const float* xt = x + t * x_stride_t + lo;
            float* st = s_out + t * N + lo;
            float* ut = u_out + t * N + lo;
            for (i64 i = 0; i < n; ++i) {
                const float r = (u[i] - thr > 0.0f) ? 1.0f : 0.0f;
                const float bi = beta[lo + i];
                const float un = reset_zero ? bi * (1.0f - r) * u[i] + xt[i]
                                            : bi * u[i] + xt[i] - r * thr;
                st[i] = (un - thr > 0.0f) ? 1.0f : 0.0f;
                ut[i] = un;
                u[i] = un;
            }
        }
    }
}

// Leaky backward from the saved membrane U [T, N] and U[−1] = u0; gs/gu read with a time stride
// as in if_lif_backward. gbeta (per neuron, summed over t) may be NULL when β is fixed.
template <bool ZERO, int SG>
static void leaky_backward_impl(const float* u, const float* u0, const float* beta,
                                const float* gs, i64 gs_stride_t, const float* gu,
                                i64 gu_stride_t, float* gx, float* gu0, float* gbeta, i64 T,
                                i64 N, float thr, float c1, float c2, int nthreads) {
    const i64 nblocks = (N + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) num_threads(threads_for(T * N, nthreads))
    for (i64 b = 0; b < nblocks; ++b) {
        const i64 lo = b * BLOCK;
        const i64 n = (N - lo) < BLOCK ? (N - lo) : BLOCK;
        float carry[BLOCK];
        float gb[BLOCK];
        memset(carry, 0, sizeof(carry));
        memset(gb, 0, sizeof(gb));
        for (i64 t = T - 1; t >= 0; --t) {
            const i64 off = t * N + lo;
            const float* uprev = t > 0 ? u + off - N : u0 + lo;
            const float* gst = gs + t * gs_stride_t + lo;
            const float* gut = gu + t * gu_stride_t + lo;
            for (i64 i = 0; i < n; ++i) {
                const float sg = surrogate_grad<SG>(c1, c2, u[off + i] - thr);
                const float g = gut[i] + gst[i] * sg + carry[i];
                gx[off + i] = g;
                const float keep = ZERO ? ((uprev[i] - thr > 0.0f) ? 0.0f : 1.0f) : 1.0f;
                carry[i] = g * beta[lo + i] * keep;
                gb[i] += g * keep * uprev[i];
            }
        }
        if (gu0) memcpy(gu0 + lo, carry, n * sizeof(float));
        if (gbeta) memcpy(gbeta + lo, gb, n * sizeof(float));
    }
}

template <bool ZERO>
static void leaky_backward_sg(int sg, const float* u, const float* u0, const float* beta,
                              const float* gs, i64 gs_st, const float* gu, i64 gu_st, float* gx,
                              float* gu0, float* gbeta, i64 T, i64 N, float thr, float c1,
                              float c2, int nthreads) {
    if (sg == SG_ATAN)
        leaky_backward_impl<ZERO, SG_ATAN>(u, u0, beta, gs, gs_st, gu, gu_st, gx, gu0, gbeta, T, N,
                                           thr, c1, c2, nthreads);
    else if (sg == SG_SIGMOID)
        leaky_backward_impl<ZERO, SG_SIGMOID>(u, u0, beta, gs, gs_st, gu, gu_st, gx, gu0, gbeta, T,
                                              N, thr, c1, c2, nthreads);
    else
        leaky_backward_impl<ZERO, SG_FAST_SIGMOID>(u, u0, beta, gs, gs_st, gu, gu_st, gx, gu0,
                                                   gbeta, T, N, thr, c1, c2, nthreads);
}

extern "C" void leaky_backward(const float* u, const float* u0, const float* beta,
                               const float* gs, i64 gs_stride_t, const float* gu, i64 gu_stride_t,
                               float* gx, float* gu0, float* gbeta, i64 T, i64 N, float thr,
                               int reset_zero, int sg_kind, float c1, float c2, int nthreads) {
    if (reset_zero)
        leaky_backward_sg<true>(sg_kind, u, u0, beta, gs, gs_stride_t, gu, gu_stride_t, gx, gu0,
                                gbeta, T, N, thr, c1, c2, nthreads);
    else
        leaky_backward_sg<false>(sg_kind, u, u0, beta, gs, gs_stride_t, gu, gu_stride_t, gx, gu0,
                                 gbeta, T, N, thr, c1, c2, nthreads);
}

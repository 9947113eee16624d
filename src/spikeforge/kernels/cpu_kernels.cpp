// Fused multi-step neuron loops for the CPU (float32, OpenMP over blocks of neurons).
//
// Layout: a sequence is [T, N] (N = every axis after time, contiguous); the input may repeat one
// step for every t (x_stride_t = 0, a direct-encoded image). Each thread owns a block of neurons
// and runs the whole time loop with the state in a small local array, so every tensor is read or
// written once. Equations: spikeforge/kernels/reference.py and DESIGN §3. Built with
// -ffp-contract=off and no fast-math, so every forward op rounds exactly as the reference loop's.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef int64_t i64;

enum { BLOCK = 256 };

enum { IF_MODE = 0, LIF_DECAY_INPUT = 1, LIF_NO_DECAY_INPUT = 2 };
enum { SG_ATAN = 0, SG_SIGMOID = 1, SG_FAST_SIGMOID = 2 };

// dΘ/dx of the surrogate: ATan (c1 = α/2, c2 = π/2·α), Sigmoid (c1 = α), FastSigmoid (c1 = k),
// in the operation order of spikeforge.surrogate (x / y there is reciprocal(y)·x).
template <int KIND>
static inline float surrogate_grad(float c1, float c2, float x) {
    if (KIND == SG_ATAN) {
        const float z = c2 * x;
        return (1.0f / (1.0f + z * z)) * c1;
    }
    if (KIND == SG_SIGMOID) {
        const float sg = 1.0f / (1.0f + expf(-(c1 * x)));
        return c1 * sg * (1.0f - sg);
    }
    const float d = 1.0f + c1 * fabsf(x);
    return 1.0f / (d * d);
}

static inline int threads_for(i64 work, int nthreads) {
    return work < (1 << 20) ? 1 : nthreads;
}

// One IF/LIF neuron step: charge H from V and X, fire S = Θ(H − V_th), reset V (v_r = 0 when
// soft). Shared by if_lif_forward and lif_pool_forward, so both round exactly alike.
static inline float lif_charge(int mode, float v, float x, float tau, float v_r) {
    if (mode == IF_MODE) return v + x;
    if (mode == LIF_DECAY_INPUT) return v + (x - (v - v_r)) / tau;
    return v - (v - v_r) / tau + x;
}

static inline float lif_fire(float h, float v_th) { return (h - v_th >= 0.0f) ? 1.0f : 0.0f; }

static inline float lif_reset(bool soft, float h, float s, float v_th, float v_reset) {
    return soft ? h - v_th * s : h * (1.0f - s) + v_reset * s;
}

// The matching backward step for one neuron: from H, dL/dS and dL/dV (incoming plus carried),
// returns dL/dX and sets *carry to dL/dV[t−1], term by term in autograd's order.
template <int MODE, bool SOFT, bool DETACH, int SG>
static inline float lif_backward_step(float hh, float g_s, float g_v, float tau, float v_th,
                                      float v_reset, float c1, float c2, float* carry) {
    const float d = hh - v_th;
    const float s = (d >= 0.0f) ? 1.0f : 0.0f;
    float gh;
    if (SOFT) {
        gh = g_v;
        if (!DETACH) g_s = g_s + -(g_v * v_th);
    } else {
        gh = g_v * (1.0f - s);
        if (!DETACH) g_s = (g_s + -(g_v * hh)) + g_v * v_reset;
    }
    gh = g_s * surrogate_grad<SG>(c1, c2, d) + gh;
    if (MODE == IF_MODE) {
        *carry = gh;
        return gh;
    }
    const float g_tau = gh / tau;
    *carry = gh + -g_tau;
    return MODE == LIF_DECAY_INPUT ? g_tau : gh;
}

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

// IF/LIF over T followed by 2×2 max pooling (stride 2, floor mode) of the spikes, per plane of
// H×W neurons (P planes = B·C), so the full-resolution spikes and membranes never reach memory.
// The neuron arithmetic is if_lif_forward's, operation for operation. x [T, P, H, W] is read with
// time stride x_st (0: the same input at every step); v0 [P, H, W]. Writes out [T, P, PH, PW]
// (pooled spikes), arg [T, P, PH, PW] (0..3: the window's first maximum in row-major order, as
// torch's max_pool2d picks it) unless NULL, h [T, P, H, W] (pre-reset membrane, for backward)
// unless NULL, and v_last [P, H, W] (the membrane after the last step).
template <int MODE, bool SOFT>
static void lif_pool_forward_impl(const float* x, i64 x_st, const float* v0, float* out,
                                  uint8_t* arg, float* h_out, float* v_last, i64 T, i64 P, i64 H,
                                  i64 W, float tau, float v_th, float v_reset, int nthreads) {
    const i64 HW = H * W, PH = H / 2, PW = W / 2, PHW = PH * PW;
    const float v_r = SOFT ? 0.0f : v_reset;
#pragma omp parallel num_threads(threads_for(T * P * HW, nthreads))
    {
        float* v = (float*)malloc(sizeof(float) * HW);
        float* s = (float*)malloc(sizeof(float) * HW);
#pragma omp for schedule(static)
        for (i64 p = 0; p < P; ++p) {
            memcpy(v, v0 + p * HW, sizeof(float) * HW);
            for (i64 t = 0; t < T; ++t) {
                const float* xt = x + t * x_st + p * HW;
                float* ht = h_out ? h_out + (t * P + p) * HW : nullptr;
                for (i64 i = 0; i < HW; ++i) {
                    const float h = lif_charge(MODE, v[i], xt[i], tau, v_r);
                    const float sp = lif_fire(h, v_th);
                    v[i] = lif_reset(SOFT, h, sp, v_th, v_reset);
                    s[i] = sp;
                    if (ht) ht[i] = h;
                }
                float* ot = out + (t * P + p) * PHW;
                uint8_t* at = arg ? arg + (t * P + p) * PHW : nullptr;
                for (i64 py = 0; py < PH; ++py) {
                    for (i64 px = 0; px < PW; ++px) {
                        const float* w0 = s + 2 * py * W + 2 * px;
                        const float cand[4] = {w0[0], w0[1], w0[W], w0[W + 1]};
                        float m = cand[0];
                        uint8_t a = 0;
                        for (uint8_t q = 1; q < 4; ++q) {
                            if (cand[q] > m) {
                                m = cand[q];
                                a = q;
                            }
                        }
                        ot[py * PW + px] = m;
                        if (at) at[py * PW + px] = a;
                    }
                }
            }
            memcpy(v_last + p * HW, v, sizeof(float) * HW);
        }
        free(s);
        free(v);
    }
}

extern "C" void lif_pool_forward(const float* x, i64 x_st, const float* v0, float* out,
                                 uint8_t* arg, float* h_out, float* v_last, i64 T, i64 P, i64 H,
                                 i64 W, int mode, float tau, float v_th, float v_reset, int soft,
                                 int nthreads) {
#define LIF_POOL_FWD(M, S) \
    lif_pool_forward_impl<M, S>(x, x_st, v0, out, arg, h_out, v_last, T, P, H, W, tau, v_th, \
                                v_reset, nthreads)
    if (mode == IF_MODE)
        soft ? LIF_POOL_FWD(IF_MODE, true) : LIF_POOL_FWD(IF_MODE, false);
    else if (mode == LIF_DECAY_INPUT)
        soft ? LIF_POOL_FWD(LIF_DECAY_INPUT, true) : LIF_POOL_FWD(LIF_DECAY_INPUT, false);
    else
        soft ? LIF_POOL_FWD(LIF_NO_DECAY_INPUT, true) : LIF_POOL_FWD(LIF_NO_DECAY_INPUT, false);
#undef LIF_POOL_FWD
}

// Its backward: g [T, P, PH, PW] is dL/d(pooled spikes), routed to each window's winner (the
// other three get none, as in max_pool2d's backward); gv_last [P, H, W] (dL/dV after the last
// step) may be NULL. Then if_lif_backward's arithmetic per neuron. Writes gx [T, P, H, W], or,
// when sum_t, Σ_t dL/dX[t] into gx [P, H, W] (the input was the same at every step); gv0
// [P, H, W] unless NULL.
template <int MODE, bool SOFT, bool DETACH, int SG>
static void lif_pool_backward_impl(const float* h, const uint8_t* arg, const float* g,
                                   const float* gv_last, float* gx, int sum_t, float* gv0, i64 T,
                                   i64 P, i64 H, i64 W, float tau, float v_th, float v_reset,
                                   float c1, float c2, int nthreads) {
    const i64 HW = H * W, PH = H / 2, PW = W / 2, PHW = PH * PW;
#pragma omp parallel num_threads(threads_for(T * P * HW, nthreads))
    {
        float* carry = (float*)malloc(sizeof(float) * HW);
        float* gs = (float*)malloc(sizeof(float) * HW);
        float* acc = sum_t ? (float*)malloc(sizeof(float) * HW) : nullptr;
#pragma omp for schedule(static)
        for (i64 p = 0; p < P; ++p) {
            if (gv_last)
                memcpy(carry, gv_last + p * HW, sizeof(float) * HW);
            else
                memset(carry, 0, sizeof(float) * HW);
            if (acc) memset(acc, 0, sizeof(float) * HW);
            for (i64 t = T - 1; t >= 0; --t) {
                memset(gs, 0, sizeof(float) * HW);
                const float* gt = g + (t * P + p) * PHW;
                const uint8_t* at = arg + (t * P + p) * PHW;
                for (i64 py = 0; py < PH; ++py)
                    for (i64 px = 0; px < PW; ++px) {
                        const uint8_t a = at[py * PW + px];
                        gs[(2 * py + (a >> 1)) * W + 2 * px + (a & 1)] = gt[py * PW + px];
                    }
                const float* ht = h + (t * P + p) * HW;
                float* gxt = sum_t ? acc : gx + (t * P + p) * HW;
                for (i64 i = 0; i < HW; ++i) {
                    const float gxi = lif_backward_step<MODE, SOFT, DETACH, SG>(
                        ht[i], gs[i], carry[i], tau, v_th, v_reset, c1, c2, &carry[i]);
                    if (sum_t)
                        gxt[i] += gxi;
                    else
                        gxt[i] = gxi;
                }
            }
            if (acc) memcpy(gx + p * HW, acc, sizeof(float) * HW);
            if (gv0) memcpy(gv0 + p * HW, carry, sizeof(float) * HW);
        }
        free(acc);
        free(gs);
        free(carry);
    }
}

template <int MODE, bool SOFT, bool DETACH>
static void lif_pool_backward_sg(int sg, const float* h, const uint8_t* arg, const float* g,
                                 const float* gv_last, float* gx, int sum_t, float* gv0, i64 T,
                                 i64 P, i64 H, i64 W, float tau, float v_th, float v_reset,
                                 float c1, float c2, int nthreads) {
#define LIF_POOL_BWD(K)                                                                        \
    lif_pool_backward_impl<MODE, SOFT, DETACH, K>(h, arg, g, gv_last, gx, sum_t, gv0, T, P, H, \
                                                  W, tau, v_th, v_reset, c1, c2, nthreads)
    if (sg == SG_ATAN)
        LIF_POOL_BWD(SG_ATAN);
    else if (sg == SG_SIGMOID)
        LIF_POOL_BWD(SG_SIGMOID);
    else
        LIF_POOL_BWD(SG_FAST_SIGMOID);
#undef LIF_POOL_BWD
}

template <int MODE>
static void lif_pool_backward_mode(int soft, int detach, int sg, const float* h,
                                   const uint8_t* arg, const float* g, const float* gv_last,
                                   float* gx, int sum_t, float* gv0, i64 T, i64 P, i64 H, i64 W,
                                   float tau, float v_th, float v_reset, float c1, float c2,
                                   int nthreads) {
#define LIF_POOL_BWD(S, D)                                                                     \
    lif_pool_backward_sg<MODE, S, D>(sg, h, arg, g, gv_last, gx, sum_t, gv0, T, P, H, W, tau, \
                                     v_th, v_reset, c1, c2, nthreads)
    if (soft && detach)
        LIF_POOL_BWD(true, true);
    else if (soft)
        LIF_POOL_BWD(true, false);
    else if (detach)
        LIF_POOL_BWD(false, true);
    else
        LIF_POOL_BWD(false, false);
#undef LIF_POOL_BWD
}

extern "C" void lif_pool_backward(const float* h, const uint8_t* arg, const float* g,
                                  const float* gv_last, float* gx, int sum_t, float* gv0, i64 T,
                                  i64 P, i64 H, i64 W, int mode, float tau, float v_th,
                                  float v_reset, int soft, int detach_reset, int sg_kind,
                                  float c1, float c2, int nthreads) {
#define LIF_POOL_BWD(M)                                                                       \
    lif_pool_backward_mode<M>(soft, detach_reset, sg_kind, h, arg, g, gv_last, gx, sum_t, gv0, \
                              T, P, H, W, tau, v_th, v_reset, c1, c2, nthreads)
    if (mode == IF_MODE)
        LIF_POOL_BWD(IF_MODE);
    else if (mode == LIF_DECAY_INPUT)
        LIF_POOL_BWD(LIF_DECAY_INPUT);
    else
        LIF_POOL_BWD(LIF_NO_DECAY_INPUT);
#undef LIF_POOL_BWD
}

// IF/LIF followed by 2×2 max pooling in one pass, for kernels/neuron_pool.py (ATan surrogate,
// the recipes' own; the others run the separate layers).
#include "neuron_math.h"

// The run-time neuron kind as template arguments: CALL(M) for each mode, CALL(S, D) for each
// soft-reset / detach-reset pair, the one the arguments name called.
#define BY_MODE(mode, CALL)                   \
    do {                                      \
        if ((mode) == IF_MODE)                \
            CALL(IF_MODE);                    \
        else if ((mode) == LIF_DECAY_INPUT)   \
            CALL(LIF_DECAY_INPUT);            \
        else                                  \
            CALL(LIF_NO_DECAY_INPUT);         \
    } while (0)
#define BY_RESET(soft, detach, CALL) \
    do {                             \
        if ((soft) && (detach))      \
            CALL(true, true);        \
        else if (soft)               \
            CALL(true, false);       \
        else if (detach)             \
            CALL(false, true);       \
        else                         \
            CALL(false, false);      \
    } while (0)

// IF/LIF over T followed by 2×2 max pooling (stride 2, floor mode) of the spikes, per plane of
// H×W neurons (P planes = B·C), so the full-resolution spikes and membranes never reach memory.
// The neuron arithmetic is if_lif_forward's, operation for operation. x [T, P, H, W] is read with
// time stride x_st (0: the same input at every step); v0 [P, H, W]. Writes out [T, P, PH, PW]
// (pooled spikes), arg [T, P, PH, PW] (0..3: the window's first maximum in row-major order, as
// torch's max_pool2d picks it) unless NULL, and v_last [P, H, W] (the membrane after the last
// step). The pre-reset membranes are not kept: backward replays this loop.
// One step of a plane's HW neurons: v, the spikes s and (KEEP_H, the backward's replay) the
// pre-reset membrane h. The store of h is decided outside the loop, so the loop vectorises
// without masked stores (AVX2, NEON), not only with them (AVX-512).
template <int MODE, bool SOFT, bool KEEP_H>
static inline void lif_plane_step(const float* xt, float* v, float* s, float* ht, i64 HW,
                                  float tau, float v_r, float v_th, float v_reset) {
    for (i64 i = 0; i < HW; ++i) {
        const float h = lif_charge(MODE, v[i], xt[i], tau, v_r);
        const float sp = lif_fire(h, v_th);
        v[i] = lif_reset(SOFT, h, sp, v_th, v_reset);
        s[i] = sp;
        if (KEEP_H) ht[i] = h;
    }
}

template <int MODE, bool SOFT>
static void lif_pool_forward_impl(const float* x, i64 x_st, const float* v0, float* out,
                                  uint8_t* arg, float* v_last, i64 T, i64 P, i64 H, i64 W,
                                  float tau, float v_th, float v_reset, int nthreads) {
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
                lif_plane_step<MODE, SOFT, false>(x + t * x_st + p * HW, v, s, nullptr, HW, tau,
                                                  v_r, v_th, v_reset);
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
                                 uint8_t* arg, float* v_last, i64 T, i64 P, i64 H, i64 W,
                                 int mode, float tau, float v_th, float v_reset, int soft,
                                 int nthreads) {
#define LIF_POOL_FWD(M, S)                                                                  \
    lif_pool_forward_impl<M, S>(x, x_st, v0, out, arg, v_last, T, P, H, W, tau, v_th, v_reset, \
                                nthreads)
#define LIF_POOL_FWD_MODE(M) soft ? LIF_POOL_FWD(M, true) : LIF_POOL_FWD(M, false)
    BY_MODE(mode, LIF_POOL_FWD_MODE);
#undef LIF_POOL_FWD_MODE
#undef LIF_POOL_FWD
}

// Its backward: g [T, P, PH, PW] is dL/d(pooled spikes), routed to each window's winner (the
// other three get none, as in max_pool2d's backward); gv_last [P, H, W] (dL/dV after the last
// step) may be NULL. The pre-reset membranes H are not read from memory: each plane's forward
// loop is run again from x (time stride x_st) and v0 into a buffer of T·H·W floats per thread,
// with the forward's arithmetic, so they are the forward's values bit for bit. Then
// if_lif_backward's arithmetic per neuron. Writes gx [T, P, H, W], or, when sum_t, Σ_t dL/dX[t]
// into gx [P, H, W] (the input was the same at every step); gv0 [P, H, W] unless NULL.
// if_lif_backward's arithmetic for one step of a plane's HW neurons: dL/dX into gxt (added to
// it when SUM, decided outside the loop), dL/dV[t−1] into carry.
template <int MODE, bool SOFT, bool DETACH, int SG, bool SUM>
static inline void lif_plane_backward(const float* ht, const float* gs, float* carry, float* gxt,
                                      i64 HW, float tau, float v_th, float v_reset, float c1,
                                      float c2) {
    for (i64 i = 0; i < HW; ++i) {
        const float gxi = lif_backward_step<MODE, SOFT, DETACH, SG>(
            ht[i], gs[i], carry[i], tau, v_th, v_reset, c1, c2, &carry[i]);
        gxt[i] = SUM ? gxt[i] + gxi : gxi;
    }
}

template <int MODE, bool SOFT, bool DETACH, int SG>
static void lif_pool_backward_impl(const float* x, i64 x_st, const float* v0, const uint8_t* arg,
                                   const float* g, const float* gv_last, float* gx, int sum_t,
                                   float* gv0, i64 T, i64 P, i64 H, i64 W, float tau, float v_th,
                                   float v_reset, float c1, float c2, int nthreads) {
    const i64 HW = H * W, PH = H / 2, PW = W / 2, PHW = PH * PW;
    const float v_r = SOFT ? 0.0f : v_reset;
#pragma omp parallel num_threads(threads_for(T * P * HW, nthreads))
    {
        float* carry = (float*)malloc(sizeof(float) * HW);
        float* gs = (float*)malloc(sizeof(float) * HW);
        float* h = (float*)malloc(sizeof(float) * T * HW);
        float* acc = sum_t ? (float*)malloc(sizeof(float) * HW) : nullptr;
#pragma omp for schedule(static)
        for (i64 p = 0; p < P; ++p) {
            memcpy(carry, v0 + p * HW, sizeof(float) * HW);  // the membrane, for the replay
            for (i64 t = 0; t < T; ++t)
                lif_plane_step<MODE, SOFT, true>(x + t * x_st + p * HW, carry, gs, h + t * HW, HW,
                                                 tau, v_r, v_th, v_reset);
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
                const float* ht = h + t * HW;
                if (sum_t)
                    lif_plane_backward<MODE, SOFT, DETACH, SG, true>(ht, gs, carry, acc, HW, tau,
                                                                     v_th, v_reset, c1, c2);
                else
                    lif_plane_backward<MODE, SOFT, DETACH, SG, false>(
                        ht, gs, carry, gx + (t * P + p) * HW, HW, tau, v_th, v_reset, c1, c2);
            }
            if (acc) memcpy(gx + p * HW, acc, sizeof(float) * HW);
            if (gv0) memcpy(gv0 + p * HW, carry, sizeof(float) * HW);
        }
        free(acc);
        free(h);
        free(gs);
        free(carry);
    }
}

template <int MODE>
static void lif_pool_backward_mode(int soft, int detach, const float* x, i64 x_st,
                                   const float* v0, const uint8_t* arg, const float* g,
                                   const float* gv_last, float* gx, int sum_t, float* gv0, i64 T,
                                   i64 P, i64 H, i64 W, float tau, float v_th, float v_reset,
                                   float c1, float c2, int nthreads) {
#define LIF_POOL_BWD(S, D)                                                                     \
    lif_pool_backward_impl<MODE, S, D, SG_ATAN>(x, x_st, v0, arg, g, gv_last, gx, sum_t, gv0, T, \
                                                P, H, W, tau, v_th, v_reset, c1, c2, nthreads)
    BY_RESET(soft, detach, LIF_POOL_BWD);
#undef LIF_POOL_BWD
}

extern "C" void lif_pool_backward(const float* x, i64 x_st, const float* v0, const uint8_t* arg,
                                  const float* g, const float* gv_last, float* gx, int sum_t,
                                  float* gv0, i64 T, i64 P, i64 H, i64 W, int mode, float tau,
                                  float v_th, float v_reset, int soft, int detach_reset, float c1,
                                  float c2, int nthreads) {
#define LIF_POOL_BWD(M)                                                                       \
    lif_pool_backward_mode<M>(soft, detach_reset, x, x_st, v0, arg, g, gv_last, gx, sum_t, gv0, \
                              T, P, H, W, tau, v_th, v_reset, c1, c2, nthreads)
    BY_MODE(mode, LIF_POOL_BWD);
#undef LIF_POOL_BWD
}

// The same kernels for channels-last tensors: x [T, B, H, W, C] (time stride x_st, 0 for a static
// input), v0 (NULL: every membrane starts at v_rest), v_last and gv0 [B, H, W, C], the pooled
// spikes and their gradient [T, B, H/2, W/2, C]. A unit of work is one sample's row pair
// (2·r, 2·r + 1): 2·W·C neurons, contiguous, so the neuron loop runs over them at once and each
// window's four neurons are four channel vectors, pooled element by element with no per-window
// branch. An odd last row is a unit of its own (nothing pooled). No winners are stored: backward
// finds them again from the replayed membranes.

// n membranes from v0, or all v_rest where v0 is NULL.
static inline void initial_membrane(float* v, const float* v0, float v_rest, i64 n) {
    if (v0)
        memcpy(v, v0, sizeof(float) * n);
    else
        for (i64 i = 0; i < n; ++i) v[i] = v_rest;
}

// The 2×2 max of the spikes s (two rows of W·C) into o (W/2 · C).
static inline void pool_rows_cl(const float* s, float* o, i64 W, i64 C) {
    const i64 WC = W * C;
    for (i64 px = 0; px < W / 2; ++px) {
        const float* a = s + 2 * px * C;
        const float *b = a + C, *c = a + WC, *d = a + WC + C;
        float* ot = o + px * C;
        for (i64 k = 0; k < C; ++k) {
            float m = a[k];
            m = b[k] > m ? b[k] : m;
            m = c[k] > m ? c[k] : m;
            ot[k] = d[k] > m ? d[k] : m;
        }
    }
}

// dL/dS of two rows (gs, W·C) from the pooled gradient gp (W/2 · C), given the rows' pre-reset
// membranes h: each window's winner — its first spiking neuron in row-major order, or its first
// neuron when none fired, as max_pool2d picks it — gets the gradient, the other three none.
static inline void unpool_rows_cl(const float* h, const float* gp, float* gs, i64 W, i64 C,
                                  float v_th) {
    const i64 WC = W * C;
    for (i64 px = 0; px < W / 2; ++px) {
        const float* ha = h + 2 * px * C;
        const float *hb = ha + C, *hc = ha + WC, *hd = ha + WC + C;
        float* ga = gs + 2 * px * C;
        float *gb = ga + C, *gc = ga + WC, *gd = ga + WC + C;
        const float* gt = gp + px * C;
        for (i64 k = 0; k < C; ++k) {
            const float sa = lif_fire(ha[k], v_th), sb = lif_fire(hb[k], v_th);
            const float sc = lif_fire(hc[k], v_th), sd = lif_fire(hd[k], v_th);
            // 1 where no neuron before (a), before b, before c fired; the products are exact
            const float na = 1.0f - sa, nab = na * (1.0f - sb), nabc = nab * (1.0f - sc);
            const float g = gt[k];
            ga[k] = sa + nabc * (1.0f - sd) > 0.0f ? g : 0.0f;
            gb[k] = na * sb > 0.0f ? g : 0.0f;
            gc[k] = nab * sc > 0.0f ? g : 0.0f;
            gd[k] = nabc * sd > 0.0f ? g : 0.0f;
        }
    }
    if (W % 2) {  // the last column is in no window
        memset(gs + (W - 1) * C, 0, sizeof(float) * C);
        memset(gs + WC + (W - 1) * C, 0, sizeof(float) * C);
    }
}

template <int MODE, bool SOFT>
static void lif_pool_cl_forward_impl(const float* x, i64 x_st, const float* v0, float v_rest,
                                     float* out, float* v_last, i64 T, i64 B, i64 H, i64 W, i64 C,
                                     float tau, float v_th, float v_reset, int nthreads) {
    const i64 WC = W * C, PH = H / 2, PWC = (W / 2) * C, R = (H + 1) / 2;
    const float v_r = SOFT ? 0.0f : v_reset;
#pragma omp parallel num_threads(threads_for(T * B * H * WC, nthreads))
    {
        float* v = (float*)malloc(sizeof(float) * 2 * WC);
        float* s = (float*)malloc(sizeof(float) * 2 * WC);
#pragma omp for schedule(static)
        for (i64 u = 0; u < B * R; ++u) {
            const i64 b = u / R, r = u % R, n = (r < PH ? 2 : 1) * WC, off = (b * H + 2 * r) * WC;
            initial_membrane(v, v0 ? v0 + off : nullptr, v_rest, n);
            for (i64 t = 0; t < T; ++t) {
                lif_plane_step<MODE, SOFT, false>(x + t * x_st + off, v, s, nullptr, n, tau, v_r,
                                                  v_th, v_reset);
                if (r < PH) pool_rows_cl(s, out + ((t * B + b) * PH + r) * PWC, W, C);
            }
            memcpy(v_last + off, v, sizeof(float) * n);
        }
        free(s);
        free(v);
    }
}

extern "C" void lif_pool_cl_forward(const float* x, i64 x_st, const float* v0, float v_rest,
                                    float* out, float* v_last, i64 T, i64 B, i64 H, i64 W,
                                    i64 C, int mode, float tau, float v_th, float v_reset,
                                    int soft, int nthreads) {
#define LIF_POOL_CL_FWD(M, S)                                                               \
    lif_pool_cl_forward_impl<M, S>(x, x_st, v0, v_rest, out, v_last, T, B, H, W, C, tau, v_th, \
                                   v_reset, nthreads)
#define LIF_POOL_CL_FWD_MODE(M) soft ? LIF_POOL_CL_FWD(M, true) : LIF_POOL_CL_FWD(M, false)
    BY_MODE(mode, LIF_POOL_CL_FWD_MODE);
#undef LIF_POOL_CL_FWD_MODE
#undef LIF_POOL_CL_FWD
}

// Its backward, as lif_pool_backward: g [T, B, H/2, W/2, C]; writes gx [T, B, H, W, C], or Σ_t
// into gx [B, H, W, C] when sum_t; gv0 [B, H, W, C] unless NULL; gv_last may be NULL.
template <int MODE, bool SOFT, bool DETACH, int SG>
static void lif_pool_cl_backward_impl(const float* x, i64 x_st, const float* v0, float v_rest,
                                      const float* g,
                                      const float* gv_last, float* gx, int sum_t, float* gv0,
                                      i64 T, i64 B, i64 H, i64 W, i64 C, float tau, float v_th,
                                      float v_reset, float c1, float c2, int nthreads) {
    const i64 WC = W * C, PH = H / 2, PWC = (W / 2) * C, R = (H + 1) / 2, N = B * H * WC;
    const float v_r = SOFT ? 0.0f : v_reset;
#pragma omp parallel num_threads(threads_for(T * N, nthreads))
    {
        float* carry = (float*)malloc(sizeof(float) * 2 * WC);
        float* gs = (float*)malloc(sizeof(float) * 2 * WC);
        float* h = (float*)malloc(sizeof(float) * T * 2 * WC);
        float* acc = sum_t ? (float*)malloc(sizeof(float) * 2 * WC) : nullptr;
#pragma omp for schedule(static)
        for (i64 u = 0; u < B * R; ++u) {
            const i64 b = u / R, r = u % R, n = (r < PH ? 2 : 1) * WC, off = (b * H + 2 * r) * WC;
            initial_membrane(carry, v0 ? v0 + off : nullptr, v_rest, n);  // for the replay
            for (i64 t = 0; t < T; ++t)
                lif_plane_step<MODE, SOFT, true>(x + t * x_st + off, carry, gs, h + t * n, n, tau,
                                                 v_r, v_th, v_reset);
            if (gv_last)
                memcpy(carry, gv_last + off, sizeof(float) * n);
            else
                memset(carry, 0, sizeof(float) * n);
            if (acc) memset(acc, 0, sizeof(float) * n);
            for (i64 t = T - 1; t >= 0; --t) {
                const float* ht = h + t * n;
                if (r < PH)
                    unpool_rows_cl(ht, g + ((t * B + b) * PH + r) * PWC, gs, W, C, v_th);
                else
                    memset(gs, 0, sizeof(float) * n);
                if (sum_t)
                    lif_plane_backward<MODE, SOFT, DETACH, SG, true>(ht, gs, carry, acc, n, tau,
                                                                     v_th, v_reset, c1, c2);
                else
                    lif_plane_backward<MODE, SOFT, DETACH, SG, false>(
                        ht, gs, carry, gx + t * N + off, n, tau, v_th, v_reset, c1, c2);
            }
            if (acc) memcpy(gx + off, acc, sizeof(float) * n);
            if (gv0) memcpy(gv0 + off, carry, sizeof(float) * n);
        }
        free(acc);
        free(h);
        free(gs);
        free(carry);
    }
}

template <int MODE>
static void lif_pool_cl_backward_mode(int soft, int detach, const float* x, i64 x_st,
                                      const float* v0, float v_rest, const float* g,
                                      const float* gv_last, float* gx, int sum_t, float* gv0,
                                      i64 T, i64 B, i64 H, i64 W, i64 C, float tau, float v_th,
                                      float v_reset, float c1, float c2, int nthreads) {
#define LIF_POOL_CL_BWD(S, D)                                                                 \
    lif_pool_cl_backward_impl<MODE, S, D, SG_ATAN>(x, x_st, v0, v_rest, g, gv_last, gx, sum_t, \
                                                   gv0, T, B, H, W, C, tau, v_th, v_reset, c1, \
                                                   c2, nthreads)
    BY_RESET(soft, detach, LIF_POOL_CL_BWD);
#undef LIF_POOL_CL_BWD
}

extern "C" void lif_pool_cl_backward(const float* x, i64 x_st, const float* v0, float v_rest,
                                     const float* g, const float* gv_last, float* gx, int sum_t,
                                     float* gv0, i64 T, i64 B, i64 H, i64 W, i64 C, int mode,
                                     float tau, float v_th, float v_reset, int soft,
                                     int detach_reset, float c1, float c2, int nthreads) {
#define LIF_POOL_CL_BWD(M)                                                                    \
    lif_pool_cl_backward_mode<M>(soft, detach_reset, x, x_st, v0, v_rest, g, gv_last, gx,     \
                                 sum_t, gv0, T, B, H, W, C, tau, v_th, v_reset, c1, c2,      \
                                 nthreads)
    BY_MODE(mode, LIF_POOL_CL_BWD);
#undef LIF_POOL_CL_BWD
}

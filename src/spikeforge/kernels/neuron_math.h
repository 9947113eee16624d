// Shared by the CPU kernel files: types, the surrogate derivatives, the thread rule, and one
// IF/LIF neuron step forward and backward, so every kernel rounds exactly like the others.
// Built with -ffp-contract=off and no fast-math (see build.py).
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef int64_t i64;

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

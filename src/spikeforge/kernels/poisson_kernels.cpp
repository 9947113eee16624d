// Poisson (rate) code on the CPU, sparse: only the K pixels that can fire draw random numbers.
//
// The K pixels with p > 0 are given in flat order; q [K] holds their firing thresholds in 1/65536
// (q = round(p·65536), 65536 = always fires). Pixel k at step t fires when r < q, r the 16-bit
// lane k mod 4 of the SplitMix64 output for the counter seed + (t·words + k/4 + 1)·φ
// (words = ⌈K/4⌉, φ = 0x9E3779B97F4A7C15): P = q/65536, within 2^-17 of p, independent per pixel
// and step, and any (t, k) can be drawn on its own. Both kernels below draw the same spikes.
//
// poisson_encode          the spike trains themselves, [T, N] of 1-, 2- or 4-byte elements.
// poisson_linear_forward  I[t, b, o] = Σ_k S[t, k]·W[o, feat[k]] over the pixels k of sample b:
//                         the first Linear layer fed straight from the draws, no spike tensor.
// poisson_linear_backward ∂L/∂W[o, f] = Σ_{t, k: feat[k] = f} S[t, k]·∂L/∂I[t, b(k), o].
// Weights and gradients are [F, OP]: transposed, the output axis padded to OP (a multiple of 16)
// with zeros, so one sample's row is whole 16-lane vectors (simd16.h).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "simd16.h"

typedef int64_t i64;

static const uint64_t PHI = 0x9E3779B97F4A7C15ull;

static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The four 16-bit uniforms of pixels 4j .. 4j+3 at step t.
static inline uint64_t draw(uint64_t seed, uint64_t words, i64 t, i64 j) {
    return splitmix64(seed + ((uint64_t)t * words + (uint64_t)j + 1) * PHI);
}

static inline int threads_for(i64 work, int nthreads) {
    return work < (1 << 16) ? 1 : nthreads;
}

template <typename E>
static void encode_rows(const i64* idx, const uint32_t* q, i64 K, i64 T, i64 N, uint64_t seed,
                        E* out, E one, int nthreads) {
    const uint64_t words = (uint64_t)((K + 3) / 4);
#pragma omp parallel for schedule(static) num_threads(threads_for(T * K, nthreads))
    for (i64 t = 0; t < T; ++t) {
        E* row = out + t * N;
        memset(row, 0, N * sizeof(E));
        for (i64 k = 0; k < K; k += 4) {
            const uint64_t bits = draw(seed, words, t, k / 4);
            const i64 m = K - k < 4 ? K - k : 4;
            for (i64 l = 0; l < m; ++l) {
                const uint32_t r = (uint32_t)(bits >> (16 * l)) & 0xFFFFu;
                row[idx[k + l]] = r < q[k + l] ? one : (E)0;
            }
        }
    }
}

// idx [K]: the flat indices (in one step of N pixels) of the pixels that can fire, ascending.
// `one` is the bit pattern of 1 in the output dtype.
extern "C" void poisson_encode(const i64* idx, const uint32_t* q, i64 K, i64 T, i64 N,
                               uint64_t seed, void* out, int esize, uint32_t one, int nthreads) {
    if (esize == 4)
        encode_rows<uint32_t>(idx, q, K, T, N, seed, (uint32_t*)out, one, nthreads);
    else if (esize == 2)
        encode_rows<uint16_t>(idx, q, K, T, N, seed, (uint16_t*)out, (uint16_t)one, nthreads);
    else
        encode_rows<uint8_t>(idx, q, K, T, N, seed, (uint8_t*)out, (uint8_t)one, nthreads);
}

// start [B + 1]: the pixels of sample b are k in [start[b], start[b + 1]); feat [K]: their input
// feature (pixel index within the sample). out [T, B, O]. spk [K, T] (bytes, 0/1) receives the
// spikes for the backward pass, or is NULL. Each sample's current is summed in ascending k.
// LP = OP when it is a compile-time constant (the common OP = 16), else 0.
template <int LP>
static void linear_forward(const int32_t* feat, const uint32_t* q, const i64* start, i64 B,
                           i64 K, i64 T, uint64_t seed, const float* wt, i64 O, i64 op,
                           float* out, uint8_t* spk, int nthreads) {
    const i64 OP = LP ? LP : op;
    const uint64_t words = (uint64_t)((K + 3) / 4);
#pragma omp parallel num_threads(threads_for(T * K, nthreads))
    {
        float* acc = (float*)aligned_alloc(64, sizeof(float) * T * OP);
#pragma omp for schedule(static)
        for (i64 b = 0; b < B; ++b) {
            memset(acc, 0, sizeof(float) * T * OP);
            const i64 k0 = start[b], k1 = start[b + 1];
            for (i64 j = k0 / 4; 4 * j < k1; ++j) {
                const i64 lo = k0 > 4 * j ? k0 : 4 * j, hi = k1 < 4 * j + 4 ? k1 : 4 * j + 4;
                for (i64 t = 0; t < T; ++t) {
                    const uint64_t bits = draw(seed, words, t, j);
                    int32_t on[4];  // all ones where pixel k fires
                    for (i64 k = lo; k < hi; ++k) {
                        const uint32_t r = (uint32_t)(bits >> (16 * (k - 4 * j))) & 0xFFFFu;
                        const bool s = r < q[k];
                        if (spk) spk[k * T + t] = (uint8_t)s;
                        on[k - lo] = -(int32_t)s;
                    }
                    float* a = acc + t * OP;
                    for (i64 o = 0; o < OP; o += L) {
                        vf v = vload(a + o);
                        for (i64 k = lo; k < hi; ++k) {
                            const vf w = vload(wt + (i64)feat[k] * OP + o);
                            v = vadd(v, vmask(vint(on[k - lo]), w));
                        }
                        vstore(a + o, v);
                    }
                }
            }
            for (i64 t = 0; t < T; ++t)
                memcpy(out + (t * B + b) * O, acc + t * OP, sizeof(float) * O);
        }
        free(acc);
    }
}

extern "C" void poisson_linear_forward(const int32_t* feat, const uint32_t* q, const i64* start,
                                       i64 B, i64 K, i64 T, uint64_t seed, const float* wt,
                                       i64 O, i64 OP, float* out, uint8_t* spk, int nthreads) {
    if (OP == 16)
        linear_forward<16>(feat, q, start, B, K, T, seed, wt, O, OP, out, spk, nthreads);
    else
        linear_forward<0>(feat, q, start, B, K, T, seed, wt, O, OP, out, spk, nthreads);
}

enum { KB = 4 };  // pixels whose weight gradients linear_backward sums together

// g [T, B, O]: ∂L/∂I. parts [nthreads, F, OP], zeros on entry: one partial ∂L/∂Wᵀ per thread,
// summed by the caller. LP as in linear_forward.
template <int LP>
static void linear_backward(const int32_t* feat, const i64* start, i64 B, i64 T,
                            const uint8_t* spk, const float* g, i64 O, i64 op, i64 F,
                            float* parts, int nthreads) {
    const i64 OP = LP ? LP : op;
#pragma omp parallel num_threads(threads_for(T * start[B], nthreads))
    {
#ifdef _OPENMP
        float* gw = parts + (i64)omp_get_thread_num() * F * OP;
#else
        float* gw = parts;
#endif
        float* gb = (float*)aligned_alloc(64, sizeof(float) * T * OP);
#pragma omp for schedule(static)
        for (i64 b = 0; b < B; ++b) {
            for (i64 t = 0; t < T; ++t) {
                memcpy(gb + t * OP, g + (t * B + b) * O, sizeof(float) * O);
                memset(gb + t * OP + O, 0, sizeof(float) * (OP - O));
            }
            // KB pixels at a time: KB independent sums over t, each ∂L/∂I row loaded once for
            // them; each pixel's sum keeps its order (t ascending from zero)
            for (i64 k = start[b]; k < start[b + 1]; k += KB) {
                const i64 nk = start[b + 1] - k < KB ? start[b + 1] - k : KB;
                const uint8_t* s[KB];
                for (int kk = 0; kk < KB; ++kk)  // past the sample's end: its last row, unused
                    s[kk] = spk + (k + (kk < nk ? kk : nk - 1)) * T;
                for (i64 o = 0; o < OP; o += L) {
                    vf v[KB];
#pragma GCC unroll 4
                    for (int kk = 0; kk < KB; ++kk) v[kk] = vzero();
                    for (i64 t = 0; t < T; ++t) {
                        const vf gt = vload(gb + t * OP + o);
#pragma GCC unroll 4
                        for (int kk = 0; kk < KB; ++kk)
                            v[kk] = vadd(v[kk], vmask(vint(-(int32_t)s[kk][t]), gt));
                    }
                    for (i64 kk = 0; kk < nk; ++kk) {
                        float* dst = gw + (i64)feat[k + kk] * OP + o;
                        vstore(dst, vadd(vload(dst), v[kk]));
                    }
                }
            }
        }
        free(gb);
    }
}

extern "C" void poisson_linear_backward(const int32_t* feat, const i64* start, i64 B, i64 T,
                                        const uint8_t* spk, const float* g, i64 O, i64 OP,
                                        i64 F, float* parts, int nthreads) {
    if (OP == 16)
        linear_backward<16>(feat, start, B, T, spk, g, O, OP, F, parts, nthreads);
    else
        linear_backward<0>(feat, start, B, T, spk, g, O, OP, F, parts, nthreads);
}

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

// The pixels that can fire, for linear: p [B, F] (float32, row-major) → feat [K] (each one's
// feature index), q [K] = (int32)(min(p, 1)·65536 + 0.5) in float32 arithmetic (poisson.py's
// _thresholds, operation for operation) and start [B + 1] (sample b's pixels are k in
// [start[b], start[b + 1]), start[B] = K). feat and q have room for B·F entries.
extern "C" void poisson_linear_pixels(const float* p, i64 B, i64 F, int32_t* feat, uint32_t* q,
                                      i64* start) {
    i64 k = 0;
    for (i64 b = 0; b < B; ++b) {
        start[b] = k;
        const float* row = p + b * F;
        for (i64 f = 0; f < F; ++f) {
            if (row[f] > 0.0f) {
                const float v = row[f] < 1.0f ? row[f] : 1.0f;
                feat[k] = (int32_t)f;
                q[k] = (uint32_t)(int32_t)(v * 65536.0f + 0.5f);
                ++k;
            }
        }
    }
    start[B] = k;
}

// linear_forward draws TL steps of a 4-pixel word at once and keeps the currents of those steps
// as vectors over time (GCC/Clang vector extensions: one source for every target, which maps
// each type onto its own vectors, or pairs and quads of narrower ones).
enum { TL = 8, MAX_OUT = 16 };
typedef uint64_t u64xt __attribute__((vector_size(8 * TL)));
typedef uint32_t u32xt __attribute__((vector_size(4 * TL)));
typedef int32_t i32xt __attribute__((vector_size(4 * TL)));
typedef float f32xt __attribute__((vector_size(4 * TL)));
typedef uint16_t u16xt __attribute__((vector_size(2 * TL)));
typedef uint8_t u8xt __attribute__((vector_size(TL)));

static inline u64xt splitmix64_t(u64xt z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// start [B + 1]: the pixels of sample b are k in [start[b], start[b + 1]); feat [K]: their input
// feature (pixel index within the sample); wt [F, OP]. Writes outputs o0 .. o0+NO−1 of out
// [T, B, O], and spk [K, T] (bytes, 0/1: the spikes, for the backward pass) unless NULL. Each
// current is summed in ascending k from +0. The counter of step t is seed + (t·words + j + 1)·φ
// = seed + (j + 1)·φ + t·(words·φ) (mod 2^64), so the TL draws of word j for steps t0 .. are one
// vector; a pixel's spikes over those steps are one lane mask, and the currents of the NO
// outputs over those steps are NO vectors held in registers, each added the pixel's weight where
// it fired. Against one draw and one masked add of an output row per (pixel, step), this does
// the draws and compares TL at a time and touches only the NO real outputs: 1.8x faster with
// AVX-512, 1.25x with AVX2 (fc-lif's batch, one thread, AMD Zen 5).
template <int NO>
static void linear_forward(const int32_t* feat, const uint32_t* q, const i64* start, i64 B,
                           i64 K, i64 T, uint64_t seed, const float* wt, i64 O, i64 OP, i64 o0,
                           float* out, uint8_t* spk, int nthreads) {
    const uint64_t words = (uint64_t)((K + 3) / 4);
    const uint64_t step_inc = words * PHI;
    u64xt lane_inc;
    for (int l = 0; l < TL; ++l) lane_inc[l] = (uint64_t)l * step_inc;
#pragma omp parallel for schedule(static) num_threads(threads_for(T * K, nthreads))
    for (i64 b = 0; b < B; ++b) {
        const i64 k0 = start[b], k1 = start[b + 1];
        for (i64 t0 = 0; t0 < T; t0 += TL) {
            const int n = T - t0 < TL ? (int)(T - t0) : TL;
            f32xt acc[NO];
            for (int o = 0; o < NO; ++o) acc[o] = f32xt{};
            for (i64 j = k0 / 4; 4 * j < k1; ++j) {
                const i64 lo = k0 > 4 * j ? k0 : 4 * j, hi = k1 < 4 * j + 4 ? k1 : 4 * j + 4;
                const u64xt bits = splitmix64_t(seed + (uint64_t)(j + 1) * PHI +
                                                (uint64_t)t0 * step_inc + lane_inc);
                // the four 16-bit uniforms as two 32-bit halves: compares in 32-bit lanes
                const u32xt half[2] = {__builtin_convertvector(bits & 0xFFFFFFFFull, u32xt),
                                       __builtin_convertvector(bits >> 32, u32xt)};
                for (i64 k = lo; k < hi; ++k) {
                    const int lane = (int)(k - 4 * j);
                    const i32xt r = (i32xt)((half[lane >> 1] >> (16 * (lane & 1))) & 0xFFFFu);
                    const i32xt on = r < (int32_t)q[k];  // all ones where pixel k fires
                    if (spk) {
                        // narrowed in two steps: one to bytes is lane by lane on AVX2
                        const u8xt s = __builtin_convertvector(
                            __builtin_convertvector(-on, u16xt), u8xt);
                        if (n == TL)
                            memcpy(spk + k * T + t0, &s, TL);
                        else
                            for (int l = 0; l < n; ++l) spk[k * T + t0 + l] = s[l];
                    }
                    const float* w = wt + (i64)feat[k] * OP + o0;
                    for (int o = 0; o < NO; ++o)  // w − 0 is w, a broadcast with no add
                        acc[o] += (f32xt)((i32xt)(w[o] - f32xt{}) & on);
                }
            }
            for (int l = 0; l < n; ++l)
                for (int o = 0; o < NO; ++o) out[((t0 + l) * B + b) * O + o0 + o] = acc[o][l];
        }
    }
}

typedef void (*linear_forward_fn)(const int32_t*, const uint32_t*, const i64*, i64, i64, i64,
                                  uint64_t, const float*, i64, i64, i64, float*, uint8_t*, int);

// Outputs in chunks of at most MAX_OUT (the draws are repeated per chunk; the spikes are written
// with the first).
extern "C" void poisson_linear_forward(const int32_t* feat, const uint32_t* q, const i64* start,
                                       i64 B, i64 K, i64 T, uint64_t seed, const float* wt,
                                       i64 O, i64 OP, float* out, uint8_t* spk, int nthreads) {
    static const linear_forward_fn by_outputs[MAX_OUT] = {
        linear_forward<1>,  linear_forward<2>,  linear_forward<3>,  linear_forward<4>,
        linear_forward<5>,  linear_forward<6>,  linear_forward<7>,  linear_forward<8>,
        linear_forward<9>,  linear_forward<10>, linear_forward<11>, linear_forward<12>,
        linear_forward<13>, linear_forward<14>, linear_forward<15>, linear_forward<16>};
    for (i64 o0 = 0; o0 < O; o0 += MAX_OUT) {
        const i64 no = O - o0 < MAX_OUT ? O - o0 : MAX_OUT;
        by_outputs[no - 1](feat, q, start, B, K, T, seed, wt, O, OP, o0, out,
                           o0 == 0 ? spk : NULL, nthreads);
    }
}

enum { KB = 4 };  // pixels whose weight gradients linear_backward sums together

// g [T, B, O]: ∂L/∂I. parts [nthreads, F, OP], zeros on entry: one partial ∂L/∂Wᵀ per thread,
// summed by the caller. LP = OP when it is a compile-time constant (the common OP = 16), else 0.
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

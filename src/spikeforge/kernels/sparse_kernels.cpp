// Sparse Conv2d(K×K, stride 1, zero padding) → MaxPool2d(2) for event frames and spike maps.
//
// Forward, per sample: the convolution is scattered from the nonzero inputs only (each adds
// v·W[:, c, ky, kx] to the K×K outputs it reaches) into a small buffer holding just the 2·PH ×
// 2·PW outputs that floor-mode pooling reads, then pooled at once, keeping the winning position
// (first maximum wins, NaN propagates: torch's rule). Backward uses that only the winner of each
// pooling window has a gradient: the input gradient is scattered from the PH·PW·O pooled
// gradients, the weight gradient gathers them at the nonzero inputs, the bias gradient is their
// sum. Outputs and gradients are channels-last ([N, PH, PW, O], [N, H, W, C]); the input may be
// NCHW or NHWC. Channel vectors are padded to 16 lanes (one AVX-512 register) internally.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define SF_AVX512 1
#endif

typedef int64_t i64;

enum { L = 16, KMAX = 7 };

#ifdef SF_AVX512
typedef __m512 vf;
static inline __mmask16 lanes(i64 n) { return (__mmask16)(n >= L ? 0xFFFF : (1u << n) - 1); }
static inline vf vzero() { return _mm512_setzero_ps(); }
static inline vf vset(float a) { return _mm512_set1_ps(a); }
static inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
static inline vf vload_n(const float* p, i64 n) { return _mm512_maskz_loadu_ps(lanes(n), p); }
static inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
static inline void vstore_n(float* p, vf v, i64 n) { _mm512_mask_storeu_ps(p, lanes(n), v); }
static inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
// v where arg[lane] == q, else 0
static inline vf vwhere(const uint8_t* arg, int q, vf v) {
    const __m128i a = _mm_loadu_si128((const __m128i*)arg);
    return _mm512_maskz_mov_ps(_mm_cmpeq_epi8_mask(a, _mm_set1_epi8((char)q)), v);
}
// max-pool of four values with the index of the winner, written to m[0..n) and arg[0..16)
static inline void vpool4(const float* w0, const float* w1, const float* w2, const float* w3,
                          float* m, uint8_t* arg, i64 n) {
    const float* win[4] = {w0, w1, w2, w3};
    vf best = vload(w0);
    __m512i a = _mm512_setzero_si512();
    for (int q = 1; q < 4; ++q) {
        const vf v = vload(win[q]);
        const __mmask16 take = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) |
                               _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, take, v);
        a = _mm512_mask_mov_epi32(a, take, _mm512_set1_epi32(q));
    }
    vstore_n(m, best, n);
    _mm_storeu_si128((__m128i*)arg, _mm512_cvtepi32_epi8(a));
}
#else
struct vf {
    float x[L];
};
static inline vf vzero() { vf r; for (int i = 0; i < L; ++i) r.x[i] = 0.0f; return r; }
static inline vf vset(float a) { vf r; for (int i = 0; i < L; ++i) r.x[i] = a; return r; }
static inline vf vload(const float* p) { vf r; memcpy(r.x, p, sizeof(r.x)); return r; }
static inline vf vload_n(const float* p, i64 n) {
    vf r = vzero();
    for (i64 i = 0; i < n && i < L; ++i) r.x[i] = p[i];
    return r;
}
static inline void vstore(float* p, vf v) { memcpy(p, v.x, sizeof(v.x)); }
static inline void vstore_n(float* p, vf v, i64 n) {
    for (i64 i = 0; i < n && i < L; ++i) p[i] = v.x[i];
}
static inline vf vadd(vf a, vf b) { for (int i = 0; i < L; ++i) a.x[i] += b.x[i]; return a; }
static inline vf vfma(vf a, vf b, vf c) {
    for (int i = 0; i < L; ++i) c.x[i] = fmaf(a.x[i], b.x[i], c.x[i]);
    return c;
}
static inline vf vwhere(const uint8_t* arg, int q, vf v) {
    for (int i = 0; i < L; ++i) v.x[i] = arg[i] == q ? v.x[i] : 0.0f;
    return v;
}
static inline void vpool4(const float* w0, const float* w1, const float* w2, const float* w3,
                          float* m, uint8_t* arg, i64 n) {
    const float* win[4] = {w0, w1, w2, w3};
    for (int i = 0; i < L; ++i) {
        float best = w0[i];
        uint8_t a = 0;
        for (uint8_t q = 1; q < 4; ++q) {
            const float v = win[q][i];
            if (v > best || v != v) {
                best = v;
                a = q;
            }
        }
        if (i < n) m[i] = best;
        arg[i] = a;
    }
}
#endif

// Calls f(i, x[i]) for every nonzero (or NaN) x[i], i < n, in increasing i.
template <class F>
static inline void for_nonzero(const float* x, i64 n, F f) {
    i64 i = 0;
#ifdef SF_AVX512
    for (; i + L <= n; i += L) {
        unsigned m = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), _mm512_setzero_ps(), _CMP_NEQ_UQ);
        while (m) {
            const int b = __builtin_ctz(m);
            f(i + b, x[i + b]);
            m &= m - 1;
        }
    }
#endif
    for (; i < n; ++i)
        if (x[i] != 0.0f) f(i, x[i]);
}

// Large outputs are written once from scratch: ask for huge pages, which fault in ~4× faster.
static void advise_huge(void* p, i64 bytes) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)1 << 21;
    const uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    const uintptr_t hi = ((uintptr_t)p + (uintptr_t)bytes) & ~(huge - 1);
    if (hi > lo) madvise((void*)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

struct Geometry {
    i64 C, H, W, O, OP, K, pad, PH, PW;
    int channels_last;  // input layout: NHWC (1) or NCHW (0)
    // channel and position of flat input index i
    inline void decode(i64 i, i64* c, i64* iy, i64* ix) const {
        i64 p;
        if (channels_last) {
            *c = i % C;
            p = i / C;
        } else {
            *c = i / (H * W);
            p = i % (H * W);
        }
        *iy = p / W;
        *ix = p % W;
    }
};

static int team(i64 n, int nthreads) { return n < 2 ? 1 : nthreads; }

static float* alloc_floats(i64 n) {
    const size_t bytes = ((sizeof(float) * (size_t)(n + L)) + 63) & ~(size_t)63;
    return (float*)aligned_alloc(64, bytes);
}

// out [N, PH, PW, O] = maxpool2(conv(x) + bias), arg [N, PH, PW, OP] = winner (0..3, row-major
// in the window). wt [C, K, K, OP] is the weight with output channels last, bias [OP].
extern "C" void scp_forward(const float* x, i64 N, i64 C, i64 H, i64 W, int channels_last,
                            const float* wt, const float* bias, i64 O, i64 OP, i64 K, i64 pad,
                            float* out, uint8_t* arg, int nthreads) {
    const Geometry g = {C, H, W, O, OP, K, pad, (H + 2 * pad - K + 1) / 2,
                        (W + 2 * pad - K + 1) / 2, channels_last};
    const i64 CH = 2 * g.PH, CW = 2 * g.PW, P = g.PH * g.PW;
    advise_huge(out, N * P * O * (i64)sizeof(float));
    advise_huge(arg, N * P * OP);
#pragma omp parallel num_threads(team(N, nthreads))
    {
        float* buf = alloc_floats(CH * CW * OP);
#pragma omp for schedule(static)
        for (i64 n = 0; n < N; ++n) {
            for (i64 p = 0; p < CH * CW; ++p)
                for (i64 o = 0; o < OP; o += L) vstore(buf + p * OP + o, vload(bias + o));
            for_nonzero(x + n * C * H * W, C * H * W, [&](i64 i, float v) {
                i64 c, iy, ix;
                g.decode(i, &c, &iy, &ix);
                const vf vv = vset(v);
                for (i64 ky = 0; ky < K; ++ky) {
                    const i64 oy = iy + pad - ky;
                    if (oy < 0 || oy >= CH) continue;
                    for (i64 kx = 0; kx < K; ++kx) {
                        const i64 ox = ix + pad - kx;
                        if (ox < 0 || ox >= CW) continue;
                        float* d = buf + (oy * CW + ox) * OP;
                        const float* w = wt + ((c * K + ky) * K + kx) * OP;
                        for (i64 o = 0; o < OP; o += L)
                            vstore(d + o, vfma(vv, vload(w + o), vload(d + o)));
                    }
                }
            });
            for (i64 py = 0; py < g.PH; ++py) {
                for (i64 px = 0; px < g.PW; ++px) {
                    const float* c0 = buf + (2 * py * CW + 2 * px) * OP;
                    const i64 p = n * P + py * g.PW + px;
                    for (i64 o = 0; o < OP; o += L)
                        vpool4(c0 + o, c0 + OP + o, c0 + CW * OP + o, c0 + CW * OP + OP + o,
                               out + p * O + o, arg + p * OP + o, O - o);
                }
            }
        }
        free(buf);
    }
}

// Input gradient of one sample: gx[iy, ix, :] += Σ g[p, o]·W[o, :, ky, kx] over the pooled
// outputs p whose winner sits at (iy − ky + pad, ix − kx + pad). Winners of one window that share
// a position are summed in registers (K accumulators per kernel row) before touching gxbuf.
template <int K>
static void input_grad(const Geometry& g, const float* gn, const uint8_t* an, const float* wo,
                       i64 CP, float* gxbuf, int* list, float* gval) {
    const i64 H = g.H, W = g.W, O = g.O, OP = g.OP, pad = g.pad;
    memset(gxbuf, 0, sizeof(float) * H * W * CP);
    for (i64 py = 0; py < g.PH; ++py) {
        for (i64 px = 0; px < g.PW; ++px) {
            const i64 p = py * g.PW + px;
            int count[4] = {0, 0, 0, 0};
            for (i64 o = 0; o < O; ++o) {
                const float v = gn[p * O + o];
                if (v == 0.0f) continue;
                const int q = an[p * OP + o];
                list[q * O + count[q]] = (int)o;
                gval[q * O + count[q]] = v;
                ++count[q];
            }
            for (int q = 0; q < 4; ++q) {
                if (!count[q]) continue;
                const i64 oy = 2 * py + (q >> 1), ox = 2 * px + (q & 1);
                for (i64 ky = 0; ky < K; ++ky) {
                    const i64 iy = oy + ky - pad;
                    if (iy < 0 || iy >= H) continue;
                    for (i64 c = 0; c < CP; c += L) {
                        vf acc[K];
                        for (int kx = 0; kx < K; ++kx) acc[kx] = vzero();
                        for (int j = 0; j < count[q]; ++j) {
                            const vf gv = vset(gval[q * O + j]);
                            const float* w = wo + ((i64)list[q * O + j] * K + ky) * K * CP + c;
                            for (int kx = 0; kx < K; ++kx) acc[kx] = vfma(gv, vload(w + kx * CP),
                                                                          acc[kx]);
                        }
                        for (int kx = 0; kx < K; ++kx) {
                            const i64 ix = ox + kx - pad;
                            if (ix < 0 || ix >= W) continue;
                            float* d = gxbuf + (iy * W + ix) * CP + c;
                            vstore(d, vadd(vload(d), acc[kx]));
                        }
                    }
                }
            }
        }
    }
}

typedef void (*InputGrad)(const Geometry&, const float*, const uint8_t*, const float*, i64,
                          float*, int*, float*);

static InputGrad input_grad_for(i64 K) {
    switch (K) {
        case 1: return input_grad<1>;
        case 2: return input_grad<2>;
        case 3: return input_grad<3>;
        case 4: return input_grad<4>;
        case 5: return input_grad<5>;
        case 6: return input_grad<6>;
        default: return input_grad<7>;
    }
}

// Gradients of scp_forward from g = dL/d(out) [N, PH, PW, O]:
//   gw_parts [nthreads, C, K, K, OP] and gb_parts [nthreads, OP] (zeroed by the caller; summed
//   by the caller over threads); gw_parts NULL skips the weight gradient.
//   gx [N, H, W, C] (NULL: not needed) with wo [O, K, K, CP], the weight with input channels last,
//   padded to CP (a multiple of 16).
extern "C" void scp_backward(const float* x, i64 N, i64 C, i64 H, i64 W, int channels_last,
                             const uint8_t* arg, const float* gout, i64 O, i64 OP, i64 K,
                             i64 pad, float* gw_parts, float* gb_parts, const float* wo, i64 CP,
                             float* gx, int nthreads) {
    const Geometry g = {C, H, W, O, OP, K, pad, (H + 2 * pad - K + 1) / 2,
                        (W + 2 * pad - K + 1) / 2, channels_last};
    const i64 CH = 2 * g.PH, CW = 2 * g.PW, P = g.PH * g.PW;
    const InputGrad igrad = input_grad_for(K);
    if (gx) advise_huge(gx, N * H * W * C * (i64)sizeof(float));
#pragma omp parallel num_threads(team(N, nthreads))
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num();
#else
        const int tid = 0;
#endif
        float* gw = gw_parts ? gw_parts + (i64)tid * C * K * K * OP : NULL;
        float* gb = gb_parts + (i64)tid * OP;
        float* gxbuf = gx ? alloc_floats(H * W * CP) : NULL;
        int* list = (int*)malloc(sizeof(int) * 4 * O);
        float* gval = (float*)malloc(sizeof(float) * 4 * O);
        float* gpad = alloc_floats(P * OP);
#pragma omp for schedule(static)
        for (i64 n = 0; n < N; ++n) {
            const float* gn = gout + n * P * O;
            const uint8_t* an = arg + n * P * OP;
            for (i64 p = 0; p < P; ++p) {
                for (i64 o = 0; o < OP; o += L) {
                    const vf v = vload_n(gn + p * O + o, O - o);
                    vstore(gpad + p * OP + o, v);
                    vstore(gb + o, vadd(vload(gb + o), v));
                }
            }
            if (gw) {
                for_nonzero(x + n * C * H * W, C * H * W, [&](i64 i, float v) {
                    i64 c, iy, ix;
                    g.decode(i, &c, &iy, &ix);
                    const vf vv = vset(v);
                    for (i64 ky = 0; ky < K; ++ky) {
                        const i64 oy = iy + pad - ky;
                        if (oy < 0 || oy >= CH) continue;
                        for (i64 kx = 0; kx < K; ++kx) {
                            const i64 ox = ix + pad - kx;
                            if (ox < 0 || ox >= CW) continue;
                            const i64 p = (oy >> 1) * g.PW + (ox >> 1);
                            const int q = (int)((oy & 1) * 2 + (ox & 1));
                            float* d = gw + ((c * K + ky) * K + kx) * OP;
                            for (i64 o = 0; o < OP; o += L) {
                                const vf gv = vwhere(an + p * OP + o, q, vload(gpad + p * OP + o));
                                vstore(d + o, vfma(vv, gv, vload(d + o)));
                            }
                        }
                    }
                });
            }
            if (gx) {
                igrad(g, gn, an, wo, CP, gxbuf, list, gval);
                float* gxn = gx + n * H * W * C;
                for (i64 p = 0; p < H * W; ++p)
                    for (i64 c = 0; c < C; c += L) vstore_n(gxn + p * C + c, vload(gxbuf + p * CP + c),
                                                            C - c);
            }
        }
        free(gxbuf);
        free(list);
        free(gval);
        free(gpad);
    }
}

// Sparse Conv2d(K×K, stride 1, zero padding) → MaxPool2d(2) for event frames and spike maps.
//
// Forward, per sample: the nonzero inputs are listed row by row (Sample::scan); each pooling
// window's four convolution outputs accumulate in registers from the nonzero inputs of its
// (K+1)×(K+1) field (kernels stored with a zero border, so no bounds tests) and are pooled at
// once, keeping the winning position (first maximum wins, NaN propagates: torch's rule). Only the
// 2·PH × 2·PW outputs that floor-mode pooling reads are computed. Inputs with fewer nonzeros
// than pooling windows (events) are instead scattered into the convolution outputs, which are
// then pooled. Backward uses that only the winner of each window has a gradient: the input
// gradient is scattered from the PH·PW·O pooled gradients, the weight gradient gathers them at
// the nonzero inputs (per window, by scatter, or per tap with the sums in registers), the bias
// gradient is their sum. Outputs and gradients are channels-last ([N, PH, PW, O], [N, H, W, C]); the input may be
// NCHW or NHWC. Channel vectors are padded to 16 lanes (simd16.h's vf) internally.
// scp_forward/scp_backward run one layer; block_forward/block_backward run N-MNIST's hidden net
// (two Conv-MaxPool-Leaky blocks and a Linear) as one pass per sample.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "simd16.h"

typedef int64_t i64;

// KROWS: kernel rows of the input gradient done per pass over a window's winners, so that the
// weight rows those passes read (O·KROWS·K·C floats) stay in the L1 cache. NCMAX: vectors of 16
// output channels whose four window positions (or kernel taps) are summed in registers at once;
// NCHMAX: chunks of 16 floats per kernel row in the input gradient's registers. Both fewer where
// a vf takes several registers (simd16.h's NP), so the accumulators fit in the register file.
enum { KMAX = 7, KROWS = 3, NCMAX = NP == 1 ? 2 : 1, NCHMAX = 4 / NP };

// max-pool of four values with the index of the winner (first maximum wins, NaN propagates),
// written to m[0..n) and arg[0..16) (either may be NULL)
static inline void vpool4(const vf* win, float* m, uint8_t* arg, i64 n) {
    vf best = win[0];
    vi a = vint(0);
    for (int q = 1; q < 4; ++q) {
        const vi take = vgreater_or_nan(win[q], best);
        best = vselect(take, win[q], best);
        a = vselect_int(take, vint(q), a);
    }
    if (m) vstore_n(m, best, n);
    if (arg) vstore_bytes(arg, a);
}

// Calls f(i, x[i]) for every nonzero (or NaN) x[i], i < n, in increasing i.
template <class F>
static inline void for_nonzero(const float* x, i64 n, F f) {
    i64 i = 0;
    for (; i + L <= n; i += L) {
        uint32_t m = vbits(vnonzero(vload(x + i)));
        while (m) {
            const int b = __builtin_ctz(m);
            f(i + b, x[i + b]);
            m &= m - 1;
        }
    }
    if (i < n && n >= L) {  // the tail as the last L floats, less those already seen
        const i64 t = n - L;
        uint32_t m = vbits(vnonzero(vload(x + t))) >> (i - t);
        while (m) {
            const int b = __builtin_ctz(m);
            f(i + b, x[i + b]);
            m &= m - 1;
        }
        return;
    }
    for (; i < n; ++i)
        if (x[i] != 0.0f) f(i, x[i]);
}

// Bit j of the result is set where x[j] ≠ 0 (or NaN), j < n ≤ 64.
static inline uint64_t nonzero_bits(const float* x, i64 n) {
    uint64_t m = 0;
    i64 j = 0;
    for (; j + L <= n; j += L) m |= (uint64_t)vbits(vnonzero(vload(x + j))) << j;
    if (j < n && n >= L) return m | (uint64_t)vbits(vnonzero(vload(x + n - L))) << (n - L);
    for (; j < n; ++j) m |= (uint64_t)(x[j] != 0.0f) << j;
    return m;
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

// The frames are read one sample-step at a time with a stride of a whole batch, which the
// hardware prefetcher does not follow: fetch the next one while the current one is processed.
static inline void prefetch(const float* p, i64 n) {
    for (i64 i = 0; i < n; i += 16) __builtin_prefetch(p + i);
}

static float* alloc_floats(i64 n) {
    const size_t bytes = ((sizeof(float) * (size_t)(n + L)) + 63) & ~(size_t)63;
    return (float*)aligned_alloc(64, bytes);
}

static int team(i64 n, int nthreads) { return n < 2 ? 1 : nthreads; }

// Layer shape: input C×H×W (NCHW or NHWC), O outputs (padded to OP), K×K kernel, zero padding
// pad, pooled output PH×PW. Padded input coordinates run over HP = H + 2·pad rows and
// WP = W + 2·pad columns. Kernels are stored with a zero border, KE = K + 2 taps a side, so that
// every input of a pooling window's (K+1)×(K+1) field reaches all four window positions without
// a bounds test.
struct Geometry {
    i64 C, H, W, O, OP, K, pad, PH, PW, HP, WP, KE;
    int channels_last;
};

static Geometry geometry(i64 C, i64 H, i64 W, i64 O, i64 OP, i64 K, i64 pad, int channels_last) {
    return {C, H, W, O, OP, K, pad, (H + 2 * pad - K + 1) / 2, (W + 2 * pad - K + 1) / 2,
            H + 2 * pad, W + 2 * pad, K + 2, channels_last};
}

struct Entry {
    i64 off;  // (c·KE²  + column)·OP, column padded
    float v;
    int16_t c, col;
};

static inline void fill(int32_t* p, i64 n, int32_t v) {
    for (i64 k = 0; k < n; ++k) p[k] = v;
}

// One sample's nonzero inputs, row by row (padded rows), columns ascending: the entries of row R
// with padded column ≥ j start at start[R·(WP+1) + j]; bit j of occ[R] is set when padded column
// j of row R has any.
struct Sample {
    const Geometry& g;
    Entry* entries;   // [C·H·W]
    int32_t* start;   // [HP·(WP+1)]
    uint64_t* occ;    // [HP]
    uint64_t* bits;   // [C]
    float* conv;      // [2·PH, 2·PW, OP]: the unpooled output of the scatter path

    // Number of nonzero inputs listed.
    inline i64 count() const { return start[(g.HP - 1) * (g.WP + 1) + g.WP]; }

    void scan(const float* xn) {
        const i64 C = g.C, H = g.H, W = g.W, WP = g.WP, pad = g.pad, OP = g.OP, KE = g.KE;
        int32_t e = 0;
        for (i64 R = 0; R < g.HP; ++R) {
            int32_t* st = start + R * (WP + 1);
            uint64_t& used = occ[R];
            used = 0;
            i64 next = 0;
            auto open = [&](i64 col) {
                if (col < next) return;
                fill(st + next, col + 1 - next, e);
                next = col + 1;
            };
            const i64 r = R - pad;
            if (r >= 0 && r < H) {
                if (g.channels_last) {  // the row's W·C floats in one walk
                    i64 j = 0, base = 0;      // pixel j's channels start at base
                    for_nonzero(xn + r * W * C, W * C, [&](i64 i, float v) {
                        while (i >= base + C) {
                            ++j;
                            base += C;
                        }
                        const i64 c = i - base, col = j + pad;
                        open(col);
                        used |= 1ull << col;
                        entries[e++] = {(c * KE * KE + col) * OP, v, (int16_t)c, (int16_t)col};
                    });
                } else {
                    uint64_t any = 0;
                    for (i64 c = 0; c < C; ++c) {
                        bits[c] = nonzero_bits(xn + (c * H + r) * W, W);
                        any |= bits[c];
                    }
                    used = any << pad;
                    while (any) {
                        const i64 j = __builtin_ctzll(any);
                        any &= any - 1;
                        open(j + pad);
                        for (i64 c = 0; c < C; ++c)
                            if (bits[c] >> j & 1)
                                entries[e++] = {(c * KE * KE + j + pad) * OP,
                                                xn[(c * H + r) * W + j], (int16_t)c,
                                                (int16_t)(j + pad)};
                    }
                }
            }
            open(WP);
        }
    }

    // Bit 2·px of the result (shifted down by 2·px, masked to K + 1 bits) tells whether pooling
    // window (py, px) has any nonzero input.
    inline uint64_t window_row(i64 py) const {
        uint64_t m = 0;
        for (i64 r = 0; r <= g.K; ++r) m |= occ[2 * py + r];
        return m;
    }
    inline bool empty(uint64_t row, i64 px) const {
        return !((row >> (2 * px)) & ((2ull << g.K) - 1));
    }

    // Entries of padded row R with columns in [j0, j0 + K].
    inline void span(i64 R, i64 j0, i64* lo, i64* hi) const {
        const int32_t* st = start + R * (g.WP + 1);
        *lo = st[j0];
        *hi = st[j0 + g.K + 1];
    }
};

// A window's four positions q (row-major) reach the inputs of its (K+1)×(K+1) field through
// different taps; the field's first row is out of reach of the window's second row of positions,
// its last row of the first: QM (bit q set: position q is reached) spares those zero-border taps
// (the columns' are not worth a branch).
template <int NC, int QM>
static inline void gather(vf (&acc)[4][NC], const Entry* en, i64 lo, i64 hi, const float* w0,
                          i64 OP, i64 KE) {
    for (i64 e = lo; e < hi; ++e) {
        const float* w = w0 + en[e].off;
        const vf v = vset(en[e].v);
        for (int j = 0; j < NC; ++j) {
            if (QM & 1) acc[0][j] = vfma(v, vload(w + j * L), acc[0][j]);
            if (QM & 2) acc[1][j] = vfma(v, vload(w - OP + j * L), acc[1][j]);
            if (QM & 4) acc[2][j] = vfma(v, vload(w - KE * OP + j * L), acc[2][j]);
            if (QM & 8) acc[3][j] = vfma(v, vload(w - KE * OP - OP + j * L), acc[3][j]);
        }
    }
}

// The weight gradient's counterpart: d[tap of position q] += v · sel[q].
template <int NC, int QM>
static inline void spread(const vf (&sel)[4][NC], const Entry* en, i64 lo, i64 hi, float* d0,
                          i64 OP, i64 KE) {
    for (i64 e = lo; e < hi; ++e) {
        float* d = d0 + en[e].off;
        float* d2 = d - KE * OP;
        const vf v = vset(en[e].v);
        for (int j = 0; j < NC; ++j) {
            if (QM & 1) vstore(d + j * L, vfma(v, sel[0][j], vload(d + j * L)));
            if (QM & 2) vstore(d - OP + j * L, vfma(v, sel[1][j], vload(d - OP + j * L)));
            if (QM & 4) vstore(d2 + j * L, vfma(v, sel[2][j], vload(d2 + j * L)));
            if (QM & 8) vstore(d2 - OP + j * L, vfma(v, sel[3][j], vload(d2 - OP + j * L)));
        }
    }
}

// Forward of output channels [o0, o0 + 16·NC): the four convolution outputs of every pooling
// window accumulate in registers from the window's nonzero inputs, then are pooled (outn or
// argn NULL: not stored).
template <int NC>
static void forward_channels(const Sample& s, const float* wext, const float* bias, i64 o0,
                             float* outn, uint8_t* argn) {
    const Geometry& g = s.g;
    const i64 OP = g.OP, KE = g.KE, K = g.K;
    for (i64 py = 0; py < g.PH; ++py) {
        const uint64_t row = s.window_row(py);
        for (i64 px = 0; px < g.PW; ++px) {
            const i64 p = py * g.PW + px;
            if (s.empty(row, px)) {  // all four outputs equal the bias: the first one wins
                for (int j = 0; j < NC; ++j) {
                    if (outn)
                        vstore_n(outn + p * g.O + o0 + j * L, vload(bias + o0 + j * L),
                                 g.O - o0 - j * L);
                    if (argn) memset(argn + p * OP + o0 + j * L, 0, L);
                }
                continue;
            }
            vf acc[4][NC];
            for (int q = 0; q < 4; ++q)
                for (int j = 0; j < NC; ++j) acc[q][j] = vload(bias + o0 + j * L);
            for (i64 r = 0; r <= K; ++r) {
                i64 lo, hi;
                s.span(2 * py + r, 2 * px, &lo, &hi);
                const float* w0 = wext + o0 + ((r + 1) * KE + 1 - 2 * px) * OP;
                if (r == 0)
                    gather<NC, 0x3>(acc, s.entries, lo, hi, w0, OP, KE);
                else if (r < K)
                    gather<NC, 0xF>(acc, s.entries, lo, hi, w0, OP, KE);
                else
                    gather<NC, 0xC>(acc, s.entries, lo, hi, w0, OP, KE);
            }
            for (int j = 0; j < NC; ++j) {
                const vf win[4] = {acc[0][j], acc[1][j], acc[2][j], acc[3][j]};
                vpool4(win, outn ? outn + p * g.O + o0 + j * L : NULL,
                       argn ? argn + p * OP + o0 + j * L : NULL, g.O - o0 - j * L);
            }
        }
    }
}

// Weight gradient of output channels [o0, o0 + 16·NC) into gwext [C, KE, KE, OP] (zero border
// discarded by the caller): every nonzero input of a window adds v · (pooled gradient where that
// position won) at the tap joining them.
template <int NC>
static void weight_grad_channels(const Sample& s, const float* gpad, const uint8_t* an, i64 o0,
                                 float* gwext) {
    const Geometry& g = s.g;
    const i64 OP = g.OP, KE = g.KE, K = g.K;
    for (i64 py = 0; py < g.PH; ++py) {
        const uint64_t row = s.window_row(py);
        for (i64 px = 0; px < g.PW; ++px) {
            if (s.empty(row, px)) continue;
            const i64 p = py * g.PW + px;
            i64 lo[KMAX + 1], hi[KMAX + 1], n = 0;
            for (i64 r = 0; r <= K; ++r) {
                s.span(2 * py + r, 2 * px, &lo[r], &hi[r]);
                n += hi[r] - lo[r];
            }
            if (!n) continue;
            vf sel[4][NC];
            for (int q = 0; q < 4; ++q)
                for (int j = 0; j < NC; ++j)
                    sel[q][j] = vwhere(an + p * OP + o0 + j * L, q,
                                       vload(gpad + p * OP + o0 + j * L));
            for (i64 r = 0; r <= K; ++r) {
                float* d0 = gwext + o0 + ((r + 1) * KE + 1 - 2 * px) * OP;
                if (r == 0)
                    spread<NC, 0x3>(sel, s.entries, lo[r], hi[r], d0, OP, KE);
                else if (r < K)
                    spread<NC, 0xF>(sel, s.entries, lo[r], hi[r], d0, OP, KE);
                else
                    spread<NC, 0xC>(sel, s.entries, lo[r], hi[r], d0, OP, KE);
            }
        }
    }
}

// Calls visit(entry, R, J, ky0, ky1, kx0, kx1) for every nonzero input of s at padded row R and
// column J, in forward_channels' order, with the kernel taps [ky0, ky1] × [kx0, kx1] that join it
// to the 2·PH × 2·PW convolution outputs the pooling reads (no zero-border taps).
template <typename Visit>
static inline void for_each_nonzero(const Sample& s, Visit visit) {
    const Geometry& g = s.g;
    const i64 K = g.K, YH = 2 * g.PH, XW = 2 * g.PW;
    for (i64 R = 0; R < g.HP && R < YH + K - 1; ++R) {
        uint64_t cols = s.occ[R];
        const int32_t* st = s.start + R * (g.WP + 1);
        const i64 ky0 = R - YH + 1 > 0 ? R - YH + 1 : 0, ky1 = R < K - 1 ? R : K - 1;
        while (cols) {
            const i64 J = __builtin_ctzll(cols);
            cols &= cols - 1;
            if (J >= XW + K - 1) break;
            const i64 kx0 = J - XW + 1 > 0 ? J - XW + 1 : 0, kx1 = J < K - 1 ? J : K - 1;
            for (i64 e = st[J]; e < st[J + 1]; ++e) visit(s.entries[e], R, J, ky0, ky1, kx0, kx1);
        }
    }
}

// Forward by scatter, for inputs sparser than the pooling windows: every nonzero input adds
// v · W[:, c, ky, kx] to the 2·PH × 2·PW convolution outputs it reaches (in s.conv, from the
// bias), then the windows are pooled. Each output sums its inputs in the order of
// forward_channels (rows, columns, channels ascending) without the zero-border taps.
static void forward_scatter(const Sample& s, const float* wext, const float* bias, float* outn,
                            uint8_t* argn) {
    const Geometry& g = s.g;
    const i64 OP = g.OP, KE = g.KE, YH = 2 * g.PH, XW = 2 * g.PW;
    float* buf = s.conv;
    for (i64 i = 0; i < YH * XW; ++i)
        for (i64 o = 0; o < OP; o += L) vstore(buf + i * OP + o, vload(bias + o));
    for_each_nonzero(s, [&](const Entry& en, i64 R, i64 J, i64 ky0, i64 ky1, i64 kx0, i64 kx1) {
        const vf v = vset(en.v);
        const float* wc = wext + en.off - J * OP + (KE + 1) * OP;
        for (i64 ky = ky0; ky <= ky1; ++ky) {
            float* d = buf + ((R - ky) * XW + J) * OP;
            const float* w = wc + ky * KE * OP;
            for (i64 kx = kx0; kx <= kx1; ++kx)
                for (i64 o = 0; o < OP; o += L)
                    vstore(d - kx * OP + o,
                           vfma(v, vload(w + kx * OP + o), vload(d - kx * OP + o)));
        }
    });
    for (i64 py = 0; py < g.PH; ++py) {
        for (i64 px = 0; px < g.PW; ++px) {
            const i64 p = py * g.PW + px;
            const float* c0 = buf + (2 * py * XW + 2 * px) * OP;
            for (i64 o = 0; o < OP; o += L) {
                const vf win[4] = {vload(c0 + o), vload(c0 + OP + o), vload(c0 + XW * OP + o),
                                   vload(c0 + (XW + 1) * OP + o)};
                vpool4(win, outn ? outn + p * g.O + o : NULL, argn ? argn + p * OP + o : NULL,
                       g.O - o);
            }
        }
    }
}

// Weight gradient by scatter (the counterpart of forward_scatter): the pooled gradient is placed
// at each window's winners in s.conv [2·PH, 2·PW, OP] (zero elsewhere), then every nonzero input
// adds v · (that map at each output it reaches) at the tap joining them.
static void weight_grad_scatter(const Sample& s, const float* gpad, const uint8_t* an,
                                float* gwext) {
    const Geometry& g = s.g;
    const i64 OP = g.OP, KE = g.KE, XW = 2 * g.PW;
    float* buf = s.conv;
    for (i64 py = 0; py < g.PH; ++py) {
        for (i64 px = 0; px < g.PW; ++px) {
            const i64 p = py * g.PW + px;
            float* c0 = buf + (2 * py * XW + 2 * px) * OP;
            for (i64 o = 0; o < OP; o += L) {
                const vf v = vload(gpad + p * OP + o);
                const uint8_t* a = an + p * OP + o;
                vstore(c0 + o, vwhere(a, 0, v));
                vstore(c0 + OP + o, vwhere(a, 1, v));
                vstore(c0 + XW * OP + o, vwhere(a, 2, v));
                vstore(c0 + (XW + 1) * OP + o, vwhere(a, 3, v));
            }
        }
    }
    for_each_nonzero(s, [&](const Entry& en, i64 R, i64 J, i64 ky0, i64 ky1, i64 kx0, i64 kx1) {
        const vf v = vset(en.v);
        float* dc = gwext + en.off - J * OP + (KE + 1) * OP;
        for (i64 ky = ky0; ky <= ky1; ++ky) {
            const float* src = buf + ((R - ky) * XW + J) * OP;
            float* d = dc + ky * KE * OP;
            for (i64 kx = kx0; kx <= kx1; ++kx)
                for (i64 o = 0; o < OP; o += L)
                    vstore(d + kx * OP + o,
                           vfma(v, vload(src - kx * OP + o), vload(d + kx * OP + o)));
        }
    });
}

// Forward by scatter or by gather, whichever does less work: scatter for fewer nonzero inputs
// than pooling windows.
static inline bool scatters(const Sample& s) { return s.count() < s.g.PH * s.g.PW; }

static void forward_sample(const Sample& s, const float* wext, const float* bias, float* outn,
                           uint8_t* argn) {
    const i64 OP = s.g.OP;
    if (scatters(s)) {
        forward_scatter(s, wext, bias, outn, argn);
        return;
    }
    for (i64 o0 = 0; o0 < OP; o0 += NCMAX * L) {
        if (NCMAX == 2 && OP - o0 >= 2 * L)
            forward_channels<2>(s, wext, bias, o0, outn, argn);
        else
            forward_channels<1>(s, wext, bias, o0, outn, argn);
    }
}

// Room for the nonzero maps of `count` samples.
struct Scratch {
    i64 entry_size, start_size, rows;
    Entry* entries;
    int32_t* start;
    uint64_t* occ;
    uint64_t* bits;
    float* conv;
    explicit Scratch(const Geometry& g, i64 count = 1)
        : entry_size(g.C * g.H * g.W + 1), start_size(g.HP * (g.WP + 1)), rows(g.HP),
          entries((Entry*)malloc(sizeof(Entry) * entry_size * count)),
          start((int32_t*)malloc(sizeof(int32_t) * start_size * count)),
          occ((uint64_t*)malloc(sizeof(uint64_t) * rows * count)),
          bits((uint64_t*)malloc(sizeof(uint64_t) * g.C)),
          conv(alloc_floats(4 * g.PH * g.PW * g.OP)) {}
    Sample sample(const Geometry& g, i64 k) const {
        return {g, entries + k * entry_size, start + k * start_size, occ + k * rows, bits, conv};
    }
    ~Scratch() {
        free(conv);
        free(entries);
        free(start);
        free(occ);
        free(bits);
    }
};

// out [N, PH, PW, O] = maxpool2(conv(x) + bias), arg [N, PH, PW, OP] = winner (0..3, row-major
// in the window; NULL: not kept). wext [C, KE, KE, OP]: the weight with output channels last and
// a zero border.
extern "C" void scp_forward(const float* x, i64 N, i64 C, i64 H, i64 W, int channels_last,
                            const float* wext, const float* bias, i64 O, i64 OP, i64 K, i64 pad,
                            float* out, uint8_t* arg, int nthreads) {
    const Geometry g = geometry(C, H, W, O, OP, K, pad, channels_last);
    const i64 P = g.PH * g.PW;
    advise_huge(out, N * P * O * (i64)sizeof(float));
    if (arg) advise_huge(arg, N * P * OP);
#pragma omp parallel num_threads(team(N, nthreads))
    {
        Scratch scratch(g);
        Sample s = scratch.sample(g, 0);
#pragma omp for schedule(static)
        for (i64 n = 0; n < N; ++n) {
            s.scan(x + n * C * H * W);
            forward_sample(s, wext, bias, out + n * P * O, arg ? arg + n * P * OP : NULL);
        }
    }
}

// Input gradient of one window's winners at position q (list/gval: their channels and pooled
// gradients) into gxbuf [HP, WP, C] (padded, channels-last): row ky of the kernel reaches padded
// input row oy + ky, columns ox .. ox + K − 1, i.e. K·C consecutive floats of gxbuf, which is how
// wrow [O, K, RP] holds the weight (element kx·C + c of row (o, ky), zero-padded to RP).
// Kernel rows [ky0, ky0 + KY) and chunks [k0, k0 + NCH) of 16 floats of those rows, with KY·NCH
// accumulators in registers; row_len = K·C.
template <int KY, int NCH>
static void input_grad_window(const int* list, const float* gval, int count, const float* wrow,
                              i64 K, i64 ky0, i64 RP, i64 k0, float* dst, i64 row_stride,
                              i64 row_len) {
    vf acc[KY][NCH];
    for (int ky = 0; ky < KY; ++ky)
        for (int k = 0; k < NCH; ++k) acc[ky][k] = vzero();
    for (int j = 0; j < count; ++j) {
        const vf gv = vset(gval[j]);
        const float* w = wrow + ((i64)list[j] * K + ky0) * RP + k0 * L;
        for (int ky = 0; ky < KY; ++ky)
            for (int k = 0; k < NCH; ++k)
                acc[ky][k] = vfma(gv, vload(w + ky * RP + k * L), acc[ky][k]);
    }
    for (int ky = 0; ky < KY; ++ky) {
        float* d = dst + (ky0 + ky) * row_stride + k0 * L;
        for (int k = 0; k < NCH; ++k)
            vstore_n(d + k * L, vadd(vload(d + k * L), acc[ky][k]), row_len - (k0 + k) * L);
    }
}

typedef void (*WindowGrad)(const int*, const float*, int, const float*, i64, i64, i64, i64,
                           float*, i64, i64);

template <int KY>
static WindowGrad window_grad_rows(int nch) {
    switch (nch) {
        case 1: return input_grad_window<KY, 1>;
        case 2: return input_grad_window<KY, 2>;
        case 3: return input_grad_window<KY, 3>;
        default: return input_grad_window<KY, 4>;
    }
}

static WindowGrad window_grad(i64 rows, int nch) {
    switch (rows) {
        case 1: return window_grad_rows<1>(nch);
        case 2: return window_grad_rows<2>(nch);
        default: return window_grad_rows<KROWS>(nch);
    }
}

// Input gradient of one sample into gxn [H, W, C].
static void input_grad(const Geometry& g, const float* gn, const uint8_t* an, const float* wrow,
                       i64 RP, float* gxbuf, int* list, float* gval, float* gxn) {
    const i64 C = g.C, O = g.O, OP = g.OP, WP = g.WP, K = g.K;
    const i64 nchunks = RP / L;
    memset(gxbuf, 0, sizeof(float) * (g.HP * WP * C + RP));
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
            for (i64 ky0 = 0; ky0 < K; ky0 += KROWS) {
                const i64 rows = K - ky0 < KROWS ? K - ky0 : KROWS;
                for (int q = 0; q < 4; ++q) {
                    if (!count[q]) continue;
                    const i64 oy = 2 * py + (q >> 1), ox = 2 * px + (q & 1);
                    float* dst = gxbuf + (oy * WP + ox) * C;
                    for (i64 k0 = 0; k0 < nchunks; k0 += NCHMAX) {
                        const int nch = (int)(nchunks - k0 < NCHMAX ? nchunks - k0 : NCHMAX);
                        window_grad(rows, nch)(list + q * O, gval + q * O, count[q], wrow, K, ky0,
                                               RP, k0, dst, WP * C, K * C);
                    }
                }
            }
        }
    }
    for (i64 r = 0; r < g.H; ++r)
        memcpy(gxn + r * g.W * C, gxbuf + ((r + g.pad) * WP + g.pad) * C,
               sizeof(float) * g.W * C);
}

// Weight gradient of 5×5 kernels and 32 outputs with the taps' sums in registers: the pooled
// gradient placed at the winners, G [2·PH, 2·PW + 8, 32] (4 zero columns either side, so every
// tap of an input reads G), then per input channel c and kernel row ky
//     dW[:, c, ky, kx] += Σ_{nonzero x[c, R, J]} x · G[R − ky, J − kx]   (kx = 0..4 at once)
// with the nonzero inputs of channel c (idx/rows: bucketed by channel, rows ascending).
// Stores once per tap instead of once per input and window position.
static void weight_grad_taps(const Sample& s, const float* gpad, const uint8_t* an, float* G,
                             int32_t* idx, int32_t* cstart, float* gwext) {
    enum { K = 5, NC = 2, NCT = NCMAX };  // NC vectors of outputs, NCT of them per pass
    const Geometry& g = s.g;
    const i64 OP = g.OP, KE = g.KE, YH = 2 * g.PH, XW = 2 * g.PW, XG = XW + 2 * (K - 1);
    for (i64 y = 0; y < YH; ++y) {
        float* row = G + y * XG * OP;
        memset(row, 0, sizeof(float) * (K - 1) * OP);
        memset(row + (XW + K - 1) * OP, 0, sizeof(float) * (K - 1) * OP);
        for (i64 x = 0; x < XW; ++x) {
            const i64 p = (y >> 1) * g.PW + (x >> 1);
            const int q = (int)((y & 1) * 2 + (x & 1));
            for (i64 o = 0; o < OP; o += L)
                vstore(row + (x + K - 1) * OP + o,
                       vwhere(an + p * OP + o, q, vload(gpad + p * OP + o)));
        }
    }
    const i64 n = s.count();
    for (i64 c = 0; c <= g.C; ++c) cstart[c] = 0;
    for (i64 e = 0; e < n; ++e) ++cstart[s.entries[e].c + 1];
    for (i64 c = 0; c < g.C; ++c) cstart[c + 1] += cstart[c];
    for (i64 R = 0; R < g.HP; ++R) {
        const int32_t* st = s.start + R * (g.WP + 1);
        for (i64 e = st[0]; e < st[g.WP]; ++e) {
            const int32_t k = cstart[s.entries[e].c]++;
            idx[2 * k] = (int32_t)e;
            idx[2 * k + 1] = (int32_t)R;
        }
    }
    for (i64 c = g.C; c > 0; --c) cstart[c] = cstart[c - 1];
    cstart[0] = 0;
    for (i64 c = 0; c < g.C; ++c) {
        for (i64 ky = 0; ky < K; ++ky) {
            for (int j0 = 0; j0 < NC; j0 += NCT) {
                vf acc[K][NCT];
                for (int kx = 0; kx < K; ++kx)
                    for (int j = 0; j < NCT; ++j) acc[kx][j] = vzero();
                for (i64 k = cstart[c]; k < cstart[c + 1]; ++k) {
                    const Entry& en = s.entries[idx[2 * k]];
                    const i64 y = idx[2 * k + 1] - ky;
                    if (y < 0 || y >= YH || en.col >= XW + K - 1) continue;
                    const float* src = G + (y * XG + en.col + K - 1) * OP + j0 * L;
                    const vf v = vset(en.v);
                    for (int kx = 0; kx < K; ++kx)
                        for (int j = 0; j < NCT; ++j)
                            acc[kx][j] = vfma(v, vload(src - kx * OP + j * L), acc[kx][j]);
                }
                float* d = gwext + (c * KE + ky + 1) * KE * OP + OP + j0 * L;
                for (int kx = 0; kx < K; ++kx)
                    for (int j = 0; j < NCT; ++j)
                        vstore(d + kx * OP + j * L, vadd(vload(d + kx * OP + j * L), acc[kx][j]));
            }
        }
    }
}

// Per-thread working memory of one layer: the nonzero map of the current sample, its pooled
// gradient padded to OP lanes, recomputed winners, and the input-gradient buffers.
struct Layer {
    Geometry g;
    Scratch scratch;
    Sample s;
    float* gpad;       // [P, OP]
    uint8_t* winners;  // [P, OP]
    float* tapg;       // [2·PH, 2·PW + 8, OP] (weight_grad_taps)
    int32_t* tapidx;   // [2·C·H·W]
    int32_t* tapstart; // [C + 1]
    int* list;         // [4, O]
    float* gval;       // [4, O]
    float* gxbuf;      // [HP, WP, C] + RP
    explicit Layer(const Geometry& geo, i64 RP)
        : g(geo), scratch(g), s(scratch.sample(g, 0)),
          gpad(alloc_floats(g.PH * g.PW * g.OP)),
          winners((uint8_t*)malloc(g.PH * g.PW * g.OP + L)),
          tapg(alloc_floats(2 * g.PH * (2 * g.PW + 8) * g.OP)),
          tapidx((int32_t*)malloc(sizeof(int32_t) * 2 * (g.C * g.H * g.W + 1))),
          tapstart((int32_t*)malloc(sizeof(int32_t) * (g.C + 1))),
          list((int*)malloc(sizeof(int) * 4 * g.O)),
          gval((float*)malloc(sizeof(float) * 4 * g.O)),
          gxbuf(alloc_floats(g.HP * g.WP * g.C + RP)) {}
    ~Layer() {
        free(gpad);
        free(winners);
        free(list);
        free(gval);
        free(tapg);
        free(tapidx);
        free(tapstart);
        free(gxbuf);
    }
    Layer(const Layer&) = delete;
    Layer& operator=(const Layer&) = delete;

    // Backward of one sample from its pooled gradient gn [P, O] and winners an [P, OP]: adds to
    // gb [OP] and (gw non-NULL; smp its nonzero map) gwext [C, KE, KE, OP]; writes gxn
    // [H, W, C] when non-NULL (wrow [O, K, RP]).
    void backward(const Sample& smp, const float* gn, const uint8_t* an, float* gw, float* gb,
                  const float* wrow, i64 RP, float* gxn) {
        const i64 P = g.PH * g.PW, O = g.O, OP = g.OP;
        for (i64 p = 0; p < P; ++p) {
            for (i64 o = 0; o < OP; o += L) {
                const vf v = vload_n(gn + p * O + o, O - o);
                vstore(gpad + p * OP + o, v);
                vstore(gb + o, vadd(vload(gb + o), v));
            }
        }
        if (gw && scatters(smp)) {
            weight_grad_scatter(smp, gpad, an, gw);
        } else if (gw && g.K == 5 && OP == 2 * L) {
            weight_grad_taps(smp, gpad, an, tapg, tapidx, tapstart, gw);
        } else if (gw) {
            for (i64 o0 = 0; o0 < OP; o0 += NCMAX * L) {
                if (NCMAX == 2 && OP - o0 >= 2 * L)
                    weight_grad_channels<2>(smp, gpad, an, o0, gw);
                else
                    weight_grad_channels<1>(smp, gpad, an, o0, gw);
            }
        }
        if (gxn) input_grad(g, gn, an, wrow, RP, gxbuf, list, gval, gxn);
    }
};

static int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Gradients of scp_forward from g = dL/d(out) [N, PH, PW, O] and its winners arg:
//   gw_parts [nthreads, C, KE, KE, OP] and gb_parts [nthreads, OP] (zeroed by the caller, summed
//   over threads and stripped of the zero border by the caller); gw_parts NULL skips the weight
//   gradient.
//   gx [N, H, W, C] (NULL: not needed) with wrow [O, K, RP] (see input_grad_window).
extern "C" void scp_backward(const float* x, i64 N, i64 C, i64 H, i64 W, int channels_last,
                             const uint8_t* arg, const float* gout, i64 O, i64 OP, i64 K,
                             i64 pad, float* gw_parts, float* gb_parts, const float* wrow, i64 RP,
                             float* gx, int nthreads) {
    const Geometry g = geometry(C, H, W, O, OP, K, pad, channels_last);
    const i64 P = g.PH * g.PW;
    if (gx) advise_huge(gx, N * H * W * C * (i64)sizeof(float));
#pragma omp parallel num_threads(team(N, nthreads))
    {
        const int tid = thread_id();
        float* gw = gw_parts ? gw_parts + (i64)tid * C * g.KE * g.KE * OP : NULL;
        Layer layer(g, RP);
#pragma omp for schedule(static)
        for (i64 n = 0; n < N; ++n) {
            if (gw) layer.s.scan(x + n * C * H * W);
            layer.backward(layer.s, gout + n * P * O, arg + n * P * OP, gw, gb_parts + (i64)tid * OP,
                           wrow, RP, gx ? gx + n * H * W * C : NULL);
        }
    }
}

// ---- Conv-MaxPool → Leaky → Conv-MaxPool → Leaky, one pass per sample (N-MNIST's hidden net) ----
//
// Per batch element b, time steps in order: layer 1 from the events x1[t, b] (NCHW) gives the
// pooled X1 [P1, O1] in a local buffer; a Leaky step (snnTorch, DESIGN §3, in the operation order
// of cpu_kernels.cpp's leaky_forward) turns it into the membrane U1 and the spikes
// S1 = Θ(U1 − thr1), which layer 2 reads channels-last; its pooled X2 [P2, O2] goes through the
// second Leaky into U2 and S2. Only S2 and the membranes at the start of every segment of `seg`
// steps reach memory; backward recomputes a segment forward into small local buffers (membranes,
// nonzero maps, winners), then walks it in reverse.

// A Leaky layer: β, threshold, reset to zero (else subtract), ATan surrogate
// dS/dU = c1 / (1 + (c2·(U − thr))²). Passed as 5 floats.
struct LeakyArgs {
    float beta, thr, zero, c1, c2;
};

// One Leaky step over M neurons: u ← U[t] from U[t−1] = u and input x; spikes to s (may be NULL).
static inline void leaky_step(float* u, const float* x, float* s, i64 M, const LeakyArgs& a) {
    const float beta = a.beta, thr = a.thr;
    const bool zero = a.zero != 0.0f;
    for (i64 i = 0; i < M; ++i) {
        const float r = (u[i] - thr > 0.0f) ? 1.0f : 0.0f;
        const float un = zero ? beta * (1.0f - r) * u[i] + x[i] : beta * u[i] + x[i] - r * thr;
        if (s) s[i] = (un - thr > 0.0f) ? 1.0f : 0.0f;
        u[i] = un;
    }
}

// Its backward at one step (cpu_kernels.cpp's leaky_backward order, no membrane-output gradient):
// g = gs·Θ'(U[t] − thr) + carry → gx; carry ← g·β·(1 − R[t] if zero), R[t] = Θ(U[t−1] − thr).
static inline void leaky_step_backward(const float* ut, const float* uprev, const float* gs,
                                       float* carry, float* gx, i64 M, const LeakyArgs& a) {
    const float beta = a.beta, thr = a.thr, c1 = a.c1, c2 = a.c2;
    const bool zero = a.zero != 0.0f;
    for (i64 i = 0; i < M; ++i) {
        const float z = c2 * (ut[i] - thr);
        const float sg = (1.0f / (1.0f + z * z)) * c1;
        const float g = gs[i] * sg + carry[i];
        gx[i] = g;
        const float keep = zero ? ((uprev[i] - thr > 0.0f) ? 0.0f : 1.0f) : 1.0f;
        carry[i] = g * beta * keep;
    }
}

// The Linear layer after the blocks, out[o] = b3[o] + Σ_m s[m]·W3[o, m], from the nonzero spikes
// s [M2] with w3t [M2, OP3] (W3 transposed, outputs padded to OP3) and b3 [OP3].
static inline void linear_forward(const float* s, i64 M2, const float* w3t, const float* b3,
                                  i64 O3, i64 OP3, float* out) {
    for (i64 o = 0; o < OP3; o += L) {
        vf acc = vload(b3 + o);
        for_nonzero(s, M2, [&](i64 m, float v) { acc = vfma(vset(v), vload(w3t + m * OP3 + o), acc); });
        vstore_n(out + o, acc, O3 - o);
    }
}

// u01/u02: U1[−1] [B, M1], U2[−1] [B, M2] (M1 = PH1·PW1·O1, M2 = PH2·PW2·O2, channels-last);
// leaky: the two layers' LeakyArgs; w3t, b3: the Linear layer (see linear_forward). Writes
// x3 [T, B, O3] (the Linear's output), u_last1/2 (U[T − 1]) and, for the backward (NULL: not
// kept), layer 1's segment starts ck1 [ceil(T / seg), B, M1] (U1[j·seg − 1]), layer 2's whole
// membrane u2seq [B, T + 1, M2] (U2[−1 .. T − 1]) and winners win2seq [B, T, P2, OP2]: the
// backward recomputes only layer 1, whose events are few.
extern "C" void block_forward(const float* x1, i64 T, i64 B, i64 C1, i64 H1, i64 W1,
                              const float* wext1, const float* bias1, i64 O1, i64 OP1, i64 K1,
                              i64 pad1, const float* wext2, const float* bias2, i64 O2, i64 OP2,
                              i64 K2, i64 pad2, const float* w3t, const float* b3, i64 O3,
                              i64 OP3, const float* leaky, const float* u01, const float* u02,
                              i64 seg, float* ck1, float* u2seq, uint8_t* win2seq,
                              float* u_last1, float* u_last2, float* x3, int nthreads) {
    const Geometry g1 = geometry(C1, H1, W1, O1, OP1, K1, pad1, 0);
    const Geometry g2 = geometry(O1, g1.PH, g1.PW, O2, OP2, K2, pad2, 1);
    const i64 M1 = g1.PH * g1.PW * O1, M2 = g2.PH * g2.PW * O2, P2 = g2.PH * g2.PW;
    const LeakyArgs a1 = {leaky[0], leaky[1], leaky[2], leaky[3], leaky[4]};
    const LeakyArgs a2 = {leaky[5], leaky[6], leaky[7], leaky[8], leaky[9]};
    if (u2seq) advise_huge(u2seq, B * (T + 1) * M2 * (i64)sizeof(float));
    if (win2seq) advise_huge(win2seq, B * T * P2 * OP2);
#pragma omp parallel num_threads(team(B, nthreads))
    {
        Layer l1(g1, L), l2(g2, L);
        float* u1 = alloc_floats(M1);
        float* u2 = alloc_floats(M2);
        float* xt = alloc_floats(M1 > M2 ? M1 : M2);
        float* st = alloc_floats(M1 > M2 ? M1 : M2);
#pragma omp for schedule(dynamic, 1)
        for (i64 b = 0; b < B; ++b) {
            memcpy(u1, u01 + b * M1, sizeof(float) * M1);
            memcpy(u2, u02 + b * M2, sizeof(float) * M2);
            if (u2seq) memcpy(u2seq + b * (T + 1) * M2, u2, sizeof(float) * M2);
            for (i64 t = 0; t < T; ++t) {
                const i64 n = t * B + b;
                if (ck1 && t % seg == 0)
                    memcpy(ck1 + (t / seg * B + b) * M1, u1, sizeof(float) * M1);
                if (t + 1 < T) prefetch(x1 + (n + B) * C1 * H1 * W1, C1 * H1 * W1);
                l1.s.scan(x1 + n * C1 * H1 * W1);
                forward_sample(l1.s, wext1, bias1, xt, NULL);
                leaky_step(u1, xt, st, M1, a1);
                l2.s.scan(st);
                forward_sample(l2.s, wext2, bias2, xt,
                               win2seq ? win2seq + (b * T + t) * P2 * OP2 : NULL);
                leaky_step(u2, xt, st, M2, a2);
                if (u2seq) memcpy(u2seq + (b * (T + 1) + t + 1) * M2, u2, sizeof(float) * M2);
                linear_forward(st, M2, w3t, b3, O3, OP3, x3 + n * O3);
            }
            memcpy(u_last1 + b * M1, u1, sizeof(float) * M1);
            memcpy(u_last2 + b * M2, u2, sizeof(float) * M2);
        }
        free(u1);
        free(u2);
        free(xt);
        free(st);
    }
}

// Backward of block_forward from gx3 = dL/dX3 [T, B, O3] and g_last1/2 = dL/dU[T − 1] (NULL:
// none). Per b in reverse time: the Linear layer (w3 [O3, M2]) gives dL/dS2 and adds to gw3_parts
// [groups, M2, OP3] and gb3_parts [groups, OP3] (S2 recomputed from U2); the second Leaky
// gives dL/dX2; layer 2's winners route it to
// dL/dS1 and to layer 2's weight; the first Leaky gives dL/dX1, which layer 1's winners route to
// its weight. gw*_parts [groups, C, KE, KE, OP] and gb*_parts [groups, OP] zeroed by the
// caller; gu01/2 [B, M] (NULL: not needed) receive dL/dU[−1]. The batch is split into `groups`
// runs of consecutive b, each adding to its own parts in order and handed to whichever thread
// is free (the sums do not depend on the thread count or timing).
extern "C" void block_backward(const float* x1, i64 T, i64 B, i64 C1, i64 H1, i64 W1,
                               const float* wext1, const float* bias1, i64 O1, i64 OP1, i64 K1,
                               i64 pad1, const float* wext2, const float* bias2,
                               const float* wrow2, i64 RP2, i64 O2, i64 OP2, i64 K2, i64 pad2,
                               const float* w3, i64 O3, i64 OP3, const float* leaky, i64 seg,
                               const float* ck1, const float* u2seq,
                               const uint8_t* win2seq, const float* gx3,
                               const float* g_last1, const float* g_last2, float* gw1_parts,
                               float* gb1_parts, float* gw2_parts, float* gb2_parts,
                               float* gw3_parts, float* gb3_parts, float* gu01, float* gu02,
                               i64 groups, int nthreads) {
    const Geometry g1 = geometry(C1, H1, W1, O1, OP1, K1, pad1, 0);
    const Geometry g2 = geometry(O1, g1.PH, g1.PW, O2, OP2, K2, pad2, 1);
    const i64 M1 = g1.PH * g1.PW * O1, M2 = g2.PH * g2.PW * O2;
    const i64 P1 = g1.PH * g1.PW, P2 = g2.PH * g2.PW;
    const i64 nseg = (T + seg - 1) / seg;
    const LeakyArgs a1 = {leaky[0], leaky[1], leaky[2], leaky[3], leaky[4]};
    const LeakyArgs a2 = {leaky[5], leaky[6], leaky[7], leaky[8], leaky[9]};
#pragma omp parallel num_threads(team(B, nthreads))
    {
        Layer l1(g1, L), l2(g2, RP2);
        Scratch maps1(g1, seg), maps2(g2, seg);  // nonzero maps of the segment's steps
        float* useg1 = alloc_floats((seg + 1) * M1);  // U[t0 − 1 .. t0 + seg − 1]
        uint8_t* win1 = (uint8_t*)malloc(seg * P1 * OP1 + L);
        float* carry1 = alloc_floats(M1);
        float* carry2 = alloc_floats(M2);
        float* xt = alloc_floats(M1 > M2 ? M1 : M2);
        float* st = alloc_floats(M1);
        float* gs = alloc_floats(M1 > M2 ? M1 : M2);
#pragma omp for schedule(dynamic, 1)
        for (i64 q = 0; q < groups; ++q) {
            float* gw1 = gw1_parts + q * C1 * g1.KE * g1.KE * OP1;
            float* gw2 = gw2_parts + q * O1 * g2.KE * g2.KE * OP2;
            float* gb1 = gb1_parts + q * OP1;
            float* gb2 = gb2_parts + q * OP2;
            float* gw3 = gw3_parts + q * M2 * OP3;
            float* gb3 = gb3_parts + q * OP3;
            for (i64 b = q * B / groups; b < (q + 1) * B / groups; ++b) {
                if (g_last1)
                    memcpy(carry1, g_last1 + b * M1, sizeof(float) * M1);
                else
                    memset(carry1, 0, sizeof(float) * M1);
                if (g_last2)
                    memcpy(carry2, g_last2 + b * M2, sizeof(float) * M2);
                else
                    memset(carry2, 0, sizeof(float) * M2);
                for (i64 j = nseg - 1; j >= 0; --j) {
                    const i64 t0 = j * seg, t1 = (t0 + seg < T) ? t0 + seg : T;
                    memcpy(useg1, ck1 + (j * B + b) * M1, sizeof(float) * M1);
                    for (i64 t = t0; t < t1; ++t) {
                        const i64 k = t - t0;
                        float* u1 = useg1 + (k + 1) * M1;
                        memcpy(u1, u1 - M1, sizeof(float) * M1);
                        Sample s1 = maps1.sample(g1, k), s2 = maps2.sample(g2, k);
                        const i64 next = t + 1 < t1 ? t + 1 : t0 - seg;
                        if (next >= 0) prefetch(x1 + (next * B + b) * C1 * H1 * W1, C1 * H1 * W1);
                        s1.scan(x1 + (t * B + b) * C1 * H1 * W1);
                        forward_sample(s1, wext1, bias1, xt, win1 + k * P1 * OP1);
                        leaky_step(u1, xt, st, M1, a1);
                        s2.scan(st);
                    }
                    for (i64 t = t1 - 1; t >= t0; --t) {
                        const i64 n = t * B + b, k = t - t0;
                        const float* u2 = u2seq + (b * (T + 1) + t + 1) * M2;
                        const uint8_t* win2 = win2seq + (b * T + t) * P2 * OP2;
                        const float* gn3 = gx3 + n * O3;
                        for (i64 m = 0; m < M2; m += L) {  // dL/dS2 = gx3 · W3
                            vf acc = vzero();
                            for (i64 o = 0; o < O3; ++o)
                                acc = vfma(vset(gn3[o]), vload_n(w3 + o * M2 + m, M2 - m), acc);
                            vstore_n(gs + m, acc, M2 - m);
                        }
                        for (i64 i = 0; i < M2; ++i) st[i] = (u2[i] - a2.thr > 0.0f) ? 1.0f : 0.0f;
                        for (i64 o = 0; o < OP3; o += L) {
                            const vf g3 = vload_n(gn3 + o, O3 - o);
                            vstore(gb3 + o, vadd(vload(gb3 + o), g3));
                            for_nonzero(st, M2, [&](i64 m, float v) {
                                float* d = gw3 + m * OP3 + o;
                                vstore(d, vfma(vset(v), g3, vload(d)));
                            });
                        }
                        leaky_step_backward(u2, u2 - M2, gs, carry2, xt, M2, a2);
                        l2.backward(maps2.sample(g2, k), xt, win2, gw2, gb2, wrow2, RP2, gs);
                        const float* u1 = useg1 + (k + 1) * M1;
                        leaky_step_backward(u1, u1 - M1, gs, carry1, xt, M1, a1);
                        l1.backward(maps1.sample(g1, k), xt, win1 + k * P1 * OP1, gw1, gb1, NULL, 0,
                                    NULL);
                    }
                }
                if (gu01) memcpy(gu01 + b * M1, carry1, sizeof(float) * M1);
                if (gu02) memcpy(gu02 + b * M2, carry2, sizeof(float) * M2);
            }
        }
        free(useg1);
        free(win1);
        free(carry1);
        free(carry2);
        free(xt);
        free(st);
        free(gs);
    }
}

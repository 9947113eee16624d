// Vectors of 16 floats for the CPU kernels, in GCC/Clang vector extensions: one source that the
// compiler maps onto whatever -march offers. A vf is NP native vectors of W floats: one AVX-512
// register, two AVX/AVX2 registers, or four SSE2 or NEON registers (the target picks only that
// width). All arithmetic is plain vector code, so no instruction set gets a path of its own.
// Two operations that compilers do not form from vector code are each target's own instruction:
// the fused multiply-add (vfma; GCC offers none on vector types, and -ffp-contract=off, kept for
// bit-exact neuron steps, forbids forming one) and the lane mask as bits (vbits). Every target
// has both: FMA is AVX-512F, x86 FMA with AVX, or AArch64 NEON, and a multiply then an add where
// there is none (x86-64 without FMA, 32-bit ARM, others; a call to fmaf per lane there would
// cost more than the rest of the kernel); results on such CPUs differ from the fused ones by
// rounding only, all other operations round the same on every target.
#pragma once
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#define SF_VBYTES 64
#elif defined(__AVX__)
#define SF_VBYTES 32
#else
#define SF_VBYTES 16
#endif
#if defined(__SSE2__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

// L lanes per vf, W per native vector, NP native vectors per vf.
enum { L = 16, W = SF_VBYTES / 4, NP = L / W };

typedef float vn __attribute__((vector_size(SF_VBYTES)));
typedef int32_t vin __attribute__((vector_size(SF_VBYTES)));
typedef uint8_t vbn __attribute__((vector_size(W)));

struct vf {
    vn p[NP];
};
// A lane mask: all bits of a lane set, or none.
struct vi {
    vin p[NP];
};

static inline vf vzero() { return vf{}; }
static inline vf vset(float a) {
    vf r;
    for (int k = 0; k < NP; ++k) r.p[k] = vn{} + a;
    return r;
}
static inline vf vload(const float* p) {
    vf r;
    for (int k = 0; k < NP; ++k) memcpy(&r.p[k], p + k * W, sizeof(vn));
    return r;
}
// p[0 .. n), zero in lanes n and above (n may exceed L).
static inline vf vload_n(const float* p, int64_t n) {
    if (n >= L) return vload(p);
    const int m = (int)n;  // lane-index compares in 32 bits: masked loads where the target has them
    float buf[L];
    for (int i = 0; i < L; ++i) buf[i] = i < m ? p[i] : 0.0f;
    return vload(buf);
}
static inline void vstore(float* p, vf v) {
    for (int k = 0; k < NP; ++k) memcpy(p + k * W, &v.p[k], sizeof(vn));
}
// The first n lanes of v to p (n may exceed L).
static inline void vstore_n(float* p, vf v, int64_t n) {
    if (n >= L) {
        vstore(p, v);
    } else {
        const int m = (int)n;
        float buf[L];
        vstore(buf, v);
        for (int i = 0; i < L; ++i)
            if (i < m) p[i] = buf[i];
    }
}
static inline vf vadd(vf a, vf b) {
    for (int k = 0; k < NP; ++k) a.p[k] += b.p[k];
    return a;
}
// a·b + c of native vectors, fused where the target can (see the top of the file)
static inline vn fma_native(vn a, vn b, vn c) {
#if defined(__AVX512F__)
    return (vn)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__AVX__) && defined(__FMA__)
    return (vn)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#elif defined(__aarch64__)
    return (vn)vfmaq_f32((float32x4_t)c, (float32x4_t)a, (float32x4_t)b);
#else
    return a * b + c;
#endif
}
static inline vf vfma(vf a, vf b, vf c) {
    for (int k = 0; k < NP; ++k) c.p[k] = fma_native(a.p[k], b.p[k], c.p[k]);
    return c;
}
// v where m, else +0
static inline vf vmask(vi m, vf v) {
    for (int k = 0; k < NP; ++k) v.p[k] = (vn)((vin)v.p[k] & m.p[k]);
    return v;
}
// where m: a, else b
static inline vf vselect(vi m, vf a, vf b) {
    for (int k = 0; k < NP; ++k)
        a.p[k] = (vn)(((vin)a.p[k] & m.p[k]) | ((vin)b.p[k] & ~m.p[k]));
    return a;
}
static inline vi vor(vi a, vi b) {
    for (int k = 0; k < NP; ++k) a.p[k] |= b.p[k];
    return a;
}
// Lanes where a > b, or where a is NaN.
static inline vi vgreater_or_nan(vf a, vf b) {
    vi r;
    for (int k = 0; k < NP; ++k) r.p[k] = (a.p[k] > b.p[k]) | (a.p[k] != a.p[k]);
    return r;
}
// Lanes that are nonzero or NaN.
static inline vi vnonzero(vf v) {
    vi r;
    for (int k = 0; k < NP; ++k) r.p[k] = v.p[k] != vn{};
    return r;
}
// Lanes where the byte arg[lane] equals q (arg: L bytes).
static inline vi vbytes_eq(const uint8_t* arg, int q) {
    vi r;
    for (int k = 0; k < NP; ++k) {
        vbn a;
        memcpy(&a, arg + k * W, sizeof(a));
        r.p[k] = __builtin_convertvector(a == (uint8_t)q, vin);
    }
    return r;
}
// v where arg[lane] == q, else 0 (arg: L bytes)
static inline vf vwhere(const uint8_t* arg, int q, vf v) { return vmask(vbytes_eq(arg, q), v); }
// Whether any lane of m is set.
static inline bool vany(vi m) {
    vin a = m.p[0];
    for (int k = 1; k < NP; ++k) a |= m.p[k];
    uint64_t w[SF_VBYTES / 8];
    memcpy(w, &a, sizeof(w));
    uint64_t r = 0;
    for (int i = 0; i < SF_VBYTES / 8; ++i) r |= w[i];
    return r != 0;
}
// Bit i set where lane i of m is set. Like vfma, each target's own instructions (AVX-512 mask
// compare, AVX and SSE2 movemask, NEON add across lanes of the masked bit weights); elsewhere the
// lanes narrowed to bytes (0 or 0xFF), whose low bits a multiplication gathers 8 at a time: bit i of
// (x·0x0102040810204080) >> 56 is the low bit of byte i of x when every byte of x is 0 or 1, as
// the partial products never overlap.
static inline uint32_t vbits(vi m) {
#if defined(__AVX512F__)
    return _mm512_cmpneq_epi32_mask((__m512i)m.p[0], _mm512_setzero_si512());
#elif defined(__AVX__)
    uint32_t r = 0;
    for (int k = 0; k < NP; ++k) r |= (uint32_t)_mm256_movemask_ps((__m256)m.p[k]) << (k * W);
    return r;
#elif defined(__SSE2__)
    uint32_t r = 0;
    for (int k = 0; k < NP; ++k) r |= (uint32_t)_mm_movemask_ps((__m128)m.p[k]) << (k * W);
    return r;
#elif defined(__aarch64__)
    const uint32x4_t weight = {1, 2, 4, 8};
    uint32_t r = 0;
    for (int k = 0; k < NP; ++k) r |= vaddvq_u32(vandq_u32((uint32x4_t)m.p[k], weight)) << (4 * k);
    return r;
#else
    uint8_t bytes[L];
    for (int k = 0; k < NP; ++k) {
        const vbn b = __builtin_convertvector(m.p[k], vbn);
        memcpy(bytes + k * W, &b, sizeof(b));
    }
    uint32_t r = 0;
    for (int w = 0; w < L / 8; ++w) {
        uint64_t x;
        memcpy(&x, bytes + 8 * w, sizeof(x));
        r |= (uint32_t)(((x & 0x0101010101010101ull) * 0x0102040810204080ull) >> 56) << (8 * w);
    }
    return r;
#endif
}
// Lanes of an integer vector (0 .. 255) as L bytes at out.
static inline void vstore_bytes(uint8_t* out, vi v) {
    for (int k = 0; k < NP; ++k) {
        const vbn b = __builtin_convertvector(v.p[k], vbn);
        memcpy(out + k * W, &b, sizeof(b));
    }
}
static inline vi vint(int32_t a) {
    vi r;
    for (int k = 0; k < NP; ++k) r.p[k] = vin{} + a;
    return r;
}
// where m: a, else b
static inline vi vselect_int(vi m, vi a, vi b) {
    for (int k = 0; k < NP; ++k) a.p[k] = (a.p[k] & m.p[k]) | (b.p[k] & ~m.p[k]);
    return a;
}

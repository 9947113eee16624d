// Runs the sparse Conv-MaxPool, Poisson-Linear and channels-last IF-MaxPool kernels on fixed
// pseudo-random inputs and
// prints one FNV-1a hash of the bytes of every output, so that builds for different CPUs (an
// AArch64 build under qemu-user against the x86 build, test_kernels_aarch64.py) can be compared
// without Python. Both builds fuse multiply-adds (x86 FMA, AArch64 NEON), so equal results mean
// equal bytes. Linked with sparse_kernels.cpp, poisson_kernels.cpp and neuron_pool_kernels.cpp;
// one thread.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

typedef int64_t i64;

extern "C" {
void scp_forward(const float* x, i64 N, i64 C, i64 H, i64 W, int channels_last,
                 const float* wext, const float* bias, i64 O, i64 OP, i64 K, i64 pad, float* out,
                 uint8_t* arg, int nthreads);
void scp_backward(const float* x, i64 N, i64 C, i64 H, i64 W, int channels_last,
                  const uint8_t* arg, const float* gout, i64 O, i64 OP, i64 K, i64 pad,
                  float* gw_parts, float* gb_parts, const float* wrow, i64 RP, float* gx,
                  int nthreads);
void poisson_linear_forward(const int32_t* feat, const uint32_t* q, const i64* start, i64 B,
                            i64 K, i64 T, uint64_t seed, const float* wt, i64 O, i64 OP,
                            float* out, uint8_t* spk, int nthreads);
void poisson_linear_backward(const int32_t* feat, const i64* start, i64 B, i64 T,
                             const uint8_t* spk, const float* g, i64 O, i64 OP, i64 F,
                             float* parts, int nthreads);
void lif_pool_cl_forward(const float* x, i64 x_st, const float* v0, float v_rest, float* out,
                         float* v_last, i64 T, i64 B, i64 H, i64 W, i64 C, int mode, float tau,
                         float v_th, float v_reset, int soft, int nthreads);
void lif_pool_cl_backward(const float* x, i64 x_st, const float* v0, float v_rest, const float* g,
                          const float* gv_last, float* gx, int sum_t, float* gv0, i64 T, i64 B,
                          i64 H, i64 W, i64 C, int mode, float tau, float v_th, float v_reset,
                          int soft, int detach_reset, float c1, float c2, int nthreads);
}

static uint64_t state = 88172645463325252ull;

// xorshift64: the same sequence on every machine
static uint64_t next() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

// Uniform in [-1, 1) on a 2^-20 grid.
static float uniform() { return (float)((int64_t)(next() >> 43) - (1 << 20)) / (float)(1 << 20); }

template <typename T>
static void print_hash(const char* name, const std::vector<T>& v) {
    uint64_t h = 14695981039346656037ull;
    const unsigned char* p = (const unsigned char*)v.data();
    for (size_t i = 0; i < v.size() * sizeof(T); ++i) h = (h ^ p[i]) * 1099511628211ull;
    printf("%s %016llx\n", name, (unsigned long long)h);
}

static i64 pad16(i64 n) { return (n + 15) / 16 * 16; }

// One Conv(K×K)-MaxPool(2) layer forward and backward; sample n has nonzero density[n].
static void conv_pool(const char* name, i64 C, i64 H, i64 W, i64 O, i64 K, i64 pad,
                      int channels_last, const double* density, i64 N) {
    const i64 OP = pad16(O), KE = K + 2, RP = pad16(K * C);
    const i64 PH = (H + 2 * pad - K + 1) / 2, PW = (W + 2 * pad - K + 1) / 2;
    std::vector<float> x(N * C * H * W), wext(C * KE * KE * OP, 0.0f), bias(OP, 0.0f);
    for (i64 n = 0; n < N; ++n)
        for (i64 i = 0; i < C * H * W; ++i)
            x[n * C * H * W + i] =
                (double)(next() >> 11) / 9007199254740992.0 < density[n] ? 1.0f + (next() & 1) : 0;
    std::vector<float> w(O * C * K * K);
    for (float& v : w) v = uniform();
    for (i64 o = 0; o < O; ++o) bias[o] = uniform();
    std::vector<float> wrow(O * K * RP, 0.0f);
    for (i64 o = 0; o < O; ++o)
        for (i64 c = 0; c < C; ++c)
            for (i64 ky = 0; ky < K; ++ky)
                for (i64 kx = 0; kx < K; ++kx) {
                    const float v = w[((o * C + c) * K + ky) * K + kx];
                    wext[((c * KE + ky + 1) * KE + kx + 1) * OP + o] = v;
                    wrow[(o * K + ky) * RP + kx * C + c] = v;
                }
    std::vector<float> out(N * PH * PW * O), gout(N * PH * PW * O);
    std::vector<uint8_t> arg(N * PH * PW * OP);
    scp_forward(x.data(), N, C, H, W, channels_last, wext.data(), bias.data(), O, OP, K, pad,
                out.data(), arg.data(), 1);
    for (float& v : gout) v = uniform();
    std::vector<float> gw(C * KE * KE * OP, 0.0f), gb(OP, 0.0f), gx(N * H * W * C);
    scp_backward(x.data(), N, C, H, W, channels_last, arg.data(), gout.data(), O, OP, K, pad,
                 gw.data(), gb.data(), wrow.data(), RP, gx.data(), 1);
    printf("%s: ", name);
    print_hash("out", out);
    printf("%s: ", name);
    print_hash("winners", arg);
    printf("%s: ", name);
    print_hash("grad_weight", gw);
    printf("%s: ", name);
    print_hash("grad_bias", gb);
    printf("%s: ", name);
    print_hash("grad_input", gx);
}

static void poisson_linear() {
    const i64 B = 3, F = 50, O = 21, OP = pad16(O), T = 7;
    std::vector<int32_t> feat;
    std::vector<uint32_t> q;
    std::vector<i64> start(1, 0);
    for (i64 b = 0; b < B; ++b) {
        for (i64 f = 0; f < F; ++f) {
            if (next() % 3 == 0) continue;  // a pixel that never fires
            feat.push_back((int32_t)f);
            q.push_back((uint32_t)(next() % 65537));
        }
        start.push_back((i64)feat.size());
    }
    const i64 K = (i64)feat.size();
    std::vector<float> wt(F * OP, 0.0f), out(T * B * O), g(T * B * O), parts(F * OP, 0.0f);
    for (i64 f = 0; f < F; ++f)
        for (i64 o = 0; o < O; ++o) wt[f * OP + o] = uniform();
    std::vector<uint8_t> spk(K * T);
    poisson_linear_forward(feat.data(), q.data(), start.data(), B, K, T, 1234, wt.data(), O, OP,
                           out.data(), spk.data(), 1);
    for (float& v : g) v = uniform();
    poisson_linear_backward(feat.data(), start.data(), B, T, spk.data(), g.data(), O, OP, F,
                            parts.data(), 1);
    printf("poisson_linear: ");
    print_hash("spikes", spk);
    printf("poisson_linear: ");
    print_hash("out", out);
    printf("poisson_linear: ");
    print_hash("grad_weight", parts);
}

// LIF (τ = 2, hard reset) + MaxPool(2) over a channels-last sequence with odd H and W, from a
// given membrane, forward and backward (ATan surrogate, α = 2).
static void lif_pool_cl() {
    const i64 T = 3, B = 2, H = 7, W = 5, C = 19, N = B * H * W * C;
    const i64 P = B * (H / 2) * (W / 2) * C;
    std::vector<float> x(T * N), v0(N), out(T * P), v_last(N), g(T * P), gv(N), gx(T * N),
        gv0(N);
    for (float& v : x) v = 1.5f * uniform() + 0.6f;
    for (float& v : v0) v = 0.5f * uniform();
    for (float& v : g) v = uniform();
    for (float& v : gv) v = uniform();
    lif_pool_cl_forward(x.data(), N, v0.data(), 0.0f, out.data(), v_last.data(), T, B, H, W, C,
                        1, 2.0f, 1.0f, 0.0f, 0, 1);
    lif_pool_cl_backward(x.data(), N, v0.data(), 0.0f, g.data(), gv.data(), gx.data(), 0,
                         gv0.data(), T, B, H, W, C, 1, 2.0f, 1.0f, 0.0f, 0, 0, 1.0f,
                         3.14159265f, 1);
    printf("lif_pool_cl: ");
    print_hash("out", out);
    printf("lif_pool_cl: ");
    print_hash("v_last", v_last);
    printf("lif_pool_cl: ");
    print_hash("grad_input", gx);
    printf("lif_pool_cl: ");
    print_hash("grad_v0", gv0);
}

int main() {
    const double events[2] = {0.03, 0.4};  // scatter path, then gather path
    conv_pool("events_nchw", 2, 16, 16, 12, 5, 0, 0, events, 2);
    const double spikes[2] = {0.2, 0.05};
    conv_pool("spikes_nhwc", 12, 12, 12, 32, 5, 1, 1, spikes, 2);
    conv_pool("odd_nchw", 3, 11, 13, 5, 3, 1, 0, events, 2);
    poisson_linear();
    lif_pool_cl();
    return 0;
}

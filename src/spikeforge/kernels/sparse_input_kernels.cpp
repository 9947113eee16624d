// The weight gradient of a layer whose input is mostly zeros, for kernels/sparse_input.py.
#include "neuron_math.h"
#include "simd16.h"

// Widest tile of the gradient a thread accumulates at once: 8192 floats (32 KiB, in L1).
enum { TILE_FLOATS = 8192, MAX_TILE_ROWS = 512 };

// o[0 .. N) += v·g[0 .. N), each lane as vfma rounds (fused where the target has an FMA).
static inline void axpy(float* __restrict o, const float* __restrict g, float v, i64 N) {
    const vf vv = vset(v);
    i64 n = 0;
    for (; n + L <= N; n += L) vstore(o + n, vfma(vv, vload(g + n), vload(o + n)));
    if (n < N) vstore_n(o + n, vfma(vv, vload_n(g + n, N - n), vload_n(o + n, N - n)), N - n);
}

// dW [N, K] = Gᵀ·X for X [R, K] (the layer's inputs) and G [R, N] (the gradient of its outputs),
// row-major, touching only the nonzero entries of X: a row of Gᵀ·X costs its nonzeros · N, not
// R · N. Each dW[n, k] = Σ_r X[r, k]·G[r, n] is summed in the order r = 0 … R−1 by one thread,
// so the result does not depend on the thread count. Threads take blocks of k; a block is
// accumulated in a tile of its own ([kb, N], within TILE_FLOATS) and stored transposed.
// Returns 0, or 1 without writing dW when more than max_density of X is nonzero (a dense GEMM
// is faster there).
extern "C" int sparse_input_weight_grad(const float* __restrict x, const float* __restrict g,
                                        float* __restrict dw, i64 R, i64 K, i64 N,
                                        float max_density, int nthreads) {
    i64 nnz = 0;
    for (i64 i = 0; i < R * K; ++i) nnz += x[i] != 0.0f;
    if ((double)nnz > (double)max_density * (double)(R * K)) return 1;
    const int team = threads_for(nnz * N, nthreads);
    i64 kb = TILE_FLOATS / N;
    const i64 per_thread = (K + team - 1) / team;
    if (kb > per_thread) kb = per_thread;
    if (kb > MAX_TILE_ROWS) kb = MAX_TILE_ROWS;
    if (kb < 1) kb = 1;
    const i64 blocks = (K + kb - 1) / kb;
#pragma omp parallel num_threads(team)
    {
        float* tile = (float*)malloc(sizeof(float) * kb * N);
        int idx[MAX_TILE_ROWS];
#pragma omp for schedule(static)
        for (i64 b = 0; b < blocks; ++b) {
            const i64 k0 = b * kb, k1 = k0 + kb < K ? k0 + kb : K, width = k1 - k0;
            memset(tile, 0, sizeof(float) * width * N);
            for (i64 r = 0; r < R; ++r) {
                const float* xr = x + r * K + k0;
                int count = 0;
                for (i64 k = 0; k < width; ++k) {  // the nonzeros' positions, without branches
                    idx[count] = (int)k;
                    count += xr[k] != 0.0f;
                }
                const float* gr = g + r * N;
                for (int i = 0; i < count; ++i) axpy(tile + idx[i] * N, gr, xr[idx[i]], N);
            }
            for (i64 n = 0; n < N; ++n)
                for (i64 k = 0; k < width; ++k) dw[n * K + k0 + k] = tile[k * N + n];
        }
        free(tile);
    }
    return 0;
}

"""The C++ source of the fused generation step (:mod:`model.fused_step` compiles and loads it).

A Python string rather than a ``.cpp`` file beside it, so an installed copy of the package
always has it (the project lists no package data). It includes only C headers: without
PyTorch's headers it compiles in about two seconds, where a ``load_inline`` extension took
85 s for a one-line function on the same CPU (model/README.md, "Speed"). It is called through
:mod:`ctypes` with one pointer to a table of addresses, so no Python binding is needed either.

What it computes, for rows ``0..n-1``, in one call: both (all) layers' gates, the cell
update and the output layer, in float32 or with the gate weights in bfloat16 (widened to
float32 as they are read; the hidden states and every sum stay float32), or in int8: the
gate weights int8 with a scale per output, the layer inputs (hidden states, in [-1, 1])
rounded to multiples of 1/127, their products summed exactly in 32-bit integers by AVX2's
pairwise 16-bit multiply-add (twice the multiply-adds per instruction of a float FMA; each
pair of products goes straight into a 32-bit lane, so nothing saturates, unlike the 8-bit
multiply-add oneDNN uses without VNNI), then scaled once.

Exactness rules (the engine's guarantees; see model/fused_step.py):

- every gate and logit is its own sum, in the order ``init + w[0]*x[0] + w[1]*x[1] + ...``,
  one fused multiply-add per term, whatever tile of rows and outputs it was computed in, so
  a row's bits never depend on the batch; a step shared among threads gives each thread
  whole rows (the same tiles, the same order), so they never depend on the thread count either;
- it is compiled with ``-ffp-contract=off``: the only fused multiply-adds are the explicit
  ones (``fma8``), identical in every tile shape;
- int8 sums are exact integers, so any order gives the same bits, with or without AVX2.

The layouts are made by :func:`model.fused_step.pack_gates` and its neighbours.
"""

from __future__ import annotations

ABI = 6  # bump with any change to the Args table or the packed layouts

SOURCE = r"""
// charbot fused LSTM step; see model/fused_source.py. CHARBOT_ABI comes from the compile line.
#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

typedef float v8f __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8f splat(float s) { return (v8f){s, s, s, s, s, s, s, s}; }
static inline v8f fma8(v8f a, v8f b, v8f c) {  // a * b + c, rounded once
#if defined(__AVX2__) && defined(__FMA__)
  return (v8f)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  v8f out;
  for (int q = 0; q < 8; q++) out[q] = __builtin_fmaf(a[q], b[q], c[q]);
  return out;
#endif
}
static inline v8f vmin(v8f a, v8f b) { return a < b ? a : b; }
static inline v8f vmax(v8f a, v8f b) { return a > b ? a : b; }
static inline v8f loadf(const float* p) { v8f v; memcpy(&v, p, 32); return v; }
static inline v8u loadu(const uint16_t* p) { v8u v; memcpy(&v, p, 32); return v; }
static inline void storef(float* p, v8f v) { memcpy(p, &v, 32); }

// exp: Cephes' expf (range reduction by ln 2 in two parts, degree-5 polynomial), about 1 ulp.
static inline v8f vexp(v8f x) {
  x = vmin(vmax(x, splat(-87.3f)), splat(88.3f));
  v8f t = fma8(x, splat(1.44269504088896341f), splat(12582912.0f));  // round(x / ln 2) in the low bits
  v8f n = t - splat(12582912.0f);
  v8i ni = (v8i)t - (v8i)splat(12582912.0f);
  v8f r = fma8(n, splat(-0.693359375f), x);
  r = fma8(n, splat(2.12194440e-4f), r);
  v8f p = splat(1.9875691500e-4f);
  p = fma8(p, r, splat(1.3981999507e-3f));
  p = fma8(p, r, splat(8.3334519073e-3f));
  p = fma8(p, r, splat(4.1665795894e-2f));
  p = fma8(p, r, splat(1.6666665459e-1f));
  p = fma8(p, r, splat(5.0000001201e-1f));
  v8f y = fma8(p, r * r, r) + splat(1.0f);
  return y * (v8f)((ni + 127) << 23);
}
static inline v8f vsigmoid(v8f x) { return splat(1.0f) / (splat(1.0f) + vexp(-x)); }
// tanh: Cephes' odd polynomial below 0.625, (1 - e) / (1 + e) with e = exp(-2|x|) above.
static inline v8f vtanh(v8f x) {
  v8f ax = vmax(x, -x);
  v8f e = vexp(splat(-2.0f) * ax);
  v8f big = (splat(1.0f) - e) / (splat(1.0f) + e);
  big = (v8f)((v8i)big | ((v8i)x & (v8i)splat(-0.0f)));
  v8f z = x * x;
  v8f p = splat(-5.70498872745e-3f);
  p = fma8(p, z, splat(2.06390887954e-2f));
  p = fma8(p, z, splat(-5.37397155531e-2f));
  p = fma8(p, z, splat(1.33314422036e-1f));
  p = fma8(p, z, splat(-3.33332819422e-1f));
  v8f small = fma8(p * z, x, x);
  return ax < splat(0.625f) ? small : big;
}

// The four gate vectors (i, f, o, g) of 8 hidden units at input k. fp32 blocks hold them one
// after the other; bf16 blocks interleave i with f and o with g, so a 32-bit lane widens to
// two floats with one shift and one mask.
template <bool BF16>
static inline void weights(const void* w, long at, v8f out[4]) {
  if (BF16) {
    const uint16_t* p = (const uint16_t*)w + at;
    v8u a = loadu(p), b = loadu(p + 16);
    const v8u hi = {0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u,
                    0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u};
    out[0] = (v8f)(a << 16);
    out[1] = (v8f)(a & hi);
    out[2] = (v8f)(b << 16);
    out[3] = (v8f)(b & hi);
  } else {
    const float* p = (const float*)w + at;
    for (int g = 0; g < 4; g++) out[g] = loadf(p + 8 * g);
  }
}

struct Rows {          // where row r's vectors are: base + r * stride (floats)
  const float* x; long xs;      // the layer's input [h_below | h_own]
  const int16_t* xq;            // int8 weights: the same input times 127, rounded (stride xs)
  const float* init; long is;   // its gates' starting values: the bias, or the table row of its code
  const int64_t* codes;         // layer 0: init row = init + codes[r] * is; else null
  float* c; long cs;            // the cell state, updated in place
  float* h; long hs;            // where the new hidden state goes
};

// The cell update of 8 hidden units of one row from their four gates' sums.
static inline void cell(const v8f acc[4], long row, long u, const Rows& rows) {
  float* c = rows.c + row * rows.cs + u;
  v8f i = vsigmoid(acc[0]), f = vsigmoid(acc[1]), o = vsigmoid(acc[2]);
  v8f g = vtanh(acc[3]);
  v8f cc = f * loadf(c) + i * g;
  storef(c, cc);
  storef(rows.h + row * rows.hs + u, o * vtanh(cc));
}

// R rows by NB blocks of 8 hidden units, starting at block b0, over K inputs: the gates' sums in
// registers, then the cell update.
template <bool BF16, int R, int NB>
static inline void gate_tile(const void* w, long K, int b0, int r0, const Rows& rows) {
  v8f acc[R][NB][4];
  const float* x[R];
  for (int r = 0; r < R; r++) {
    const long row = r0 + r;
    const float* init = (rows.codes ? rows.init + rows.codes[row] * rows.is : rows.init) + b0 * 32;
    x[r] = rows.x + row * rows.xs;
    for (int j = 0; j < NB; j++)
      for (int g = 0; g < 4; g++) acc[r][j][g] = loadf(init + j * 32 + g * 8);
  }
  for (long k = 0; k < K; k++) {
    v8f xs[R];
    for (int r = 0; r < R; r++) xs[r] = splat(x[r][k]);
    for (int j = 0; j < NB; j++) {
      v8f wv[4];
      weights<BF16>(w, ((long)(b0 + j) * K + k) * 32, wv);
      for (int g = 0; g < 4; g++)
        for (int r = 0; r < R; r++) acc[r][j][g] = fma8(wv[g], xs[r], acc[r][j][g]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int j = 0; j < NB; j++) cell(acc[r][j], r0 + r, (b0 + j) * 8, rows);
}

// int8 weights: each gate's 8 units for an even input k and k + 1, as 16 int8 (unit by unit, k
// then k + 1), widened to int16 and multiplied with the row's inputs k, k + 1 (int16, the hidden
// states times 127, rounded) by one pairwise multiply-add into 8 int32 sums: exact integers, so
// no order matters, and then scaled once. The sums stay below 2^24 for hidden sizes to 520, so
// their conversion to float is exact too.
static inline v8i madd16(const int8_t* w, v8i xpair) {
#if defined(__AVX2__)
  __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)w));
  return (v8i)_mm256_madd_epi16(wv, (__m256i)xpair);
#else
  v8i out;
  const int16_t x0 = (int16_t)(xpair[0] & 0xffff), x1 = (int16_t)((uint32_t)xpair[0] >> 16);
  for (int q = 0; q < 8; q++) out[q] = (int32_t)w[2 * q] * x0 + (int32_t)w[2 * q + 1] * x1;
  return out;
#endif
}

template <int R, int NB>
static inline void gate_tile_i8(const int8_t* w, const float* scale, long K, int b0, int r0, const Rows& rows) {
  v8i acc[R][NB][4];
  const int16_t* x[R];
  for (int r = 0; r < R; r++) {
    x[r] = rows.xq + (r0 + r) * rows.xs;
    for (int j = 0; j < NB; j++)
      for (int g = 0; g < 4; g++) acc[r][j][g] = (v8i){0, 0, 0, 0, 0, 0, 0, 0};
  }
  for (long k = 0; k < K; k += 2) {
    v8i xs[R];
    for (int r = 0; r < R; r++) {
      int32_t pair;
      memcpy(&pair, x[r] + k, 4);
      xs[r] = (v8i){pair, pair, pair, pair, pair, pair, pair, pair};
    }
    for (int j = 0; j < NB; j++) {
      const int8_t* wb = w + ((long)(b0 + j) * K + k) * 32;
      for (int g = 0; g < 4; g++) {
        for (int r = 0; r < R; r++) acc[r][j][g] += madd16(wb + 16 * g, xs[r]);
      }
    }
  }
  for (int r = 0; r < R; r++) {
    const long row = r0 + r;
    const float* init = (rows.codes ? rows.init + rows.codes[row] * rows.is : rows.init) + b0 * 32;
    for (int j = 0; j < NB; j++) {
      v8f gates[4];
      for (int g = 0; g < 4; g++) {
        v8f sum = __builtin_convertvector(acc[r][j][g], v8f);
        gates[g] = fma8(sum, loadf(scale + (b0 + j) * 32 + g * 8), loadf(init + j * 32 + g * 8));
      }
      cell(gates, row, (b0 + j) * 8, rows);
    }
  }
}

static void gate_layer_i8(const int8_t* w, const float* scale, long K, int blocks, int n, const Rows& rows) {
  if (n == 1) {
    int b = 0;
    for (; b + 2 <= blocks; b += 2) gate_tile_i8<1, 2>(w, scale, K, b, 0, rows);
    for (; b < blocks; b++) gate_tile_i8<1, 1>(w, scale, K, b, 0, rows);
    return;
  }
  for (int b = 0; b < blocks; b++) {
    int r = 0;
    for (; r + 2 <= n; r += 2) gate_tile_i8<2, 1>(w, scale, K, b, r, rows);
    for (; r < n; r++) gate_tile_i8<1, 1>(w, scale, K, b, r, rows);
  }
}

// Tile shapes, measured on an AVX2 EPYC (model/README.md, "Speed"): a lone row takes four blocks
// at a time (sixteen independent sums in flight while the weights stream in once); several rows
// go two at a time, block by block, so a weight vector loaded once serves both rows and the
// block's weights stay in cache while every row uses them.
template <bool BF16>
static void gate_layer(const void* w, long K, int blocks, int n, const Rows& rows) {
  if (n == 1) {
    int b = 0;
    for (; b + 4 <= blocks; b += 4) gate_tile<BF16, 1, 4>(w, K, b, 0, rows);
    for (; b < blocks; b++) gate_tile<BF16, 1, 1>(w, K, b, 0, rows);
    return;
  }
  for (int b = 0; b < blocks; b++) {
    int r = 0;
    for (; r + 2 <= n; r += 2) gate_tile<BF16, 2, 1>(w, K, b, r, rows);
    for (; r < n; r++) gate_tile<BF16, 1, 1>(w, K, b, r, rows);
  }
}

// The output layer: NB blocks of 8 logits for R rows; weights (blocks, K, 8), bias padded to 8.
template <int R, int NB>
static inline void head_tile(const float* w, const float* bias, long K, int b0, int r0, const float* x0, long xs,
                             float* out0, long os, int V) {
  v8f acc[R][NB];
  const float* x[R];
  for (int r = 0; r < R; r++) {
    x[r] = x0 + (r0 + r) * xs;
    for (int j = 0; j < NB; j++) acc[r][j] = loadf(bias + (b0 + j) * 8);
  }
  for (long k = 0; k < K; k++) {
    v8f xv[R];
    for (int r = 0; r < R; r++) xv[r] = splat(x[r][k]);
    for (int j = 0; j < NB; j++) {
      v8f wv = loadf(w + ((long)(b0 + j) * K + k) * 8);
      for (int r = 0; r < R; r++) acc[r][j] = fma8(wv, xv[r], acc[r][j]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int j = 0; j < NB; j++) {
      float tmp[8];
      storef(tmp, acc[r][j]);
      const int u = (b0 + j) * 8;
      const int m = V - u < 8 ? V - u : 8;
      memcpy(out0 + (r0 + r) * os + u, tmp, 4 * m);
    }
}

static void head_layer(const float* w, const float* bias, long K, int V, int n, const float* x, long xs, float* out,
                       long os) {
  const int blocks = (V + 7) / 8;
  int b = 0;
  for (; b + 4 <= blocks; b += 4) {
    int r = 0;
    for (; r + 2 <= n; r += 2) head_tile<2, 4>(w, bias, K, b, r, x, xs, out, os, V);
    for (; r < n; r++) head_tile<1, 4>(w, bias, K, b, r, x, xs, out, os, V);
  }
  for (; b < blocks; b++)
    for (int r = 0; r < n; r++) head_tile<1, 1>(w, bias, K, b, r, x, xs, out, os, V);
}

extern "C" {

enum { MAX_LAYERS = 8 };

struct Args {  // every field 64 bits; model/fused_step.py fills it (FusedKernel.ARGS)
  int64_t layers, hidden, vocab, in_vocab, max_batch, format;  // format: 0 fp32, 1 bf16, 2 int8
  const int64_t* codes;
  const float* table;   // (in_vocab, H/8 * 32): layer 0's gates for each input code, bias included
  float* hs;            // (max_batch, L*H): [h_0 | h_1 | ...] per row
  float* cs;            // (L, max_batch, H)
  float* scratch;       // (max_batch, H): a layer's new hidden states until its every block is done
  const float* head_w;  // (ceil(V/8), H, 8)
  const float* head_b;  // (ceil(V/8) * 8)
  float* logits;        // (max_batch, V)
  const void* w[MAX_LAYERS];       // layer l: (H/8, K_l, 32) float32, bfloat16 or int8, K_0 = H, else 2H
  const float* bias[MAX_LAYERS];   // layer l >= 1: (H/8 * 32)
  int16_t* hq;                     // int8: (max_batch, L*H), hs times 127, rounded
  const float* scale[MAX_LAYERS];  // int8: (H/8 * 32), each gate output's weight scale / 127
};

int64_t charbot_fused_abi(void) { return CHARBOT_ABI; }

}  // extern "C"

// int8 weights' inputs: hidden states (in [-1, 1]) times 127, rounded to the nearest (ties to even).
static void quantize(const float* h, int16_t* q, long n) {
  for (long i = 0; i < n; i++) q[i] = (int16_t)__builtin_rintf(h[i] * 127.0f);
}

// One step of rows r0..r0+n-1 (their codes already checked), on the calling thread. Every buffer
// is indexed by row, so a share of the rows is the same arguments with its buffers shifted.
static void step_rows(const Args* a, long r0, long n) {
  const long H = a->hidden, L = a->layers, row = L * H;
  const int64_t* codes = a->codes + r0;
  float* hs = a->hs + r0 * row;
  int16_t* hq = a->format == 2 ? a->hq + r0 * row : nullptr;
  if (hq) quantize(hs, hq, n * row);
  for (long l = 0; l < L; l++) {
    Rows rows;
    rows.x = hs + (l == 0 ? 0 : (l - 1) * H);
    rows.xq = hq ? hq + (l == 0 ? 0 : (l - 1) * H) : nullptr;
    rows.xs = row;
    rows.codes = l == 0 ? codes : nullptr;
    rows.init = l == 0 ? a->table : a->bias[l];
    rows.is = H / 8 * 32;
    rows.c = a->cs + l * a->max_batch * H + r0 * H;
    rows.cs = H;
    rows.h = a->scratch + r0 * H;
    rows.hs = H;
    const long K = l == 0 ? H : 2 * H;
    if (a->format == 2) gate_layer_i8((const int8_t*)a->w[l], a->scale[l], K, (int)(H / 8), (int)n, rows);
    else if (a->format == 1) gate_layer<true>(a->w[l], K, (int)(H / 8), (int)n, rows);
    else gate_layer<false>(a->w[l], K, (int)(H / 8), (int)n, rows);
    for (long r = 0; r < n; r++) {
      memcpy(hs + r * row + l * H, rows.h + r * H, 4 * H);
      if (hq) quantize(rows.h + r * H, hq + r * row + l * H, H);
    }
  }
  head_layer(a->head_w, a->head_b, H, (int)a->vocab, (int)n, hs + (L - 1) * H, row, a->logits + r0 * a->vocab,
             a->vocab);
}

// Steps shared by the calling thread and a pool of helper threads. A job is rows r0..r0+n-1 cut
// into chunks of an even number of rows (the tiles take two rows at a time); whoever is free
// claims the next chunk of the oldest job, and a row is stepped whole by whoever claimed its
// chunk, so its bits do not depend on the thread count or on who took it. A job is launched,
// runs on the helpers while the caller does other work (the engine draws one half of its rows
// while the kernel steps the other), and is waited for: the caller steps every chunk nobody has
// claimed yet, then waits for the rest. A helper spins briefly for the next job (jobs come back
// to back while replies run), then sleeps on a condition variable.
enum { SLOTS = 4, MAX_PARTS = 64 };  // jobs in flight at most (the engine keeps two); most threads a job is shared by

// A job's claim word: which job holds the slot, how many helpers may take its chunks, how many
// chunks it has and how many are claimed, so that one compare-and-swap claims a chunk of the right job.
static inline uint64_t claim_word(uint64_t seq, uint64_t helpers, uint64_t chunks, uint64_t claimed) {
  return (seq << 32) | (helpers << 24) | (chunks << 12) | claimed;
}
static inline uint64_t word_seq(uint64_t w) { return w >> 32; }
static inline long word_helpers(uint64_t w) { return (long)((w >> 24) & 0xff); }
static inline long word_chunks(uint64_t w) { return (long)((w >> 12) & 0xfff); }
static inline long word_claimed(uint64_t w) { return (long)(w & 0xfff); }
enum { MAX_CHUNKS = 0xfff };

struct Job {
  std::atomic<uint64_t> claim{0};
  std::atomic<long> done{0};  // chunks finished
  const Args* args = nullptr;
  long r0 = 0, n = 0, chunk = 0;
};

struct Pool {
  std::vector<std::thread> threads;
  Job jobs[SLOTS];
  std::atomic<uint64_t> launched{0};  // jobs launched so far; job s (from 1) is in slot s % SLOTS
  bool stop = false;
  std::mutex m;
  std::condition_variable cv;
};

static const auto SPIN = std::chrono::microseconds(200);

static inline void pause_once() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Claim a chunk of job `seq` for helper `who` (-1: the caller, who may always); -1 when none is left.
static long claim_chunk(Job& j, uint64_t seq, long who) {
  uint64_t w = j.claim.load(std::memory_order_acquire);
  while (word_seq(w) == seq && who < word_helpers(w) && word_claimed(w) < word_chunks(w)) {
    if (j.claim.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel, std::memory_order_acquire))
      return word_claimed(w);
  }
  return -1;
}

// Wait until `chunks` chunks of the job in slot `j` are done (spinning, then yielding).
static void wait_done(Job& j, long chunks) {
  for (long spins = 0; j.done.load(std::memory_order_acquire) != chunks; spins++)
    if (spins > 4096) sched_yield(); else pause_once();
}

// Step one claimed chunk. The job's fields are stable until its last chunk is done.
static void run_chunk(Job& j, long c) {
  const long r = c * j.chunk;
  step_rows(j.args, j.r0 + r, j.n - r < j.chunk ? j.n - r : j.chunk);
  j.done.fetch_add(1, std::memory_order_release);
}

// One pass over the jobs in flight, oldest first; whether a chunk was found and stepped.
static bool help_once(Pool* pool, long who) {
  const uint64_t last = pool->launched.load(std::memory_order_acquire);
  for (uint64_t s = last > SLOTS ? last - SLOTS + 1 : 1; s <= last; s++) {
    Job& j = pool->jobs[s % SLOTS];
    const long c = claim_chunk(j, s, who);
    if (c >= 0) {
      run_chunk(j, c);
      return true;
    }
  }
  return false;
}

static void helper_loop(Pool* pool, long who) {
  for (;;) {
    if (help_once(pool, who)) continue;
    const uint64_t seen = pool->launched.load(std::memory_order_acquire);
    if (help_once(pool, who)) continue;  // a job launched between the pass and the reading
    const auto until = std::chrono::steady_clock::now() + SPIN;
    while (pool->launched.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until)
      pause_once();
    if (pool->launched.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(pool->m);
      pool->cv.wait(lock, [&] { return pool->stop || pool->launched.load(std::memory_order_acquire) != seen; });
      if (pool->stop) return;
    }
  }
}

// Launch rows r0..r0+n-1 (their codes checked) in chunks of `chunk` rows, `helpers` of the pool's
// threads may help; returns the job's number for charbot_job_wait.
static uint64_t launch(Pool* pool, const Args* a, long r0, long n, long chunk, long helpers) {
  if (chunk < 1) chunk = 1;
  if ((n + chunk - 1) / chunk > MAX_CHUNKS) chunk = (n + MAX_CHUNKS - 1) / MAX_CHUNKS;
  const long chunks = (n + chunk - 1) / chunk;
  if (helpers > (long)pool->threads.size()) helpers = (long)pool->threads.size();
  if (helpers > 0xff) helpers = 0xff;
  const uint64_t seq = pool->launched.load(std::memory_order_relaxed) + 1;
  Job& j = pool->jobs[seq % SLOTS];
  const uint64_t old = j.claim.load(std::memory_order_acquire);  // the slot's last job must be over
  if (word_seq(old)) wait_done(j, word_chunks(old));
  j.args = a;
  j.r0 = r0;
  j.n = n;
  j.chunk = chunk;
  j.done.store(0, std::memory_order_relaxed);
  j.claim.store(claim_word(seq, helpers, chunks, 0), std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(pool->m);  // so a helper about to sleep sees the job or the wake-up
    pool->launched.store(seq, std::memory_order_release);
  }
  if (helpers > 0) pool->cv.notify_all();
  return seq;
}

static void wait_job(Pool* pool, uint64_t seq) {
  Job& j = pool->jobs[seq % SLOTS];
  for (long c; (c = claim_chunk(j, seq, -1)) >= 0;) run_chunk(j, c);
  wait_done(j, word_chunks(j.claim.load(std::memory_order_acquire)));
}

static int64_t check_codes(const Args* a, long r0, long n) {
  for (long r = r0; r < r0 + n; r++)
    if (a->codes[r] < 0 || a->codes[r] >= a->in_vocab) return -(1 + r);
  return 0;
}

extern "C" {

// A pool of `helpers` threads (freed with charbot_pool_free).
void* charbot_pool_new(int64_t helpers) {
  Pool* pool = new Pool();
  for (int64_t i = 0; i < helpers && i < MAX_PARTS - 1; i++) pool->threads.emplace_back(helper_loop, pool, (long)i);
  return pool;
}

// Stop the helpers; every job launched must have been waited for.
void charbot_pool_free(void* p) {
  Pool* pool = (Pool*)p;
  if (!pool) return;
  {
    std::lock_guard<std::mutex> lock(pool->m);
    pool->stop = true;
  }
  pool->cv.notify_all();
  for (std::thread& t : pool->threads) t.join();
  delete pool;
}

// One step of rows 0..n-1, shared by the calling thread and up to `threads - 1` of the pool's
// helpers (none without a pool), in even shares, one each. Returns 0, or -(1 + row) for a row
// whose code is outside the vocabulary (then nothing has moved).
int64_t charbot_fused_step(const Args* a, int64_t n, void* p, int64_t threads) {
  if (int64_t bad = check_codes(a, 0, n)) return bad;
  Pool* pool = (Pool*)p;
  long parts = threads < 1 ? 1 : threads > MAX_PARTS ? MAX_PARTS : threads;
  if (!pool) parts = 1;
  else if (parts > (long)pool->threads.size() + 1) parts = (long)pool->threads.size() + 1;
  long share = (n + parts - 1) / parts;
  share += share & 1;
  if (parts == 1 || share >= n) {
    step_rows(a, 0, n);
    return 0;
  }
  wait_job(pool, launch(pool, a, 0, n, share, parts - 1));
  return 0;
}

// Start a step of rows r0..r0+n-1 in chunks of `chunk` rows, which up to `threads - 1` helpers may
// take while the caller goes on; returns the job's number (> 0) for charbot_job_wait, or
// -(1 + row) for a row whose code is outside the vocabulary (then nothing is launched).
int64_t charbot_job_launch(const Args* a, int64_t r0, int64_t n, int64_t chunk, void* p, int64_t threads) {
  if (int64_t bad = check_codes(a, r0, n)) return bad;
  return (int64_t)launch((Pool*)p, a, r0, n, chunk + (chunk & 1), threads - 1);
}

// Finish job `seq`: step its unclaimed chunks on the calling thread, then wait for the helpers'.
void charbot_job_wait(void* p, int64_t seq) { wait_job((Pool*)p, (uint64_t)seq); }

// Read n floats once, as fast as the core can (four independent sums): the weight-traffic floor.
double charbot_read_floats(const float* p, int64_t n) {
  v8f s0 = splat(0.0f), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 += loadf(p + i);
    s1 += loadf(p + i + 8);
    s2 += loadf(p + i + 16);
    s3 += loadf(p + i + 24);
  }
  v8f s = (s0 + s1) + (s2 + s3);
  double total = 0.0;
  for (int q = 0; q < 8; q++) total += s[q];
  for (; i < n; i++) total += p[i];
  return total;
}

}  // extern "C"
"""

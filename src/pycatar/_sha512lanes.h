/*
 * SHA-512/256 of several buffers at once with SIMD (FIPS 180-4): each 64-bit lane of a vector
 * register carries one buffer's computation, so 8 (AVX-512) or 4 (AVX2) message blocks go through the
 * 80 rounds together.  One SHA-512 stream is a chain of dependent additions (about 5.5 cycles a byte
 * through libcrypto on the machines we measure); independent ones fill the vector units instead.
 *
 * sha512_lanes_usable() is the widest the CPU allows: 8 (AVX-512 F and BW), 4 (AVX2) or 0 (checked
 * once, at run time: each kernel is compiled for its instructions whatever the build machine).
 * sha512_256_lanes(lanes, n, bufs, lens, out) writes the 32-byte digest of each buffer to
 * out + 32 * i.  Buffers are handed to free lanes longest first, so that lanes finish close together;
 * a lane whose buffer is done takes the next one.  Only whole blocks are read from a buffer: its last
 * partial block, the padding and the length are copied into a block of the lane's own.
 *
 * The constants: K are the first 64 bits of the fractional parts of the cube roots of the first 80
 * primes, the initial values SHA-512/256's (FIPS 180-4 5.3.6.2); tests/test_store.py checks the
 * digests against hashlib's for every padding case, with each kernel the CPU has.
 */
#if defined(__x86_64__) && defined(__GNUC__)
#define SHA_LANES 1
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const uint64_t K512[80] = {
    0x428a2f98d728ae22ULL, 0x7137449123ef65cdULL, 0xb5c0fbcfec4d3b2fULL, 0xe9b5dba58189dbbcULL,
    0x3956c25bf348b538ULL, 0x59f111f1b605d019ULL, 0x923f82a4af194f9bULL, 0xab1c5ed5da6d8118ULL,
    0xd807aa98a3030242ULL, 0x12835b0145706fbeULL, 0x243185be4ee4b28cULL, 0x550c7dc3d5ffb4e2ULL,
    0x72be5d74f27b896fULL, 0x80deb1fe3b1696b1ULL, 0x9bdc06a725c71235ULL, 0xc19bf174cf692694ULL,
    0xe49b69c19ef14ad2ULL, 0xefbe4786384f25e3ULL, 0x0fc19dc68b8cd5b5ULL, 0x240ca1cc77ac9c65ULL,
    0x2de92c6f592b0275ULL, 0x4a7484aa6ea6e483ULL, 0x5cb0a9dcbd41fbd4ULL, 0x76f988da831153b5ULL,
    0x983e5152ee66dfabULL, 0xa831c66d2db43210ULL, 0xb00327c898fb213fULL, 0xbf597fc7beef0ee4ULL,
    0xc6e00bf33da88fc2ULL, 0xd5a79147930aa725ULL, 0x06ca6351e003826fULL, 0x142929670a0e6e70ULL,
    0x27b70a8546d22ffcULL, 0x2e1b21385c26c926ULL, 0x4d2c6dfc5ac42aedULL, 0x53380d139d95b3dfULL,
    0x650a73548baf63deULL, 0x766a0abb3c77b2a8ULL, 0x81c2c92e47edaee6ULL, 0x92722c851482353bULL,
    0xa2bfe8a14cf10364ULL, 0xa81a664bbc423001ULL, 0xc24b8b70d0f89791ULL, 0xc76c51a30654be30ULL,
    0xd192e819d6ef5218ULL, 0xd69906245565a910ULL, 0xf40e35855771202aULL, 0x106aa07032bbd1b8ULL,
    0x19a4c116b8d2d0c8ULL, 0x1e376c085141ab53ULL, 0x2748774cdf8eeb99ULL, 0x34b0bcb5e19b48a8ULL,
    0x391c0cb3c5c95a63ULL, 0x4ed8aa4ae3418acbULL, 0x5b9cca4f7763e373ULL, 0x682e6ff3d6b2b8a3ULL,
    0x748f82ee5defb2fcULL, 0x78a5636f43172f60ULL, 0x84c87814a1f0ab72ULL, 0x8cc702081a6439ecULL,
    0x90befffa23631e28ULL, 0xa4506cebde82bde9ULL, 0xbef9a3f7b2c67915ULL, 0xc67178f2e372532bULL,
    0xca273eceea26619cULL, 0xd186b8c721c0c207ULL, 0xeada7dd6cde0eb1eULL, 0xf57d4f7fee6ed178ULL,
    0x06f067aa72176fbaULL, 0x0a637dc5a2c898a6ULL, 0x113f9804bef90daeULL, 0x1b710b35131c471bULL,
    0x28db77f523047d84ULL, 0x32caab7b40c72493ULL, 0x3c9ebe0a15c9bebcULL, 0x431d67c49c100d4cULL,
    0x4cc5d4becb3e42b6ULL, 0x597f299cfc657e2aULL, 0x5fcb6fab3ad6faecULL, 0x6c44198c4a475817ULL,
};
static const uint64_t IV512_256[8] = {
    0x22312194fc2bf72cULL, 0x9f555fa3c84c64c2ULL, 0x2393b86b6f53b151ULL, 0x963877195940eabdULL,
    0x96283ee2a88effe3ULL, 0xbe5e1e2553863992ULL, 0x2b0199fc2c85b8aaULL, 0x0eb72ddc81c52ca2ULL,
};

#define MAX_LANES 8

static int sha512_lanes_usable(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") ? 8
                : __builtin_cpu_supports("avx2")                                         ? 4
                                                                                          : 0;
    }
    return known;
}

/* The 80 rounds of one block per lane, with the vector operations named by the kernel: ROR, XOR3,
 * CH (e ? f : g), MAJ (majority), ADD, SHR, SET1; ``w``: the message schedule, a ring of 16. */
#define BIG_S0(a) XOR3(ROR(a, 28), ROR(a, 34), ROR(a, 39))
#define BIG_S1(e) XOR3(ROR(e, 14), ROR(e, 18), ROR(e, 41))
#define SMALL_S0(x) XOR3(ROR(x, 1), ROR(x, 8), SHR(x, 7))
#define SMALL_S1(x) XOR3(ROR(x, 19), ROR(x, 61), SHR(x, 6))
#define ROUND(a, b, c, d, e, f, g, h, t)                                                                 \
    do {                                                                                                 \
        if ((t) >= 16)                                                                                   \
            w[(t) & 15] = ADD(ADD(SMALL_S1(w[((t) - 2) & 15]), w[((t) - 7) & 15]),                      \
                              ADD(SMALL_S0(w[((t) - 15) & 15]), w[(t) & 15]));                           \
        VEC t1 = ADD(ADD(ADD(h, BIG_S1(e)), CH(e, f, g)), ADD(w[(t) & 15], SET1(K512[(t)])));            \
        VEC t2 = ADD(BIG_S0(a), MAJ(a, b, c));                                                           \
        d = ADD(d, t1);                                                                                  \
        h = ADD(t1, t2);                                                                                 \
    } while (0)
#define ROUNDS8(t)                                                                                       \
    do {                                                                                                 \
        ROUND(a, b, c, d, e, f, g, h, (t));                                                              \
        ROUND(h, a, b, c, d, e, f, g, (t) + 1);                                                          \
        ROUND(g, h, a, b, c, d, e, f, (t) + 2);                                                          \
        ROUND(f, g, h, a, b, c, d, e, (t) + 3);                                                          \
        ROUND(e, f, g, h, a, b, c, d, (t) + 4);                                                          \
        ROUND(d, e, f, g, h, a, b, c, (t) + 5);                                                          \
        ROUND(c, d, e, f, g, h, a, b, (t) + 6);                                                          \
        ROUND(b, c, d, e, f, g, h, a, (t) + 7);                                                          \
    } while (0)
/* a kernel's body: ``nblocks`` blocks of each lane, lane i's k-th at addr[i] + k * step[i]; the state
 * st[word][lane] in memory between calls.  LOAD(p), STORE(p, v), GATHER(addr, offset) (the 64-bit
 * words at addr[i] + offset, made big-endian) are the kernel's. */
#define KERNEL_BODY                                                                                      \
    VEC s[8], av = LOAD(addr), sv = LOAD(step);                                                          \
    for (int v = 0; v < 8; v++)                                                                          \
        s[v] = LOAD(st[v]);                                                                              \
    for (size_t k = 0; k < nblocks; k++) {                                                               \
        VEC w[16];                                                                                       \
        for (int t = 0; t < 16; t++)                                                                     \
            w[t] = GATHER(av, 8 * t);                                                                    \
        VEC a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];              \
        ROUNDS8(0);                                                                                      \
        ROUNDS8(8);                                                                                      \
        ROUNDS8(16);                                                                                     \
        ROUNDS8(24);                                                                                     \
        ROUNDS8(32);                                                                                     \
        ROUNDS8(40);                                                                                     \
        ROUNDS8(48);                                                                                     \
        ROUNDS8(56);                                                                                     \
        ROUNDS8(64);                                                                                     \
        ROUNDS8(72);                                                                                     \
        s[0] = ADD(s[0], a);                                                                             \
        s[1] = ADD(s[1], b);                                                                             \
        s[2] = ADD(s[2], c);                                                                             \
        s[3] = ADD(s[3], d);                                                                             \
        s[4] = ADD(s[4], e);                                                                             \
        s[5] = ADD(s[5], f);                                                                             \
        s[6] = ADD(s[6], g);                                                                             \
        s[7] = ADD(s[7], h);                                                                             \
        av = ADD(av, sv);                                                                                \
    }                                                                                                    \
    for (int v = 0; v < 8; v++)                                                                          \
        STORE(st[v], s[v]);

typedef void (*sha512_kernel_t)(uint64_t st[8][MAX_LANES], const uint64_t *addr, const uint64_t *step,
                                size_t nblocks);

/* AVX-512: eight lanes (ternary logic for CH, MAJ and XOR3; 64-bit rotates) */
#define VEC __m512i
#define LOAD(p) _mm512_loadu_si512((const void *)(p))
#define STORE(p, v) _mm512_storeu_si512((void *)(p), (v))
#define ADD(x, y) _mm512_add_epi64((x), (y))
#define SET1(k) _mm512_set1_epi64((long long)(k))
#define ROR(x, n) _mm512_ror_epi64((x), (n))
#define SHR(x, n) _mm512_srli_epi64((x), (n))
#define XOR3(x, y, z) _mm512_ternarylogic_epi64((x), (y), (z), 0x96)
#define CH(e, f, g) _mm512_ternarylogic_epi64((e), (f), (g), 0xCA)
#define MAJ(a, b, c) _mm512_ternarylogic_epi64((a), (b), (c), 0xE8)
#define GATHER(av, off) _mm512_shuffle_epi8(_mm512_i64gather_epi64((av), (const void *)(uintptr_t)(off), 1), swap)
__attribute__((target("avx512f,avx512bw"))) static void kernel_avx512(uint64_t st[8][MAX_LANES],
                                                                      const uint64_t *addr, const uint64_t *step,
                                                                      size_t nblocks) {
    /* big-endian words: reverse the bytes of each 64-bit element */
    const __m512i swap = _mm512_set_epi64(0x08090a0b0c0d0e0fLL, 0x0001020304050607LL, 0x08090a0b0c0d0e0fLL,
                                          0x0001020304050607LL, 0x08090a0b0c0d0e0fLL, 0x0001020304050607LL,
                                          0x08090a0b0c0d0e0fLL, 0x0001020304050607LL);
    KERNEL_BODY
}
#undef VEC
#undef LOAD
#undef STORE
#undef ADD
#undef SET1
#undef ROR
#undef SHR
#undef XOR3
#undef CH
#undef MAJ
#undef GATHER

/* AVX2: four lanes (rotates as two shifts; no ternary logic) */
#define VEC __m256i
#define LOAD(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define STORE(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), (v))
#define ADD(x, y) _mm256_add_epi64((x), (y))
#define SET1(k) _mm256_set1_epi64x((long long)(k))
#define ROR(x, n) _mm256_or_si256(_mm256_srli_epi64((x), (n)), _mm256_slli_epi64((x), 64 - (n)))
#define SHR(x, n) _mm256_srli_epi64((x), (n))
#define XOR3(x, y, z) _mm256_xor_si256(_mm256_xor_si256((x), (y)), (z))
#define CH(e, f, g) _mm256_xor_si256(_mm256_and_si256((e), (f)), _mm256_andnot_si256((e), (g)))
#define MAJ(a, b, c) _mm256_or_si256(_mm256_and_si256((a), (b)), _mm256_and_si256((c), _mm256_or_si256((a), (b))))
#define GATHER(av, off) _mm256_shuffle_epi8(_mm256_i64gather_epi64((const long long *)(uintptr_t)(off), (av), 1), swap)
__attribute__((target("avx2"))) static void kernel_avx2(uint64_t st[8][MAX_LANES], const uint64_t *addr,
                                                         const uint64_t *step, size_t nblocks) {
    const __m256i swap = _mm256_set_epi64x(0x08090a0b0c0d0e0fLL, 0x0001020304050607LL, 0x08090a0b0c0d0e0fLL,
                                           0x0001020304050607LL);
    KERNEL_BODY
}
#undef VEC
#undef LOAD
#undef STORE
#undef ADD
#undef SET1
#undef ROR
#undef SHR
#undef XOR3
#undef CH
#undef MAJ
#undef GATHER

typedef struct {
    Py_ssize_t job;          /* buffer index, -1: the lane is free */
    const unsigned char *at; /* its next block */
    size_t left;             /* blocks left in this phase: the buffer's whole blocks, then the tail */
    int in_tail;
    unsigned char tail[256]; /* the last partial block, 0x80, zeros and the bit length */
    size_t tail_blocks;
} lane_t;

static const unsigned char idle_block[128]; /* what a free lane reads */

typedef struct {
    size_t len;
    Py_ssize_t index;
} job_t;

static int longer_first(const void *x, const void *y) { /* then in the order given */
    const job_t *a = x, *b = y;
    return a->len != b->len ? (a->len < b->len ? 1 : -1) : (a->index > b->index) - (a->index < b->index);
}

/* Returns -1 if out of memory or ``lanes`` is not a kernel's (nothing written), else 0. */
static int sha512_256_lanes(int lanes, Py_ssize_t n, const unsigned char *const *bufs, const size_t *lens,
                            unsigned char *out) {
    sha512_kernel_t kernel = lanes == 8 ? kernel_avx512 : lanes == 4 ? kernel_avx2 : NULL;
    job_t *order = kernel ? malloc(sizeof(job_t) * (size_t)(n ? n : 1)) : NULL;
    if (!order)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++)
        order[i] = (job_t){lens[i], i};
    qsort(order, (size_t)n, sizeof *order, longer_first);
    lane_t lane[MAX_LANES];
    uint64_t st[8][MAX_LANES];
    memset(st, 0, sizeof st);
    for (int i = 0; i < lanes; i++)
        lane[i].job = -1;
    Py_ssize_t next = 0;
    for (;;) {
        int active = 0;
        for (int i = 0; i < lanes; i++) {
            lane_t *l = &lane[i];
            if (l->job < 0 && next < n) { /* a free lane takes the next buffer: fresh state */
                Py_ssize_t j = order[next++].index;
                size_t len = lens[j], whole = len / 128, rest = len % 128;
                l->job = j;
                l->at = bufs[j];
                l->left = whole;
                l->in_tail = 0;
                l->tail_blocks = rest + 17 <= 128 ? 1 : 2;
                memset(l->tail, 0, sizeof l->tail);
                memcpy(l->tail, bufs[j] + whole * 128, rest);
                l->tail[rest] = 0x80;
                unsigned char *end = l->tail + 128 * l->tail_blocks;
                uint64_t bits_hi = (uint64_t)len >> 61, bits_lo = (uint64_t)len << 3;
                for (int k = 0; k < 8; k++) {
                    end[-16 + k] = (unsigned char)(bits_hi >> (56 - 8 * k));
                    end[-8 + k] = (unsigned char)(bits_lo >> (56 - 8 * k));
                }
                for (int v = 0; v < 8; v++)
                    st[v][i] = IV512_256[v];
            }
            if (l->job >= 0 && l->left == 0 && !l->in_tail) { /* no whole block (left): on to the tail */
                l->in_tail = 1;
                l->at = l->tail;
                l->left = l->tail_blocks;
            }
            active += l->job >= 0;
        }
        if (!active)
            break;
        size_t steps = SIZE_MAX;
        uint64_t addr[MAX_LANES], step[MAX_LANES];
        for (int i = 0; i < lanes; i++) {
            if (lane[i].job >= 0 && lane[i].left < steps)
                steps = lane[i].left;
            addr[i] = (uint64_t)(uintptr_t)(lane[i].job >= 0 ? lane[i].at : idle_block);
            step[i] = lane[i].job >= 0 ? 128 : 0;
        }
        kernel(st, addr, step, steps);
        for (int i = 0; i < lanes; i++) {
            lane_t *l = &lane[i];
            if (l->job < 0)
                continue;
            l->at += 128 * steps;
            l->left -= steps;
            if (l->left)
                continue;
            if (!l->in_tail) {
                l->in_tail = 1;
                l->at = l->tail;
                l->left = l->tail_blocks;
                continue;
            }
            unsigned char *o = out + 32 * l->job; /* the digest: the first four state words, big-endian */
            for (int v = 0; v < 4; v++)
                for (int k = 0; k < 8; k++)
                    o[8 * v + k] = (unsigned char)(st[v][i] >> (56 - 8 * k));
            l->job = -1;
        }
    }
    free(order);
    return 0;
}
#endif

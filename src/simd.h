/* Portable SIMD for the CPU kernels: one build, no -march=native.
 *
 * XK_CLONES: GCC function multiversioning.  Each hot function is compiled for
 * x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the baseline, and the loader
 * picks the widest the running CPU supports (an ifunc: needs ELF and glibc).
 * Elsewhere the functions are compiled once for the compiler's target.
 *
 * XK_VEC(T): a vector of XK_VEC_BYTES / sizeof(T) lanes of T written with GNU
 * vector extensions, which GCC and Clang lower to whatever registers the clone
 * has (two 256-bit halves on AVX2, four 128-bit quarters on SSE2).  Other
 * compilers get one-lane "vectors", i.e. scalar code with the same structure.
 * Loads and stores are unaligned and may alias their element type.
 */
#ifndef XKERN_SIMD_H
#define XKERN_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) \
    && defined(__GLIBC__) && !defined(XKERN_NO_CLONES)
#  define XK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#  define XK_HAVE_CLONES 1
#else
#  define XK_CLONES
#  define XK_HAVE_CLONES 0
#endif

/* The instruction set the kernels run with on this CPU: the clone the loader picks, or
 * what the one build was compiled for. */
static inline const char *xk_isa(void)
{
#if XK_HAVE_CLONES
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return "AVX-512 (x86-64-v4)";
    if (__builtin_cpu_supports("x86-64-v3")) return "AVX2 + FMA (x86-64-v3)";
    return "generic x86-64 (SSE2)";
#elif defined(__AVX512F__)
    return "AVX-512 (compiled for)";
#elif defined(__AVX2__)
    return "AVX2 (compiled for)";
#elif defined(__ARM_NEON) || defined(__aarch64__)
    return "NEON (compiled for)";
#elif defined(__SSE2__)
    return "generic x86-64 (SSE2)";
#else
    return "generic (scalar)";
#endif
}

#if defined(__GNUC__)
#  define XK_GNU_VECTORS 1
#  ifndef XK_VEC_BYTES
#    define XK_VEC_BYTES 32
#  endif
#  define XK_INLINE static inline __attribute__((always_inline))
#  define XK_RESTRICT __restrict__
#  define XK_PRAGMA(x) _Pragma(#x)
#  define XK_UNROLL XK_PRAGMA(GCC unroll 16)
/* A kernel one front end (the Cython module or the engine) does not call. */
#  define XK_UNUSED __attribute__((unused))
#else
#  define XK_GNU_VECTORS 0
#  define XK_INLINE static __inline
#  define XK_RESTRICT __restrict
#  define XK_UNROLL
#  define XK_UNUSED
#endif

#if XK_GNU_VECTORS
typedef float xk_vec_f32 __attribute__((vector_size(XK_VEC_BYTES), aligned(4), may_alias));
typedef double xk_vec_f64 __attribute__((vector_size(XK_VEC_BYTES), aligned(8), may_alias));
/* Same-width integer lanes, to mask floats bit by bit. */
typedef int32_t xk_ivec_f32 __attribute__((vector_size(XK_VEC_BYTES), aligned(4), may_alias));
typedef int64_t xk_ivec_f64 __attribute__((vector_size(XK_VEC_BYTES), aligned(8), may_alias));
#  define XK_LANES_F32 (XK_VEC_BYTES / 4)
#  define XK_LANES_F64 (XK_VEC_BYTES / 8)
#else
typedef float xk_vec_f32;
typedef double xk_vec_f64;
typedef float xk_ivec_f32;
typedef double xk_ivec_f64;
#  define XK_LANES_F32 1
#  define XK_LANES_F64 1
#endif

/* XK_SHUFFLE: __builtin_shufflevector (GCC >= 12, Clang) rearranges the lanes of GNU
 * vectors; without it the kernels take element-wise code for the same result. */
#if XK_GNU_VECTORS && (defined(__clang__) || __GNUC__ >= 12)
#  define XK_SHUFFLE 1
#else
#  define XK_SHUFFLE 0
#endif

/* Vector-typed access to n consecutive elements at p (any alignment). */
#define XK_VLOAD(V, p) (*(const V *)(p))
#define XK_VSTORE(V, p, v) (*(V *)(p) = (v))
/* Every lane equal to the scalar a (GNU vectors broadcast scalar operands).  a - 0,
 * not 0 + a: a - (+0) is a for every a, so GCC emits one broadcast, where 0 + a
 * (-0 becomes +0) cost a vxorps and a vaddss before each broadcast. */
#define XK_VSPLAT(V, a) ((a) - (V){0})
/* a where the mask m has all bits set, +0 where m is all zero bits.  Unlike a
 * product with a 0/1 mask, this turns Inf and NaN in a into 0.  (All-ones is a
 * NaN, so the one-lane fallback tests m != m.) */
#if XK_GNU_VECTORS
#  define XK_VAND(IV, V, a, m) ((V)((IV)(a) & (IV)(m)))
#else
#  define XK_VAND(IV, V, a, m) ((m) != (m) ? (a) : (V)0)
#endif

#endif /* XKERN_SIMD_H */

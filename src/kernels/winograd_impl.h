/* Winograd F(2x2, 3x3) and F(4x4, 3x3) for one element type (included by cpu_kernels.h
 * after cpu_kernels_impl.h, once per type; no include guard on purpose).
 *
 * A stride-1 3x3 X-Conv computes its outputs in m x m tiles, each from a P x P patch of
 * its source (P = m + 2).  With the standard F(2, 3) matrices
 *
 *     Bt = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
 *     G  = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
 *     At = [[1, 1, 1, 0], [0, 1, -1, -1]]
 *
 * or those of F(4, 3) (points 0, 1, -1, 2, -2 and infinity: xk_wino_bt6, xk_wino_weight4,
 * xk_wino_at6), a tile is Y = At M At^T with M = sum over the terms of (G w G^T) *
 * (Bt d Bt^T), and each of M's P^2 entries k is a 1x1 X-Conv over the tiles: per output
 * and term, 4 products (m = 2) or 2.25 (m = 4) where the direct conv has 9.  xk_wino_tile
 * does it for one panel of XK_SACC * XK_VL tiles (positions q = (image * th + ty) * tw +
 * tx): it transforms every source channel's patches into P^2 panels (one per k,
 * xk_quad_panel's layout), runs the quads of destinations once per k on them, and
 * transforms the destinations' M back into their m x m tiles.  Everything a panel needs
 * stays in this thread's cache; nothing of size P^2 x the map is ever stored.  grad_input
 * is the same with the kernel rotated by 180 degrees and padding 2 - pad
 * (xk_wino_weights' flip).  grad_weight sums, per edge, the products of the patches'
 * transforms and grad_out's tiles transformed back through At (xk_wino_wgrad_tile, below).
 *
 * Sums of products come in a different order than in the direct conv (and through the
 * transforms), so results differ from the direct kernels in the last bits; they are the
 * same at every thread count.  F(4x4, 3x3)'s transforms scale values by up to 5 (Bt) and
 * 8 (At): its float32 results carry about 10x F(2x2, 3x3)'s rounding error (measured:
 * ~4e-6 of the largest output, ~3e-6 of the largest grad_weight entry, against 3e-7).
 * An Inf or NaN in a patch reaches all outputs of its tile, and all nine taps of
 * grad_weight of the edges that read it (as in any Winograd conv). */

/* The largest patch: F(4x4, 3x3)'s 6 x 6. */
#define XK_WINO_PMAX 6

#ifndef XK_WINO_G6_DEFINED
#define XK_WINO_G6_DEFINED
/* F(4x4, 3x3)'s G (points 0, 1, -1, 2, -2, infinity) on the three values (a, b, e) of four
 * terms, lane by lane: r = G (a, b, e)^T, in double. */
static inline void xk_wino_g6x4(double r[6][4], const double a[4], const double b[4], const double e[4])
{
    for (int l = 0; l < 4; l++) {
        r[0][l] = a[l] * 0.25;
        r[1][l] = (a[l] + b[l] + e[l]) * (-1.0 / 6);
        r[2][l] = (a[l] - b[l] + e[l]) * (-1.0 / 6);
        r[3][l] = (a[l] * 0.25 + b[l] * 0.5 + e[l]) * (1.0 / 6);
        r[4][l] = (a[l] * 0.25 - b[l] * 0.5 + e[l]) * (1.0 / 6);
        r[5][l] = e[l];
    }
}
#endif

/* The transformed weights of four terms for tiles of m x m outputs (m = 2 or 4), term l's
 * 3x3 taps (row-major) at w4[l]: u[k * ustride + l] = (G w G^T)[k] for k < (m + 2)^2 and
 * l < 4, rotated by 180 degrees when flip.  Four terms at a time, as lanes of the loops over
 * l (which the compiler vectorises).  F(4x4, 3x3)'s G has fractions: its products are formed
 * in double and rounded once. */
XK_INLINE void XK_FN(xk_wino_weight4)(XK_T *u, int64_t ustride, const XK_T *const w4[4], int flip, int m)
{
    if (m == 4) {
        double g[9][4], t[6][3][4], r[6][4];
        for (int i = 0; i < 9; i++)
            for (int l = 0; l < 4; l++) g[i][l] = (double)w4[l][flip ? 8 - i : i];
        for (int c = 0; c < 3; c++) {  /* G w, column c */
            xk_wino_g6x4(r, g[c], g[3 + c], g[6 + c]);
            for (int i = 0; i < 6; i++)
                for (int l = 0; l < 4; l++) t[i][c][l] = r[i][l];
        }
        for (int i = 0; i < 6; i++) {  /* (G w) G^T, row i */
            xk_wino_g6x4(r, t[i][0], t[i][1], t[i][2]);
            for (int c = 0; c < 6; c++)
                for (int l = 0; l < 4; l++) u[(6 * i + c) * ustride + l] = (XK_T)r[c][l];
        }
        return;
    }
    XK_T g[9][4], t[4][3][4];
    for (int i = 0; i < 9; i++)
        for (int l = 0; l < 4; l++) g[i][l] = w4[l][flip ? 8 - i : i];
    for (int c = 0; c < 3; c++)  /* G w */
        for (int l = 0; l < 4; l++) {
            t[0][c][l] = g[c][l];
            t[1][c][l] = (g[c][l] + g[3 + c][l] + g[6 + c][l]) * (XK_T)0.5;
            t[2][c][l] = (g[c][l] - g[3 + c][l] + g[6 + c][l]) * (XK_T)0.5;
            t[3][c][l] = g[6 + c][l];
        }
    for (int r = 0; r < 4; r++)  /* (G w) G^T */
        for (int l = 0; l < 4; l++) {
            u[(4 * r + 0) * ustride + l] = t[r][0][l];
            u[(4 * r + 1) * ustride + l] = (t[r][0][l] + t[r][1][l] + t[r][2][l]) * (XK_T)0.5;
            u[(4 * r + 2) * ustride + l] = (t[r][0][l] - t[r][1][l] + t[r][2][l]) * (XK_T)0.5;
            u[(4 * r + 3) * ustride + l] = t[r][2][l];
        }
}

/* uw[k * n + j] for k < (m + 2)^2 and the term slots j_lo <= j < j_hi (of n) of a quads'
 * weight list: the transformed weight of edge edges[j] of w (n_edges terms of 3x3 taps), 0
 * where edges[j] >= n_edges (padding terms).  Formed 64 slots at a time in a local block,
 * four terms per step in vector lanes (a padding term reads zero taps), and copied out row
 * by row: uw's rows are n apart, often a multiple of 4 KiB, and 36 stores per slot into as
 * many rows would fight over one L1 set. */
XK_CLONES static void XK_FN(xk_wino_weights)(XK_T *uw, const XK_T *w, const int64_t *edges, int64_t n,
                                             int64_t n_edges, int flip, int m, int64_t j_lo, int64_t j_hi)
{
    enum { B = 64 };
    const int nk = (m + 2) * (m + 2);
    static const XK_T zero[9] = {0};
    XK_T blk[XK_WINO_PMAX * XK_WINO_PMAX][B] __attribute__((aligned(64)));
    for (int64_t j0 = j_lo; j0 < j_hi; j0 += B) {
        const int64_t nb = j_hi - j0 < B ? j_hi - j0 : B;
        for (int64_t jj = 0; jj < nb; jj += 4) {  /* jj + 4 <= B: a last group past nb fills blk only */
            const XK_T *w4[4];
            for (int l = 0; l < 4; l++) {
                const int64_t e = jj + l < nb ? edges[j0 + jj + l] : n_edges;
                w4[l] = e < n_edges ? w + e * 9 : zero;
            }
            XK_FN(xk_wino_weight4)(&blk[0][jj], B, w4, flip, m);
        }
        for (int k = 0; k < nk; k++) memcpy(uw + k * n + j0, blk[k], nb * sizeof(XK_T));
    }
}

/* The (m + 2)^2 patch entries d[(m + 2) a + b] (a vector of XK_VL tiles each) of the tiles
 * whose patch rows a start at rp[i][a] (m + 2 consecutive elements each): d = rp[i][a][b]
 * in lane i. */
XK_INLINE void XK_FN(xk_wino_gather)(XK_V *d, const XK_T *const rp[][XK_WINO_PMAX], const int m)
{
    const int P = m + 2;
#if XK_SHUFFLE && XK_VL == 8
    /* per patch row, four 8-lane vectors of two tiles' rows each, transposed 4x4 within
     * each 128-bit half: column b of tiles 0-3 | 4-7; with 6 columns, columns 4 and 5
     * the same way from the rows' columns 2-5 */
    typedef XK_FN(xk_quarter) Q;
    XK_UNROLL for (int a = 0; a < P; a++) {
        XK_V r[4], t[4];
        XK_UNROLL for (int i = 0; i < 4; i++) {
            const Q lo = *(const Q *)rp[i][a], hi = *(const Q *)rp[i + 4][a];
            r[i] = __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7);
        }
        t[0] = __builtin_shufflevector(r[0], r[1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[1] = __builtin_shufflevector(r[0], r[1], 2, 10, 3, 11, 6, 14, 7, 15);
        t[2] = __builtin_shufflevector(r[2], r[3], 0, 8, 1, 9, 4, 12, 5, 13);
        t[3] = __builtin_shufflevector(r[2], r[3], 2, 10, 3, 11, 6, 14, 7, 15);
        d[P * a + 0] = __builtin_shufflevector(t[0], t[2], 0, 1, 8, 9, 4, 5, 12, 13);
        d[P * a + 1] = __builtin_shufflevector(t[0], t[2], 2, 3, 10, 11, 6, 7, 14, 15);
        d[P * a + 2] = __builtin_shufflevector(t[1], t[3], 0, 1, 8, 9, 4, 5, 12, 13);
        d[P * a + 3] = __builtin_shufflevector(t[1], t[3], 2, 3, 10, 11, 6, 7, 14, 15);
        if (P == 6) {
            XK_UNROLL for (int i = 0; i < 4; i++) {
                const Q lo = *(const Q *)(rp[i][a] + 2), hi = *(const Q *)(rp[i + 4][a] + 2);
                r[i] = __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7);
            }
            t[1] = __builtin_shufflevector(r[0], r[1], 2, 10, 3, 11, 6, 14, 7, 15);
            t[3] = __builtin_shufflevector(r[2], r[3], 2, 10, 3, 11, 6, 14, 7, 15);
            d[P * a + 4] = __builtin_shufflevector(t[1], t[3], 0, 1, 8, 9, 4, 5, 12, 13);
            d[P * a + 5] = __builtin_shufflevector(t[1], t[3], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    }
#else
    XK_T e[XK_WINO_PMAX * XK_WINO_PMAX][XK_VL];
    for (int i = 0; i < XK_VL; i++)
        XK_UNROLL for (int a = 0; a < P; a++)
            XK_UNROLL for (int b = 0; b < P; b++) e[P * a + b][i] = rp[i][a][b];
    XK_UNROLL for (int k = 0; k < P * P; k++) d[k] = XK_VLOAD(XK_V, e[k]);
#endif
}

/* F(4x4, 3x3)'s Bt (points 0, 1, -1, 2, -2, infinity) on the six vectors d[0], d[ds], ...,
 * d[5 ds]: o[j * os] = (Bt d)[j]. */
XK_INLINE void XK_FN(xk_wino_bt6)(XK_V *o, const int os, const XK_V *d, const int ds)
{
    const XK_V d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds], d5 = d[5 * ds];
    const XK_V p = d4 - d2, q = d3 - d1;
    o[0] = (XK_T)4 * d0 - (XK_T)5 * d2 + d4;
    o[os] = (d3 + d4) - (XK_T)4 * (d1 + d2);
    o[2 * os] = (d4 - d3) + (XK_T)4 * (d1 - d2);
    o[3 * os] = p + (XK_T)2 * q;
    o[4 * os] = p - (XK_T)2 * q;
    o[5 * os] = (XK_T)4 * d1 - (XK_T)5 * d3 + d5;
}

/* F(4x4, 3x3)'s At on the six vectors s[0], s[ss], ..., s[5 ss]: o[j * os] = (At s)[j], j < 4. */
XK_INLINE void XK_FN(xk_wino_at6)(XK_V *o, const int os, const XK_V *s, const int ss)
{
    const XK_V s0 = s[0], s1 = s[ss], s2 = s[2 * ss], s3 = s[3 * ss], s4 = s[4 * ss], s5 = s[5 * ss];
    const XK_V a = s1 + s2, b = s1 - s2, c = s3 + s4, e = s3 - s4;
    o[0] = s0 + a + c;
    o[os] = b + (XK_T)2 * e;
    o[2 * os] = a + (XK_T)4 * c;
    o[3 * os] = b + (XK_T)8 * e + s5;
}

/* p[2i] = y0 lane i, p[2i + 1] = y1 lane i (2 * XK_VL elements). */
XK_INLINE void XK_FN(xk_wino_pairs)(XK_T *p, XK_V y0, XK_V y1)
{
#if XK_SHUFFLE && XK_VL == 8
    XK_VSTORE(XK_V, p, __builtin_shufflevector(y0, y1, 0, 8, 1, 9, 2, 10, 3, 11));
    XK_VSTORE(XK_V, p + XK_VL, __builtin_shufflevector(y0, y1, 4, 12, 5, 13, 6, 14, 7, 15));
#elif XK_SHUFFLE && XK_VL == 4
    XK_VSTORE(XK_V, p, __builtin_shufflevector(y0, y1, 0, 4, 1, 5));
    XK_VSTORE(XK_V, p + XK_VL, __builtin_shufflevector(y0, y1, 2, 6, 3, 7));
#else
    XK_T a[XK_VL], b[XK_VL];
    XK_VSTORE(XK_V, a, y0);
    XK_VSTORE(XK_V, b, y1);
    for (int i = 0; i < XK_VL; i++) p[2 * i] = a[i], p[2 * i + 1] = b[i];
#endif
}

/* p[4i + b] = y[b] lane i for b < 4 (4 * XK_VL elements): XK_VL rows of 4 outputs. */
XK_INLINE void XK_FN(xk_wino_rows4)(XK_T *p, const XK_V y[4])
{
#if XK_SHUFFLE && XK_VL == 8
    const XK_V t0 = __builtin_shufflevector(y[0], y[1], 0, 8, 1, 9, 4, 12, 5, 13);
    const XK_V t1 = __builtin_shufflevector(y[0], y[1], 2, 10, 3, 11, 6, 14, 7, 15);
    const XK_V t2 = __builtin_shufflevector(y[2], y[3], 0, 8, 1, 9, 4, 12, 5, 13);
    const XK_V t3 = __builtin_shufflevector(y[2], y[3], 2, 10, 3, 11, 6, 14, 7, 15);
    const XK_V z0 = __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);  /* lanes 0 | 4 */
    const XK_V z1 = __builtin_shufflevector(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);  /* 1 | 5 */
    const XK_V z2 = __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);  /* 2 | 6 */
    const XK_V z3 = __builtin_shufflevector(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);  /* 3 | 7 */
    XK_VSTORE(XK_V, p, __builtin_shufflevector(z0, z1, 0, 1, 2, 3, 8, 9, 10, 11));
    XK_VSTORE(XK_V, p + 8, __builtin_shufflevector(z2, z3, 0, 1, 2, 3, 8, 9, 10, 11));
    XK_VSTORE(XK_V, p + 16, __builtin_shufflevector(z0, z1, 4, 5, 6, 7, 12, 13, 14, 15));
    XK_VSTORE(XK_V, p + 24, __builtin_shufflevector(z2, z3, 4, 5, 6, 7, 12, 13, 14, 15));
#elif XK_SHUFFLE && XK_VL == 4
    const XK_V a = __builtin_shufflevector(y[0], y[1], 0, 4, 2, 6), b = __builtin_shufflevector(y[0], y[1], 1, 5, 3, 7);
    const XK_V c = __builtin_shufflevector(y[2], y[3], 0, 4, 2, 6), d = __builtin_shufflevector(y[2], y[3], 1, 5, 3, 7);
    XK_VSTORE(XK_V, p, __builtin_shufflevector(a, c, 0, 1, 4, 5));
    XK_VSTORE(XK_V, p + 4, __builtin_shufflevector(b, d, 0, 1, 4, 5));
    XK_VSTORE(XK_V, p + 8, __builtin_shufflevector(a, c, 2, 3, 6, 7));
    XK_VSTORE(XK_V, p + 12, __builtin_shufflevector(b, d, 2, 3, 6, 7));
#else
    XK_T e[4][XK_VL];
    XK_UNROLL for (int b = 0; b < 4; b++) XK_VSTORE(XK_V, e[b], y[b]);
    for (int i = 0; i < XK_VL; i++)
        XK_UNROLL for (int b = 0; b < 4; b++) p[4 * i + b] = e[b][i];
#endif
}

/* The entries of a tile that fill whole vectors (XK_WINO_NA) and those past them (XK_WINO_NR):
 * 16 = 16 + 0; with XK_VL = 8, 36 = 32 + 4. */
#define XK_WINO_NA(nk) ((nk) / XK_VL * XK_VL)
#define XK_WINO_NR(nk) ((nk) - XK_WINO_NA(nk))

/* The XK_VL tiles' nk entries t[k] (lane i: tile i; nk = 16 or 36) stored tile by tile: the
 * first NA = XK_WINO_NA(nk) at out[NA i + k], the other NR at rest[NR i + k - NA]. */
XK_INLINE void XK_FN(xk_wino_by_tile)(XK_T *out, XK_T *rest, const XK_V *t, const int nk)
{
#if XK_SHUFFLE && XK_VL == 8
    const int NA = XK_WINO_NA(nk);
    XK_UNROLL for (int h = 0; h < NA / 8; h++) {  /* 8x8 transposes: entries 8h..8h+7 */
        const XK_V *r = t + 8 * h;
        XK_V a[8], c[8];
        XK_UNROLL for (int m = 0; m < 4; m++) {
            a[2 * m] = __builtin_shufflevector(r[2 * m], r[2 * m + 1], 0, 8, 1, 9, 4, 12, 5, 13);
            a[2 * m + 1] = __builtin_shufflevector(r[2 * m], r[2 * m + 1], 2, 10, 3, 11, 6, 14, 7, 15);
        }
        XK_UNROLL for (int m = 0; m < 2; m++) {  /* c[4m + b]: entries 4m..4m+3 of tiles b, b + 4 */
            c[4 * m + 0] = __builtin_shufflevector(a[4 * m], a[4 * m + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            c[4 * m + 1] = __builtin_shufflevector(a[4 * m], a[4 * m + 2], 2, 3, 10, 11, 6, 7, 14, 15);
            c[4 * m + 2] = __builtin_shufflevector(a[4 * m + 1], a[4 * m + 3], 0, 1, 8, 9, 4, 5, 12, 13);
            c[4 * m + 3] = __builtin_shufflevector(a[4 * m + 1], a[4 * m + 3], 2, 3, 10, 11, 6, 7, 14, 15);
        }
        XK_UNROLL for (int b = 0; b < 4; b++) {
            XK_VSTORE(XK_V, out + NA * b + 8 * h, __builtin_shufflevector(c[b], c[4 + b], 0, 1, 2, 3, 8, 9, 10, 11));
            XK_VSTORE(XK_V, out + NA * (b + 4) + 8 * h,
                      __builtin_shufflevector(c[b], c[4 + b], 4, 5, 6, 7, 12, 13, 14, 15));
        }
    }
    if (nk > NA) XK_FN(xk_wino_rows4)(rest, t + NA);  /* the last four entries, four per tile */
#elif XK_SHUFFLE && XK_VL == 4
    (void)rest;
    XK_UNROLL for (int h = 0; h < nk / 4; h++) {  /* 4x4 transposes: entries 4h..4h+3 */
        const XK_V *r = t + 4 * h;
        const XK_V a = __builtin_shufflevector(r[0], r[1], 0, 4, 2, 6), b = __builtin_shufflevector(r[0], r[1], 1, 5, 3, 7);
        const XK_V c = __builtin_shufflevector(r[2], r[3], 0, 4, 2, 6), d = __builtin_shufflevector(r[2], r[3], 1, 5, 3, 7);
        XK_VSTORE(XK_V, out + 4 * h, __builtin_shufflevector(a, c, 0, 1, 4, 5));
        XK_VSTORE(XK_V, out + nk + 4 * h, __builtin_shufflevector(b, d, 0, 1, 4, 5));
        XK_VSTORE(XK_V, out + 2 * nk + 4 * h, __builtin_shufflevector(a, c, 2, 3, 6, 7));
        XK_VSTORE(XK_V, out + 3 * nk + 4 * h, __builtin_shufflevector(b, d, 2, 3, 6, 7));
    }
#else
    (void)rest;
    XK_T e[XK_WINO_PMAX * XK_WINO_PMAX][XK_VL];
    XK_UNROLL for (int k = 0; k < nk; k++) XK_VSTORE(XK_V, e[k], t[k]);
    for (int i = 0; i < XK_VL; i++)
        XK_UNROLL for (int k = 0; k < nk; k++) out[nk * i + k] = e[k][i];
#endif
}

/* Panel geometry: XK_SACC * XK_VL tiles, positions q = (image * th + ty) * tw + tx. */
#define XK_WINO_W (XK_SACC * XK_VL)
/* Source channels ahead whose staged patch rows are prefetched, and destinations ahead
 * whose output lines are. */
#define XK_WINO_AHEAD 12
#define XK_WINO_OUT_AHEAD 4
/* Panels one k apart, padded by a cache line: at a multiple of 4 KiB apart, the 16 loads
 * of one tile's entries would fall into one L1 set. */
#define XK_WINO_PSTRIDE(rows) ((rows) * XK_WINO_W + 2 * XK_VL)

/* V = Bt d Bt^T for the patches d of the n tiles [q0, q0 + n) of the panel (n <= XK_WINO_W;
 * tiles past n read zeros) in n_src channels of src (images through sim), for tiles of
 * m x m outputs (m = 2 or 4; P = m + 2): tile (g, ty, tx) reads src[g, c, m ty - pad_y + a,
 * m tx - pad_x + b] (a, b < P; 0 outside the image).  by_tile 0: entry k < P^2 of channel
 * c's tiles at out + k * pstride + c * XK_WINO_W (xk_quad_panel's rows); by_tile 1: tile i's
 * at out + (c * XK_WINO_W + i) * NA + k for k < NA and at out + n_src * XK_WINO_W * NA +
 * (c * XK_WINO_W + i) * NR + k - NA for the rest (XK_WINO_NA, XK_WINO_NR: whole vectors
 * and the entries past them).  A patch row inside the image
 * is read in place; the rows of patches that cross the left or right edge (or of images
 * read with a column stride) are copied into a zeroed stage first: with contiguous rows of
 * at least P columns, as the P columns of the image nearest the patch's, which land in
 * the stage row shifted by up to P - 1 (guard elements, P on each side, take what falls
 * outside the patch). */
XK_INLINE void XK_FN(xk_wino_source)(const XK_T *XK_RESTRICT src, const xk_image_t *sim, int64_t th, int64_t tw,
                                     int64_t pad_y, int64_t pad_x, int64_t q0, int64_t n, int64_t n_src,
                                     XK_T *XK_RESTRICT out, int64_t pstride, const int by_tile, const int m)
{
    enum { W = XK_WINO_W, PM = XK_WINO_PMAX };
    const int P = m + 2;
    const int64_t H = sim->height, Wd = sim->width, row = sim->row, col = sim->col, chan = sim->chan;
    const XK_T *rp[W][PM];             /* patch rows of the current channel */
    int64_t step[W][PM];               /* rp's advance per channel: chan (in place) or 0 */
    int64_t s_row[W], s_x0[W];         /* the patch's row 0 at column 0, its first column */
    unsigned char lim[W][4];           /* rows [lim0, lim1) and columns [lim2, lim3) inside */
    int64_t staged[W], n_staged = 0;
    int64_t s_win[W];                  /* the first column copied (wide: P of them) */
    XK_T stage[W][PM][3 * PM];         /* staged patch row a of tile i at stage[i][a] + P */
    static const XK_T zeros[PM] = {0};
    const int wide = col == 1 && Wd >= P;
    memset(stage, 0, sizeof stage);
    for (int64_t i = 0; i < W; i++) {
        if (i >= n) {                  /* past the last tile: zeros */
            XK_UNROLL for (int a = 0; a < P; a++) rp[i][a] = zeros, step[i][a] = 0;
            continue;
        }
        const int64_t q = q0 + i, g = q / (th * tw), ty = q / tw % th, tx = q % tw;
        const int64_t y0 = m * ty - pad_y, x0 = m * tx - pad_x;
        s_row[i] = g * sim->img + y0 * row;
        s_x0[i] = x0;
        lim[i][0] = (unsigned char)(y0 < 0 ? (-y0 < P ? -y0 : P) : 0);
        lim[i][1] = (unsigned char)(H - y0 >= P ? P : H - y0 > 0 ? H - y0 : 0);
        lim[i][2] = (unsigned char)(x0 < 0 ? (-x0 < P ? -x0 : P) : 0);
        lim[i][3] = (unsigned char)(Wd - x0 >= P ? P : Wd - x0 > 0 ? Wd - x0 : 0);
        const int in_row = lim[i][2] == 0 && lim[i][3] == P && col == 1;
        if (!in_row && lim[i][0] < lim[i][1] && lim[i][2] < lim[i][3]) staged[n_staged++] = i;
        s_win[i] = !wide ? x0 + lim[i][2] : x0 < 0 ? 0 : x0 > Wd - P ? Wd - P : x0;
        XK_UNROLL for (int a = 0; a < P; a++) {
            const int valid = a >= lim[i][0] && a < lim[i][1] && lim[i][2] < lim[i][3];
            if (valid && in_row) {
                rp[i][a] = src + (s_row[i] + a * row + x0);
                step[i][a] = chan;
            } else {
                rp[i][a] = valid ? stage[i][a] + P : zeros;
                step[i][a] = 0;
            }
        }
    }
    for (int64_t c = 0; c < n_src; c++) {
        const XK_T *s = src + c * chan;
        for (int64_t j = 0; j < n_staged; j++) {
            const int64_t i = staged[j], x0 = s_x0[i];
            for (int a = lim[i][0]; a < lim[i][1]; a++) {
                const int64_t r = s_row[i] + a * row;  /* column 0 of the patch's row a */
                if (c + XK_WINO_AHEAD < n_src) __builtin_prefetch(s + r + XK_WINO_AHEAD * chan + s_win[i] * col);
                if (wide) {  /* columns s_win..s_win + P - 1 of the row (x0 is the stage row's first) */
                    memcpy(stage[i][a] + P + (s_win[i] - x0), s + r + s_win[i], P * sizeof(XK_T));
                } else {
                    XK_UNROLL for (int b = 0; b < P; b++)
                        if (b >= lim[i][2] && b < lim[i][3]) stage[i][a][P + b] = s[r + (x0 + b) * col];
                }
            }
        }
        XK_UNROLL for (int l = 0; l < XK_SACC; l++) {  /* V = Bt d Bt^T */
            if (!by_tile && l * XK_VL >= n) break;  /* the quads read only the vectors with tiles */
            const XK_T *const(*rl)[PM] = (const XK_T *const(*)[PM])rp + l * XK_VL;
            if (m == 4) {
                XK_V e[36], t[36];
                XK_FN(xk_wino_gather)(e, rl, 4);
                XK_UNROLL for (int a = 0; a < 6; a++) XK_FN(xk_wino_bt6)(t + 6 * a, 1, e + 6 * a, 1);  /* rows */
                XK_UNROLL for (int b = 0; b < 6; b++) XK_FN(xk_wino_bt6)(e + b, 6, t + b, 6);  /* columns */
                if (by_tile) {
                    XK_FN(xk_wino_by_tile)(out + (c * W + l * XK_VL) * XK_WINO_NA(36),
                                           out + n_src * W * XK_WINO_NA(36) + (c * W + l * XK_VL) * XK_WINO_NR(36), e,
                                           36);
                } else {
                    XK_T *v = out + c * W + l * XK_VL;
                    XK_UNROLL for (int k = 0; k < 36; k++) XK_VSTORE(XK_V, v + k * pstride, e[k]);
                }
                continue;
            }
            XK_V e[16], t[16];
            XK_FN(xk_wino_gather)(e, rl, 2);
            XK_UNROLL for (int b = 0; b < 4; b++) {
                t[0 + b] = e[0 + b] - e[8 + b];
                t[4 + b] = e[4 + b] + e[8 + b];
                t[8 + b] = e[8 + b] - e[4 + b];
                t[12 + b] = e[4 + b] - e[12 + b];
            }
            XK_UNROLL for (int r = 0; r < 16; r += 4) {
                e[r + 0] = t[r + 0] - t[r + 2];
                e[r + 1] = t[r + 1] + t[r + 2];
                e[r + 2] = t[r + 2] - t[r + 1];
                e[r + 3] = t[r + 1] - t[r + 3];
            }
            if (by_tile) {
                XK_FN(xk_wino_by_tile)(out + (c * W + l * XK_VL) * 16, NULL, e, 16);
            } else {
                XK_T *v = out + c * W + l * XK_VL;
                XK_UNROLL for (int k = 0; k < 16; k++) XK_VSTORE(XK_V, v + k * pstride, e[k]);
            }
        }
        if (c + 1 < n_src)  /* the next channel's rows (never past the last) */
            for (int64_t i = 0; i < W; i++)
                XK_UNROLL for (int a = 0; a < P; a++) rp[i][a] += step[i][a];
    }
}

/* One panel of Winograd tiles of m x m outputs (m = 2 or 4; P = m + 2, NK = P^2
 * transformed entries), positions [q0, q0 + XK_WINO_W) of the n_img * th * tw tiles of src
 * (n_img images of qs->n_src channels through sim): tile (g, ty, tx) reads the patch
 * src[g, c, m ty - pad_y + a, m tx - pad_x + b] (a, b < P; 0 outside the image) and writes
 * dst[g, v, m ty + a, m tx + b] (a, b < m, inside dim) for the destinations of the quads
 * q_lo <= q < q_hi:
 *   dst = bias[v] (or 0) + At (sum over v's terms of U_k[term] * V_k[channel]) At^T,
 * U_k the terms' transformed weights at uw + k * ustride in the quads' term order
 * (xk_wino_weights), V_k the patches' transforms (xk_wino_source).  Scratch: panel NK *
 * XK_WINO_PSTRIDE(n_src + 1) elements (V: one panel per k, each with its zero row), part
 * NK * XK_WINO_PSTRIDE(n_dst) (M; both at most NK * (rows + 1) * XK_WINO_W). */
XK_INLINE void XK_FN(xk_wino_panel)(const XK_T *XK_RESTRICT src, const xk_image_t *sim, int64_t n_img,
                                    int64_t th, int64_t tw, int64_t pad_y, int64_t pad_x, int64_t q0,
                                    const xk_quads_t *qs, int64_t q_lo, int64_t q_hi, const XK_T *uw,
                                    int64_t ustride, const XK_T *bias, XK_T *panel, XK_T *part,
                                    XK_T *XK_RESTRICT dst, const xk_image_t *dim, const int m)
{
    enum { W = XK_WINO_W };
    const int NK = (m + 2) * (m + 2);
    const int64_t n_src = qs->n_src, n_dst = qs->n_dst;
    const int64_t pstride = XK_WINO_PSTRIDE(n_src + 1), mstride = XK_WINO_PSTRIDE(n_dst);
    const int64_t total = n_img * th * tw, n = total - q0 < W ? total - q0 : W;
    const int64_t s_hi = q_hi * 4 < n_dst ? q_hi * 4 : n_dst;
    int64_t d_off[W];                  /* the output tile's corner */
    unsigned char out_rows[W], out_cols[W], out_full[W];  /* full: m x m, contiguous rows */
    for (int64_t i = 0; i < n; i++) {
        const int64_t q = q0 + i, g = q / (th * tw), ty = q / tw % th, tx = q % tw;
        d_off[i] = g * dim->img + m * ty * dim->row + m * tx * dim->col;
        out_rows[i] = (unsigned char)(dim->height - m * ty >= m ? m : dim->height - m * ty);
        out_cols[i] = (unsigned char)(dim->width - m * tx >= m ? m : dim->width - m * tx);
        out_full[i] = out_rows[i] == m && out_cols[i] == m && dim->col == 1;
    }
    XK_FN(xk_wino_source)(src, sim, th, tw, pad_y, pad_x, q0, n, n_src, panel, pstride, 0, m);
    for (int k = 0; k < NK; k++)  /* the zero rows that padding terms read */
        XK_UNROLL for (int l = 0; l < XK_SACC; l++)
            XK_VSTORE(XK_V, panel + k * pstride + n_src * W + l * XK_VL, XK_VSPLAT(XK_V, (XK_T)0));
    /* the vectors that hold tiles: a panel of 16 or 8 tiles (a small map's) computes 2 or 1 */
    const int nv = (int)((n + XK_VL - 1) / XK_VL);
    for (int k = 0; k < NK; k++) {
        XK_T *mk = part + k * mstride;
        const XK_T *vk = panel + k * pstride, *uk = uw + k * ustride;
        if (nv >= XK_SACC) XK_FN(xk_quad_panel)(mk, W, vk, qs, uk, NULL, q_lo, q_hi);
        else if (nv == 2) XK_FN(xk_quad_panel_v2)(mk, W, vk, qs, uk, NULL, q_lo, q_hi);
        else XK_FN(xk_quad_panel_v1)(mk, W, vk, qs, uk, NULL, q_lo, q_hi);
    }
    for (int64_t slot = q_lo * 4; slot < s_hi; slot++) {
        const int64_t v = xk_quad_row(qs, slot);
        const XK_T *mv = part + v * W;
        XK_T y[4][4 * W];              /* output row a of tile i: y[a][m i + b] */
        const XK_V b0 = XK_VSPLAT(XK_V, bias ? bias[v] : (XK_T)0);
        XK_UNROLL for (int l = 0; l < XK_SACC; l++) {  /* Y = At M At^T */
            if (l >= nv) break;
            if (m == 4) {
                XK_V e[36], s4[24], o[4][4];
                XK_UNROLL for (int k = 0; k < 36; k++) e[k] = XK_VLOAD(XK_V, mv + k * mstride + l * XK_VL);
                XK_UNROLL for (int c = 0; c < 6; c++) XK_FN(xk_wino_at6)(s4 + c, 6, e + c, 6);  /* columns */
                XK_UNROLL for (int a = 0; a < 4; a++) {                                      /* rows */
                    XK_FN(xk_wino_at6)(o[a], 1, s4 + 6 * a, 1);
                    XK_UNROLL for (int c = 0; c < 4; c++) o[a][c] += b0;
                    XK_FN(xk_wino_rows4)(&y[a][4 * l * XK_VL], o[a]);
                }
                continue;
            }
            XK_V e[16], s2[8];
            XK_UNROLL for (int k = 0; k < 16; k++) e[k] = XK_VLOAD(XK_V, mv + k * mstride + l * XK_VL);
            XK_UNROLL for (int b = 0; b < 4; b++) {
                s2[0 + b] = e[0 + b] + e[4 + b] + e[8 + b];
                s2[4 + b] = e[4 + b] - e[8 + b] - e[12 + b];
            }
            XK_UNROLL for (int a = 0; a < 2; a++)
                XK_FN(xk_wino_pairs)(&y[a][2 * l * XK_VL], b0 + (s2[4 * a + 0] + s2[4 * a + 1] + s2[4 * a + 2]),
                                     b0 + (s2[4 * a + 1] - s2[4 * a + 2] - s2[4 * a + 3]));
        }
        XK_T *o = dst + v * dim->chan;
        const int64_t drow = dim->row, dcol = dim->col;
        if (slot + XK_WINO_OUT_AHEAD < s_hi) {  /* the output lines of a destination ahead, for writing */
            XK_T *o2 = dst + xk_quad_row(qs, slot + XK_WINO_OUT_AHEAD) * dim->chan;
            for (int64_t i = 0; i < n; i += 4)
                for (int a = 0; a < m; a++) __builtin_prefetch(o2 + d_off[i] + a * drow, 1);
        }
        for (int64_t i = 0; i < n; i++) {
            XK_T *t = o + d_off[i];
            if (out_full[i]) {
                XK_UNROLL for (int a = 0; a < m; a++) memcpy(t + a * drow, &y[a][m * i], m * sizeof(XK_T));
            } else {  /* columns not contiguous, or odd sizes: the tile's last rows or columns are outside */
                for (int a = 0; a < out_rows[i]; a++)
                    for (int b = 0; b < out_cols[i]; b++) t[a * drow + b * dcol] = y[a][m * i + b];
            }
        }
    }
}

/* xk_wino_panel for tiles of 2 x 2 and of 4 x 4 outputs, each compiled on its own. */
#define XK_WINO_TILE_VARIANT(M)                                                                              \
    XK_CLONES static void XK_FN(xk_wino_tile##M)(                                                            \
        const XK_T *XK_RESTRICT src, const xk_image_t *sim, int64_t n_img, int64_t th, int64_t tw,          \
        int64_t pad_y, int64_t pad_x, int64_t q0, const xk_quads_t *qs, int64_t q_lo, int64_t q_hi,         \
        const XK_T *uw, int64_t ustride, const XK_T *bias, XK_T *panel, XK_T *part, XK_T *XK_RESTRICT dst,  \
        const xk_image_t *dim)                                                                               \
    {                                                                                                        \
        XK_FN(xk_wino_panel)(src, sim, n_img, th, tw, pad_y, pad_x, q0, qs, q_lo, q_hi, uw, ustride, bias,   \
                             panel, part, dst, dim, M);                                                      \
    }
XK_WINO_TILE_VARIANT(2)
XK_WINO_TILE_VARIANT(4)
#undef XK_WINO_TILE_VARIANT

/* xk_wino_panel with m = 2 or 4 outputs per tile side. */
static void XK_FN(xk_wino_tile)(const XK_T *src, const xk_image_t *sim, int64_t n_img, int64_t th, int64_t tw,
                                int64_t pad_y, int64_t pad_x, int64_t q0, const xk_quads_t *qs, int64_t q_lo,
                                int64_t q_hi, const XK_T *uw, int64_t ustride, const XK_T *bias, XK_T *panel,
                                XK_T *part, XK_T *dst, const xk_image_t *dim, int m)
{
    if (m == 4)
        XK_FN(xk_wino_tile4)(src, sim, n_img, th, tw, pad_y, pad_x, q0, qs, q_lo, q_hi, uw, ustride, bias, panel,
                             part, dst, dim);
    else
        XK_FN(xk_wino_tile2)(src, sim, n_img, th, tw, pad_y, pad_x, q0, qs, q_lo, q_hi, uw, ustride, bias, panel,
                             part, dst, dim);
}

/* grad_weight by Winograd.  A tile's Y = At M At^T with M = sum over a destination's terms
 * of U * V (U = G w G^T), so a term's dU = sum over the tiles of dM * V, where dM = At^T dY
 * At (P x P, from the tile's m x m of grad_out), and grad_w = G^T dU G
 * (xk_wino_wgrad_finish): per output and edge 4 products (m = 2) or 2.25 (m = 4) where
 * the direct dot products have 9, and as many values of V to read.  A tile's nk = P^2
 * entries are contiguous (xk_wino_source's by_tile layout), so an edge's nk sums
 * accumulate lane by lane over the tiles, with no reduction across lanes. */

/* Edges per pass of xk_wino_wdot: with XK_VL = 8 and nk = 16, their 4 x 2 accumulators
 * and dM's two vectors take 10 of AVX2's 16 registers (each tile loads 2 + 4 * 2 vectors
 * for 8 FMAs); with nk = 36, 3 x 4 and 4 for the whole vectors (XK_WINO_WPASS36). */
#define XK_WINO_WTERMS 4
#define XK_WINO_WPASS36 (XK_VL == 8 ? 3 : 1)
#define XK_WINO_NVMAX (XK_WINO_PMAX * XK_WINO_PMAX / XK_VL)

/* acc[nk j + k] += sum over tiles i < n of dM_k(i) * V_k(i, j) for j < m, nk = 16 or 36: for
 * k < NA = XK_WINO_NA(nk), dM_k(i) = dm[NA i + k] and V_k(i, j) = vp[j][NA i + k]; past NA (the
 * NR = 4 entries past 32 whole vectors) dmr[NR i + k - NA] and vr[j][NR i + k - NA], in a
 * second pass over the tiles with quarter vectors. */
XK_INLINE void XK_FN(xk_wino_wdot)(XK_T *acc, const XK_T *XK_RESTRICT dm, const XK_T *XK_RESTRICT dmr,
                                   const XK_T *const *vp, const XK_T *const *vr, int64_t n, const int m, const int nk)
{
    const int NA = XK_WINO_NA(nk), NV = NA / XK_VL;
    XK_V s[XK_WINO_WTERMS][XK_WINO_NVMAX];
    XK_UNROLL for (int j = 0; j < m; j++)
        XK_UNROLL for (int b = 0; b < NV; b++) s[j][b] = XK_VSPLAT(XK_V, (XK_T)0);
    for (int64_t i = 0; i < n; i++) {
        XK_V d[XK_WINO_NVMAX];
        XK_UNROLL for (int b = 0; b < NV; b++) d[b] = XK_VLOAD(XK_V, dm + NA * i + b * XK_VL);
        XK_UNROLL for (int j = 0; j < m; j++)
            XK_UNROLL for (int b = 0; b < NV; b++) s[j][b] += d[b] * XK_VLOAD(XK_V, vp[j] + NA * i + b * XK_VL);
    }
    XK_UNROLL for (int j = 0; j < m; j++)
        XK_UNROLL for (int b = 0; b < NV; b++)
            XK_VSTORE(XK_V, acc + nk * j + b * XK_VL, XK_VLOAD(XK_V, acc + nk * j + b * XK_VL) + s[j][b]);
#if XK_SHUFFLE && XK_VL == 8
    if (nk > NA) {
        typedef XK_FN(xk_quarter) Q;
        Q r[XK_WINO_WTERMS];
        XK_UNROLL for (int j = 0; j < m; j++) r[j] = (Q){0, 0, 0, 0};
        for (int64_t i = 0; i < n; i++) {
            const Q e = *(const Q *)(dmr + 4 * i);
            XK_UNROLL for (int j = 0; j < m; j++) r[j] += e * *(const Q *)(vr[j] + 4 * i);
        }
        XK_UNROLL for (int j = 0; j < m; j++) *(Q *)(acc + nk * j + NA) = *(const Q *)(acc + nk * j + NA) + r[j];
    }
#else
    (void)dmr, (void)vr;
#endif
}

/* The same for the XK_SHARE destinations of a block expander's run and one edge they all
 * have (the same source): acc[o * astride + k] += sum over tiles i < n of dM_k(o, i) *
 * V_k(i), dM_k(o, i) = dm[o * XK_WINO_DM + NA i + k] and V_k(i) = vp[NA i + k] for k < NA,
 * dmr[o * XK_WINO_DMR + NR i + k - NA] and vr[NR i + k - NA] past it.  Each V load feeds
 * XK_SHARE FMAs (the transformed tiles come from L2, dm from L1), two vectors of entries
 * per pass over the tiles; every sum runs in xk_wino_wdot's order. */
#define XK_WINO_DM (XK_WINO_W * XK_WINO_PMAX * XK_WINO_PMAX)
#define XK_WINO_DMR (XK_WINO_W * 4)
XK_INLINE void XK_FN(xk_wino_wdot_shared)(XK_T *acc, int64_t astride, const XK_T *XK_RESTRICT dm,
                                          const XK_T *XK_RESTRICT dmr, const XK_T *XK_RESTRICT vp,
                                          const XK_T *XK_RESTRICT vr, int64_t n, const int nk)
{
    const int NA = XK_WINO_NA(nk), NV = NA / XK_VL;
    XK_UNROLL for (int b0 = 0; b0 < NV; b0 += 2) {
        const int nb = NV - b0 < 2 ? NV - b0 : 2;
        XK_V s[XK_SHARE][2];
        XK_UNROLL for (int o = 0; o < XK_SHARE; o++)
            XK_UNROLL for (int b = 0; b < nb; b++) s[o][b] = XK_VSPLAT(XK_V, (XK_T)0);
        for (int64_t i = 0; i < n; i++) {
            XK_V x[2];
            XK_UNROLL for (int b = 0; b < nb; b++) x[b] = XK_VLOAD(XK_V, vp + NA * i + (b0 + b) * XK_VL);
            XK_UNROLL for (int o = 0; o < XK_SHARE; o++)
                XK_UNROLL for (int b = 0; b < nb; b++)
                    s[o][b] += XK_VLOAD(XK_V, dm + o * XK_WINO_DM + NA * i + (b0 + b) * XK_VL) * x[b];
        }
        XK_UNROLL for (int o = 0; o < XK_SHARE; o++)
            XK_UNROLL for (int b = 0; b < nb; b++)
                XK_VSTORE(XK_V, acc + o * astride + (b0 + b) * XK_VL,
                          XK_VLOAD(XK_V, acc + o * astride + (b0 + b) * XK_VL) + s[o][b]);
    }
#if XK_SHUFFLE && XK_VL == 8
    if (nk > NA) {
        typedef XK_FN(xk_quarter) Q;
        Q r[XK_SHARE];
        XK_UNROLL for (int o = 0; o < XK_SHARE; o++) r[o] = (Q){0, 0, 0, 0};
        for (int64_t i = 0; i < n; i++) {
            const Q e = *(const Q *)(vr + 4 * i);
            XK_UNROLL for (int o = 0; o < XK_SHARE; o++) r[o] += *(const Q *)(dmr + o * XK_WINO_DMR + 4 * i) * e;
        }
        XK_UNROLL for (int o = 0; o < XK_SHARE; o++)
            *(Q *)(acc + o * astride + NA) = *(const Q *)(acc + o * astride + NA) + r[o];
    }
#else
    (void)dmr, (void)vr;
#endif
}

/* F(4x4, 3x3)'s At^T on the four vectors y[0], y[ys], y[2 ys], y[3 ys]: o[j * os] = (At^T y)[j], j < 6. */
XK_INLINE void XK_FN(xk_wino_att6)(XK_V *o, const int os, const XK_V *y, const int ys)
{
    const XK_V y0 = y[0], y1 = y[ys], y2 = y[2 * ys], y3 = y[3 * ys];
    const XK_V a = y0 + y2, b = y1 + y3, c = y0 + (XK_T)4 * y2, d = (XK_T)2 * y1 + (XK_T)8 * y3;
    o[0] = y0;
    o[os] = a + b;
    o[2 * os] = a - b;
    o[3 * os] = c + d;
    o[4 * os] = c - d;
    o[5 * os] = y3;
}

/* One panel of the tiles of xk_wino_panel (positions [q0, q0 + XK_WINO_W) of n_img * th *
 * tw tiles of m x m outputs, nk = (m + 2)^2) for grad_weight: for the destinations v < n_dst
 * and their terms j < degree,
 *   acc[(v * degree + j) * nk + k] += sum over the panel's tiles of dM_k * V_k,
 * V the transformed patches of x (n_src channels through xim) at channel index[v, j],
 * dM the transformed m x m tiles of grad_out (g through gim; 0 outside it).  shared: index
 * rows equal in runs of XK_SHARE (block expanders; n_dst a multiple of it), each
 * run's edges one at a time for its four destinations (xk_wino_wdot_shared), with the
 * same results.  Scratch: vbuf n_src * XK_WINO_W * nk elements.  Every sum runs over the
 * panel's tiles in order (_wino_wgrads adds the panels' sums in a fixed order too). */
XK_INLINE void XK_FN(xk_wino_wgrad_panel)(const XK_T *XK_RESTRICT x, const xk_image_t *xim,
                                          const XK_T *XK_RESTRICT g, const xk_image_t *gim, int64_t n_img,
                                          int64_t th, int64_t tw, int64_t pad_y, int64_t pad_x, int64_t q0,
                                          int64_t n_src, const int64_t *index, int64_t degree, int64_t n_dst,
                                          int shared, XK_T *XK_RESTRICT vbuf, XK_T *XK_RESTRICT acc, const int m)
{
    enum { W = XK_WINO_W };
    const int nk = (m + 2) * (m + 2);
    const int64_t total = n_img * th * tw, n = total - q0 < W ? total - q0 : W;
    const int64_t drow = gim->row, dcol = gim->col;
    const int share = shared ? XK_SHARE : 1;
    int64_t d_off[W];                  /* the grad_out tile's corner */
    unsigned char in_rows[W], in_cols[W];
    XK_T y[4][W];                      /* m = 2: dY of tile i: y[2a + b][i] */
    const XK_T *gp[W][XK_WINO_PMAX];   /* m = 4: row a of tile i's dY at gp[i][a] (4 elements) */
    XK_T gst[W][4][4];                 /* the tiles that are not 4 x 4 inside grad_out, zero-padded */
    int64_t full[W];                   /* 1: read in place */
    static const XK_T zeros[4] = {0, 0, 0, 0};
    XK_T dm[XK_SHARE][XK_WINO_DM];     /* dM of tile i: dm[o][NA i + k], destination v0 + o, */
    XK_T dmr[XK_SHARE][XK_WINO_DMR];   /* and past NA (nk = 36): dmr[o][NR i + k - NA] */
    const int NA = XK_WINO_NA(nk), NR = XK_WINO_NR(nk);
    memset(y, 0, sizeof y);
    for (int64_t i = 0; i < n; i++) {
        const int64_t q = q0 + i, gi = q / (th * tw), ty = q / tw % th, tx = q % tw;
        d_off[i] = gi * gim->img + m * ty * drow + m * tx * dcol;
        in_rows[i] = (unsigned char)(gim->height - m * ty >= m ? m : gim->height - m * ty);
        in_cols[i] = (unsigned char)(gim->width - m * tx >= m ? m : gim->width - m * tx);
        full[i] = in_rows[i] == m && in_cols[i] == m && dcol == 1;
    }
    if (m == 4) {
        memset(gst, 0, sizeof gst);
        for (int64_t i = 0; i < W; i++)
            XK_UNROLL for (int a = 0; a < 4; a++) gp[i][a] = i < n && !full[i] ? gst[i][a] : zeros;
    }
    XK_FN(xk_wino_source)(x, xim, th, tw, pad_y, pad_x, q0, n, n_src, vbuf, 0, 1, m);
    for (int64_t v0 = 0; v0 < n_dst; v0 += share) {
        for (int o = 0; o < share; o++) {
            const int64_t v = v0 + o;
            const XK_T *gv = g + v * gim->chan;
            if (v + XK_WINO_OUT_AHEAD < n_dst) {  /* the grad_out lines of a destination ahead */
                const XK_T *g2 = gv + XK_WINO_OUT_AHEAD * gim->chan;
                for (int64_t i = 0; i < n; i += 4)
                    for (int a = 0; a < m; a++) __builtin_prefetch(g2 + d_off[i] + a * drow);
            }
            if (m == 4) {  /* the tiles' rows in place, or copied into their stage */
                for (int64_t i = 0; i < n; i++) {
                    const XK_T *t = gv + d_off[i];
                    if (full[i]) {
                        XK_UNROLL for (int a = 0; a < 4; a++) gp[i][a] = t + a * drow;
                    } else {
                        for (int a = 0; a < in_rows[i]; a++)
                            for (int b = 0; b < in_cols[i]; b++) gst[i][a][b] = t[a * drow + b * dcol];
                    }
                }
            } else {
                for (int64_t i = 0; i < n; i++) {
                    const XK_T *t = gv + d_off[i];
                    XK_UNROLL for (int a = 0; a < 2; a++)
                        XK_UNROLL for (int b = 0; b < 2; b++)
                            y[2 * a + b][i] = a < in_rows[i] && b < in_cols[i] ? t[a * drow + b * dcol] : (XK_T)0;
                }
            }
            XK_UNROLL for (int l = 0; l < XK_SACC; l++) {  /* dM = At^T dY At */
                if (m == 4) {
                    XK_V u[16], r[24], e[36];
                    XK_FN(xk_wino_gather)(u, (const XK_T *const(*)[XK_WINO_PMAX])gp + l * XK_VL, 2);  /* 4 x 4 */
                    XK_UNROLL for (int b = 0; b < 4; b++) XK_FN(xk_wino_att6)(r + b, 4, u + b, 4);  /* columns */
                    XK_UNROLL for (int a = 0; a < 6; a++) XK_FN(xk_wino_att6)(e + 6 * a, 1, r + 4 * a, 1);  /* rows */
                    XK_FN(xk_wino_by_tile)(dm[o] + l * XK_VL * NA, dmr[o] + l * XK_VL * NR, e, 36);
                    continue;
                }
                const XK_V a = XK_VLOAD(XK_V, y[0] + l * XK_VL), b = XK_VLOAD(XK_V, y[1] + l * XK_VL);
                const XK_V c = XK_VLOAD(XK_V, y[2] + l * XK_VL), d = XK_VLOAD(XK_V, y[3] + l * XK_VL);
                const XK_V r[4][2] = {{a, b}, {a + c, b + d}, {a - c, b - d}, {-c, -d}};
                XK_V e[16];
                XK_UNROLL for (int k = 0; k < 4; k++) {
                    e[4 * k + 0] = r[k][0];
                    e[4 * k + 1] = r[k][0] + r[k][1];
                    e[4 * k + 2] = r[k][0] - r[k][1];
                    e[4 * k + 3] = -r[k][1];
                }
                XK_FN(xk_wino_by_tile)(dm[o] + l * XK_VL * 16, NULL, e, 16);
            }
        }
        XK_T *av = acc + v0 * degree * nk;
        const int64_t *iv = index + v0 * degree;
        const XK_T *vrest = vbuf + n_src * W * NA;  /* the transformed tiles' entries past NA */
        if (shared) {  /* one source per edge for the whole run */
            for (int64_t j = 0; j < degree; j++)
                XK_FN(xk_wino_wdot_shared)(av + j * nk, degree * nk, dm[0], dmr[0], vbuf + iv[j] * W * NA,
                                           vrest + iv[j] * W * NR, n, nk);
            continue;
        }
        const int per = m == 4 ? XK_WINO_WPASS36 : XK_WINO_WTERMS;  /* edges per pass */
        for (int64_t j = 0; j < degree; j += per) {
            const XK_T *vp[XK_WINO_WTERMS], *vr[XK_WINO_WTERMS];
            const int64_t ne = degree - j < per ? degree - j : per;
            for (int64_t s = 0; s < ne; s++) vp[s] = vbuf + iv[j + s] * W * NA, vr[s] = vrest + iv[j + s] * W * NR;
            if (m == 4) {
                if (ne == 3) XK_FN(xk_wino_wdot)(av + j * nk, dm[0], dmr[0], vp, vr, n, 3, 36);
                else if (ne == 2) XK_FN(xk_wino_wdot)(av + j * nk, dm[0], dmr[0], vp, vr, n, 2, 36);
                else XK_FN(xk_wino_wdot)(av + j * nk, dm[0], dmr[0], vp, vr, n, 1, 36);
            } else if (ne == 4) XK_FN(xk_wino_wdot)(av + j * nk, dm[0], NULL, vp, vr, n, 4, 16);
            else if (ne == 3) XK_FN(xk_wino_wdot)(av + j * nk, dm[0], NULL, vp, vr, n, 3, 16);
            else if (ne == 2) XK_FN(xk_wino_wdot)(av + j * nk, dm[0], NULL, vp, vr, n, 2, 16);
            else XK_FN(xk_wino_wdot)(av + j * nk, dm[0], NULL, vp, vr, n, 1, 16);
        }
    }
}

/* xk_wino_wgrad_panel for tiles of 2 x 2 and of 4 x 4 outputs, each compiled on its own,
 * and the entry that picks one by m. */
#define XK_WINO_WGRAD_VARIANT(M)                                                                             \
    XK_CLONES static void XK_FN(xk_wino_wgrad_tile##M)(                                                      \
        const XK_T *XK_RESTRICT x, const xk_image_t *xim, const XK_T *XK_RESTRICT g, const xk_image_t *gim, \
        int64_t n_img, int64_t th, int64_t tw, int64_t pad_y, int64_t pad_x, int64_t q0, int64_t n_src,     \
        const int64_t *index, int64_t degree, int64_t n_dst, int shared, XK_T *XK_RESTRICT vbuf,            \
        XK_T *XK_RESTRICT acc)                                                                               \
    {                                                                                                        \
        XK_FN(xk_wino_wgrad_panel)(x, xim, g, gim, n_img, th, tw, pad_y, pad_x, q0, n_src, index, degree,    \
                                   n_dst, shared, vbuf, acc, M);                                             \
    }
XK_WINO_WGRAD_VARIANT(2)
XK_WINO_WGRAD_VARIANT(4)
#undef XK_WINO_WGRAD_VARIANT

static void XK_FN(xk_wino_wgrad_tile)(const XK_T *x, const xk_image_t *xim, const XK_T *g, const xk_image_t *gim,
                                      int64_t n_img, int64_t th, int64_t tw, int64_t pad_y, int64_t pad_x, int64_t q0,
                                      int64_t n_src, const int64_t *index, int64_t degree, int64_t n_dst, int shared,
                                      XK_T *vbuf, XK_T *acc, int m)
{
    if (m == 4)
        XK_FN(xk_wino_wgrad_tile4)(x, xim, g, gim, n_img, th, tw, pad_y, pad_x, q0, n_src, index, degree, n_dst,
                                   shared, vbuf, acc);
    else
        XK_FN(xk_wino_wgrad_tile2)(x, xim, g, gim, n_img, th, tw, pad_y, pad_x, q0, n_src, index, degree, n_dst,
                                   shared, vbuf, acc);
}

/* grad_w[9 e + 3 r + c] = (G^T dU_e G)[r][c] for the n_edges sums dU_e = acc[nk e, nk e + nk)
 * (nk = (m + 2)^2). */
static void XK_FN(xk_wino_wgrad_finish)(XK_T *grad_w, const XK_T *acc, int64_t n_edges, int m)
{
    const XK_T h = (XK_T)0.5;
    if (m == 4) {  /* G^T u = (u0/4 - (u1 + u2)/6 + (u3 + u4)/24, (u2 - u1)/6 + (u3 - u4)/12,
                    *         (u3 + u4 - u1 - u2)/6 + u5) */
        const XK_T q = (XK_T)0.25, s6 = (XK_T)(1.0 / 6), s12 = (XK_T)(1.0 / 12), s24 = (XK_T)(1.0 / 24);
        for (int64_t e = 0; e < n_edges; e++) {
            const XK_T *u = acc + 36 * e;
            XK_T p[3][6];
            for (int c = 0; c < 6; c++) {  /* G^T dU */
                const XK_T a = u[6 + c] + u[12 + c], b = u[18 + c] + u[24 + c];
                p[0][c] = u[c] * q - a * s6 + b * s24;
                p[1][c] = (u[12 + c] - u[6 + c]) * s6 + (u[18 + c] - u[24 + c]) * s12;
                p[2][c] = (b - a) * s6 + u[30 + c];
            }
            for (int r = 0; r < 3; r++) {  /* (G^T dU) G */
                const XK_T a = p[r][1] + p[r][2], b = p[r][3] + p[r][4];
                grad_w[9 * e + 3 * r + 0] = p[r][0] * q - a * s6 + b * s24;
                grad_w[9 * e + 3 * r + 1] = (p[r][2] - p[r][1]) * s6 + (p[r][3] - p[r][4]) * s12;
                grad_w[9 * e + 3 * r + 2] = (b - a) * s6 + p[r][5];
            }
        }
        return;
    }
    for (int64_t e = 0; e < n_edges; e++) {
        const XK_T *u = acc + 16 * e;
        XK_T p[3][4];
        for (int c = 0; c < 4; c++) {  /* G^T dU */
            p[0][c] = u[c] + (u[4 + c] + u[8 + c]) * h;
            p[1][c] = (u[4 + c] - u[8 + c]) * h;
            p[2][c] = (u[4 + c] + u[8 + c]) * h + u[12 + c];
        }
        for (int r = 0; r < 3; r++) {  /* (G^T dU) G */
            grad_w[9 * e + 3 * r + 0] = p[r][0] + (p[r][1] + p[r][2]) * h;
            grad_w[9 * e + 3 * r + 1] = (p[r][1] - p[r][2]) * h;
            grad_w[9 * e + 3 * r + 2] = (p[r][1] + p[r][2]) * h + p[r][3];
        }
    }
}

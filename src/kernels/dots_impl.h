/* grad_weight's dot products: tap streams, the columns path's tiles, block expanders' shared
 * passes and stride-1 3x3 row tiles.
 * One element type per inclusion (src/cpu_kernels_impl.h): no include guard on purpose. */

/* out[t * ostride] += sum_{p<n} g[p] * xs[t][p] for the m <= XK_DOT_TAPS streams xs
 * of one pass, xs[t][p] masked by mk[p] when mk is given; n is a multiple of
 * 2 * XK_VL.  Each g load feeds m FMAs.  Two vector partial sums per stream,
 * reduced lane by lane in a fixed order. */
XK_INLINE void XK_FN(xk_dot_pass)(XK_T *out, int64_t ostride, const XK_T *g, const XK_T *const *xs,
                                  const XK_T *mk, const int m, int64_t n)
{
    XK_V acc[XK_DOT_TAPS][2];
    XK_UNROLL for (int t = 0; t < m; t++) acc[t][0] = acc[t][1] = XK_VSPLAT(XK_V, (XK_T)0);
    if (mk) {
        for (int64_t p = 0; p < n; p += 2 * XK_VL) {
            const XK_V g0 = XK_VLOAD(XK_V, g + p), g1 = XK_VLOAD(XK_V, g + p + XK_VL);
            const XK_V m0 = XK_VLOAD(XK_V, mk + p), m1 = XK_VLOAD(XK_V, mk + p + XK_VL);
            XK_UNROLL for (int t = 0; t < m; t++) {
                acc[t][0] += g0 * XK_VAND(XK_IV, XK_V, XK_VLOAD(XK_V, xs[t] + p), m0);
                acc[t][1] += g1 * XK_VAND(XK_IV, XK_V, XK_VLOAD(XK_V, xs[t] + p + XK_VL), m1);
            }
        }
    } else {
        for (int64_t p = 0; p < n; p += 2 * XK_VL) {
            const XK_V g0 = XK_VLOAD(XK_V, g + p), g1 = XK_VLOAD(XK_V, g + p + XK_VL);
            XK_UNROLL for (int t = 0; t < m; t++) {
                acc[t][0] += g0 * XK_VLOAD(XK_V, xs[t] + p);
                acc[t][1] += g1 * XK_VLOAD(XK_V, xs[t] + p + XK_VL);
            }
        }
    }
    XK_UNROLL for (int t = 0; t < m; t++) {
        XK_T lanes[2 * XK_VL];
        XK_T sum = 0;
        XK_VSTORE(XK_V, lanes, acc[t][0]);
        XK_VSTORE(XK_V, lanes + XK_VL, acc[t][1]);
        for (int l = 0; l < 2 * XK_VL; l++) sum += lanes[l];
        out[t * ostride] += sum;
    }
}

/* out[t * ostride] += dot(g, xs[t]) for t < count, XK_DOT_TAPS streams per pass. */
XK_INLINE void XK_FN(xk_dot_streams)(XK_T *out, int64_t ostride, const XK_T *g, const XK_T *const *xs,
                                     const XK_T *mk, int64_t count, int64_t n)
{
    int64_t t = 0;
    for (; t + XK_DOT_TAPS <= count; t += XK_DOT_TAPS)
        XK_FN(xk_dot_pass)(out + t * ostride, ostride, g, xs + t, mk, XK_DOT_TAPS, n);
    switch (count - t) {
    case 3: XK_FN(xk_dot_pass)(out + t * ostride, ostride, g, xs + t, mk, 3, n); break;
    case 2: XK_FN(xk_dot_pass)(out + t * ostride, ostride, g, xs + t, mk, 2, n); break;
    case 1: XK_FN(xk_dot_pass)(out + t * ostride, ostride, g, xs + t, mk, 1, n); break;
    default: break;
    }
}

/* grad_weight of one output over one packed group, n a multiple of 2 * XK_VL:
 *   out[i * ntap + t] += sum_{p<n} g[p] * x[chan[i] * cstride + toff[t] + p]
 * for i < degree, t < ntap, taken XK_DOT_TAPS (i, t) streams at a time so that
 * each g load feeds that many FMAs.  g is 0 at grid positions
 * that are no output, but x there may be Inf or NaN (pixels the conv never
 * reads, or reads through other taps): a mask mk (xk_valid_mask; NULL when
 * every grid position in an image is an output) zeroes x at those positions,
 * so 0 * Inf never happens where torch has no product at all. */
XK_CLONES static void XK_FN(xk_dot_taps)(XK_T *out, const XK_T *XK_RESTRICT g, const XK_T *XK_RESTRICT x,
                                         int64_t cstride, const int64_t *chan, int64_t degree,
                                         const XK_T *XK_RESTRICT mk, const int64_t *toff, int64_t ntap,
                                         int64_t n)
{
    const int64_t count = degree * ntap;
    const XK_T *xs[XK_DOT_TAPS];
    for (int64_t s = 0; s < count; s += XK_DOT_TAPS) {
        const int64_t m = count - s < XK_DOT_TAPS ? count - s : XK_DOT_TAPS;
        for (int64_t k = 0; k < m; k++) xs[k] = x + chan[(s + k) / ntap] * cstride + toff[(s + k) % ntap];
        XK_FN(xk_dot_streams)(out + s, 1, g, xs, mk, m, n);
    }
}

/* sums[k] = the sum of acc[k]'s lanes, k < m (4 or 8): the m vectors reduced together by a
 * fixed tree of pairwise lane sums (a short dot product cannot afford a serial reduction
 * per vector). */
XK_INLINE void XK_FN(xk_hsum)(XK_T *sums, const XK_V *acc, const int m)
{
#if XK_SHUFFLE && XK_VL == 8
#  define XK_HADD(a, b) (__builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14) \
                         + __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15))
    const XK_V q0 = XK_HADD(XK_HADD(acc[0], acc[1]), XK_HADD(acc[2], acc[3]));  /* 0-3, in two halves */
    if (m == 4) {
        const XK_V r = q0 + __builtin_shufflevector(q0, q0, 4, 5, 6, 7, 0, 1, 2, 3);
        XK_UNROLL for (int k = 0; k < 4; k++) sums[k] = r[k];
    } else {
        const XK_V q1 = XK_HADD(XK_HADD(acc[4], acc[5]), XK_HADD(acc[6], acc[7]));
        XK_VSTORE(XK_V, sums, __builtin_shufflevector(q0, q1, 0, 1, 2, 3, 8, 9, 10, 11)
                                  + __builtin_shufflevector(q0, q1, 4, 5, 6, 7, 12, 13, 14, 15));
    }
#  undef XK_HADD
#elif XK_SHUFFLE && XK_VL == 4
#  define XK_HADD(a, b) (__builtin_shufflevector(a, b, 0, 4, 2, 6) + __builtin_shufflevector(a, b, 1, 5, 3, 7))
    XK_UNROLL for (int k = 0; k < m; k += 4) {
        const XK_V ab = XK_HADD(acc[k], acc[k + 1]), cd = XK_HADD(acc[k + 2], acc[k + 3]);
        XK_VSTORE(XK_V, sums + k, __builtin_shufflevector(ab, cd, 0, 1, 4, 5)
                                      + __builtin_shufflevector(ab, cd, 2, 3, 6, 7));
    }
#  undef XK_HADD
#else
    XK_UNROLL for (int k = 0; k < m; k++) {
        XK_T lanes[XK_VL];
        XK_T sum = 0;
        XK_VSTORE(XK_V, lanes, acc[k]);
        for (int l = 0; l < XK_VL; l++) sum += lanes[l];
        sums[k] = sum;
    }
#endif
}

/* sums[k] = sum_{p<n} g[p] * xs[k][p] for the m (4 or 8) streams xs (n a multiple of XK_VL):
 * one vector partial sum per stream, so each load of g feeds m FMAs. */
#define XK_DOT_COLS 8
XK_INLINE void XK_FN(xk_dot_cols_pass)(XK_T *sums, const XK_T *g, const XK_T *const *xs, const int m, int64_t n)
{
    XK_V acc[XK_DOT_COLS];
    XK_UNROLL for (int k = 0; k < m; k++) acc[k] = XK_VSPLAT(XK_V, (XK_T)0);
    for (int64_t p = 0; p < n; p += XK_VL) {
        const XK_V gv = XK_VLOAD(XK_V, g + p);
        XK_UNROLL for (int k = 0; k < m; k++) acc[k] += gv * XK_VLOAD(XK_V, xs[k] + p);
    }
    XK_FN(xk_hsum)(sums, acc, m);
}

/* The XK_TAP_ROWS x XK_TAP_OUTS dot products of a channel's taps c[t] (rows of the image
 * columns) with the gradients g[s] of outputs that read the channel, over positions
 * [0, n) (a multiple of XK_VL): sums[t * XK_TAP_OUTS + s] = sum_p c[t][p] * g[s][p].  A
 * register tile: per vector of positions 7 loads feed 12 FMAs (one row and one output at a
 * time: 9 loads per 8). */
#define XK_TAP_ROWS 3
#define XK_TAP_OUTS 4
XK_INLINE void XK_FN(xk_dot_tap_tile)(XK_T *sums, const XK_T *const *c, const XK_T *const *g, int64_t n)
{
    XK_V acc[XK_TAP_ROWS * XK_TAP_OUTS];
    XK_UNROLL for (int k = 0; k < XK_TAP_ROWS * XK_TAP_OUTS; k++) acc[k] = XK_VSPLAT(XK_V, (XK_T)0);
    for (int64_t p = 0; p < n; p += XK_VL) {
        XK_V x[XK_TAP_ROWS];
        XK_UNROLL for (int t = 0; t < XK_TAP_ROWS; t++) x[t] = XK_VLOAD(XK_V, c[t] + p);
        XK_UNROLL for (int s = 0; s < XK_TAP_OUTS; s++) {
            const XK_V y = XK_VLOAD(XK_V, g[s] + p);
            XK_UNROLL for (int t = 0; t < XK_TAP_ROWS; t++) acc[t * XK_TAP_OUTS + s] += x[t] * y;
        }
    }
    XK_FN(xk_hsum)(sums, acc, 8);
    XK_FN(xk_hsum)(sums + 8, acc + 8, 4);
}

/* grad_weight by the columns path over a channel's taps: channels u_lo <= u < u_hi, positions
 * [p0, p0 + n) (n a multiple of XK_VL, g zero beyond the real positions).  Channel u's kk
 * rows u * kk + t of col meet the outputs that read u in groups of XK_TAP_OUTS, groups
 * [gptr[u], gptr[u + 1]): slot q * XK_TAP_OUTS + s is output sv[...] (n_dst, g's zero row,
 * in a group's unused slots) and weight entries sw[...] + t (sw < 0: unused):
 *   gw[sw + t] += sum_p g[sv * gstride + p] * col[(u * kk + t) * cstride + p],
 * XK_TAP_ROWS taps at a time (past the last tap, rows of u's first tap stand in and their
 * sums are dropped). */
XK_CLONES static void XK_FN(xk_dot_columns_taps)(XK_T *gw, const XK_T *XK_RESTRICT g, int64_t gstride,
                                                 const XK_T *XK_RESTRICT col, int64_t cstride, int64_t kk,
                                                 const int64_t *gptr, const int64_t *sv, const int64_t *sw,
                                                 int64_t u_lo, int64_t u_hi, int64_t p0, int64_t n)
{
    XK_T sums[XK_TAP_ROWS * XK_TAP_OUTS];
    const XK_T *c[XK_TAP_ROWS];
    const XK_T *gs[XK_TAP_OUTS];
    for (int64_t u = u_lo; u < u_hi; u++) {
        const XK_T *cu = col + u * kk * cstride + p0;
        for (int64_t q = gptr[u]; q < gptr[u + 1]; q++) {
            const int64_t *v = sv + q * XK_TAP_OUTS, *w = sw + q * XK_TAP_OUTS;
            for (int s = 0; s < XK_TAP_OUTS; s++) gs[s] = g + v[s] * gstride + p0;
            for (int64_t t0 = 0; t0 < kk; t0 += XK_TAP_ROWS) {
                for (int t = 0; t < XK_TAP_ROWS; t++) c[t] = cu + (t0 + t < kk ? t0 + t : 0) * cstride;
                XK_FN(xk_dot_tap_tile)(sums, c, gs, n);
                for (int t = 0; t < XK_TAP_ROWS && t0 + t < kk; t++)
                    for (int s = 0; s < XK_TAP_OUTS; s++)
                        if (w[s] >= 0) gw[w[s] + t0 + t] += sums[t * XK_TAP_OUTS + s];
            }
        }
    }
}

/* grad_weight by the columns path, destinations v_lo <= v < v_hi, positions [p0, p0 + n)
 * (n a multiple of XK_VL, g zero beyond the real positions):
 *   gw[wpos[j]] += sum_p g[v * gstride + p] * col[rows[j] * cstride + p]
 * for v's terms j in each of the nb blocks of source rows (block b: rows [b * block_rows,
 * min((b + 1) * block_rows, n_src))), [ptr[b * (n_dst + 1) + v], ptr[b * (n_dst + 1) + v + 1]),
 * a block at a time: its rows' stretch [p0, p0 + n) is copied into panel (block_rows * n
 * scratch) and stays in L1 while every destination reads it (rows read in place that lie a
 * multiple of 4 KiB apart would share a few L1 sets).  Terms go XK_DOT_COLS (or, for the
 * last few, 4) to a pass, the unused streams of a pass reading g itself. */
XK_CLONES static void XK_FN(xk_dot_columns)(XK_T *gw, const XK_T *XK_RESTRICT g, int64_t gstride,
                                            const XK_T *XK_RESTRICT col, int64_t cstride, const int64_t *rows,
                                            const int64_t *wpos, const int64_t *ptr, int64_t nb, int64_t n_dst,
                                            int64_t v_lo, int64_t v_hi, int64_t p0, int64_t n,
                                            int64_t block_rows, int64_t n_src, XK_T *XK_RESTRICT panel)
{
    const XK_T *xs[XK_DOT_COLS];
    XK_T sums[XK_DOT_COLS];
    for (int64_t b = 0; b < nb; b++) {
        const int64_t *pb = ptr + b * (n_dst + 1), r0 = b * block_rows;
        const int64_t r1 = r0 + block_rows < n_src ? r0 + block_rows : n_src;
        if (pb[v_lo] == pb[v_hi])
            continue;  /* no term of these destinations reads the block */
        for (int64_t r = r0; r < r1; r++)
            for (int64_t p = 0; p < n; p += XK_VL)
                XK_VSTORE(XK_V, panel + (r - r0) * n + p, XK_VLOAD(XK_V, col + r * cstride + p0 + p));
        for (int64_t v = v_lo; v < v_hi; v++) {
            const XK_T *gv = g + v * gstride + p0;
            for (int64_t j = pb[v]; j < pb[v + 1]; j += XK_DOT_COLS) {
                const int64_t m = pb[v + 1] - j < XK_DOT_COLS ? pb[v + 1] - j : XK_DOT_COLS;
                for (int64_t k = 0; k < XK_DOT_COLS; k++) xs[k] = k < m ? panel + (rows[j + k] - r0) * n : gv;
                if (m > 4)
                    XK_FN(xk_dot_cols_pass)(sums, gv, xs, XK_DOT_COLS, n);
                else
                    XK_FN(xk_dot_cols_pass)(sums, gv, xs, 4, n);
                for (int64_t k = 0; k < m; k++) gw[wpos[j + k]] += sums[k];
            }
        }
    }
}

/* out[o * ostride + k] += sum_{p<n} g[o * gstride + p] * xs[k][p] for the XK_SHARE
 * outputs o of a block expander's run and the m <= XK_DOT_SHARED streams xs of one
 * pass (masked by mk when given; n a multiple of XK_VL): each x load feeds XK_SHARE
 * FMAs, each g load m.  One vector partial sum per (o, k), reduced lane by lane in
 * a fixed order. */
#define XK_DOT_SHARED 3
XK_INLINE void XK_FN(xk_dot_pass_shared)(XK_T *out, int64_t ostride, const XK_T *g, int64_t gstride,
                                         const XK_T *const *xs, const XK_T *mk, const int m, int64_t n)
{
    XK_V acc[XK_SHARE][XK_DOT_SHARED];
    XK_UNROLL for (int o = 0; o < XK_SHARE; o++)
        XK_UNROLL for (int k = 0; k < m; k++) acc[o][k] = XK_VSPLAT(XK_V, (XK_T)0);
    for (int64_t p = 0; p < n; p += XK_VL) {
        XK_V xv[XK_DOT_SHARED];
        if (mk) {
            const XK_V mv = XK_VLOAD(XK_V, mk + p);
            XK_UNROLL for (int k = 0; k < m; k++) xv[k] = XK_VAND(XK_IV, XK_V, XK_VLOAD(XK_V, xs[k] + p), mv);
        } else {
            XK_UNROLL for (int k = 0; k < m; k++) xv[k] = XK_VLOAD(XK_V, xs[k] + p);
        }
        XK_UNROLL for (int o = 0; o < XK_SHARE; o++) {
            const XK_V gv = XK_VLOAD(XK_V, g + o * gstride + p);
            XK_UNROLL for (int k = 0; k < m; k++) acc[o][k] += gv * xv[k];
        }
    }
    XK_UNROLL for (int o = 0; o < XK_SHARE; o++) {
        XK_UNROLL for (int k = 0; k < m; k++) {
            XK_T lanes[XK_VL];
            XK_T sum = 0;
            XK_VSTORE(XK_V, lanes, acc[o][k]);
            for (int l = 0; l < XK_VL; l++) sum += lanes[l];
            out[o * ostride + k] += sum;
        }
    }
}

/* xk_dot_taps for the XK_SHARE outputs of a run with equal channel lists (block
 * expanders; g and out of output o at o * gstride and o * degree * ntap):
 * XK_DOT_SHARED (i, t) streams at a time, each x load shared by the run. */
XK_CLONES static void XK_FN(xk_dot_taps_shared)(XK_T *out, const XK_T *XK_RESTRICT g, int64_t gstride,
                                                const XK_T *XK_RESTRICT x, int64_t cstride, const int64_t *chan,
                                                int64_t degree, const XK_T *XK_RESTRICT mk, const int64_t *toff,
                                                int64_t ntap, int64_t n)
{
    const int64_t count = degree * ntap;
    const XK_T *xs[XK_DOT_SHARED];
    for (int64_t s = 0; s < count; s += XK_DOT_SHARED) {
        const int64_t m = count - s < XK_DOT_SHARED ? count - s : XK_DOT_SHARED;
        for (int64_t k = 0; k < m; k++) xs[k] = x + chan[(s + k) / ntap] * cstride + toff[(s + k) % ntap];
        if (m == XK_DOT_SHARED) XK_FN(xk_dot_pass_shared)(out + s, count, g, gstride, xs, mk, XK_DOT_SHARED, n);
        else if (m == 2) XK_FN(xk_dot_pass_shared)(out + s, count, g, gstride, xs, mk, 2, n);
        else XK_FN(xk_dot_pass_shared)(out + s, count, g, gstride, xs, mk, 1, n);
    }
}

/* grad_weight of one term of a stride-1 3x3 conv on a grid of rows of wb positions
 * and n_rows rows (a multiple of XK_DOT_ROWS) whose first cols columns (whole vectors,
 * cols <= wb) hold every nonzero of g:
 *   out[ky * 3 + kx] += sum_{rows r, columns c < cols} g[r*wb + c] * x[r*wb + c + ky * wb + kx]
 * XK_DOT_ROWS rows of g at a time stay in registers while x is read row by row, so
 * each x vector feeds the up to three taps (ky) that pair it with one of those g
 * rows: 22 loads per 36 FMAs where xk_dot_taps needs 45.  Nine vector partial sums,
 * reduced lane by lane in a fixed order. */
#define XK_DOT_ROWS 4
XK_CLONES static void XK_FN(xk_dot_rows3)(XK_T *out, const XK_T *XK_RESTRICT g, const XK_T *XK_RESTRICT x,
                                          int64_t wb, int64_t cols, int64_t n_rows)
{
    XK_V acc[9];
    XK_UNROLL for (int t = 0; t < 9; t++) acc[t] = XK_VSPLAT(XK_V, (XK_T)0);
    for (int64_t r0 = 0; r0 < n_rows; r0 += XK_DOT_ROWS) {
        for (int64_t a = 0; a < cols; a += XK_VL) {
            const XK_T *gr = g + r0 * wb + a, *xr = x + r0 * wb + a;
            XK_V gv[XK_DOT_ROWS];
            XK_UNROLL for (int r = 0; r < XK_DOT_ROWS; r++) gv[r] = XK_VLOAD(XK_V, gr + r * wb);
            XK_UNROLL for (int c = 0; c < 3; c++) {
                XK_UNROLL for (int rho = 0; rho < XK_DOT_ROWS + 2; rho++) {
                    const XK_V xv = XK_VLOAD(XK_V, xr + rho * wb + c);
                    XK_UNROLL for (int ky = 0; ky < 3; ky++)
                        if (rho - ky >= 0 && rho - ky < XK_DOT_ROWS) acc[ky * 3 + c] += gv[rho - ky] * xv;
                }
            }
        }
    }
    XK_UNROLL for (int t = 0; t < 9; t++) {
        XK_T lanes[XK_VL];
        XK_T sum = 0;
        XK_VSTORE(XK_V, lanes, acc[t]);
        for (int l = 0; l < XK_VL; l++) sum += lanes[l];
        out[t] += sum;
    }
}

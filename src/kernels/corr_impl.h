/* Correlation tiles over packed planes: k x k taps from channel blocks kept in L1, the
 * block expanders' shared loads, and the spread of a 1x1 block expander's grad_input.
 * One element type per inclusion (src/cpu_kernels_impl.h): no include guard on purpose. */

/* acc += the 3x3 taps of one term on a tile of R = XK_NACC / A grid rows of A
 * vectors, rows wb apart (any wb: a tile reaching past the end of a row computes
 * positions of the next one, which its scatter drops), tap r*3 + c at offset
 * r*wb + c from s0: input row rho (vectors at rho*wb + c) feeds output rows rho,
 * rho - 1 and rho - 2, so each vector load serves up to three taps (A a
 * compile-time constant: every accumulator index is one).  Per output: columns c
 * in order, rows r in order. */
XK_INLINE void XK_FN(xk_corr_rows3)(XK_V *acc, const XK_T *s0, int64_t wb, const XK_T *wj, const int A)
{
    const int R = XK_NACC / A;
    XK_UNROLL for (int c = 0; c < 3; c++) {
        const XK_T w0 = wj[c], w1 = wj[3 + c], w2 = wj[6 + c];
        XK_UNROLL for (int rho = 0; rho < R + 2; rho++) {
            XK_UNROLL for (int a = 0; a < A; a++) {
                const XK_V x = XK_VLOAD(XK_V, s0 + c + rho * wb + a * XK_VL);
                if (rho < R) acc[rho * A + a] += w0 * x;
                if (rho >= 1 && rho <= R) acc[(rho - 1) * A + a] += w1 * x;
                if (rho >= 2) acc[(rho - 2) * A + a] += w2 * x;
            }
        }
    }
}

/* xk_corr_terms for 3x3 taps r*3 + c at offsets toff[0] + r*wb + c, tiles of A-vector rows. */
XK_INLINE void XK_FN(xk_corr_terms3)(XK_V *acc, const XK_T *XK_RESTRICT src, int64_t cstride, int64_t p0,
                                     const int64_t *chan, const int64_t *wrow, int64_t lo, int64_t hi,
                                     const XK_T *w, int64_t wstride, const int64_t *toff, int64_t wb,
                                     const int A)
{
    const XK_T *s = src + p0 + toff[0];
    for (int64_t j = lo; j < hi; j++)
        XK_FN(xk_corr_rows3)(acc, s + chan[j] * cstride, wb, w + wrow[j] * wstride, A);
}

/* acc[a] += sum_{j in [lo, hi)} sum_{t<ntap} w[wrow[j]*wstride + t] * src[chan[j]*cstride + toff[t] + p0 + p]
 * for the N vectors a of the tile, in list order; a 1x1 kernel (one tap) skips the tap loop. */
XK_INLINE void XK_FN(xk_corr_terms)(XK_V *acc, const XK_T *XK_RESTRICT src, int64_t cstride, int64_t p0,
                                    const int64_t *chan, const int64_t *wrow, int64_t lo, int64_t hi,
                                    const XK_T *w, int64_t wstride, const int64_t *toff, int64_t ntap,
                                    const int N)
{
    if (ntap == 1) {
        const XK_T *s = src + p0 + toff[0];
        for (int64_t j = lo; j < hi; j++) {
            const XK_T wt = w[wrow[j] * wstride];
            const XK_T *x = s + chan[j] * cstride;
            XK_UNROLL for (int a = 0; a < N; a++)
                acc[a] += wt * XK_VLOAD(XK_V, x + a * XK_VL);
        }
        return;
    }
    for (int64_t j = lo; j < hi; j++) {
        const XK_T *s = src + chan[j] * cstride + p0;
        const XK_T *wj = w + wrow[j] * wstride;
        for (int64_t t = 0; t < ntap; t++) {
            const XK_T wt = wj[t];
            const XK_T *x = s + toff[t];
            XK_UNROLL for (int a = 0; a < N; a++)
                acc[a] += wt * XK_VLOAD(XK_V, x + a * XK_VL);
        }
    }
}

/* The XK_SHARE outputs o < XK_SHARE of one block of outputs that read the same
 * channels (block expanders): term j of the block is chan[j], its weights for
 * tap t and output o are w[wrow[j] * wstride + t * XK_SHARE + o] (interleaved by
 * output, so that one base pointer reaches all of them).  acc[o] += those terms on
 * XK_SACC vectors from p0, in list order; each vector load feeds XK_SHARE FMAs.  (1x1
 * convs take it only with panels too large for the quads, xk_quad_panel.) */
XK_INLINE void XK_FN(xk_corr_shared)(XK_V acc[XK_SHARE][XK_SACC], const XK_T *XK_RESTRICT src, int64_t cstride,
                                     int64_t p0, const int64_t *chan, const int64_t *wrow, int64_t lo,
                                     int64_t hi, const XK_T *w, int64_t wstride, const int64_t *toff,
                                     int64_t ntap)
{
    for (int64_t j = lo; j < hi; j++) {
        const XK_T *s = src + chan[j] * cstride + p0;
        const XK_T *wj = w + wrow[j] * wstride;
        for (int64_t t = 0; t < ntap; t++) {
            const XK_T *x = s + toff[t];
            XK_V xv[XK_SACC];  /* the loads first, then one weight at a time: 16 registers in all */
            XK_UNROLL for (int a = 0; a < XK_SACC; a++) xv[a] = XK_VLOAD(XK_V, x + a * XK_VL);
            XK_UNROLL for (int o = 0; o < XK_SHARE; o++) {
                const XK_V wt = XK_VSPLAT(XK_V, wj[t * XK_SHARE + o]);
                XK_UNROLL for (int a = 0; a < XK_SACC; a++) acc[o][a] += wt * xv[a];
            }
        }
    }
}

/* For dd < nd: part[dd] (at part + dd * XK_TILE, N vectors; bias[dd] or 0 when first) += the terms
 * j in [ptr[dd * n_cb], ptr[dd * n_cb + 1]) of output dd: A > 0, xk_corr_terms3 (rows of
 * A vectors, N = XK_NACC); A = 0, xk_corr_terms; A < 0, xk_corr_terms with one tap.
 * Inlined into one small cloned function per tap pattern and width (below): in one
 * large function the compiler spilled the loop's pointers to the stack, which cost
 * 20-30% in the inner loop. */
XK_INLINE void XK_FN(xk_corr_block)(XK_T *part, const XK_T *XK_RESTRICT src, int64_t cstride,
                                    int64_t p0, const int64_t *ptr, int64_t n_cb, const int64_t *chan,
                                    const int64_t *wrow, const XK_T *w, int64_t wstride, const int64_t *toff,
                                    int64_t ntap, int64_t wb, const XK_T *bias, int first, int64_t nd,
                                    const int A, const int N)
{
    for (int64_t dd = 0; dd < nd; dd++) {
        XK_V acc[XK_NACC];
        XK_T *keep = part + dd * XK_TILE;
        const int64_t lo = ptr[dd * n_cb], hi = ptr[dd * n_cb + 1];
        if (first) {
            const XK_T b = bias ? bias[dd] : (XK_T)0;
            XK_UNROLL for (int a = 0; a < N; a++) acc[a] = XK_VSPLAT(XK_V, b);
        } else {
            if (lo == hi) continue;
            XK_UNROLL for (int a = 0; a < N; a++) acc[a] = XK_VLOAD(XK_V, keep + a * XK_VL);
        }
        if (A > 0)
            XK_FN(xk_corr_terms3)(acc, src, cstride, p0, chan, wrow, lo, hi, w, wstride, toff, wb, A);
        else
            XK_FN(xk_corr_terms)(acc, src, cstride, p0, chan, wrow, lo, hi, w, wstride, toff, A < 0 ? 1 : ntap, N);
        XK_UNROLL for (int a = 0; a < N; a++) XK_VSTORE(XK_V, keep + a * XK_VL, acc[a]);
    }
}

#define XK_BLOCK_VARIANT(suffix, A_, N_)                                                                     \
    XK_CLONES static void XK_FN(xk_corr_block_##suffix)(                                                     \
        XK_T *part, const XK_T *XK_RESTRICT src, int64_t cstride, int64_t p0,                               \
        const int64_t *ptr, int64_t n_cb, const int64_t *chan, const int64_t *wrow, const XK_T *w,         \
        int64_t wstride, const int64_t *toff, int64_t ntap, int64_t wb, const XK_T *bias, int first,       \
        int64_t nd)                                                                                          \
    {                                                                                                        \
        XK_FN(xk_corr_block)(part, src, cstride, p0, ptr, n_cb, chan, wrow, w, wstride, toff, ntap,          \
                             wb, bias, first, nd, A_, N_);                                                   \
    }
XK_BLOCK_VARIANT(taps, 0, XK_NACC)
XK_BLOCK_VARIANT(tap1, -1, XK_NACC)
XK_BLOCK_VARIANT(tap1_t4, -1, 4)  /* the narrower last tile of a run (one tap only) */
XK_BLOCK_VARIANT(tap1_t8, -1, 8)
XK_BLOCK_VARIANT(rows3a1, 1, XK_NACC)
XK_BLOCK_VARIANT(rows3a2, 2, XK_NACC)
XK_BLOCK_VARIANT(rows3a4, 4, XK_NACC)
#undef XK_BLOCK_VARIANT

/* xk_corr_block for outputs in runs of XK_SHARE with equal channel lists (shared,
 * see xk_corr_tiles), on the XK_SACC vectors of the tile from vector a0: each run's
 * outputs share every vector load (xk_corr_shared). */
XK_CLONES static void XK_FN(xk_corr_block_shared)(XK_T *part, const XK_T *XK_RESTRICT src, int64_t cstride,
                                                  int64_t p0, const int64_t *ptr, int64_t n_cb,
                                                  const int64_t *chan, const int64_t *wrow, const XK_T *w,
                                                  int64_t wstride, const int64_t *toff, int64_t ntap,
                                                  const XK_T *bias, int first, int64_t nd, int64_t a0)
{
    for (int64_t dd = 0; dd < nd; dd += XK_SHARE) {
        const int64_t lo = ptr[dd * n_cb], hi = ptr[dd * n_cb + 1];
        if (!first && lo == hi) continue;
        XK_V acc[XK_SHARE][XK_SACC];
        XK_UNROLL for (int o = 0; o < XK_SHARE; o++) {
            const XK_T *keep = part + (dd + o) * XK_TILE + a0 * XK_VL;
            const XK_T b = bias ? bias[dd + o] : (XK_T)0;
            XK_UNROLL for (int a = 0; a < XK_SACC; a++) {
                if (first) acc[o][a] = XK_VSPLAT(XK_V, b);
                else acc[o][a] = XK_VLOAD(XK_V, keep + a * XK_VL);
            }
        }
        XK_FN(xk_corr_shared)(acc, src, cstride, p0 + a0 * XK_VL, chan, wrow, lo, hi, w, wstride, toff, ntap);
        XK_UNROLL for (int o = 0; o < XK_SHARE; o++) {
            XK_T *keep = part + (dd + o) * XK_TILE + a0 * XK_VL;
            XK_UNROLL for (int a = 0; a < XK_SACC; a++) XK_VSTORE(XK_V, keep + a * XK_VL, acc[o][a]);
        }
    }
}

/* One tile (grid positions [p0, p0 + nvec * XK_VL)) of nd <= XK_VBLOCK outputs of a
 * correlation over term lists, scattered to dst + dd * dst_stride:
 *   tile_dd[p] = bias[dd] + sum over channel blocks cb, terms j of (dd, cb), taps t of
 *                w[wrow[j]*wstride + t] * src[chan[j]*cstride + toff[t] + p0 + p]
 * Terms are grouped by channel block (ptr: CSR over (dd, cb), dd-major) so that
 * the planes the nd outputs read in one block stay in L1; partial sums wait in
 * part between blocks.  With shared, every XK_SHARE consecutive outputs
 * (from 0; nd a multiple of XK_SHARE) have the same channel lists, read from the
 * first one's list, and the weights are interleaved by output (xk_corr_shared):
 * they run together, each vector load feeding all of them, XK_SACC vectors of
 * the tile at a time through all channel blocks (blocked for that width).  rows3 = wb > 0 (from _rows3 in cpu_kernels.pyx):
 * the taps are 3x3, tap r*3 + c at offset toff[0] + r*wb + c, and the tile is
 * XK_NACC / a3 grid rows of a3 vectors (a3 in 1, 2, 4; p0 its first position), so
 * loads are shared between rows of taps (xk_corr_rows3).  Each output's terms are summed in list
 * order either way, so the result does not depend on which thread runs the
 * tile.  The tile is nvec vectors:
 * XK_NACC, or 4 or 8 for the last tile of a run with one tap and no rows3 (so a run
 * wastes less than 4 vectors on positions past its end); the positions it covers
 * are [p0, p0 + nvec * XK_VL). */
XK_CLONES static void XK_FN(xk_corr_tiles)(
    const XK_T *XK_RESTRICT src, int64_t cstride, int64_t p0, int64_t nvec,
    const int64_t *ptr, int64_t n_cb, const int64_t *chan, const int64_t *wrow,
    const XK_T *w, int64_t wstride, int64_t shared, const int64_t *toff, int64_t ntap, int64_t rows3,
    int64_t a3, const XK_T *bias, int64_t nd, XK_T *dst, int64_t dst_stride,
    int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
{
    XK_T part[XK_VBLOCK * XK_TILE];
    void (*run)(XK_T *, const XK_T *, int64_t, int64_t, const int64_t *, int64_t, const int64_t *,
                const int64_t *, const XK_T *, int64_t, const int64_t *, int64_t, int64_t, const XK_T *, int,
                int64_t);
    switch (rows3 > 0 ? a3 : 0) {
    case 1: run = XK_FN(xk_corr_block_rows3a1); break;
    case 2: run = XK_FN(xk_corr_block_rows3a2); break;
    case 4: run = XK_FN(xk_corr_block_rows3a4); break;
    default:
        if (ntap != 1) run = XK_FN(xk_corr_block_taps);  /* also a phase with no taps: zeros */
        else if (nvec <= 4) run = XK_FN(xk_corr_block_tap1_t4);
        else if (nvec <= 8) run = XK_FN(xk_corr_block_tap1_t8);
        else run = XK_FN(xk_corr_block_tap1);
        break;
    }
    if (shared) {
        for (int64_t a0 = 0; a0 < XK_NACC; a0 += XK_SACC)  /* the whole tile (the plane has room) */
            for (int64_t cb = 0; cb < n_cb; cb++)
                XK_FN(xk_corr_block_shared)(part, src, cstride, p0, ptr + cb, n_cb, chan, wrow, w, wstride,
                                            toff, ntap, bias, cb == 0, nd, a0);
    } else {
        for (int64_t cb = 0; cb < n_cb; cb++)
            run(part, src, cstride, p0, ptr + cb, n_cb, chan, wrow, w, wstride, toff, ntap, rows3, bias,
                cb == 0, nd);
    }
    if (rows3 > 0 && !shared) {
        /* a rows3 tile is XK_NACC / a3 rows of a3 vectors, rows3 apart in the grid */
        for (int64_t dd = 0; dd < nd; dd++)
            XK_FN(xk_scatter_rows)(part + dd * XK_TILE, p0, XK_NACC / a3, a3 * XK_VL, dst + dd * dst_stride, n_img,
                                   lay, sc);
        return;
    }
    for (int64_t dd = 0; dd < nd; dd++)
        XK_FN(xk_scatter)(part + dd * XK_TILE, p0, nvec * XK_VL, dst + dd * dst_stride, n_img, lay, sc);
}

/* grad_input of a 1x1 block expander on XK_SACC vectors (width = XK_SACC * XK_VL
 * positions): for the runs r < n_runs of XK_SHARE outputs in order, and each run's
 * terms d < degree in order (input u = chan[r * degree + d]),
 *   part[u * width + q] += sum_{o < XK_SHARE, in order} w[(r * degree + d) * XK_SHARE + o]
 *                                                       * g[(r * XK_SHARE + o) * gstride + q]
 * A run's g vectors stay in registers for all its terms (the transposed form of
 * xk_corr_shared): per term 4 weight broadcasts, 3 loads and 3 stores of part for 12
 * FMAs, where gathering over the reverse adjacency loads once per FMA. */
XK_INLINE void XK_FN(xk_spread_shared)(XK_T *XK_RESTRICT part, const XK_T *XK_RESTRICT g, int64_t gstride,
                                       const int64_t *chan, const XK_T *w, int64_t n_runs, int64_t degree)
{
    for (int64_t r = 0; r < n_runs; r++) {
        XK_V gv[XK_SHARE][XK_SACC];
        XK_UNROLL for (int o = 0; o < XK_SHARE; o++)
            XK_UNROLL for (int a = 0; a < XK_SACC; a++)
                gv[o][a] = XK_VLOAD(XK_V, g + (r * XK_SHARE + o) * gstride + a * XK_VL);
        const int64_t *cr = chan + r * degree;
        const XK_T *wr = w + r * degree * XK_SHARE;
        for (int64_t d = 0; d < degree; d++) {
            XK_T *pu = part + cr[d] * (XK_SACC * XK_VL);
            XK_V acc[XK_SACC];
            XK_UNROLL for (int a = 0; a < XK_SACC; a++) acc[a] = XK_VLOAD(XK_V, pu + a * XK_VL);
            XK_UNROLL for (int o = 0; o < XK_SHARE; o++) {
                const XK_V wt = XK_VSPLAT(XK_V, wr[d * XK_SHARE + o]);
                XK_UNROLL for (int a = 0; a < XK_SACC; a++) acc[a] += wt * gv[o][a];
            }
            XK_UNROLL for (int a = 0; a < XK_SACC; a++) XK_VSTORE(XK_V, pu + a * XK_VL, acc[a]);
        }
    }
}

/* One tile (grid positions [p0, p0 + XK_TILE)) of a 1x1 block expander's grad_input:
 * every one of the n_dst inputs, XK_SACC vectors at a time over the panels that hold
 * grid positions (xk_spread_shared into part, n_dst * XK_TILE scratch, zeroed here), then
 * scattered to dst + u * dst_stride.
 * src: the packed grad_out planes (cstride apart, n_runs * XK_SHARE of them). */
XK_CLONES static void XK_FN(xk_spread_tile)(const XK_T *XK_RESTRICT src, int64_t cstride, int64_t p0,
                                            const int64_t *chan, const XK_T *w, int64_t n_runs, int64_t degree,
                                            int64_t n_dst, XK_T *part, XK_T *dst, int64_t dst_stride,
                                            int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
{
    const int64_t width = XK_SACC * XK_VL, end = n_img * lay->hb * lay->wb;
    const int64_t n = end - p0 < XK_TILE ? end - p0 : XK_TILE, n_panels = (n + width - 1) / width;
    for (int64_t c = 0; c < n_panels; c++) {  /* the panels that hold grid positions (the plane has room) */
        XK_T *pc = part + c * n_dst * width;
        memset(pc, 0, (size_t)(n_dst * width) * sizeof(XK_T));
        XK_FN(xk_spread_shared)(pc, src + p0 + c * width, cstride, chan, w, n_runs, degree);
    }
    XK_T tile[XK_TILE];
    for (int64_t u = 0; u < n_dst; u++) {
        for (int64_t c = 0; c < n_panels; c++)
            memcpy(tile + c * width, part + (c * n_dst + u) * width, (size_t)width * sizeof(XK_T));
        XK_FN(xk_scatter)(tile, p0, n, dst + u * dst_stride, n_img, lay, sc);
    }
}

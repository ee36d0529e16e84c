/* Body of cpu_kernels.h for one element type; no include guard on purpose.
 * Expects XK_T (element), XK_V (its vector), XK_VL (lanes), XK_TILE (grid
 * positions per tile, a multiple of 2 * XK_VL) and XK_FN(name) (suffixed name). */

/* dst[0, lay->len) <- n_img images of one source channel through frame fr,
 * zeros wherever the frame falls outside the source and after the images. */
static void XK_FN(xk_pack)(XK_T *XK_RESTRICT dst, const XK_T *XK_RESTRICT src, int64_t n_img,
                           const xk_image_t *im, const xk_layout_t *lay, const xk_frame_t *fr)
{
    const int64_t hb = lay->hb, wb = lay->wb, filled = n_img * hb * wb;
    /* Plane columns b whose source column b*step_x + off_x lies in [0, width). */
    int64_t b_lo = fr->off_x >= 0 ? 0 : (fr->step_x - 1 - fr->off_x) / fr->step_x;
    int64_t b_hi = fr->off_x <= im->width - 1 ? (im->width - 1 - fr->off_x) / fr->step_x + 1 : 0;
    const int64_t col = fr->step_x * im->col;
    if (b_hi > wb) b_hi = wb;
    if (b_lo > b_hi) b_lo = b_hi;
    /* A plane that is exactly the (contiguous) source image: 1x1 convs without padding. */
    const int whole = fr->step_y == 1 && fr->off_y == 0 && fr->off_x == 0 && col == 1 && b_hi == wb
                      && hb == im->height && wb == im->width && im->row == wb;
    if (hb == 1 && wb == 1 && b_lo == 0 && b_hi == 1 && fr->off_y >= 0 && fr->off_y < im->height) {
        /* one value per image (X-Linear, 1x1 maps): a strided gather */
        const XK_T *s = src + fr->off_y * im->row + fr->off_x * im->col;
        for (int64_t g = 0; g < n_img; g++) dst[g] = s[g * im->img];
    } else {
        for (int64_t g = 0; g < n_img; g++) {
            if (whole) {
                memcpy(dst + g * hb * wb, src + g * im->img, (size_t)(hb * wb) * sizeof(XK_T));
                continue;
            }
            for (int64_t a = 0; a < hb; a++) {
                XK_T *d = dst + (g * hb + a) * wb;
                const int64_t y = a * fr->step_y + fr->off_y;
                if (y < 0 || y >= im->height) {
                    for (int64_t b = 0; b < wb; b++) d[b] = 0;
                    continue;
                }
                const XK_T *s = src + g * im->img + y * im->row + (b_lo * fr->step_x + fr->off_x) * im->col;
                for (int64_t b = 0; b < b_lo; b++) d[b] = 0;
                if (col == 1) {
                    for (int64_t b = b_lo; b < b_hi; b++) d[b] = s[b - b_lo];
                } else {
                    for (int64_t b = b_lo; b < b_hi; b++) d[b] = s[(b - b_lo) * col];
                }
                for (int64_t b = b_hi; b < wb; b++) d[b] = 0;
            }
        }
    }
    memset(dst + filled, 0, (size_t)(lay->len - filled) * sizeof(XK_T));
}

/* Planes of 1x1 images (X-Linear): dst[c*cstride + g] = src[g*img + c*chan] for
 * c < n_chan, g < n_img, zeros up to len.  A transpose, in blocks of 16
 * channels so that each source cache line is read once. */
static void XK_FN(xk_pack_points)(XK_T *XK_RESTRICT dst, int64_t cstride, const XK_T *XK_RESTRICT src,
                                  int64_t n_chan, int64_t n_img, const xk_image_t *im, int64_t len)
{
    for (int64_t c0 = 0; c0 < n_chan; c0 += 16) {
        const int64_t c1 = c0 + 16 < n_chan ? c0 + 16 : n_chan;
        for (int64_t g = 0; g < n_img; g++) {
            const XK_T *s = src + g * im->img;
            for (int64_t c = c0; c < c1; c++) dst[c * cstride + g] = s[c * im->chan];
        }
    }
    for (int64_t c = 0; c < n_chan; c++) memset(dst + c * cstride + n_img, 0, (size_t)(len - n_img) * sizeof(XK_T));
}

/* d[cc * col] <- from[cc] for columns cc in [c0, c1): one row segment of a scatter. */
XK_INLINE void XK_FN(xk_copy_row)(XK_T *d, const XK_T *from, int64_t c0, int64_t c1, int64_t col)
{
    if (col == 1) {
        for (int64_t cc = c0; cc < c1; cc++) d[cc] = from[cc];
    } else {
        for (int64_t cc = c0; cc < c1; cc++) d[cc * col] = from[cc];
    }
}

/* Write the tile of grid positions [p0, p0 + n) that land in dst.
 * The grid is n_img images of hb x wb; walk it row segment by row segment. */
static void XK_FN(xk_scatter)(const XK_T *tile, int64_t p0, int64_t n, XK_T *dst, int64_t n_img,
                              const xk_layout_t *lay, const xk_scatter_t *sc)
{
    const int64_t wb = lay->wb, plane = lay->hb * lay->wb;
    int64_t g = p0 / plane, r = (p0 - g * plane) / wb, c = p0 - g * plane - r * wb;
    int64_t q = 0;
    if (sc->col == 1 && sc->row == wb && sc->c_lo == 0 && sc->c_hi == wb && sc->r_lo == 0 && sc->r_hi == lay->hb) {
        /* Every grid position is an output and an image is one run in dst (1x1 convs). */
        for (int64_t off = p0 - g * plane; q < n && g < n_img; g++, off = 0) {
            const int64_t run = plane - off < n - q ? plane - off : n - q;
            XK_T *d = dst + sc->origin + g * sc->img + off;
            for (int64_t k = 0; k < run; k++) d[k] = tile[q + k];
            q += run;
        }
        return;
    }
    while (q < n && g < n_img) {
        const int64_t run = (wb - c < n - q) ? wb - c : n - q;
        if (r >= sc->r_lo && r < sc->r_hi) {
            const int64_t c0 = c > sc->c_lo ? c : sc->c_lo;
            const int64_t c1 = c + run < sc->c_hi ? c + run : sc->c_hi;
            const int64_t base = sc->origin + g * sc->img + r * sc->row;
            const XK_T *from = tile + q - c;
            XK_FN(xk_copy_row)(dst + base, from, c0, c1, sc->col);
        }
        q += run;
        c += run;
        if (c == wb) {
            c = 0;
            if (++r == lay->hb) {
                r = 0;
                g++;
            }
        }
    }
}

/* Write a tile of `rows` grid rows of n positions each (rows wb apart, all within one
 * grid row, starting at position p0; tile rows n apart) where they land in dst: the
 * xk_corr_rows3 tiles.  Grid row and image are found once and then stepped. */
static void XK_FN(xk_scatter_rows)(const XK_T *tile, int64_t p0, int64_t rows, int64_t n, XK_T *dst,
                                   int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
{
    const int64_t wb = lay->wb, plane = lay->hb * lay->wb;
    int64_t g = p0 / plane, r = (p0 - g * plane) / wb;
    const int64_t c = p0 - g * plane - r * wb;
    const int64_t c0 = c > sc->c_lo ? c : sc->c_lo, c1 = c + n < sc->c_hi ? c + n : sc->c_hi;
    for (int64_t rho = 0; rho < rows && g < n_img; rho++) {
        if (r >= sc->r_lo && r < sc->r_hi && c0 < c1) {
            const XK_T *from = tile + rho * n - c;
            XK_T *d = dst + sc->origin + g * sc->img + r * sc->row;
            XK_FN(xk_copy_row)(d, from, c0, c1, sc->col);
        }
        if (++r == lay->hb) {
            r = 0;
            g++;
        }
    }
}

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
 * every one of the n_dst inputs, XK_SACC vectors at a time (xk_spread_shared into
 * part, n_dst * XK_TILE scratch, zeroed here), then scattered to dst + u * dst_stride.
 * src: the packed grad_out planes (cstride apart, n_runs * XK_SHARE of them). */
XK_CLONES static void XK_FN(xk_spread_tile)(const XK_T *XK_RESTRICT src, int64_t cstride, int64_t p0,
                                            const int64_t *chan, const XK_T *w, int64_t n_runs, int64_t degree,
                                            int64_t n_dst, XK_T *part, XK_T *dst, int64_t dst_stride,
                                            int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
{
    const int64_t width = XK_SACC * XK_VL;
    for (int64_t a0 = 0; a0 < XK_NACC; a0 += XK_SACC) {  /* the whole tile (the plane has room) */
        XK_T *pc = part + a0 / XK_SACC * n_dst * width;
        memset(pc, 0, (size_t)(n_dst * width) * sizeof(XK_T));
        XK_FN(xk_spread_shared)(pc, src + p0 + a0 * XK_VL, cstride, chan, w, n_runs, degree);
    }
    XK_T tile[XK_TILE];
    for (int64_t u = 0; u < n_dst; u++) {
        for (int64_t c = 0; c < XK_NACC / XK_SACC; c++)
            memcpy(tile + c * width, part + (c * n_dst + u) * width, (size_t)width * sizeof(XK_T));
        XK_FN(xk_scatter)(tile, p0, XK_TILE, dst + u * dst_stride, n_img, lay, sc);
    }
}

/* Panels of maps read and written in place (xk_quad_tile_direct, xk_spread_tile_direct):
 * (n_img, channels, hw) arrays whose channels are hw contiguous elements (img, chan:
 * element strides), position p = image * hw + pixel; hw >= XK_SACC * XK_VL, so that the
 * panel of XK_SACC vectors from p spans at most two images. */

/* Prefetch the lines of n_rows channels' panel at position p (if p < end): hundreds of
 * channel streams are more than the hardware prefetchers follow. */
XK_INLINE void XK_FN(xk_panel_prefetch)(const XK_T *src, int64_t img, int64_t chan, int64_t n_rows, int64_t hw,
                                        int64_t end, int64_t p)
{
    if (p >= end) return;
    const int64_t g = p / hw, r = p - g * hw;
    for (int64_t c = 0; c < n_rows; c++) {
        const char *line = (const char *)(src + g * img + c * chan + r);
        __builtin_prefetch(line);
        __builtin_prefetch(line + XK_SACC * XK_VL * sizeof(XK_T) - 1);
    }
}

/* An affine per source row applied as panels are loaded: row c's values x become
 * act(scale[c] x + shift[c]), act 0 none, 1 ReLU, 2 ReLU6 (NaN gives 0, as the engine's
 * activations do).  The engine's 1x1 convs after a batch norm and ReLU of their input take it
 * here, where the panel copy reads every value anyway, instead of in a pass of its own. */
typedef struct {
    const XK_T *scale, *shift;
    int act;
} XK_FN(xk_affine_t);

XK_INLINE XK_T XK_FN(xk_affine_one)(XK_T v, XK_T a, XK_T b, int act)
{
    v = v * a + b;
    if (act) v = v > 0 ? v : (XK_T)0;
    if (act == 2) v = v < 6 ? v : (XK_T)6;
    return v;
}

/* v <- the affine of v (a macro: vector arguments of functions change the ABI in the
 * baseline clone). */
#if XK_GNU_VECTORS
#  define XK_AFFINE_VEC(v, sc, sh, act)                                                        \
    do {                                                                                      \
        v = v * (sc) + (sh);                                                                  \
        if (act) v = XK_VAND(XK_IV, XK_V, v, v > XK_VSPLAT(XK_V, (XK_T)0));                   \
        if ((act) == 2) {                                                                     \
            const XK_V six_ = XK_VSPLAT(XK_V, (XK_T)6);                                       \
            const XK_IV over_ = v > six_;                                                     \
            v = (XK_V)(((XK_IV)v & ~over_) | ((XK_IV)six_ & over_));                          \
        }                                                                                     \
    } while (0)
#else
#  define XK_AFFINE_VEC(v, sc, sh, act) (v = XK_FN(xk_affine_one)(v, sc, sh, act))
#endif

/* d[k] = s[k] for k < n, through the affine (sc, sh, aff->act) when aff is given: whole
 * vectors, then the rest one by one. */
XK_INLINE void XK_FN(xk_row_affine)(XK_T *d, const XK_T *s, int64_t n, const XK_FN(xk_affine_t) *aff, XK_T sc, XK_T sh)
{
    int64_t k = 0;
    if (aff) {
        const XK_V a = XK_VSPLAT(XK_V, sc), b = XK_VSPLAT(XK_V, sh);
        for (; k + XK_VL <= n; k += XK_VL) {
            XK_V v = XK_VLOAD(XK_V, s + k);
            XK_AFFINE_VEC(v, a, b, aff->act);
            XK_VSTORE(XK_V, d + k, v);
        }
        for (; k < n; k++) d[k] = XK_FN(xk_affine_one)(s[k], sc, sh, aff->act);
        return;
    }
    for (; k + XK_VL <= n; k += XK_VL) XK_VSTORE(XK_V, d + k, XK_VLOAD(XK_V, s + k));
    for (; k < n; k++) d[k] = s[k];
}

/* panel[c * width + a * XK_VL ...] <- the XK_SACC vectors at s + c * stride, c < n_rows
 * (width = XK_SACC * XK_VL), through the affine aff of the rows when given. */
XK_INLINE void XK_FN(xk_panel_copy_affine)(XK_T *XK_RESTRICT panel, const XK_T *XK_RESTRICT s, int64_t stride,
                                           int64_t n_rows, const XK_FN(xk_affine_t) *aff)
{
    for (int64_t c = 0; c < n_rows; c++)
        XK_FN(xk_row_affine)(panel + c * (XK_SACC * XK_VL), s + c * stride, XK_SACC * XK_VL, aff,
                             aff ? aff->scale[c] : (XK_T)1, aff ? aff->shift[c] : (XK_T)0);
}

XK_INLINE void XK_FN(xk_panel_copy)(XK_T *XK_RESTRICT panel, const XK_T *XK_RESTRICT s, int64_t stride,
                                    int64_t n_rows)
{
    XK_FN(xk_panel_copy_affine)(panel, s, stride, n_rows, NULL);
}

/* panel[c * width + k] = src channel c at position p + k for c < n_rows, k < width (zeros past
 * the last image), through the affine aff when given. */
XK_INLINE void XK_FN(xk_panel_load_affine)(XK_T *panel, const XK_T *src, int64_t img, int64_t chan, int64_t n_rows,
                                           int64_t hw, int64_t n_img, int64_t p, const XK_FN(xk_affine_t) *aff)
{
    const int64_t width = XK_SACC * XK_VL, g = p / hw, r = p - g * hw;
    const int64_t n1 = hw - r < width ? hw - r : width, n2 = width - n1;
    if (n2 == 0) {
        XK_FN(xk_panel_copy_affine)(panel, src + g * img + r, chan, n_rows, aff);
        return;
    }
    const int next = g + 1 < n_img;
    for (int64_t c = 0; c < n_rows; c++) {
        const XK_T *s1 = src + g * img + c * chan + r, *s2 = src + (g + 1) * img + c * chan;
        XK_T *d = panel + c * width;
        const XK_T sc = aff ? aff->scale[c] : (XK_T)1, sh = aff ? aff->shift[c] : (XK_T)0;
        XK_FN(xk_row_affine)(d, s1, n1, aff, sc, sh);
        if (next) XK_FN(xk_row_affine)(d + n1, s2, n2, aff, sc, sh);
        else for (int64_t k = 0; k < n2; k++) d[n1 + k] = 0;
    }
}

XK_INLINE void XK_FN(xk_panel_load)(XK_T *panel, const XK_T *src, int64_t img, int64_t chan, int64_t n_rows,
                                    int64_t hw, int64_t n_img, int64_t p)
{
    XK_FN(xk_panel_load_affine)(panel, src, img, chan, n_rows, hw, n_img, p, NULL);
}

/* dst channel v at positions p + k <- part[v * width + k] for v < n_rows, k < width, except
 * positions past the last image. */
XK_INLINE void XK_FN(xk_panel_store)(XK_T *dst, int64_t img, int64_t chan, const XK_T *part, int64_t n_rows,
                                     int64_t hw, int64_t n_img, int64_t p)
{
    const int64_t width = XK_SACC * XK_VL, g = p / hw, r = p - g * hw;
    const int64_t n1 = hw - r < width ? hw - r : width, n2 = width - n1;
    if (n2 == 0) {
        XK_T *d = dst + g * img + r;
        for (int64_t v = 0; v < n_rows; v++)
            XK_UNROLL for (int a = 0; a < XK_SACC; a++)
                XK_VSTORE(XK_V, d + v * chan + a * XK_VL, XK_VLOAD(XK_V, part + v * width + a * XK_VL));
        return;
    }
    const int next = g + 1 < n_img;
    for (int64_t v = 0; v < n_rows; v++) {
        XK_T *d1 = dst + g * img + v * chan + r, *d2 = dst + (g + 1) * img + v * chan;
        const XK_T *from = part + v * width;
        for (int64_t k = 0; k < n1; k++) d1[k] = from[k];
        if (next)
            for (int64_t k = 0; k < n2; k++) d2[k] = from[n1 + k];
    }
}

/* xk_spread_tile on maps read and written in place (xk_panel_load's layout): grad_out
 * src (n_img, n_runs * XK_SHARE, hw), grad_x dst (n_img, n_dst, hw).  Each panel of the
 * tile (positions [p0, p0 + XK_TILE)) spreads the runs' grad_out vectors, read in place
 * (through panel, n_runs * XK_SHARE * XK_SACC * XK_VL scratch, when they span two images),
 * into part (n_dst * XK_SACC * XK_VL scratch, zeroed here), stored into dst. */
XK_CLONES static void XK_FN(xk_spread_tile_direct)(const XK_T *XK_RESTRICT src, int64_t src_img, int64_t src_chan,
                                                   int64_t hw, int64_t n_img, int64_t p0, const int64_t *chan,
                                                   const XK_T *w, int64_t n_runs, int64_t degree, int64_t n_dst,
                                                   XK_T *panel, XK_T *part, XK_T *dst, int64_t dst_img,
                                                   int64_t dst_chan)
{
    const int64_t width = XK_SACC * XK_VL, end = n_img * hw, n_src = n_runs * XK_SHARE;
    for (int64_t p = p0; p < p0 + XK_TILE && p < end; p += width) {
        const int64_t g = p / hw, r = p - g * hw;
        XK_FN(xk_panel_prefetch)(src, src_img, src_chan, n_src, hw, end, p + width);
        memset(part, 0, (size_t)(n_dst * width) * sizeof(XK_T));
        if (r + width <= hw) {
            XK_FN(xk_spread_shared)(part, src + g * src_img + r, src_chan, chan, w, n_runs, degree);
        } else {
            XK_FN(xk_panel_load)(panel, src, src_img, src_chan, n_src, hw, n_img, p);
            XK_FN(xk_spread_shared)(part, panel, width, chan, w, n_runs, degree);
        }
        XK_FN(xk_panel_store)(dst, dst_img, dst_chan, part, n_dst, hw, n_img, p);
    }
}

/* A 1x1 correlation on one panel of XK_SACC vectors of positions, source row c's at
 * panel + c * XK_SACC * XK_VL (copied there so that every row the destinations read
 * stays in cache, L1 up to ~330 rows): the forward of random and block expanders, and
 * the grad_input of random expanders over the reverse adjacency.  Destinations go in
 * quads of XK_SHARE = 4 (xk_quads_t qs): term j of a quad reads the panel row at
 * qs->off[j * 4 + o] with weight qw[j * 4 + o] for its destination o, and for each real
 * slot, destination v,
 *   out[v * ostride + a * XK_VL] = bias[v] (or 0) + sum over the quad's terms in order
 * for the quads q_lo <= q < q_hi (padding slots are computed and not stored; padding
 * terms read the zero row with weight 0).  12 accumulators, and no partial sum leaves
 * the registers (the flat tiles keep channel blocks in L1 by storing and reloading
 * them).  Unshared, every x load feeds one FMA and loads bound the loop (two vector
 * loads per cycle): a term's four offsets come in two 8-byte loads and its four
 * weights in one, broadcast in registers.  Shared (a block expander's run), each x
 * load feeds four FMAs. */
#if XK_SHUFFLE && XK_VL == 8
typedef XK_T XK_FN(xk_quarter) __attribute__((vector_size(4 * sizeof(XK_T)), aligned(sizeof(XK_T)), may_alias));
#  define XK_QUAD_W(wp, w0, w1, w2, w3)                                                                   \
    do {                                                                                                 \
        const XK_FN(xk_quarter) w4_ = *(const XK_FN(xk_quarter) *)(wp);                                  \
        const XK_V w8_ = __builtin_shufflevector(w4_, w4_, 0, 1, 2, 3, 0, 1, 2, 3);                       \
        w0 = __builtin_shufflevector(w8_, w8_, 0, 0, 0, 0, 4, 4, 4, 4);                                   \
        w1 = __builtin_shufflevector(w8_, w8_, 1, 1, 1, 1, 5, 5, 5, 5);                                   \
        w2 = __builtin_shufflevector(w8_, w8_, 2, 2, 2, 2, 6, 6, 6, 6);                                   \
        w3 = __builtin_shufflevector(w8_, w8_, 3, 3, 3, 3, 7, 7, 7, 7);                                   \
    } while (0)
#elif XK_SHUFFLE && XK_VL == 4
#  define XK_QUAD_W(wp, w0, w1, w2, w3)                                                                   \
    do {                                                                                                 \
        const XK_V w4_ = XK_VLOAD(XK_V, wp);                                                             \
        w0 = __builtin_shufflevector(w4_, w4_, 0, 0, 0, 0);                                               \
        w1 = __builtin_shufflevector(w4_, w4_, 1, 1, 1, 1);                                               \
        w2 = __builtin_shufflevector(w4_, w4_, 2, 2, 2, 2);                                               \
        w3 = __builtin_shufflevector(w4_, w4_, 3, 3, 3, 3);                                               \
    } while (0)
#else
#  define XK_QUAD_W(wp, w0, w1, w2, w3)                                                                   \
    do {                                                                                                 \
        w0 = XK_VSPLAT(XK_V, (wp)[0]);                                                                   \
        w1 = XK_VSPLAT(XK_V, (wp)[1]);                                                                   \
        w2 = XK_VSPLAT(XK_V, (wp)[2]);                                                                   \
        w3 = XK_VSPLAT(XK_V, (wp)[3]);                                                                   \
    } while (0)
#endif
/* xk_quad_panel on the first nv (<= XK_SACC, a constant where inlined) vectors of the panel's
 * rows; with accumulate, the sums start from what out holds (bias unused). */
XK_INLINE void XK_FN(xk_quad_panel_impl)(XK_T *out, int64_t ostride, const XK_T *XK_RESTRICT panel,
                                         const xk_quads_t *qs, const XK_T *qw, const XK_T *bias, int64_t q_lo,
                                         int64_t q_hi, const int accumulate, const int nv)
{
    for (int64_t q = q_lo; q < q_hi; q++) {
        int64_t dst[4];
        XK_V acc[4][XK_SACC];
        XK_UNROLL for (int o = 0; o < 4; o++) {
            const int64_t slot = q * 4 + o;
            dst[o] = slot < qs->n_dst ? (qs->rows ? qs->rows[slot] : slot) : -1;
            if (accumulate && dst[o] >= 0) {
                XK_UNROLL for (int a = 0; a < XK_SACC; a++) if (a < nv)
                    acc[o][a] = XK_VLOAD(XK_V, out + dst[o] * ostride + a * XK_VL);
                continue;
            }
            const XK_V b = XK_VSPLAT(XK_V, bias && dst[o] >= 0 ? bias[dst[o]] : (XK_T)0);
            XK_UNROLL for (int a = 0; a < XK_SACC; a++) if (a < nv) acc[o][a] = b;
        }
        const int64_t lo = qs->ptr ? qs->ptr[q] : q * qs->degree, hi = qs->ptr ? qs->ptr[q + 1] : lo + qs->degree;
        const int32_t *cq = qs->off + lo * 4;
        const XK_T *wq = qw + lo * 4;
        if (qs->shared) {  /* one row for all four: each load feeds four FMAs, one weight at a time */
            for (int64_t d = 0; d < hi - lo; d++) {
                const XK_T *x = panel + cq[d * 4];
                XK_V xv[XK_SACC];
                XK_UNROLL for (int a = 0; a < XK_SACC; a++) if (a < nv) xv[a] = XK_VLOAD(XK_V, x + a * XK_VL);
                XK_UNROLL for (int o = 0; o < 4; o++) {
                    const XK_V wt = XK_VSPLAT(XK_V, wq[d * 4 + o]);
                    XK_UNROLL for (int a = 0; a < XK_SACC; a++) if (a < nv) acc[o][a] += wt * xv[a];
                }
            }
        } else for (int64_t d = 0; d < hi - lo; d++) {
            uint64_t o01, o23;
            memcpy(&o01, cq + d * 4, 8);
            memcpy(&o23, cq + d * 4 + 2, 8);
            const XK_T *x[4] = {panel + (int32_t)o01, panel + (int32_t)(o01 >> 32),
                                panel + (int32_t)o23, panel + (int32_t)(o23 >> 32)};
            XK_V wt[4];
            XK_QUAD_W(wq + d * 4, wt[0], wt[1], wt[2], wt[3]);
            XK_UNROLL for (int o = 0; o < 4; o++)
                XK_UNROLL for (int a = 0; a < XK_SACC; a++) if (a < nv) acc[o][a] += wt[o] * XK_VLOAD(XK_V, x[o] + a * XK_VL);
        }
        XK_UNROLL for (int o = 0; o < 4; o++) {
            if (dst[o] < 0) break;
            XK_UNROLL for (int a = 0; a < XK_SACC; a++) if (a < nv)
                XK_VSTORE(XK_V, out + dst[o] * ostride + a * XK_VL, acc[o][a]);
        }
    }
}
#undef XK_QUAD_W

XK_CLONES static void XK_FN(xk_quad_panel)(XK_T *out, int64_t ostride, const XK_T *XK_RESTRICT panel,
                                           const xk_quads_t *qs, const XK_T *qw, const XK_T *bias, int64_t q_lo,
                                           int64_t q_hi)
{
    XK_FN(xk_quad_panel_impl)(out, ostride, panel, qs, qw, bias, q_lo, q_hi, 0, XK_SACC);
}

/* xk_quad_panel on the first one or two vectors of the panel's rows (a Winograd panel of few
 * tiles): the outputs' other vectors are neither computed nor stored. */
XK_CLONES static void XK_FN(xk_quad_panel_v1)(XK_T *out, int64_t ostride, const XK_T *XK_RESTRICT panel,
                                              const xk_quads_t *qs, const XK_T *qw, const XK_T *bias, int64_t q_lo,
                                              int64_t q_hi)
{
    XK_FN(xk_quad_panel_impl)(out, ostride, panel, qs, qw, bias, q_lo, q_hi, 0, 1);
}

XK_CLONES static void XK_FN(xk_quad_panel_v2)(XK_T *out, int64_t ostride, const XK_T *XK_RESTRICT panel,
                                              const xk_quads_t *qs, const XK_T *qw, const XK_T *bias, int64_t q_lo,
                                              int64_t q_hi)
{
    XK_FN(xk_quad_panel_impl)(out, ostride, panel, qs, qw, bias, q_lo, q_hi, 0, 2);
}

/* The image columns of channels u0 <= u < u1 of x (n_img images of im): row u * kh * kw + t
 * (tap t = ky * kw + kx) of col (rows of p_pad) holds x[b, u, y * sh + ky * dh - ph,
 * c * sw + kx * dw - pw] (0 outside the image) at position (b * ho + y) * wo + c, and 0 at
 * positions n_img * ho * wo <= p < p_pad. */
static void XK_FN(xk_im2col)(XK_T *XK_RESTRICT col, int64_t p_pad, const XK_T *XK_RESTRICT x, const xk_image_t *im,
                             int64_t n_img, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                             int64_t dh, int64_t dw, int64_t ho, int64_t wo, int64_t u0, int64_t u1)
{
    for (int64_t u = u0; u < u1; u++)
        for (int64_t ky = 0; ky < kh; ky++)
            for (int64_t kx = 0; kx < kw; kx++) {
                XK_T *d = col + ((u * kh + ky) * kw + kx) * p_pad;
                /* the outputs c0 <= c < c1 whose tap reads inside the row: c * sw + kx * dw - pw
                 * in [0, width) */
                const int64_t lo = pw - kx * dw, hi = im->width - 1 + pw - kx * dw;
                const int64_t c0 = lo <= 0 ? 0 : (lo + sw - 1) / sw;
                const int64_t c1 = hi < 0 ? 0 : (hi / sw + 1 < wo ? hi / sw + 1 : wo);
                for (int64_t b = 0; b < n_img; b++)
                    for (int64_t y = 0; y < ho; y++, d += wo) {
                        const int64_t iy = y * sh + ky * dh - ph;
                        if (iy < 0 || iy >= im->height || c0 >= c1) {
                            for (int64_t c = 0; c < wo; c++) d[c] = 0;
                            continue;
                        }
                        const XK_T *s = x + b * im->img + u * im->chan + iy * im->row;
                        const int64_t shift = kx * dw - pw;
                        for (int64_t c = 0; c < c0; c++) d[c] = 0;
                        if (sw == 1 && im->col == 1 && c1 - c0 >= 32)
                            memcpy(d + c0, s + c0 + shift, (size_t)(c1 - c0) * sizeof(XK_T));
                        else
                            for (int64_t c = c0; c < c1; c++) d[c] = s[(c * sw + shift) * im->col];
                        for (int64_t c = c1; c < wo; c++) d[c] = 0;
                    }
                for (int64_t p = n_img * ho * wo; p < p_pad; p++, d++) *d = 0;
            }
}

/* xk_im2col by an offset table, for maps of short rows (where a row's few elements cost less
 * than its bounds): row u * kk + t of col = x's channel u (chan apart; images img apart) at
 * offs[t * hw + q] for position q of each of the n_img images (-1: outside the image, 0),
 * then 0 up to p_pad; channels u0 <= u < u1. */
static void XK_FN(xk_im2col_table)(XK_T *XK_RESTRICT col, int64_t p_pad, const XK_T *XK_RESTRICT x, int64_t chan,
                                   int64_t img, int64_t n_img, const int64_t *offs, int64_t hw, int64_t kk,
                                   int64_t u0, int64_t u1)
{
    for (int64_t u = u0; u < u1; u++)
        for (int64_t t = 0; t < kk; t++) {
            XK_T *d = col + (u * kk + t) * p_pad;
            const int64_t *o = offs + t * hw;
            for (int64_t b = 0; b < n_img; b++, d += hw) {
                const XK_T *xb = x + b * img + u * chan;
                for (int64_t q = 0; q < hw; q++) {
                    const int64_t k = o[q];
                    const XK_T v = xb[k < 0 ? 0 : k];
                    d[q] = k < 0 ? (XK_T)0 : v;
                }
            }
            for (int64_t p = n_img * hw; p < p_pad; p++) col[(u * kk + t) * p_pad + p] = 0;
        }
}

/* The adjoint of xk_im2col for channels u0 <= u < u1: grad_x[b, u] (n_img images of im) =
 * the sum, taps in order, of gcol's entries at the positions that read each pixel. */
static void XK_FN(xk_col2im)(XK_T *XK_RESTRICT gx, const xk_image_t *im, const XK_T *XK_RESTRICT gcol,
                             int64_t p_pad, int64_t n_img, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                             int64_t pw, int64_t dh, int64_t dw, int64_t ho, int64_t wo, int64_t u0, int64_t u1)
{
    for (int64_t u = u0; u < u1; u++) {
        for (int64_t b = 0; b < n_img; b++)
            for (int64_t iy = 0; iy < im->height; iy++)
                for (int64_t ix = 0; ix < im->width; ix++)
                    gx[b * im->img + u * im->chan + iy * im->row + ix * im->col] = 0;
        for (int64_t ky = 0; ky < kh; ky++)
            for (int64_t kx = 0; kx < kw; kx++) {
                const XK_T *g = gcol + ((u * kh + ky) * kw + kx) * p_pad;
                for (int64_t b = 0; b < n_img; b++)
                    for (int64_t y = 0; y < ho; y++, g += wo) {
                        const int64_t iy = y * sh + ky * dh - ph;
                        if (iy < 0 || iy >= im->height) continue;
                        XK_T *d = gx + b * im->img + u * im->chan + iy * im->row;
                        for (int64_t c = 0; c < wo; c++) {
                            const int64_t ix = c * sw + kx * dw - pw;
                            if (ix >= 0 && ix < im->width) d[ix * im->col] += g[c];
                        }
                    }
            }
    }
}

/* The columns path (im2col, then 1x1 quads): y rows (n_dst of ystride) at positions
 * [p, p + XK_SACC * XK_VL) = bias + the quads' sums over source rows x (n_src of xstride;
 * a source row is one (channel, tap) of the image columns).  The source rows come in nb
 * blocks [row0[b], row0[b + 1]), each copied into panel ((rows + 1) * XK_SACC * XK_VL
 * scratch, a zero row last) once and read by every quad q_lo <= q < q_hi while it stays
 * in L1: hundreds of rows of taps would not.  Quad q's terms in block b are
 * [ptr[b * (n_quads + 1) + q], ptr[b * (n_quads + 1) + q + 1]) of off (panel offsets
 * within the block) and qw; the sums of block b > 0 add to y. */
XK_CLONES static void XK_FN(xk_quad_columns)(const XK_T *XK_RESTRICT x, int64_t xstride, int64_t p,
                                             const int32_t *off, const XK_T *qw, const int64_t *ptr,
                                             const int64_t *row0, int64_t nb, int64_t n_dst, const XK_T *bias,
                                             XK_T *panel, XK_T *y, int64_t ystride, int64_t q_lo, int64_t q_hi)
{
    const int64_t width = XK_SACC * XK_VL, n_quads = (n_dst + 3) / 4;
    for (int64_t b = 0; b < nb; b++) {
        const int64_t rows = row0[b + 1] - row0[b];
        XK_FN(xk_panel_copy)(panel, x + row0[b] * xstride + p, xstride, rows);
        XK_UNROLL for (int a = 0; a < XK_SACC; a++)
            XK_VSTORE(XK_V, panel + rows * width + a * XK_VL, XK_VSPLAT(XK_V, (XK_T)0));
        const xk_quads_t qs = {off, ptr + b * (n_quads + 1), NULL, 0, n_dst, rows, 0};
        XK_FN(xk_quad_panel_impl)(y + p, ystride, panel, &qs, qw, bias, q_lo, q_hi, b > 0, XK_SACC);
    }
}

/* One tile (grid positions [p0, p0 + XK_TILE)) of a 1x1 correlation in quads of
 * destinations (xk_quad_panel), the quads q_lo <= q < q_hi: XK_SACC vectors at a time,
 * the qs->n_src planes' (cstride apart) vectors copied into panel ((n_src + 1) *
 * XK_SACC * XK_VL scratch), the destinations computed into part (n_dst * XK_TILE
 * scratch, row v for destination v), then scattered to dst + v * dst_stride. */
XK_CLONES static void XK_FN(xk_quad_tile)(const XK_T *XK_RESTRICT src, int64_t cstride, int64_t p0,
                                          const xk_quads_t *qs, int64_t q_lo, int64_t q_hi, const XK_T *qw,
                                          const XK_T *bias, XK_T *panel, XK_T *part, XK_T *dst, int64_t dst_stride,
                                          int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
{
    const int64_t width = XK_SACC * XK_VL, n_src = qs->n_src;
    const int64_t s_hi = q_hi * 4 < qs->n_dst ? q_hi * 4 : qs->n_dst;
    XK_UNROLL for (int a = 0; a < XK_SACC; a++)  /* the zero row */
        XK_VSTORE(XK_V, panel + n_src * width + a * XK_VL, XK_VSPLAT(XK_V, (XK_T)0));
    for (int64_t a0 = 0; a0 < XK_NACC; a0 += XK_SACC) {  /* the whole tile (the plane has room) */
        XK_FN(xk_panel_copy)(panel, src + p0 + a0 * XK_VL, cstride, n_src);
        XK_FN(xk_quad_panel)(part + a0 * XK_VL, XK_TILE, panel, qs, qw, bias, q_lo, q_hi);
    }
    for (int64_t slot = q_lo * 4; slot < s_hi; slot++) {
        const int64_t v = xk_quad_row(qs, slot);
        XK_FN(xk_scatter)(part + v * XK_TILE, p0, XK_TILE, dst + v * dst_stride, n_img, lay, sc);
    }
}

/* xk_quad_tile on maps read and written in place (xk_panel_load's layout), with no
 * packing and no scatter: src (n_img, qs->n_src, hw), dst (n_img, qs->n_dst, hw).  The
 * panels of the tile (positions [p0, p0 + XK_TILE)) are copied from src, and each destination's XK_SACC
 * vectors are stored straight into dst when they lie in one image (else through part,
 * XK_SACC * XK_VL * n_dst scratch); positions past the last image are not written.  With aff, the source rows through
 * that affine (xk_affine_t). */
XK_INLINE void XK_FN(xk_quad_tile_direct_impl)(const XK_T *XK_RESTRICT src, int64_t src_img, int64_t src_chan,
                                                 int64_t hw, int64_t n_img, int64_t p0, const xk_quads_t *qs,
                                                 int64_t q_lo, int64_t q_hi, const XK_T *qw, const XK_T *bias,
                                                 XK_T *panel, XK_T *part, XK_T *dst, int64_t dst_img,
                                                 int64_t dst_chan, const XK_FN(xk_affine_t) *aff)
{
    const int64_t width = XK_SACC * XK_VL, end = n_img * hw, n_src = qs->n_src;
    const int64_t s_hi = q_hi * 4 < qs->n_dst ? q_hi * 4 : qs->n_dst;
    XK_UNROLL for (int a = 0; a < XK_SACC; a++)  /* the zero row */
        XK_VSTORE(XK_V, panel + n_src * width + a * XK_VL, XK_VSPLAT(XK_V, (XK_T)0));
    for (int64_t p = p0; p < p0 + XK_TILE && p < end; p += width) {
        const int64_t g = p / hw, r = p - g * hw;
        XK_FN(xk_panel_prefetch)(src, src_img, src_chan, n_src, hw, end, p + width);
        XK_FN(xk_panel_load_affine)(panel, src, src_img, src_chan, n_src, hw, n_img, p, aff);
        if (r + width <= hw) {
            XK_FN(xk_quad_panel)(dst + g * dst_img + r, dst_chan, panel, qs, qw, bias, q_lo, q_hi);
            continue;
        }
        /* the last panel computes the vectors that hold positions (a 7x7 map's third holds one) */
        if (end - p > (XK_SACC - 1) * XK_VL) XK_FN(xk_quad_panel)(part, width, panel, qs, qw, bias, q_lo, q_hi);
        else if (end - p > XK_VL) XK_FN(xk_quad_panel_v2)(part, width, panel, qs, qw, bias, q_lo, q_hi);
        else XK_FN(xk_quad_panel_v1)(part, width, panel, qs, qw, bias, q_lo, q_hi);
        for (int64_t slot = q_lo * 4; slot < s_hi; slot++) {
            const int64_t v = xk_quad_row(qs, slot);
            XK_FN(xk_panel_store)(dst + v * dst_chan, dst_img, dst_chan, part + v * width, 1, hw, n_img, p);
        }
    }
}

XK_CLONES static void XK_FN(xk_quad_tile_direct)(const XK_T *XK_RESTRICT src, int64_t src_img, int64_t src_chan,
                                                 int64_t hw, int64_t n_img, int64_t p0, const xk_quads_t *qs,
                                                 int64_t q_lo, int64_t q_hi, const XK_T *qw, const XK_T *bias,
                                                 XK_T *panel, XK_T *part, XK_T *dst, int64_t dst_img,
                                                 int64_t dst_chan)
{
    XK_FN(xk_quad_tile_direct_impl)(src, src_img, src_chan, hw, n_img, p0, qs, q_lo, q_hi, qw, bias, panel, part,
                                    dst, dst_img, dst_chan, NULL);
}

XK_CLONES XK_UNUSED static void XK_FN(xk_quad_tile_direct_affine)(const XK_T *XK_RESTRICT src, int64_t src_img,
                                                        int64_t src_chan, int64_t hw, int64_t n_img, int64_t p0,
                                                        const xk_quads_t *qs, int64_t q_lo, int64_t q_hi,
                                                        const XK_T *qw, const XK_T *bias, XK_T *panel, XK_T *part,
                                                        XK_T *dst, int64_t dst_img, int64_t dst_chan,
                                                        const XK_FN(xk_affine_t) *aff)
{
    XK_FN(xk_quad_tile_direct_impl)(src, src_img, src_chan, hw, n_img, p0, qs, q_lo, q_hi, qw, bias, panel, part,
                                    dst, dst_img, dst_chan, aff);
}

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

/* 1 when x[0, n) holds no Inf or NaN: then x * 0 is 0 everywhere. */
XK_CLONES static int XK_FN(xk_all_finite)(const XK_T *x, int64_t n)
{
    XK_V acc = XK_VSPLAT(XK_V, (XK_T)0);
    XK_T tail = 0, lanes[XK_VL];
    int64_t p = 0;
    for (; p + XK_VL <= n; p += XK_VL) acc += XK_VLOAD(XK_V, x + p) * (XK_T)0;
    for (; p < n; p++) tail += x[p] * (XK_T)0;
    XK_VSTORE(XK_V, lanes, acc);
    for (int l = 0; l < XK_VL; l++) tail += lanes[l];
    return tail == 0;
}

/* mk[p] for p < n: all bits set where grid position p of n_img images of
 * lay->hb x lay->wb is an output (row < rows, column < cols), all bits zero elsewhere. */
static void XK_FN(xk_valid_mask)(XK_T *mk, int64_t n, int64_t n_img, const xk_layout_t *lay,
                                 int64_t rows, int64_t cols)
{
    const int64_t plane = lay->hb * lay->wb;
    XK_T set, clear = 0;
    memset(&set, 0xff, sizeof set);
    for (int64_t p = 0; p < n; p++) {
        const int64_t q = p % plane;
        const int valid = p < n_img * plane && q / lay->wb < rows && q % lay->wb < cols;
        memcpy(mk + p, valid ? &set : &clear, sizeof(XK_T));
    }
}

/* Sum of n_img images of one channel, rows in order, each row by 2 * XK_VL
 * vector partial sums reduced in a fixed order. */
XK_CLONES static XK_T XK_FN(xk_sum_image)(const XK_T *src, int64_t n_img, const xk_image_t *im)
{
    int64_t height = im->height, width = im->width;
    XK_T total = 0;
    if (im->col == 1 && im->row == width) {  /* contiguous plane: one long row */
        width *= height;
        height = 1;
    }
    for (int64_t g = 0; g < n_img; g++) {
        for (int64_t y = 0; y < height; y++) {
            const XK_T *s = src + g * im->img + y * im->row;
            XK_T sum = 0;
            int64_t x = 0;
            if (im->col == 1) {
                XK_V acc0 = XK_VSPLAT(XK_V, (XK_T)0), acc1 = acc0;
                XK_T lanes[2 * XK_VL];
                for (; x + 2 * XK_VL <= width; x += 2 * XK_VL) {
                    acc0 += XK_VLOAD(XK_V, s + x);
                    acc1 += XK_VLOAD(XK_V, s + x + XK_VL);
                }
                XK_VSTORE(XK_V, lanes, acc0);
                XK_VSTORE(XK_V, lanes + XK_VL, acc1);
                for (int l = 0; l < 2 * XK_VL; l++) sum += lanes[l];
            }
            for (; x < width; x++) sum += s[x * im->col];
            total += sum;
        }
    }
    return total;
}

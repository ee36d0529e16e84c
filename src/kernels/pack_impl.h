/* Packing source channels into planes and scattering tiles back into maps.
 * One element type per inclusion (src/cpu_kernels_impl.h): no include guard on purpose. */

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

/* o <- the (n_out, per) weights w in runs of XK_SHARE (4) rows read side by side, the run
 * layout of xk_quad_panel and the shared correlations: o[(q * per + e) * 4 + k] =
 * w[(4q + k) * per + e], with zeros for the rows past n_out.  A 4 x XK_VL block at a time,
 * transposed in registers. */
XK_CLONES static void XK_FN(xk_interleave4)(const XK_T *XK_RESTRICT w, int64_t n_out, int64_t per,
                                            XK_T *XK_RESTRICT o)
{
    for (int64_t q = 0; q * 4 < n_out; q++) {
        const XK_T *r[4];
        for (int k = 0; k < 4; k++) r[k] = q * 4 + k < n_out ? w + (q * 4 + k) * per : NULL;
        XK_T *d = o + q * per * 4;
        int64_t e = 0;
#if XK_SHUFFLE && (XK_VL == 8 || XK_VL == 4)
        if (r[3]) {
            for (; e + XK_VL <= per; e += XK_VL) {
                const XK_V r0 = XK_VLOAD(XK_V, r[0] + e), r1 = XK_VLOAD(XK_V, r[1] + e);
                const XK_V r2 = XK_VLOAD(XK_V, r[2] + e), r3 = XK_VLOAD(XK_V, r[3] + e);
#  if XK_VL == 8
                /* pairs of rows interleaved within each 128-bit half, then pairs of pairs */
                const XK_V t0 = __builtin_shufflevector(r0, r1, 0, 8, 1, 9, 4, 12, 5, 13);
                const XK_V t1 = __builtin_shufflevector(r0, r1, 2, 10, 3, 11, 6, 14, 7, 15);
                const XK_V t2 = __builtin_shufflevector(r2, r3, 0, 8, 1, 9, 4, 12, 5, 13);
                const XK_V t3 = __builtin_shufflevector(r2, r3, 2, 10, 3, 11, 6, 14, 7, 15);
                XK_VSTORE(XK_V, d + e * 4, __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 2, 3, 10, 11));
                XK_VSTORE(XK_V, d + e * 4 + 8, __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 2, 3, 10, 11));
                XK_VSTORE(XK_V, d + e * 4 + 16, __builtin_shufflevector(t0, t2, 4, 5, 12, 13, 6, 7, 14, 15));
                XK_VSTORE(XK_V, d + e * 4 + 24, __builtin_shufflevector(t1, t3, 4, 5, 12, 13, 6, 7, 14, 15));
#  else
                const XK_V t0 = __builtin_shufflevector(r0, r1, 0, 4, 1, 5);
                const XK_V t1 = __builtin_shufflevector(r0, r1, 2, 6, 3, 7);
                const XK_V t2 = __builtin_shufflevector(r2, r3, 0, 4, 1, 5);
                const XK_V t3 = __builtin_shufflevector(r2, r3, 2, 6, 3, 7);
                XK_VSTORE(XK_V, d + e * 4, __builtin_shufflevector(t0, t2, 0, 1, 4, 5));
                XK_VSTORE(XK_V, d + e * 4 + 4, __builtin_shufflevector(t0, t2, 2, 3, 6, 7));
                XK_VSTORE(XK_V, d + e * 4 + 8, __builtin_shufflevector(t1, t3, 0, 1, 4, 5));
                XK_VSTORE(XK_V, d + e * 4 + 12, __builtin_shufflevector(t1, t3, 2, 3, 6, 7));
#  endif
            }
        }
#endif
        for (; e < per; e++)
            for (int k = 0; k < 4; k++) d[e * 4 + k] = r[k] ? r[k][e] : (XK_T)0;
    }
}

/* Panels of maps read and written in place, with an optional affine per source row, and
 * the block expanders' spread on them.
 * One element type per inclusion (src/cpu_kernels_impl.h): no include guard on purpose. */

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

/* 1x1 correlations in quads of destinations on a panel in cache (forward, grad_input over
 * the reverse graph, and the Winograd and columns paths' products).
 * One element type per inclusion (src/cpu_kernels_impl.h): no include guard on purpose. */

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

/* xk_quad_panel on the vectors of the panel that hold any of its first n positions (n >= 1):
 * the last panel of a map or a batch. */
XK_INLINE void XK_FN(xk_quad_panel_upto)(XK_T *out, int64_t ostride, const XK_T *XK_RESTRICT panel,
                                         const xk_quads_t *qs, const XK_T *qw, const XK_T *bias, int64_t q_lo,
                                         int64_t q_hi, int64_t n)
{
    if (n > (XK_SACC - 1) * XK_VL) XK_FN(xk_quad_panel)(out, ostride, panel, qs, qw, bias, q_lo, q_hi);
    else if (n > XK_VL) XK_FN(xk_quad_panel_v2)(out, ostride, panel, qs, qw, bias, q_lo, q_hi);
    else XK_FN(xk_quad_panel_v1)(out, ostride, panel, qs, qw, bias, q_lo, q_hi);
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
    const int64_t width = XK_SACC * XK_VL, n_src = qs->n_src, end = n_img * lay->hb * lay->wb;
    const int64_t s_hi = q_hi * 4 < qs->n_dst ? q_hi * 4 : qs->n_dst;
    XK_UNROLL for (int a = 0; a < XK_SACC; a++)  /* the zero row */
        XK_VSTORE(XK_V, panel + n_src * width + a * XK_VL, XK_VSPLAT(XK_V, (XK_T)0));
    /* the panels that hold grid positions, each copied whole (the plane has room), and of the
     * last only the vectors that hold positions (a tile can be mostly past the images: small
     * maps, few images) */
    for (int64_t a0 = 0; a0 < XK_NACC && p0 + a0 * XK_VL < end; a0 += XK_SACC) {
        XK_FN(xk_panel_copy)(panel, src + p0 + a0 * XK_VL, cstride, n_src);
        XK_FN(xk_quad_panel_upto)(part + a0 * XK_VL, XK_TILE, panel, qs, qw, bias, q_lo, q_hi,
                                  end - p0 - a0 * XK_VL);
    }
    const int64_t n = end - p0 < XK_TILE ? end - p0 : XK_TILE;
    for (int64_t slot = q_lo * 4; slot < s_hi; slot++) {
        const int64_t v = xk_quad_row(qs, slot);
        XK_FN(xk_scatter)(part + v * XK_TILE, p0, n, dst + v * dst_stride, n_img, lay, sc);
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
        XK_FN(xk_quad_panel_upto)(part, width, panel, qs, qw, bias, q_lo, q_hi, end - p);
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

/* Winograd F(2x2, 3x3) for one element type (included by cpu_kernels.h after
 * cpu_kernels_impl.h, once per type; no include guard on purpose).
 *
 * A stride-1 3x3 X-Conv computes its outputs in 2x2 tiles, each from a 4x4 patch of
 * its source.  With the standard F(2, 3) matrices
 *
 *     Bt = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
 *     G  = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
 *     At = [[1, 1, 1, 0], [0, 1, -1, -1]]
 *
 * a tile is Y = At M At^T with M = sum over the terms of (G w G^T) * (Bt d Bt^T), and
 * each of M's 16 entries k is a 1x1 X-Conv over the tiles: 16 products per tile and term
 * where the direct conv has 36.  xk_wino_tile does it for one panel of XK_SACC * XK_VL
 * tiles (positions q = (image * th + ty) * tw + tx): it transforms every source
 * channel's patches into 16 panels (one per k, xk_quad_panel's layout), runs the quads
 * of destinations once per k on them, and transforms the destinations' M back into
 * their 2x2 tiles.  Everything a panel needs stays in this thread's cache; nothing of
 * size 16 x the map is ever stored.  grad_input is the same with the kernel rotated by
 * 180 degrees and padding 2 - pad (xk_wino_weights' flip).  grad_weight sums, per edge,
 * the products of the patches' transforms and grad_out's tiles transformed back through
 * At (xk_wino_wgrad_tile, below).
 *
 * Sums of products come in a different order than in the direct conv (and through the
 * transforms), so results differ from the direct kernels in the last bits; they are the
 * same at every thread count.  An Inf or NaN in a patch reaches all four outputs of its
 * tile, and all nine taps of grad_weight of the edges that read it (as in any Winograd
 * conv). */

/* The 16 transformed weights of one term: u[k * ustride] = (G w G^T)[k] for the 3x3 taps
 * w (row-major), rotated by 180 degrees when flip. */
XK_INLINE void XK_FN(xk_wino_weight)(XK_T *u, int64_t ustride, const XK_T *w, int flip)
{
    XK_T g[9], t[4][3];
    for (int i = 0; i < 9; i++) g[i] = flip ? w[8 - i] : w[i];
    for (int c = 0; c < 3; c++) {  /* G w */
        t[0][c] = g[c];
        t[1][c] = (g[c] + g[3 + c] + g[6 + c]) * (XK_T)0.5;
        t[2][c] = (g[c] - g[3 + c] + g[6 + c]) * (XK_T)0.5;
        t[3][c] = g[6 + c];
    }
    for (int r = 0; r < 4; r++) {  /* (G w) G^T */
        u[(4 * r + 0) * ustride] = t[r][0];
        u[(4 * r + 1) * ustride] = (t[r][0] + t[r][1] + t[r][2]) * (XK_T)0.5;
        u[(4 * r + 2) * ustride] = (t[r][0] - t[r][1] + t[r][2]) * (XK_T)0.5;
        u[(4 * r + 3) * ustride] = t[r][2];
    }
}

/* uw[k * n + j] for k < 16 and the n term slots j of a quads' weight list: the transformed
 * weight of edge edges[j] of w (n_edges terms of 3x3 taps), 0 where edges[j] >= n_edges
 * (padding terms). */
static void XK_FN(xk_wino_weights)(XK_T *uw, const XK_T *w, const int64_t *edges, int64_t n, int64_t n_edges,
                                   int flip)
{
    for (int64_t j = 0; j < n; j++) {
        if (edges[j] < n_edges) {
            XK_FN(xk_wino_weight)(uw + j, n, w + edges[j] * 9, flip);
        } else {
            for (int k = 0; k < 16; k++) uw[k * n + j] = 0;
        }
    }
}

/* The 16 patch entries d[4a + b] (a vector of XK_VL tiles each) of the tiles whose patch
 * rows a start at rp[i][a] (four consecutive elements each): d = rp[i][a][b] in lane i. */
XK_INLINE void XK_FN(xk_wino_gather)(XK_V d[16], const XK_T *const rp[][4])
{
#if XK_SHUFFLE && XK_VL == 8
    /* per patch row, four 8-lane vectors of two tiles' rows each, transposed 4x4 within
     * each 128-bit half: column b of tiles 0-3 | 4-7 */
    typedef XK_FN(xk_quarter) Q;
    XK_UNROLL for (int a = 0; a < 4; a++) {
        XK_V r[4], t[4];
        XK_UNROLL for (int i = 0; i < 4; i++) {
            const Q lo = *(const Q *)rp[i][a], hi = *(const Q *)rp[i + 4][a];
            r[i] = __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7);
        }
        t[0] = __builtin_shufflevector(r[0], r[1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[1] = __builtin_shufflevector(r[0], r[1], 2, 10, 3, 11, 6, 14, 7, 15);
        t[2] = __builtin_shufflevector(r[2], r[3], 0, 8, 1, 9, 4, 12, 5, 13);
        t[3] = __builtin_shufflevector(r[2], r[3], 2, 10, 3, 11, 6, 14, 7, 15);
        d[4 * a + 0] = __builtin_shufflevector(t[0], t[2], 0, 1, 8, 9, 4, 5, 12, 13);
        d[4 * a + 1] = __builtin_shufflevector(t[0], t[2], 2, 3, 10, 11, 6, 7, 14, 15);
        d[4 * a + 2] = __builtin_shufflevector(t[1], t[3], 0, 1, 8, 9, 4, 5, 12, 13);
        d[4 * a + 3] = __builtin_shufflevector(t[1], t[3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
#else
    XK_T e[16][XK_VL];
    for (int i = 0; i < XK_VL; i++)
        XK_UNROLL for (int a = 0; a < 4; a++)
            XK_UNROLL for (int b = 0; b < 4; b++) e[4 * a + b][i] = rp[i][a][b];
    XK_UNROLL for (int k = 0; k < 16; k++) d[k] = XK_VLOAD(XK_V, e[k]);
#endif
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

/* The XK_VL tiles' 16 entries t[k] (lane i: tile i) stored tile by tile: out[16 i + k]. */
XK_INLINE void XK_FN(xk_wino_by_tile)(XK_T *out, const XK_V t[16])
{
#if XK_SHUFFLE && XK_VL == 8
    XK_UNROLL for (int h = 0; h < 2; h++) {  /* two 8x8 transposes: entries 8h..8h+7 */
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
            XK_VSTORE(XK_V, out + 16 * b + 8 * h, __builtin_shufflevector(c[b], c[4 + b], 0, 1, 2, 3, 8, 9, 10, 11));
            XK_VSTORE(XK_V, out + 16 * (b + 4) + 8 * h,
                      __builtin_shufflevector(c[b], c[4 + b], 4, 5, 6, 7, 12, 13, 14, 15));
        }
    }
#elif XK_SHUFFLE && XK_VL == 4
    XK_UNROLL for (int h = 0; h < 4; h++) {  /* four 4x4 transposes: entries 4h..4h+3 */
        const XK_V *r = t + 4 * h;
        const XK_V a = __builtin_shufflevector(r[0], r[1], 0, 4, 2, 6), b = __builtin_shufflevector(r[0], r[1], 1, 5, 3, 7);
        const XK_V c = __builtin_shufflevector(r[2], r[3], 0, 4, 2, 6), d = __builtin_shufflevector(r[2], r[3], 1, 5, 3, 7);
        XK_VSTORE(XK_V, out + 0 + 4 * h, __builtin_shufflevector(a, c, 0, 1, 4, 5));
        XK_VSTORE(XK_V, out + 16 + 4 * h, __builtin_shufflevector(b, d, 0, 1, 4, 5));
        XK_VSTORE(XK_V, out + 32 + 4 * h, __builtin_shufflevector(a, c, 2, 3, 6, 7));
        XK_VSTORE(XK_V, out + 48 + 4 * h, __builtin_shufflevector(b, d, 2, 3, 6, 7));
    }
#else
    XK_T e[16][XK_VL];
    XK_UNROLL for (int k = 0; k < 16; k++) XK_VSTORE(XK_V, e[k], t[k]);
    for (int i = 0; i < XK_VL; i++)
        XK_UNROLL for (int k = 0; k < 16; k++) out[16 * i + k] = e[k][i];
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
 * tiles past n read zeros) in n_src channels of src (images through sim): tile
 * (g, ty, tx) reads src[g, c, 2ty - pad_y + a, 2tx - pad_x + b] (a, b < 4; 0 outside the
 * image).  by_tile 0: entry k of channel c's tiles at out + k * pstride + c * XK_WINO_W
 * (xk_quad_panel's rows); by_tile 1: at out + (c * XK_WINO_W + i) * 16 + k for tile i.
 * A patch row inside the image is read in place; the rows of patches that cross the
 * left or right edge (or of images read with a column stride) are copied into a zeroed
 * stage first: with contiguous rows of at least 4 columns, as the 4 columns of the image
 * nearest the patch's, which land in the stage row shifted by up to 3 (guard elements,
 * 4 on each side, take what falls outside the patch). */
XK_INLINE void XK_FN(xk_wino_source)(const XK_T *XK_RESTRICT src, const xk_image_t *sim, int64_t th, int64_t tw,
                                     int64_t pad_y, int64_t pad_x, int64_t q0, int64_t n, int64_t n_src,
                                     XK_T *XK_RESTRICT out, int64_t pstride, const int by_tile)
{
    enum { W = XK_WINO_W };
    const int64_t H = sim->height, Wd = sim->width, row = sim->row, col = sim->col, chan = sim->chan;
    const XK_T *rp[W][4];              /* patch rows of the current channel */
    int64_t step[W][4];                /* rp's advance per channel: chan (in place) or 0 */
    int64_t s_row[W], s_x0[W];         /* the patch's row 0 at column 0, its first column */
    unsigned char lim[W][4];           /* rows [lim0, lim1) and columns [lim2, lim3) inside */
    int64_t staged[W], n_staged = 0;
    int64_t s_win[W];                  /* the first column copied (wide: 4 of them) */
    XK_T stage[W][4][12];              /* staged patch row a of tile i at stage[i][a] + 4 */
    static const XK_T zeros[4] = {0, 0, 0, 0};
    const int wide = col == 1 && Wd >= 4;
    memset(stage, 0, sizeof stage);
    for (int64_t i = 0; i < W; i++) {
        if (i >= n) {                  /* past the last tile: zeros */
            XK_UNROLL for (int a = 0; a < 4; a++) rp[i][a] = zeros, step[i][a] = 0;
            continue;
        }
        const int64_t q = q0 + i, g = q / (th * tw), ty = q / tw % th, tx = q % tw;
        const int64_t y0 = 2 * ty - pad_y, x0 = 2 * tx - pad_x;
        s_row[i] = g * sim->img + y0 * row;
        s_x0[i] = x0;
        lim[i][0] = (unsigned char)(y0 < 0 ? (-y0 < 4 ? -y0 : 4) : 0);
        lim[i][1] = (unsigned char)(H - y0 >= 4 ? 4 : H - y0 > 0 ? H - y0 : 0);
        lim[i][2] = (unsigned char)(x0 < 0 ? (-x0 < 4 ? -x0 : 4) : 0);
        lim[i][3] = (unsigned char)(Wd - x0 >= 4 ? 4 : Wd - x0 > 0 ? Wd - x0 : 0);
        const int in_row = lim[i][2] == 0 && lim[i][3] == 4 && col == 1;
        if (!in_row && lim[i][0] < lim[i][1] && lim[i][2] < lim[i][3]) staged[n_staged++] = i;
        s_win[i] = !wide ? x0 + lim[i][2] : x0 < 0 ? 0 : x0 > Wd - 4 ? Wd - 4 : x0;
        XK_UNROLL for (int a = 0; a < 4; a++) {
            const int valid = a >= lim[i][0] && a < lim[i][1] && lim[i][2] < lim[i][3];
            if (valid && in_row) {
                rp[i][a] = src + (s_row[i] + a * row + x0);
                step[i][a] = chan;
            } else {
                rp[i][a] = valid ? stage[i][a] + 4 : zeros;
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
                if (wide) {  /* columns s_win..s_win + 3 of the row (x0 is the stage row's first) */
                    memcpy(stage[i][a] + 4 + (s_win[i] - x0), s + r + s_win[i], 4 * sizeof(XK_T));
                } else {
                    XK_UNROLL for (int b = 0; b < 4; b++)
                        if (b >= lim[i][2] && b < lim[i][3]) stage[i][a][4 + b] = s[r + (x0 + b) * col];
                }
            }
        }
        XK_UNROLL for (int l = 0; l < XK_SACC; l++) {  /* V = Bt d Bt^T */
            XK_V e[16], t[16];
            XK_FN(xk_wino_gather)(e, (const XK_T *const(*)[4])rp + l * XK_VL);
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
                XK_FN(xk_wino_by_tile)(out + (c * W + l * XK_VL) * 16, e);
            } else {
                XK_T *v = out + c * W + l * XK_VL;
                XK_UNROLL for (int k = 0; k < 16; k++) XK_VSTORE(XK_V, v + k * pstride, e[k]);
            }
        }
        if (c + 1 < n_src)  /* the next channel's rows (never past the last) */
            for (int64_t i = 0; i < W; i++)
                XK_UNROLL for (int a = 0; a < 4; a++) rp[i][a] += step[i][a];
    }
}

/* One panel of Winograd tiles, positions [q0, q0 + XK_WINO_W) of the n_img * th * tw
 * tiles of src (n_img images of qs->n_src channels through sim): tile (g, ty, tx) reads
 * the patch src[g, c, 2ty - pad_y + a, 2tx - pad_x + b] (a, b < 4; 0 outside the image)
 * and writes dst[g, v, 2ty + a, 2tx + b] (a, b < 2, inside dim) for the destinations of
 * the quads q_lo <= q < q_hi:
 *   dst = bias[v] (or 0) + At (sum over v's terms of U_k[term] * V_k[channel]) At^T,
 * U_k the terms' transformed weights at uw + k * ustride in the quads' term order
 * (xk_wino_weights), V_k the patches' transforms (xk_wino_source).  Scratch: panel 16 *
 * XK_WINO_PSTRIDE(n_src + 1) elements (V: one panel per k, each with its zero row), part
 * 16 * XK_WINO_PSTRIDE(n_dst) (M; both at most 16 * (rows + 1) * XK_WINO_W). */
XK_CLONES static void XK_FN(xk_wino_tile)(const XK_T *XK_RESTRICT src, const xk_image_t *sim, int64_t n_img,
                                          int64_t th, int64_t tw, int64_t pad_y, int64_t pad_x, int64_t q0,
                                          const xk_quads_t *qs, int64_t q_lo, int64_t q_hi, const XK_T *uw,
                                          int64_t ustride, const XK_T *bias, XK_T *panel, XK_T *part,
                                          XK_T *XK_RESTRICT dst, const xk_image_t *dim)
{
    enum { W = XK_WINO_W };
    const int64_t n_src = qs->n_src, n_dst = qs->n_dst;
    const int64_t pstride = XK_WINO_PSTRIDE(n_src + 1), mstride = XK_WINO_PSTRIDE(n_dst);
    const int64_t total = n_img * th * tw, n = total - q0 < W ? total - q0 : W;
    const int64_t s_hi = q_hi * 4 < n_dst ? q_hi * 4 : n_dst;
    int64_t d_off[W];                  /* the output tile's corner */
    unsigned char out_rows[W], out_cols[W], out_full[W];  /* full: 2x2, contiguous pairs */
    for (int64_t i = 0; i < n; i++) {
        const int64_t q = q0 + i, g = q / (th * tw), ty = q / tw % th, tx = q % tw;
        d_off[i] = g * dim->img + 2 * ty * dim->row + 2 * tx * dim->col;
        out_rows[i] = (unsigned char)(dim->height - 2 * ty >= 2 ? 2 : 1);
        out_cols[i] = (unsigned char)(dim->width - 2 * tx >= 2 ? 2 : 1);
        out_full[i] = out_rows[i] == 2 && out_cols[i] == 2 && dim->col == 1;
    }
    XK_FN(xk_wino_source)(src, sim, th, tw, pad_y, pad_x, q0, n, n_src, panel, pstride, 0);
    for (int k = 0; k < 16; k++)  /* the zero rows that padding terms read */
        XK_UNROLL for (int l = 0; l < XK_SACC; l++)
            XK_VSTORE(XK_V, panel + k * pstride + n_src * W + l * XK_VL, XK_VSPLAT(XK_V, (XK_T)0));
    for (int k = 0; k < 16; k++)
        XK_FN(xk_quad_panel)(part + k * mstride, W, panel + k * pstride, qs, uw + k * ustride, NULL, q_lo, q_hi);
    for (int64_t slot = q_lo * 4; slot < s_hi; slot++) {
        const int64_t v = xk_quad_row(qs, slot);
        const XK_T *m = part + v * W;
        XK_T y[2][2 * W];              /* output row a of tile i: y[a][2i], y[a][2i + 1] */
        const XK_V b0 = XK_VSPLAT(XK_V, bias ? bias[v] : (XK_T)0);
        XK_UNROLL for (int l = 0; l < XK_SACC; l++) {  /* Y = At M At^T */
            XK_V e[16], s2[8];
            XK_UNROLL for (int k = 0; k < 16; k++) e[k] = XK_VLOAD(XK_V, m + k * mstride + l * XK_VL);
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
            for (int64_t i = 0; i < n; i += 4) {
                __builtin_prefetch(o2 + d_off[i], 1);
                __builtin_prefetch(o2 + d_off[i] + drow, 1);
            }
        }
        for (int64_t i = 0; i < n; i++) {
            XK_T *t = o + d_off[i];
            if (out_full[i]) {
                memcpy(t, &y[0][2 * i], 2 * sizeof(XK_T));
                memcpy(t + drow, &y[1][2 * i], 2 * sizeof(XK_T));
            } else {  /* columns not contiguous, or odd sizes: the tile's last row or column is outside */
                for (int a = 0; a < out_rows[i]; a++)
                    for (int b = 0; b < out_cols[i]; b++) t[a * drow + b * dcol] = y[a][2 * i + b];
            }
        }
    }
}

/* grad_weight by Winograd.  A tile's Y = At M At^T with M = sum over a destination's terms
 * of U * V (U = G w G^T), so a term's dU = sum over the tiles of dM * V, where dM = At^T dY
 * At (4x4, from the tile's 2x2 of grad_out), and grad_w = G^T dU G
 * (xk_wino_wgrad_finish): 16 products per tile and edge where the direct dot products
 * have 36.  A tile's 16 entries are contiguous (xk_wino_source's by_tile layout), so an
 * edge's 16 sums accumulate lane by lane over the tiles, with no reduction across lanes. */

/* Edges per pass of xk_wino_wdot: with XK_VL = 8, their 4 x 2 accumulators and dM's
 * two vectors take 10 of AVX2's 16 registers; each tile loads 2 + 4 * 2 vectors for 8
 * FMAs. */
#define XK_WINO_WTERMS 4

/* acc[16 j + k] += sum over tiles i < n of dm[16 i + k] * vp[j][16 i + k] for j < m. */
XK_INLINE void XK_FN(xk_wino_wdot)(XK_T *acc, const XK_T *XK_RESTRICT dm, const XK_T *const *vp, int64_t n,
                                   const int m)
{
    enum { NV = 16 / XK_VL };
    XK_V s[XK_WINO_WTERMS][NV];
    XK_UNROLL for (int j = 0; j < m; j++)
        XK_UNROLL for (int b = 0; b < NV; b++) s[j][b] = XK_VSPLAT(XK_V, (XK_T)0);
    for (int64_t i = 0; i < n; i++) {
        XK_V d[NV];
        XK_UNROLL for (int b = 0; b < NV; b++) d[b] = XK_VLOAD(XK_V, dm + 16 * i + b * XK_VL);
        XK_UNROLL for (int j = 0; j < m; j++)
            XK_UNROLL for (int b = 0; b < NV; b++) s[j][b] += d[b] * XK_VLOAD(XK_V, vp[j] + 16 * i + b * XK_VL);
    }
    XK_UNROLL for (int j = 0; j < m; j++)
        XK_UNROLL for (int b = 0; b < NV; b++)
            XK_VSTORE(XK_V, acc + 16 * j + b * XK_VL, XK_VLOAD(XK_V, acc + 16 * j + b * XK_VL) + s[j][b]);
}

/* The same for the XK_SHARE destinations of a block expander's run and one edge they all
 * have (the same source): acc[o * astride + k] += sum over tiles i < n of
 * dm[o * XK_WINO_W * 16 + 16 i + k] * vp[16 i + k].  Each vp load feeds XK_SHARE FMAs (the
 * transformed tiles come from L2, dm from L1); every sum runs in xk_wino_wdot's order. */
XK_INLINE void XK_FN(xk_wino_wdot_shared)(XK_T *acc, int64_t astride, const XK_T *XK_RESTRICT dm,
                                          const XK_T *XK_RESTRICT vp, int64_t n)
{
    enum { NV = 16 / XK_VL, DS = XK_WINO_W * 16 };
    XK_V s[XK_SHARE][NV];
    XK_UNROLL for (int o = 0; o < XK_SHARE; o++)
        XK_UNROLL for (int b = 0; b < NV; b++) s[o][b] = XK_VSPLAT(XK_V, (XK_T)0);
    for (int64_t i = 0; i < n; i++) {
        XK_V x[NV];
        XK_UNROLL for (int b = 0; b < NV; b++) x[b] = XK_VLOAD(XK_V, vp + 16 * i + b * XK_VL);
        XK_UNROLL for (int o = 0; o < XK_SHARE; o++)
            XK_UNROLL for (int b = 0; b < NV; b++) s[o][b] += XK_VLOAD(XK_V, dm + o * DS + 16 * i + b * XK_VL) * x[b];
    }
    XK_UNROLL for (int o = 0; o < XK_SHARE; o++)
        XK_UNROLL for (int b = 0; b < NV; b++)
            XK_VSTORE(XK_V, acc + o * astride + b * XK_VL, XK_VLOAD(XK_V, acc + o * astride + b * XK_VL) + s[o][b]);
}

/* One panel of the tiles of xk_wino_tile (positions [q0, q0 + XK_WINO_W) of n_img * th *
 * tw) for grad_weight: for the destinations v < n_dst and their terms j < degree,
 *   acc[(v * degree + j) * 16 + k] += sum over the panel's tiles of dM_k * V_k,
 * V the transformed patches of x (n_src channels through xim) at channel index[v, j],
 * dM the transformed 2x2 tiles of grad_out (g through gim; 0 outside it).  shared: index
 * rows equal in runs of XK_SHARE (block expanders; n_dst a multiple of it), each
 * run's edges one at a time for its four destinations (xk_wino_wdot_shared), with the
 * same results.  Scratch: vbuf n_src * XK_WINO_W * 16 elements.  Every sum runs over the
 * panel's tiles in order (_wino_wgrads adds the panels' sums in a fixed order too). */
XK_CLONES static void XK_FN(xk_wino_wgrad_tile)(const XK_T *XK_RESTRICT x, const xk_image_t *xim,
                                                const XK_T *XK_RESTRICT g, const xk_image_t *gim, int64_t n_img,
                                                int64_t th, int64_t tw, int64_t pad_y, int64_t pad_x, int64_t q0,
                                                int64_t n_src, const int64_t *index, int64_t degree, int64_t n_dst,
                                                int shared, XK_T *XK_RESTRICT vbuf,
                                                XK_T *XK_RESTRICT acc)
{
    enum { W = XK_WINO_W };
    const int64_t total = n_img * th * tw, n = total - q0 < W ? total - q0 : W;
    const int64_t drow = gim->row, dcol = gim->col;
    const int share = shared ? XK_SHARE : 1;
    int64_t d_off[W];                  /* the grad_out tile's corner */
    unsigned char in_rows[W], in_cols[W];
    XK_T y[4][W];                      /* dY of tile i: y[2a + b][i] */
    XK_T dm[XK_SHARE][W * 16];         /* dM of tile i: dm[o][16 i + k], destination v0 + o */
    memset(y, 0, sizeof y);
    for (int64_t i = 0; i < n; i++) {
        const int64_t q = q0 + i, gi = q / (th * tw), ty = q / tw % th, tx = q % tw;
        d_off[i] = gi * gim->img + 2 * ty * drow + 2 * tx * dcol;
        in_rows[i] = (unsigned char)(gim->height - 2 * ty >= 2 ? 2 : 1);
        in_cols[i] = (unsigned char)(gim->width - 2 * tx >= 2 ? 2 : 1);
    }
    XK_FN(xk_wino_source)(x, xim, th, tw, pad_y, pad_x, q0, n, n_src, vbuf, 0, 1);
    for (int64_t v0 = 0; v0 < n_dst; v0 += share) {
        for (int o = 0; o < share; o++) {
            const int64_t v = v0 + o;
            const XK_T *gv = g + v * gim->chan;
            if (v + XK_WINO_OUT_AHEAD < n_dst) {  /* the grad_out lines of a destination ahead */
                const XK_T *g2 = gv + XK_WINO_OUT_AHEAD * gim->chan;
                for (int64_t i = 0; i < n; i += 4) {
                    __builtin_prefetch(g2 + d_off[i]);
                    __builtin_prefetch(g2 + d_off[i] + drow);
                }
            }
            for (int64_t i = 0; i < n; i++) {
                const XK_T *t = gv + d_off[i];
                y[0][i] = t[0];
                y[1][i] = in_cols[i] == 2 ? t[dcol] : (XK_T)0;
                y[2][i] = in_rows[i] == 2 ? t[drow] : (XK_T)0;
                y[3][i] = in_rows[i] == 2 && in_cols[i] == 2 ? t[drow + dcol] : (XK_T)0;
            }
            XK_UNROLL for (int l = 0; l < XK_SACC; l++) {  /* dM = At^T dY At */
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
                XK_FN(xk_wino_by_tile)(dm[o] + l * XK_VL * 16, e);
            }
        }
        XK_T *av = acc + v0 * degree * 16;
        const int64_t *iv = index + v0 * degree;
        if (shared) {  /* one source per edge for the whole run */
            for (int64_t j = 0; j < degree; j++)
                XK_FN(xk_wino_wdot_shared)(av + j * 16, degree * 16, dm[0], vbuf + iv[j] * W * 16, n);
            continue;
        }
        for (int64_t j = 0; j < degree; j += XK_WINO_WTERMS) {
            const XK_T *vp[XK_WINO_WTERMS];
            const int64_t m = degree - j < XK_WINO_WTERMS ? degree - j : XK_WINO_WTERMS;
            for (int64_t s = 0; s < m; s++) vp[s] = vbuf + iv[j + s] * W * 16;
            if (m == 4) XK_FN(xk_wino_wdot)(av + j * 16, dm[0], vp, n, 4);
            else if (m == 3) XK_FN(xk_wino_wdot)(av + j * 16, dm[0], vp, n, 3);
            else if (m == 2) XK_FN(xk_wino_wdot)(av + j * 16, dm[0], vp, n, 2);
            else XK_FN(xk_wino_wdot)(av + j * 16, dm[0], vp, n, 1);
        }
    }
}

/* grad_w[9 e + 3 r + c] = (G^T dU_e G)[r][c] for the n_edges sums dU_e = acc[16 e, 16 e + 16). */
static void XK_FN(xk_wino_wgrad_finish)(XK_T *grad_w, const XK_T *acc, int64_t n_edges)
{
    const XK_T h = (XK_T)0.5;
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

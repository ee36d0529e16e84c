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
 * 180 degrees and padding 2 - pad (xk_wino_weights' flip).
 *
 * Sums of products come in a different order than in the direct conv (and through the
 * transforms), so results differ from the direct kernels in the last bits; they are the
 * same at every thread count.  An Inf or NaN in a patch reaches all four outputs of its
 * tile (as in any Winograd conv). */

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

/* One panel of Winograd tiles, positions [q0, q0 + XK_SACC * XK_VL) of the n_img * th * tw
 * tiles of src (n_img images of qs->n_src channels through sim): tile (g, ty, tx) reads
 * the patch src[g, c, 2ty - pad_y + a, 2tx - pad_x + b] (a, b < 4; 0 outside the image)
 * and writes dst[g, v, 2ty + a, 2tx + b] (a, b < 2, inside dim) for the destinations of
 * the quads q_lo <= q < q_hi:
 *   dst = bias[v] (or 0) + At (sum over v's terms of U_k[term] * V_k[channel]) At^T,
 * U_k the terms' transformed weights at uw + k * ustride in the quads' term order
 * (xk_wino_weights), V_k the patches' transforms.  Scratch: panel 16 *
 * XK_WINO_PSTRIDE(n_src + 1) elements (V: one panel per k, each with its zero row), part
 * 16 * XK_WINO_PSTRIDE(n_dst) (M; both at most 16 * (rows + 1) * XK_WINO_W).  A patch
 * row inside the image is read in place; rows outside read zeros, and the rows of
 * patches that cross the left or right edge (or of images read with a column stride)
 * are copied into a zeroed stage first. */
#define XK_WINO_W (XK_SACC * XK_VL)
/* Source channels ahead whose staged patch rows are prefetched, and destinations ahead
 * whose output lines are. */
#define XK_WINO_AHEAD 12
#define XK_WINO_OUT_AHEAD 4
/* Panels one k apart, padded by a cache line: at a multiple of 4 KiB apart, the 16 loads
 * of one tile's entries would fall into one L1 set. */
#define XK_WINO_PSTRIDE(rows) ((rows) * XK_WINO_W + 2 * XK_VL)
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
    const int64_t H = sim->height, Wd = sim->width, row = sim->row, col = sim->col, chan = sim->chan;
    const XK_T *rp[W][4];              /* patch rows of the current channel */
    int64_t step[W][4];                /* rp's advance per channel: chan (in place) or 0 */
    int64_t s_off[W], d_off[W];        /* the patch's and the output tile's corner */
    unsigned char lim[W][4], out_rows[W], out_cols[W], out_full[W];  /* full: 2x2, contiguous pairs */
    int64_t staged[W], n_staged = 0;
    XK_T stage[W][16];
    static const XK_T zeros[4] = {0, 0, 0, 0};
    memset(stage, 0, sizeof stage);
    for (int64_t i = 0; i < W; i++) {
        if (i >= n) {                  /* past the last tile: zeros */
            XK_UNROLL for (int a = 0; a < 4; a++) rp[i][a] = zeros, step[i][a] = 0;
            continue;
        }
        const int64_t q = q0 + i, g = q / (th * tw), ty = q / tw % th, tx = q % tw;
        const int64_t y0 = 2 * ty - pad_y, x0 = 2 * tx - pad_x;
        s_off[i] = g * sim->img + y0 * row + x0 * col;
        lim[i][0] = (unsigned char)(y0 < 0 ? (-y0 < 4 ? -y0 : 4) : 0);
        lim[i][1] = (unsigned char)(H - y0 >= 4 ? 4 : H - y0 > 0 ? H - y0 : 0);
        lim[i][2] = (unsigned char)(x0 < 0 ? (-x0 < 4 ? -x0 : 4) : 0);
        lim[i][3] = (unsigned char)(Wd - x0 >= 4 ? 4 : Wd - x0 > 0 ? Wd - x0 : 0);
        const int in_row = lim[i][2] == 0 && lim[i][3] == 4 && col == 1;
        if (!in_row && lim[i][0] < lim[i][1] && lim[i][2] < lim[i][3]) staged[n_staged++] = i;
        XK_UNROLL for (int a = 0; a < 4; a++) {
            const int valid = a >= lim[i][0] && a < lim[i][1] && lim[i][2] < lim[i][3];
            if (valid && in_row) {
                rp[i][a] = src + s_off[i] + a * row;
                step[i][a] = chan;
            } else {
                rp[i][a] = valid ? stage[i] + 4 * a : zeros;
                step[i][a] = 0;
            }
        }
        d_off[i] = g * dim->img + 2 * ty * dim->row + 2 * tx * dim->col;
        out_rows[i] = (unsigned char)(dim->height - 2 * ty >= 2 ? 2 : 1);
        out_cols[i] = (unsigned char)(dim->width - 2 * tx >= 2 ? 2 : 1);
        out_full[i] = out_rows[i] == 2 && out_cols[i] == 2 && dim->col == 1;
    }
    for (int64_t c = 0; c < n_src; c++) {
        const XK_T *s = src + c * chan;
        for (int64_t j = 0; j < n_staged; j++) {
            const int64_t i = staged[j];
            const XK_T *p = s + s_off[i];
            for (int a = lim[i][0]; a < lim[i][1]; a++) {  /* (no memcpy call for 1-4 elements) */
                if (c + XK_WINO_AHEAD < n_src)
                    __builtin_prefetch(p + XK_WINO_AHEAD * chan + a * row + lim[i][2] * col);
                XK_UNROLL for (int b = 0; b < 4; b++)
                    if (b >= lim[i][2] && b < lim[i][3]) stage[i][4 * a + b] = p[a * row + b * col];
            }
        }
        XK_T *v = panel + c * W;
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
                XK_VSTORE(XK_V, v + (r + 0) * pstride + l * XK_VL, t[r + 0] - t[r + 2]);
                XK_VSTORE(XK_V, v + (r + 1) * pstride + l * XK_VL, t[r + 1] + t[r + 2]);
                XK_VSTORE(XK_V, v + (r + 2) * pstride + l * XK_VL, t[r + 2] - t[r + 1]);
                XK_VSTORE(XK_V, v + (r + 3) * pstride + l * XK_VL, t[r + 1] - t[r + 3]);
            }
        }
        if (c + 1 < n_src)  /* the next channel's rows (never past the last) */
            for (int64_t i = 0; i < W; i++)
                XK_UNROLL for (int a = 0; a < 4; a++) rp[i][a] += step[i][a];
    }
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

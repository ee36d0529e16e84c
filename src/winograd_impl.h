/* Winograd F(2x2, 3x3) transforms for one element type (included by cpu_kernels.h
 * like cpu_kernels_impl.h; no include guard on purpose).
 *
 * A stride-1 3x3 X-Conv computes its outputs in 2x2 tiles, each from a 4x4 input
 * patch.  With the standard F(2, 3) matrices
 *
 *     Bt = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
 *     G  = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
 *     At = [[1, 1, 1, 0], [0, 1, -1, -1]]
 *
 * a tile is Y = At (sum over the terms of (G w G^T) * (Bt d Bt^T)) At^T, and the sum
 * is, for each of the 16 entries k of the 4x4 transformed tile, a 1x1 X-Conv over
 * the tiles: 16 products per tile where the direct conv has 36.  xk_wino_pack puts
 * patch entry (a, c) of every tile of a channel into plane 4a + c, xk_wino_input
 * transforms the 16 planes in place, cpu_kernels.pyx runs the
 * 1x1 kernel once per k, and transforms back.  The weight transform G w G^T is in
 * cpu_kernels.pyx.  grad_input is the same correlation with the kernel rotated by
 * 180 degrees; grad_weight stays direct.
 *
 * The transforms work position by position on planes of `n` positions (a
 * multiple of XK_VL) that lie `len` elements apart. */

/* The 16 patch planes of one channel for 2x2 output tiles: plane 4a + c (at
 * dst + (4a + c) * kstride) holds at position (g * th + ty) * tw + tx the value
 * src[g, 2ty + a - pad_y, 2tx + c - pad_x] of image g < n_img, 0 outside the image;
 * positions from n_img * th * tw up to len are zeroed.  Each source row is split
 * into its even and odd columns once (64 tiles at a time) and copied to the 4 planes
 * of its patch row. */
static void XK_FN(xk_wino_pack)(XK_T *XK_RESTRICT dst, int64_t kstride, const XK_T *XK_RESTRICT src,
                                int64_t n_img, const xk_image_t *im, int64_t th, int64_t tw, int64_t pad_y,
                                int64_t pad_x, int64_t len)
{
    enum { RUN = 64 };
    XK_T even[RUN + 1], odd[RUN + 1];
    const int64_t filled = n_img * th * tw;
    for (int64_t g = 0; g < n_img; g++) {
        for (int64_t ty = 0; ty < th; ty++) {
            const int64_t q = (g * th + ty) * tw;
            for (int64_t a = 0; a < 4; a++) {
                const int64_t y = 2 * ty + a - pad_y;
                XK_T *d = dst + 4 * a * kstride + q;
                if (y < 0 || y >= im->height) {
                    for (int64_t c = 0; c < 4; c++)
                        for (int64_t t = 0; t < tw; t++) d[c * kstride + t] = 0;
                    continue;
                }
                const XK_T *s = src + g * im->img + y * im->row;
                for (int64_t t0 = 0; t0 < tw; t0 += RUN) {
                    const int64_t n = tw - t0 < RUN ? tw - t0 : RUN;
                    /* even[t] = s[2(t0 + t) - pad_x], odd[t] = the next column, t <= n;
                     * both columns inside the row for t in [t_lo, t_hi] */
                    const int64_t lo_num = pad_x - 2 * t0, hi_num = im->width - 2 + pad_x - 2 * t0;
                    const int64_t t_lo = lo_num > 0 ? (lo_num + 1) / 2 : 0;
                    const int64_t t_hi = hi_num < 0 ? -1 : (hi_num / 2 < n ? hi_num / 2 : n);
                    const int64_t x_base = 2 * t0 - pad_x;
                    for (int64_t t = 0; t <= n; t++) {
                        if (t == t_lo && t_lo <= t_hi) {
                            if (im->col == 1) {
                                for (; t <= t_hi; t++) {
                                    even[t] = s[x_base + 2 * t];
                                    odd[t] = s[x_base + 2 * t + 1];
                                }
                            } else {
                                for (; t <= t_hi; t++) {
                                    even[t] = s[(x_base + 2 * t) * im->col];
                                    odd[t] = s[(x_base + 2 * t + 1) * im->col];
                                }
                            }
                            if (t > n) break;
                        }
                        const int64_t x0 = 2 * (t0 + t) - pad_x;
                        even[t] = x0 >= 0 && x0 < im->width ? s[x0 * im->col] : (XK_T)0;
                        odd[t] = x0 + 1 >= 0 && x0 + 1 < im->width ? s[(x0 + 1) * im->col] : (XK_T)0;
                    }
                    for (int64_t c = 0; c < 4; c++) {  /* short rows: no memcpy call */
                        const XK_T *from = (c % 2 ? odd : even) + c / 2;
                        XK_T *to = d + c * kstride + t0;
                        int64_t t = 0;
                        for (; t + XK_VL <= n; t += XK_VL) XK_VSTORE(XK_V, to + t, XK_VLOAD(XK_V, from + t));
                        for (; t < n; t++) to[t] = from[t];
                    }
                }
            }
        }
    }
    for (int64_t k = 0; k < 16; k++)
        memset(dst + k * kstride + filled, 0, (size_t)(len - filled) * sizeof(XK_T));
}

/* p[k * len + q], k = 4a + c: the patch entries d[a][c] -> Bt d Bt^T. */
XK_CLONES static void XK_FN(xk_wino_input)(XK_T *p, int64_t len, int64_t n)
{
    for (int64_t q = 0; q < n; q += XK_VL) {
        XK_V d[16], t[16];
        XK_UNROLL for (int k = 0; k < 16; k++) d[k] = XK_VLOAD(XK_V, p + k * len + q);
        XK_UNROLL for (int c = 0; c < 4; c++) {  /* rows: Bt d */
            t[0 + c] = d[0 + c] - d[8 + c];
            t[4 + c] = d[4 + c] + d[8 + c];
            t[8 + c] = d[8 + c] - d[4 + c];
            t[12 + c] = d[4 + c] - d[12 + c];
        }
        XK_UNROLL for (int r = 0; r < 16; r += 4) {  /* columns: (Bt d) Bt^T */
            XK_VSTORE(XK_V, p + (r + 0) * len + q, t[r + 0] - t[r + 2]);
            XK_VSTORE(XK_V, p + (r + 1) * len + q, t[r + 1] + t[r + 2]);
            XK_VSTORE(XK_V, p + (r + 2) * len + q, t[r + 2] - t[r + 1]);
            XK_VSTORE(XK_V, p + (r + 3) * len + q, t[r + 1] - t[r + 3]);
        }
    }
}

/* p[k * len + q], 16 planes of one output's transformed tiles M -> planes 0-3 hold
 * bias + At M At^T, entry (a, c) of each 2x2 output tile in plane 2a + c. */
XK_CLONES static void XK_FN(xk_wino_output)(XK_T *p, int64_t len, int64_t n, XK_T bias)
{
    for (int64_t q = 0; q < n; q += XK_VL) {
        XK_V m[16], s[8];
        XK_UNROLL for (int k = 0; k < 16; k++) m[k] = XK_VLOAD(XK_V, p + k * len + q);
        XK_UNROLL for (int c = 0; c < 4; c++) {  /* rows: At M, s[4a + c] */
            s[0 + c] = m[0 + c] + m[4 + c] + m[8 + c];
            s[4 + c] = m[4 + c] - m[8 + c] - m[12 + c];
        }
        XK_UNROLL for (int a = 0; a < 2; a++) {  /* columns: (At M) At^T */
            XK_VSTORE(XK_V, p + (2 * a + 0) * len + q, bias + (s[4 * a + 0] + s[4 * a + 1] + s[4 * a + 2]));
            XK_VSTORE(XK_V, p + (2 * a + 1) * len + q, bias + (s[4 * a + 1] - s[4 * a + 2] - s[4 * a + 3]));
        }
    }
}

/* Output tiles -> dst: y[(2a + c) * len + (g * th + ty) * tw + tx] is
 * dst[g * im->img + (2ty + a) * im->row + (2tx + c) * im->col] for the n_img images,
 * where 2ty + a < im->height and 2tx + c < im->width (odd sizes drop the last half tile). */
static void XK_FN(xk_wino_scatter)(const XK_T *y, int64_t len, int64_t n_img, int64_t th, int64_t tw,
                                   XK_T *dst, const xk_image_t *im)
{
    for (int64_t g = 0; g < n_img; g++) {
        for (int64_t a = 0; a < 2; a++) {
            for (int64_t ty = 0; ty < th && 2 * ty + a < im->height; ty++) {
                XK_T *row = dst + g * im->img + (2 * ty + a) * im->row;
                const XK_T *y0 = y + (2 * a) * len + (g * th + ty) * tw;
                const XK_T *y1 = y0 + len;
                const int64_t pairs = im->width / 2;
                if (im->col == 1) {
                    for (int64_t tx = 0; tx < pairs; tx++) {
                        row[2 * tx] = y0[tx];
                        row[2 * tx + 1] = y1[tx];
                    }
                } else {
                    for (int64_t tx = 0; tx < pairs; tx++) {
                        row[2 * tx * im->col] = y0[tx];
                        row[(2 * tx + 1) * im->col] = y1[tx];
                    }
                }
                if (im->width % 2) row[(im->width - 1) * im->col] = y0[pairs];
            }
        }
    }
}

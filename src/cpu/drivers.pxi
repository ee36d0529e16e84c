# ---------------------------------------------------------------- engines
#
# One parallel region per kernel: prange over n_chunks chunks (one per thread),
# each a contiguous share of the work with its own packing buffer, so there is
# no barrier and no shared write.  A chunk packs a group of images when it
# first needs it; a group split between two chunks is packed by both (packing
# costs ~1/(Cout*D*kh*kw/Cin) of the products).

cdef void _pack_group(floating *buf, int64_t cstride, const floating *src, const xk_image_t *im,
                      int64_t first, int64_t n_chan, const xk_frame_t *frames, int64_t n_frames,
                      const xk_layout_t *lay, int64_t n_img) noexcept nogil:
    """buf[c*cstride + k*len ...] <- channel first + c of n_img images through frame k."""
    cdef int64_t c, k
    if (lay.hb == 1 and lay.wb == 1 and n_frames == 1 and im.height == 1 and im.width == 1
            and frames[0].off_y == 0 and frames[0].off_x == 0):
        if floating is float:
            xk_pack_points_f32(buf, cstride, src + first * im.chan, n_chan, n_img, im, lay.len)
        else:
            xk_pack_points_f64(buf, cstride, src + first * im.chan, n_chan, n_img, im, lay.len)
        return
    for c in range(n_chan):
        for k in range(n_frames):
            if floating is float:
                xk_pack_f32(buf + c * cstride + k * lay.len, src + (first + c) * im.chan, n_img, im, lay,
                            &frames[k])
            else:
                xk_pack_f64(buf + c * cstride + k * lay.len, src + (first + c) * im.chan, n_img, im, lay,
                            &frames[k])


cdef void _correlate(
        const floating *src, const xk_image_t *src_im, int64_t n_src,  # IN: (B, n_src, H, W)
        const xk_frame_t *frames, int64_t n_frames, const xk_layout_t *lay, int64_t cstride,
        int64_t batch, int64_t group,
        floating *packed,                                              # scratch: n_chunks * n_src * cstride
        const int64_t *ptr, int64_t n_cb,                              # IN: term lists, CSR over (n_dst, n_cb)
        const int64_t *chan, const int64_t *wrow, int64_t n_dst,
        const floating *w, int64_t wstride, int64_t shared,            # IN: tap weights per term row
        const int64_t *tap_ptr, const int64_t *toff, int64_t n_phases, # IN: taps of each output phase
        int64_t rows3, int64_t a3, int64_t col_tiles,                  # IN: 0 or _rows3's wb (one phase); tile shape
        const floating *bias,                                          # IN: (n_dst,) or NULL
        floating *dst, const xk_image_t *dst_im,                       # OUT: (B, n_dst, ...)
        const xk_scatter_t *scatter,                                   # IN: per output phase
        int n_chunks) noexcept nogil:
    """dst[b, d] = bias[d] + sum over terms j of d and taps t of each output phase of
    w[wrow[j] * wstride + tap] * plane(chan[j])[toff[t] + position].
    shared: destinations come in runs of XK_SHARE with equal channel lists, the
    weights interleaved by output (xk_corr_shared, _shared_weights), n_dst a
    multiple of XK_SHARE.

    Work items (group, phase, tile, block of XK_VBLOCK outputs), tile-major within
    a group so that consecutive items read the same planes; every item writes its
    own outputs, summing in list order whichever chunk runs it.  A tile is XK_TILE
    consecutive positions, or with rows3 (and not shared) XK_NACC / a3 grid rows of a3
    vectors: the grid rows of a group in blocks of XK_NACC / a3, each cut into
    col_tiles columns of a3 vectors from column 0 (the last may reach past the row:
    positions computed for nothing and not scattered).
    """
    cdef int64_t tile = XK_TILE_F32 if floating is float else XK_TILE_F64
    cdef int64_t lanes = XK_LANES_F32 if floating is float else XK_LANES_F64
    cdef int64_t plane = lay.hb * lay.wb
    cdef int64_t n_vb = (n_dst + XK_VBLOCK - 1) // XK_VBLOCK
    cdef int64_t tiles_per_group = (group * plane + tile - 1) // tile
    cdef int64_t rows_per_tile = 0, p0
    if rows3 > 0 and not shared:
        rows_per_tile = XK_NACC // a3
        tiles_per_group = (group * lay.hb + rows_per_tile - 1) // rows_per_tile * col_tiles
    cdef int64_t per_group = n_phases * tiles_per_group * n_vb
    cdef int64_t total = (batch + group - 1) // group * per_group
    cdef int64_t chunk, item, packed_group, grp, g0, ng, t, d0, k, nvec
    cdef floating *buf
    for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
        buf = packed + chunk * n_src * cstride
        packed_group = -1
        for item in range(total * chunk // n_chunks, total * (chunk + 1) // n_chunks):
            grp = item // per_group
            g0 = grp * group
            ng = min(group, batch - g0)
            t = item // n_vb % tiles_per_group
            if rows_per_tile > 0:
                if t // col_tiles * rows_per_tile >= ng * lay.hb:  # past the end of a shorter group
                    continue
                p0 = t // col_tiles * rows_per_tile * lay.wb + t % col_tiles * a3 * lanes
            else:
                if t * tile >= ng * plane:
                    continue
                p0 = t * tile
            if grp != packed_group:
                _pack_group(buf, cstride, src + g0 * src_im.img, src_im, 0, n_src, frames, n_frames, lay, ng)
                packed_group = grp
            d0 = item % n_vb * XK_VBLOCK
            k = item % per_group // (tiles_per_group * n_vb)
            nvec = XK_NACC
            if rows3 == 0 and tap_ptr[k + 1] - tap_ptr[k] == 1:  # one tap: a narrower last tile
                nvec = min(XK_NACC, (ng * plane - p0 + 4 * lanes - 1) // (4 * lanes) * 4)
            if floating is float:
                xk_corr_tiles_f32(buf, cstride, p0, nvec, ptr + d0 * n_cb, n_cb, chan, wrow,
                                  w + tap_ptr[k], wstride, shared, toff + tap_ptr[k], tap_ptr[k + 1] - tap_ptr[k], rows3, a3,
                                  bias + d0 if bias != NULL else NULL, min(XK_VBLOCK, n_dst - d0),
                                  dst + g0 * dst_im.img + d0 * dst_im.chan, dst_im.chan, ng, lay, &scatter[k])
            else:
                xk_corr_tiles_f64(buf, cstride, p0, nvec, ptr + d0 * n_cb, n_cb, chan, wrow,
                                  w + tap_ptr[k], wstride, shared, toff + tap_ptr[k], tap_ptr[k + 1] - tap_ptr[k], rows3, a3,
                                  bias + d0 if bias != NULL else NULL, min(XK_VBLOCK, n_dst - d0),
                                  dst + g0 * dst_im.img + d0 * dst_im.chan, dst_im.chan, ng, lay, &scatter[k])


cdef inline int64_t _quad_blocks(int64_t n_quads, int64_t n_tiles, int n_chunks) noexcept nogil:
    """Blocks into which a tile's quads are split, each block a work item of its own: 1, or
    with fewer tiles than 4 per thread (small batches and maps) enough for 4 items per
    thread (each block copies or transforms its tile's panels again)."""
    if n_chunks > 1 and n_tiles < 4 * n_chunks:
        return min(n_quads, (4 * n_chunks + n_tiles - 1) // n_tiles)
    return 1


cdef void _whole_tiles(
        const floating *src, const xk_image_t *src_im, int64_t n_src,  # IN: (B, n_src, H, W)
        const xk_frame_t *frame, const xk_layout_t *lay, int64_t cstride, int64_t toff0,
        int64_t batch, int64_t group,
        floating *packed, floating *parts, floating *panels,           # scratch per chunk: n_src * cstride,
                                                                       #   n_dst * tile, quads: (n_src + 1) * panel
        const int64_t *chan, const xk_quads_t *qs,                     # IN: spread: the runs' index rows; or quads
        const floating *w, int64_t degree, const floating *bias,       # IN: weights (_shared_weights, quads' order)
        floating *dst, const xk_image_t *dst_im, int64_t n_dst,        # OUT: (B, n_dst, H, W)
        const xk_scatter_t *scatter, bint direct, int n_chunks) noexcept nogil:
    """1x1 kernels whose work items (group, tile) compute every destination of their tile,
    so a thread's items write their own positions and every element is summed in one
    order at any thread count.  qs NULL: grad_input of a block expander with one output
    phase (index rows equal in runs of XK_SHARE; xk_spread_tile, in order runs, terms,
    outputs).  Otherwise quads of destinations with their own channel lists (xk_quad_tile,
    the forward or grad_input of random expanders; terms in list order); with direct
    (stride 1, no padding, rows of src and dst contiguous, images of at least a panel)
    read and written in place, tiles over the whole batch (xk_quad_tile_direct).  With
    fewer tiles than 4 per thread, items are (tile, block of quads)."""
    cdef int64_t tile = XK_TILE_F32 if floating is float else XK_TILE_F64
    cdef int64_t lanes = XK_LANES_F32 if floating is float else XK_LANES_F64
    cdef int64_t plane = lay.hb * lay.wb
    cdef int64_t tiles_per_group = (group * plane + tile - 1) // tile
    cdef int64_t total = (batch + group - 1) // group * tiles_per_group
    cdef int64_t chunk, item, packed_group, grp, g0, ng, t
    cdef floating *buf
    cdef floating *part
    cdef floating *panel
    cdef int64_t hw = src_im.height * src_im.width
    # quads: items are (tile, block of quads), _quad_blocks
    cdef int64_t n_quads = (n_dst + XK_SHARE - 1) // XK_SHARE if qs != NULL else 1
    cdef int64_t n_tiles = (batch * hw + tile - 1) // tile if direct else total
    cdef int64_t n_ob = _quad_blocks(n_quads, n_tiles, n_chunks) if qs != NULL else 1
    cdef int64_t per_ob = (n_quads + n_ob - 1) // n_ob, q_lo, q_hi
    total = n_tiles * n_ob
    if direct:
        for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
            part = parts + chunk * n_dst * XK_SACC * lanes
            panel = panels + chunk * (n_src + 1) * XK_SACC * lanes
            for item in range(total * chunk // n_chunks, total * (chunk + 1) // n_chunks):
                t = item // n_ob
                q_lo = item % n_ob * per_ob
                q_hi = min(n_quads, q_lo + per_ob)
                if qs != NULL:
                    if floating is float:
                        xk_quad_tile_direct_f32(src, src_im.img, src_im.chan, hw, batch, t * tile, qs, q_lo, q_hi, w,
                                                bias, panel, part, dst, dst_im.img, dst_im.chan)
                    else:
                        xk_quad_tile_direct_f64(src, src_im.img, src_im.chan, hw, batch, t * tile, qs, q_lo, q_hi, w,
                                                bias, panel, part, dst, dst_im.img, dst_im.chan)
                elif floating is float:
                    xk_spread_tile_direct_f32(src, src_im.img, src_im.chan, hw, batch, t * tile, chan, w,
                                              n_src // XK_SHARE, degree, n_dst, panel, part, dst, dst_im.img,
                                              dst_im.chan)
                else:
                    xk_spread_tile_direct_f64(src, src_im.img, src_im.chan, hw, batch, t * tile, chan, w,
                                              n_src // XK_SHARE, degree, n_dst, panel, part, dst, dst_im.img,
                                              dst_im.chan)
        return
    for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
        buf = packed + chunk * n_src * cstride
        part = parts + chunk * n_dst * tile
        panel = panels + chunk * (n_src + 1) * XK_SACC * lanes
        packed_group = -1
        for item in range(total * chunk // n_chunks, total * (chunk + 1) // n_chunks):
            grp = item // (tiles_per_group * n_ob)
            g0 = grp * group
            ng = min(group, batch - g0)
            t = item // n_ob % tiles_per_group
            q_lo = item % n_ob * per_ob
            q_hi = min(n_quads, q_lo + per_ob)
            if t * tile >= ng * plane:
                continue
            if grp != packed_group:
                _pack_group(buf, cstride, src + g0 * src_im.img, src_im, 0, n_src, frame, 1, lay, ng)
                packed_group = grp
            if qs != NULL:
                if floating is float:
                    xk_quad_tile_f32(buf + toff0, cstride, t * tile, qs, q_lo, q_hi, w, bias, panel, part,
                                     dst + g0 * dst_im.img, dst_im.chan, ng, lay, scatter)
                else:
                    xk_quad_tile_f64(buf + toff0, cstride, t * tile, qs, q_lo, q_hi, w, bias, panel, part,
                                     dst + g0 * dst_im.img, dst_im.chan, ng, lay, scatter)
            elif floating is float:
                xk_spread_tile_f32(buf + toff0, cstride, t * tile, chan, w, n_src // XK_SHARE, degree, n_dst, part,
                                   dst + g0 * dst_im.img, dst_im.chan, ng, lay, scatter)
            else:
                xk_spread_tile_f64(buf + toff0, cstride, t * tile, chan, w, n_src // XK_SHARE, degree, n_dst, part,
                                   dst + g0 * dst_im.img, dst_im.chan, ng, lay, scatter)


cdef void _wino_tiles(
        const floating *src, const xk_image_t *src_im, int64_t batch,  # IN: (B, n_src, H, W)
        int64_t th, int64_t tw, int64_t pad_y, int64_t pad_x, int m,   # the m x m tiles: th x tw per image
        const xk_quads_t *qs, const floating *uw, int64_t ustride,     # IN: quads, transformed weights
        const floating *bias, floating *panels, floating *parts,       # scratch per chunk: nk * (n_src + 2)
                                                                       #   * width, nk * (n_dst + 1) * width
        floating *dst, const xk_image_t *dst_im,                       # OUT: (B, n_dst, Ho, Wo)
        int n_chunks) noexcept nogil:
    """A stride-1 3x3 correlation by Winograd F(m x m, 3x3) (xk_wino_tile; nk = (m + 2)^2
    transformed entries): work items are panels of width tiles over the whole batch, each
    computing every destination of its tiles; with fewer panels than 4 per thread, items are
    (panel, block of quads)."""
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef int64_t nk = (m + 2) * (m + 2)
    cdef int64_t n_tiles = (batch * th * tw + width - 1) // width
    cdef int64_t n_quads = (qs.n_dst + XK_SHARE - 1) // XK_SHARE
    cdef int64_t n_ob = _quad_blocks(n_quads, n_tiles, n_chunks)
    cdef int64_t per_ob = (n_quads + n_ob - 1) // n_ob, q_lo, q_hi, total, chunk, item, t
    cdef floating *panel
    cdef floating *part
    total = n_tiles * n_ob
    for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
        panel = panels + chunk * nk * (qs.n_src + 2) * width
        part = parts + chunk * nk * (qs.n_dst + 1) * width
        for item in range(total * chunk // n_chunks, total * (chunk + 1) // n_chunks):
            t = item // n_ob
            q_lo = item % n_ob * per_ob
            q_hi = min(n_quads, q_lo + per_ob)
            if floating is float:
                xk_wino_tile_f32(src, src_im, batch, th, tw, pad_y, pad_x, t * width, qs, q_lo, q_hi, uw, ustride,
                                 bias, panel, part, dst, dst_im, m)
            else:
                xk_wino_tile_f64(src, src_im, batch, th, tw, pad_y, pad_x, t * width, qs, q_lo, q_hi, uw, ustride,
                                 bias, panel, part, dst, dst_im, m)


cdef void _wino_run(const floating *src, const xk_image_t *src_im, floating *dst, const xk_image_t *dst_im,
                    int64_t batch, int64_t pad_y, int64_t pad_x, int m, const xk_quads_t *qs,
                    const floating[::1] qw, const floating *bias, int n_chunks) except *:
    """_wino_tiles over the whole batch in m x m tiles, into dst's maps, with this thread's
    scratch; qw from _wino_weights(..., m)."""
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef int64_t nk = (m + 2) * (m + 2)
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] panels = _scratch(2, n_chunks * nk * (qs.n_src + 2) * width, dtype)
    cdef floating[::1] parts = _scratch(1, n_chunks * nk * (qs.n_dst + 1) * width, dtype)
    with nogil:
        _wino_tiles(src, src_im, batch, (dst_im.height + m - 1) // m, (dst_im.width + m - 1) // m, pad_y, pad_x,
                    m, qs, &qw[0], qw.shape[0] // nk, bias, &panels[0], &parts[0], dst, dst_im, n_chunks)


cdef void _wino_wgrads(
        const floating *x, const xk_image_t *x_im, int64_t n_in,      # IN: (B, Cin, H, W)
        const floating *g, const xk_image_t *g_im, int64_t n_out,     # IN: (B, Cout, Ho, Wo)
        int64_t batch, int64_t pad_y, int64_t pad_x, int m,           # tiles of m x m outputs
        const int64_t *index, int64_t degree, bint shared,            # IN: (Cout, D); rows in runs
        int64_t n_parts, floating *vbufs, floating *accs,             # scratch: n_in * width * nk per
                                                                      #   thread, n_parts * Cout * D * nk
        floating *grad_w,                                             # OUT: (Cout, D, 3, 3)
        int n_chunks) noexcept nogil:
    """grad_weight of a stride-1 3x3 correlation by Winograd F(m x m, 3x3) (xk_wino_wgrad_tile,
    nk = (m + 2)^2 transformed entries; shared: index rows equal in runs of XK_SHARE,
    _rows_shared).  The panels of tiles are cut into n_parts contiguous ranges, each summed
    into its own partial sums by one thread, which add up in part order: grad_w depends on
    n_parts, not on the number of threads."""
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef int64_t nk = (m + 2) * (m + 2)
    cdef int64_t th = (g_im.height + m - 1) // m, tw = (g_im.width + m - 1) // m
    cdef int64_t n_panels = (batch * th * tw + width - 1) // width
    cdef int64_t n_sums = n_out * degree * nk
    cdef int64_t part, t, e, chunk, lo, hi, p
    cdef floating *vbuf
    cdef floating *acc
    for part in prange(n_parts, schedule="dynamic", chunksize=1, num_threads=n_chunks):
        vbuf = vbufs + threadid() * n_in * width * nk
        acc = accs + part * n_sums
        for e in range(n_sums):
            acc[e] = 0
        for t in range(n_panels * part // n_parts, n_panels * (part + 1) // n_parts):
            if floating is float:
                xk_wino_wgrad_tile_f32(x, x_im, g, g_im, batch, th, tw, pad_y, pad_x, t * width, n_in, index,
                                       degree, n_out, shared, vbuf, acc, m)
            else:
                xk_wino_wgrad_tile_f64(x, x_im, g, g_im, batch, th, tw, pad_y, pad_x, t * width, n_in, index,
                                       degree, n_out, shared, vbuf, acc, m)
    for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
        lo = n_out * degree * chunk // n_chunks
        hi = n_out * degree * (chunk + 1) // n_chunks
        for p in range(1, n_parts):
            for e in range(lo * nk, hi * nk):
                accs[e] = accs[e] + accs[p * n_sums + e]
        if floating is float:
            xk_wino_wgrad_finish_f32(grad_w + lo * 9, accs + lo * nk, hi - lo, m)
        else:
            xk_wino_wgrad_finish_f64(grad_w + lo * 9, accs + lo * nk, hi - lo, m)


def _wgrad_parts(int64_t n_panels, int64_t edges, int64_t itemsize, int64_t nk=16):
    """The number of partial sums of a Winograd grad_weight (_wino_wgrads) with nk transformed
    entries per edge: at most WINO_WGRAD_PARTS, one per panel, and WINO_WGRAD_ACC_BYTES in
    all; never a function of the number of threads."""
    return int(max(1, min(WINO_WGRAD_PARTS, n_panels, WINO_WGRAD_ACC_BYTES // (edges * nk * itemsize))))


cdef bint _all_finite(const floating *planes, int64_t cstride, int64_t n_chan, int64_t n) noexcept nogil:
    """No Inf or NaN in planes[c * cstride + k] for c < n_chan, k < n."""
    cdef int64_t c
    for c in range(n_chan):
        if floating is float:
            if not xk_all_finite_f32(planes + c * cstride, n):
                return False
        else:
            if not xk_all_finite_f64(planes + c * cstride, n):
                return False
    return True


cdef void _weight_grads(
        const floating *x, const xk_image_t *x_im, int64_t n_in,       # IN: (B, Cin, H, W)
        const xk_frame_t *frames, int64_t n_frames, const xk_layout_t *x_lay, int64_t cstride,
        const floating *g, const xk_image_t *g_im, int64_t n_out,      # IN: (B, Cout, Ho, Wo)
        const xk_frame_t *g_frame, const xk_layout_t *g_lay,
        int64_t batch, int64_t group,
        floating *x_packed, floating *g_packed, floating *masks,       # scratch per chunk
        const int64_t *index, int64_t degree,                          # IN: (Cout, D)
        const int64_t *toff, int64_t ntap,
        int64_t rows3, int64_t unit, bint shared,                      # IN: see below
        floating *grad_w,                                              # OUT: (Cout, D, ntap)
        int n_chunks) noexcept nogil:
    """grad_w[v, i, t] = sum_b sum_positions g_plane(v)[p] * x_plane(index[v, i])[toff[t] + p].

    g's planes are zero outside real outputs and x is masked there (x may hold Inf
    or NaN at pixels no output reads), so the extra grid positions add nothing.  Chunks own contiguous ranges of v and sum every group in batch
    order, so grad_w does not depend on the number of chunks.  A group's positions are
    rounded up to a multiple of unit.  rows3 = wb > 0: the taps are 3x3 at r * wb + c
    (stride 1), and unmasked groups take xk_dot_rows3 over the columns that hold outputs
    (unit a multiple of XK_DOT_ROWS * wb).  shared: index rows are equal in runs of
    XK_SHARE (block expanders; Cout a multiple of it), so every group takes
    xk_dot_taps_shared, a run at a time (sharing each x load between the run beats
    xk_dot_rows3's sharing between taps); chunks then own whole runs.
    """
    cdef int64_t plane = x_lay.hb * x_lay.wb
    cdef int64_t chunk, v_lo, v_hi, g0, ng, npos, e, v
    cdef floating *xbuf
    cdef floating *gbuf
    cdef floating *mk
    cdef bint use_mask
    # Every grid position of an image is an output: only the zeroed tail is not.
    # Otherwise the mask is needed only for groups whose x holds Inf or NaN
    # (finite x at those positions meets g = 0 and adds exact zeros).
    cdef bint masked = x_lay.hb != g_im.height or x_lay.wb != g_im.width
    cdef int64_t lanes = XK_LANES_F32 if floating is float else XK_LANES_F64
    cdef int64_t cols3 = (g_im.width + lanes - 1) // lanes * lanes  # xk_dot_rows3: the vectors holding outputs
    cdef int64_t share = XK_SHARE if shared else 1
    for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
        v_lo = n_out // share * chunk // n_chunks * share
        v_hi = n_out // share * (chunk + 1) // n_chunks * share
        xbuf = x_packed + chunk * n_in * cstride
        gbuf = g_packed + chunk * ((n_out // share + n_chunks - 1) // n_chunks * share) * g_lay.len
        mk = masks + chunk * g_lay.len
        for e in range(v_lo * degree * ntap, v_hi * degree * ntap):
            grad_w[e] = 0
        g0 = 0
        while g0 < batch and v_lo < v_hi:
            ng = min(group, batch - g0)
            _pack_group(xbuf, cstride, x + g0 * x_im.img, x_im, 0, n_in, frames, n_frames, x_lay, ng)
            _pack_group(gbuf, g_lay.len, g + g0 * g_im.img, g_im, v_lo, v_hi - v_lo, g_frame, 1, g_lay, ng)
            npos = (ng * plane + unit - 1) // unit * unit
            use_mask = masked and not _all_finite(xbuf, cstride, n_in, n_frames * x_lay.len)
            if use_mask:
                if floating is float:
                    xk_valid_mask_f32(mk, npos, ng, x_lay, g_im.height, g_im.width)
                else:
                    xk_valid_mask_f64(mk, npos, ng, x_lay, g_im.height, g_im.width)
            if rows3 > 0 and not use_mask and not shared:
                for e in range(v_lo * degree, v_hi * degree):
                    if floating is float:
                        xk_dot_rows3_f32(grad_w + e * 9, gbuf + (e // degree - v_lo) * g_lay.len,
                                         xbuf + index[e] * cstride + toff[0], rows3, cols3, npos // rows3)
                    else:
                        xk_dot_rows3_f64(grad_w + e * 9, gbuf + (e // degree - v_lo) * g_lay.len,
                                         xbuf + index[e] * cstride + toff[0], rows3, cols3, npos // rows3)
                g0 = g0 + group
                continue
            if shared:
                v = v_lo
                while v < v_hi:
                    if floating is float:
                        xk_dot_taps_shared_f32(grad_w + v * degree * ntap, gbuf + (v - v_lo) * g_lay.len, g_lay.len,
                                               xbuf, cstride, index + v * degree, degree, mk if use_mask else NULL,
                                               toff, ntap, npos)
                    else:
                        xk_dot_taps_shared_f64(grad_w + v * degree * ntap, gbuf + (v - v_lo) * g_lay.len, g_lay.len,
                                               xbuf, cstride, index + v * degree, degree, mk if use_mask else NULL,
                                               toff, ntap, npos)
                    v = v + share
                g0 = g0 + group
                continue
            for v in range(v_lo, v_hi):
                if floating is float:
                    xk_dot_taps_f32(grad_w + v * degree * ntap, gbuf + (v - v_lo) * g_lay.len, xbuf, cstride,
                                    index + v * degree, degree, mk if use_mask else NULL, toff, ntap, npos)
                else:
                    xk_dot_taps_f64(grad_w + v * degree * ntap, gbuf + (v - v_lo) * g_lay.len, xbuf, cstride,
                                    index + v * degree, degree, mk if use_mask else NULL, toff, ntap, npos)
            g0 = g0 + group


cdef int _threads(int num_threads) noexcept nogil:
    return num_threads if num_threads > 0 else xk_omp_max_threads()


cdef xk_image_t _image(Py_ssize_t *shape, Py_ssize_t *strides, Py_ssize_t itemsize) noexcept:
    """The xk_image_t of a strided 4-D memoryview."""
    cdef xk_image_t im
    im.img, im.chan = strides[0] // itemsize, strides[1] // itemsize
    im.row, im.col = strides[2] // itemsize, strides[3] // itemsize
    im.height, im.width = shape[2], shape[3]
    return im


def _winograd(kernel, stride, dilation, int64_t n_src, int64_t n_dst, int64_t edges, out_hw, int64_t batch,
              int64_t itemsize, str pass_):
    """The tile side m (2 or 4) with which a correlation of n_src -> n_dst channels along `edges`
    edges, into maps of out_hw, runs by Winograd F(m x m, 3x3), or 0: it runs direct
    (WINOGRAD, WINO_TILE and the WINO_* limits; never the thread count); pass_ "forward" or
    "grad_input".  "auto" takes F(4x4, 3x3) where its tiles make WINO_MIN_PANELS[4] panels
    and cover WINO_MIN_COVER[pass_], its
    scratch fits and it transforms at most WINO_F4_VALUES as many values as F(2x2, 3x3), else
    F(2x2, 3x3) on the same terms and limits."""
    if WINOGRAD == "never" or tuple(kernel) != (3, 3) or tuple(stride) != (1, 1) or tuple(dilation) != (1, 1):
        return 0
    width = XK_SACC * (XK_LANES_F32 if itemsize == 4 else XK_LANES_F64)

    def panels(m):
        return batch * _wino_tile_count(m, out_hw) / width

    def fits(m):
        return (m + 2) ** 2 * (n_src + n_dst + 3) * width * itemsize <= WINO_SCRATCH_BYTES

    def cover(m):
        return out_hw[0] * out_hw[1] / (_wino_tile_count(m, out_hw) * m * m)
    if WINOGRAD == "always":
        return WINO_TILE or (4 if fits(4) else 2)
    if edges < WINO_MIN_TERMS * max(n_src, n_dst):
        return 0
    f4_values = _wino_values(4, out_hw) / _wino_values(2, out_hw)
    for m in ((WINO_TILE,) if WINO_TILE else (4, 2)):
        if (panels(m) >= WINO_MIN_PANELS[m] and cover(m) >= WINO_MIN_COVER[pass_] and fits(m)
                and (m == 2 or WINO_TILE or f4_values <= WINO_F4_VALUES[itemsize])):
            return m
    return 0


def _wino_tile_count(int m, out_hw):
    """The m x m tiles that cover one map of out_hw."""
    return ((out_hw[0] + m - 1) // m) * ((out_hw[1] + m - 1) // m)


def _wino_values(int m, out_hw):
    """The transformed values per channel of maps of out_hw in m x m tiles: (m + 2)^2 per tile."""
    return (m + 2) ** 2 * _wino_tile_count(m, out_hw)


def _winograd_wgrad(kernel, stride, dilation, int64_t n_src, int64_t n_dst, int64_t edges, out_hw, int64_t batch,
                    int64_t itemsize):
    """(m, n_parts): grad_weight of a correlation of n_src -> n_dst channels along `edges`
    edges, from maps of out_hw, sums by Winograd F(m x m, 3x3) in n_parts partial sums
    (_wgrad_parts); (0, 0): it runs direct (WINOGRAD, WINO_TILE and the WINO_* limits; never
    the thread count).  "auto" takes F(4x4, 3x3) where it makes WINO_WGRAD_MIN_PARTS partial
    sums, its scratch fits and it reads at most WINO_WGRAD_F4_VALUES as many transformed values
    as F(2x2, 3x3), else F(2x2, 3x3) on the same terms."""
    if WINOGRAD == "never" or tuple(kernel) != (3, 3) or tuple(stride) != (1, 1) or tuple(dilation) != (1, 1):
        return 0, 0
    width = XK_SACC * (XK_LANES_F32 if itemsize == 4 else XK_LANES_F64)

    def parts(m):
        return _wgrad_parts((batch * _wino_tile_count(m, out_hw) + width - 1) // width, edges, itemsize,
                            (m + 2) ** 2)

    def fits(m):
        return (m + 2) ** 2 * n_src * width * itemsize <= WINO_SCRATCH_BYTES
    if WINOGRAD == "always":
        m = WINO_TILE or (4 if fits(4) else 2)
        return m, parts(m)
    if itemsize != 4 or edges < WINO_WGRAD_TERMS * max(n_src, n_dst):
        return 0, 0
    f4_values = _wino_values(4, out_hw) / _wino_values(2, out_hw)
    for m in ((WINO_TILE,) if WINO_TILE else (4, 2)):
        if (parts(m) >= WINO_WGRAD_MIN_PARTS and fits(m)
                and (m == 2 or WINO_TILE or f4_values <= WINO_WGRAD_F4_VALUES)):
            return m, parts(m)
    return 0, 0


cdef bint _in_place(stride, padding, const xk_image_t *src, const xk_image_t *dst, int64_t width):
    """A 1x1 correlation xk_quad_tile_direct can read and write in place: stride 1, no
    padding, every image row of src and dst contiguous, and images of at least a panel
    of width positions (so that a panel spans at most two)."""
    return (tuple(stride) == (1, 1) and tuple(padding) == (0, 0) and src.col == 1 and dst.col == 1
            and src.row == src.width and dst.row == dst.width and dst.height * dst.width >= width)

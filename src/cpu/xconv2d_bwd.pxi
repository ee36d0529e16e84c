# ---------------------------------------------------------------- X-Conv backward

def xconv2d_bwd_input(const floating[:, :, :, :] grad_out, const floating[:, :, :, ::1] weight,
                      const int64_t[:, ::1] index, rev, floating[:, :, :, :] grad_x,
                      stride, padding, dilation, int num_threads):
    """grad_x (B, Cin, H, W) from grad_out (B, Cout, Ho, Wo), gathered over rev (ptr, edge): for
    1x1 convs with one phase in quads of inputs (xk_quad_tile), except block expanders,
    spread from each run of outputs instead (_whole_tiles: rev is not read); stride-1 3x3
    (_winograd) in quads of inputs on Winograd-transformed panels."""
    cdef int64_t tile = XK_TILE_F32 if floating is float else XK_TILE_F64
    cdef int64_t batch = grad_x.shape[0], n_in = grad_x.shape[1]
    cdef int64_t n_out = weight.shape[0], degree = weight.shape[1]
    cdef int64_t kk = weight.shape[2] * weight.shape[3]
    cdef xk_image_t g_im = _image(grad_out.shape, grad_out.strides, sizeof(floating))
    cdef xk_image_t x_im = _image(grad_x.shape, grad_x.strides, sizeof(floating))
    cdef xk_layout_t lay
    _check_conv(grad_x.shape, weight.shape, index.shape, grad_out.shape, stride, padding, dilation,
                ("grad_x", "weight", "grad_out"))
    if batch == 0:
        return
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef const int32_t[::1] qoff
    cdef const int64_t[::1] qptr
    cdef const int64_t[::1] qrows
    cdef const floating[::1] qw
    cdef xk_quads_t qs
    cdef int n_chunks = _threads(num_threads)
    cdef int m = _winograd((weight.shape[2], weight.shape[3]), stride, dilation, n_out, n_in, n_out * degree,
                           (grad_x.shape[2], grad_x.shape[3]), batch, sizeof(floating), "grad_input")
    if m:
        # stride-1 3x3: the correlation of grad_out with the kernel rotated by 180 degrees
        # (padding 2 - pad) by Winograd, in quads of inputs over the reverse adjacency
        quads = _cached_terms("input quads", index, (n_in, width),
                              lambda: _input_quads(np.asarray(index), rev, n_in, width))
        qoff, qptr, qrows = quads[0], quads[1], quads[2]
        qw = _wino_weights(weight, quads[3], True, m, n_chunks)
        qs.off, qs.ptr, qs.rows = &qoff[0], &qptr[0], &qrows[0]
        qs.degree, qs.n_dst, qs.n_src, qs.shared = 0, n_in, n_out, False
        _wino_run(&grad_out[0, 0, 0, 0], &g_im, &grad_x[0, 0, 0, 0], &x_im, batch, 2 - <int64_t>padding[0],
                  2 - <int64_t>padding[1], m, &qs, qw, <const floating *>NULL, n_chunks)
        return
    if _columns((weight.shape[2], weight.shape[3]), stride, n_in, (grad_out.shape[2], grad_out.shape[3]), batch,
                sizeof(floating), False):
        _columns_bwd_input(grad_out, weight, index, grad_x, stride, padding, dilation, n_chunks)
        return
    planes = _input_grad_planes((grad_x.shape[2], grad_x.shape[3]), (weight.shape[2], weight.shape[3]),
                                stride, padding, dilation, x_im, XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef const xk_frame_t[::1] frame = planes.frame
    cdef int64_t group = _group(batch, n_out * planes.hb * planes.wb * sizeof(floating))
    cdef int64_t rows3 = planes.rows3
    tiling = _tiling(planes, rows3, group, tile, sizeof(floating), XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef int64_t a3 = tiling[0], col_tiles = tiling[1]
    length, channel_stride, toff_arr = tiling[2:]
    cdef int64_t cstride = channel_stride
    lay.hb, lay.wb, lay.len = planes.hb, planes.wb, length
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] packed = _scratch(0, n_chunks * n_out * cstride, dtype)
    cdef const int64_t[::1] toff = toff_arr
    cdef const int64_t[::1] tap_ptr = planes.tap_ptr
    cdef const xk_scatter_t[::1] scatter = planes.scatter
    cdef const int64_t[::1] run_rows
    cdef const floating[::1] w_runs
    cdef floating[::1] parts
    cdef floating[::1] panels
    cdef bint direct
    if kk == 1 and tap_ptr.shape[0] == 2 and rows3 == 0 and _runs_shared(index):
        # 1x1 block expanders: each run of outputs spreads its grad_out vectors, held in
        # registers, over the inputs it reads (xk_spread_shared); rev is not read
        run_rows = _cached_terms("spread", index, n_in, lambda: _run_rows(np.asarray(index), n_in))[0]
        w_runs = _shared_weights(weight.base)
        direct = _in_place(stride, padding, &g_im, &x_im, width)
        parts = _scratch(1, n_chunks * n_in * (width if direct else tile), dtype)
        panels = _scratch(2, n_chunks * (n_out + 1) * width, dtype)
        with nogil:
            _whole_tiles(&grad_out[0, 0, 0, 0], &g_im, n_out, &frame[0], &lay, cstride, toff[0], batch, group,
                         &packed[0], &parts[0], &panels[0], &run_rows[0], NULL, &w_runs[0], degree, NULL,
                         &grad_x[0, 0, 0, 0], &x_im, n_in, &scatter[0], direct, n_chunks)
        return
    if (kk == 1 and tap_ptr.shape[0] == 2 and rows3 == 0
            and (n_out + 1) * width * sizeof(floating) <= QUAD_PANEL_BYTES):
        # 1x1, one phase: quads of inputs, each gathering its edges from an L1 panel of grad_out
        quads = _cached_terms("input quads", index, (n_in, width),
                              lambda: _input_quads(np.asarray(index), rev, n_in, width))
        qoff, qptr, qrows = quads[0], quads[1], quads[2]
        qw = _edge_weights(weight, quads[3])
        direct = _in_place(stride, padding, &g_im, &x_im, width)
        parts = _scratch(1, n_chunks * n_in * (width if direct else tile), dtype)
        panels = _scratch(2, n_chunks * (n_out + 1) * width, dtype)
        qs.off, qs.ptr, qs.rows = &qoff[0], &qptr[0], &qrows[0]
        qs.degree, qs.n_dst, qs.n_src, qs.shared = 0, n_in, n_out, False
        with nogil:
            _whole_tiles(&grad_out[0, 0, 0, 0], &g_im, n_out, &frame[0], &lay, cstride, toff[0], batch, group,
                         &packed[0], &parts[0], &panels[0], NULL, &qs, &qw[0], 0, NULL,
                         &grad_x[0, 0, 0, 0], &x_im, n_in, &scatter[0], direct, n_chunks)
        return
    window = (tile + int(planes.shift.max(initial=0))) * sizeof(floating)
    # keyed on index: rev is its reverse adjacency over n_in inputs (checked when the lists are made)
    blocked = _cached_terms("input", index, (n_in, window), lambda: _input_terms(np.asarray(index), rev, n_in, window))
    cdef const int64_t[::1] ptr = blocked[0]
    cdef const int64_t[::1] chan = blocked[1]
    cdef int64_t n_cb = blocked[3]
    # Tap weights in the order of the phases' tap lists (each phase's taps contiguous),
    # rows in term order: read one after another, not gathered from the whole weight
    # (terms of one input come from scattered outputs).
    cdef const floating[:, ::1] w_phased = _gather_rows(np.asarray(weight).reshape(n_out * degree, kk),
                                                        blocked[2], planes.order)
    cdef const int64_t[::1] wrow = _iota(len(blocked[2]))
    with nogil:
        _correlate(&grad_out[0, 0, 0, 0], &g_im, n_out, &frame[0], 1, &lay, cstride, batch, group, &packed[0],
                   &ptr[0], n_cb, &chan[0], &wrow[0], n_in, &w_phased[0, 0], kk, 0,
                   &tap_ptr[0], &toff[0], tap_ptr.shape[0] - 1, rows3, a3, col_tiles, NULL,
                   &grad_x[0, 0, 0, 0], &x_im, &scatter[0], n_chunks)


def xconv2d_bwd_weight(const floating[:, :, :, :] grad_out, const floating[:, :, :, :] x,
                       const int64_t[:, ::1] index, floating[:, :, :, ::1] grad_weight,
                       stride, padding, dilation, int num_threads):
    """grad_weight (Cout, D, kh, kw) from grad_out (B, Cout, Ho, Wo) and x (B, Cin, H, W)."""
    cdef int64_t tile = XK_TILE_F32 if floating is float else XK_TILE_F64
    cdef int64_t batch = x.shape[0], n_in = x.shape[1]
    cdef int64_t n_out = grad_weight.shape[0], degree = grad_weight.shape[1]
    cdef int64_t kk = grad_weight.shape[2] * grad_weight.shape[3]
    cdef xk_image_t x_im = _image(x.shape, x.strides, sizeof(floating))
    cdef xk_image_t g_im = _image(grad_out.shape, grad_out.strides, sizeof(floating))
    cdef xk_layout_t x_lay, g_lay
    _check_conv(x.shape, grad_weight.shape, index.shape, grad_out.shape, stride, padding, dilation,
                ("x", "grad_weight", "grad_out"))
    if not _graphs.checked(index.base, n_in):  # the kernels below read the index as it is
        _check_index(np.asarray(index).ravel(), n_in)
    if batch == 0:
        np.asarray(grad_weight)[...] = 0
        return
    cdef int n_chunks = _threads(num_threads)
    dtype = np.float32 if floating is float else np.float64
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef floating[::1] vbufs
    cdef floating[::1] accs
    cdef int64_t pad_y, pad_x
    cdef bint shared = _runs_shared(index)
    wino = _winograd_wgrad((grad_weight.shape[2], grad_weight.shape[3]), stride, dilation, n_in, n_out,
                           n_out * degree, (grad_out.shape[2], grad_out.shape[3]), batch, sizeof(floating))
    cdef int m = wino[0]
    if not m and _columns_wgrad((grad_weight.shape[2], grad_weight.shape[3]), stride, n_in,
                                (grad_out.shape[2], grad_out.shape[3]), batch, sizeof(floating)):
        _columns_bwd_weight(grad_out, x, index, grad_weight, stride, padding, dilation, n_chunks)
        return
    if kk == 1 and _dots_in_place_rule(grad_out.shape[2] * grad_out.shape[3], sizeof(floating), shared) \
            and _in_place(stride, padding, &x_im, &g_im, 0):
        _dots_in_place(grad_out, x, index, grad_weight, n_chunks)
        return
    cdef int64_t n_parts = wino[1], nk = (m + 2) * (m + 2)
    if m:
        # stride-1 3x3: dot products of Winograd-transformed tiles, nk per tile and edge
        vbufs = _scratch(0, n_chunks * n_in * width * nk, dtype)
        accs = _scratch(1, n_parts * n_out * degree * nk, dtype)
        pad_y, pad_x = padding
        with nogil:
            _wino_wgrads(&x[0, 0, 0, 0], &x_im, n_in, &grad_out[0, 0, 0, 0], &g_im, n_out, batch,
                         pad_y, pad_x, m, &index[0, 0], degree, shared, n_parts, &vbufs[0], &accs[0],
                         &grad_weight[0, 0, 0, 0], n_chunks)
        return
    planes = _forward_planes((grad_weight.shape[2], grad_weight.shape[3]), stride, padding, dilation,
                             (grad_out.shape[2], grad_out.shape[3]), XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef const xk_frame_t[::1] frames = planes.frames
    cdef const xk_frame_t[::1] g_frame = np.array([(1, 1, 0, 0)], FRAME_DTYPE)
    cdef int64_t n_frames = len(planes.frames)
    cdef int64_t rows3 = planes.rows3
    # positions per group rounded up to XK_DOT_ROWS grid rows (xk_dot_rows3) or to the
    # 2 vectors of xk_dot_taps
    cdef int64_t unit = XK_DOT_ROWS * rows3 if rows3 else 2 * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef int64_t group = _group(batch, n_in * n_frames * planes.hb * planes.wb * sizeof(floating))
    length, channel_stride, toff_arr = planes.layout(group, unit, sizeof(floating))
    cdef int64_t cstride = channel_stride
    x_lay.hb, x_lay.wb, x_lay.len = planes.hb, planes.wb, length
    g_lay.hb, g_lay.wb = planes.hb, planes.wb
    g_lay.len = _odd_lines(_round_up(group * planes.hb * planes.wb, unit), sizeof(floating))
    cdef floating[::1] x_packed = _scratch(0, n_chunks * n_in * cstride, dtype)
    cdef int64_t share = XK_SHARE if shared else 1  # chunks own whole runs of share outputs
    cdef floating[::1] g_packed = _scratch(1, n_chunks * ((n_out // share + n_chunks - 1) // n_chunks * share)
                                           * g_lay.len, dtype)
    cdef floating[::1] masks = _scratch(2, n_chunks * g_lay.len, dtype)
    cdef const int64_t[::1] toff = toff_arr
    with nogil:
        _weight_grads(&x[0, 0, 0, 0], &x_im, n_in, &frames[0], n_frames, &x_lay, cstride,
                      &grad_out[0, 0, 0, 0], &g_im, n_out, &g_frame[0], &g_lay,
                      batch, group, &x_packed[0], &g_packed[0], &masks[0], &index[0, 0], degree,
                      &toff[0], kk, rows3, unit, shared, &grad_weight[0, 0, 0, 0], n_chunks)


def xconv2d_bwd_bias(const floating[:, :, :, :] grad_out, floating[::1] grad_bias, int num_threads):
    """grad_bias (Cout,) = grad_out (B, Cout, Ho, Wo) summed over B, Ho, Wo."""
    cdef int64_t batch = grad_out.shape[0], v
    cdef xk_image_t g_im = _image(grad_out.shape, grad_out.strides, sizeof(floating))
    if grad_bias.shape[0] != grad_out.shape[1]:
        raise ValueError(f"grad_bias has length {grad_bias.shape[0]}, grad_out has Cout = {grad_out.shape[1]}")
    if batch == 0:
        grad_bias[:] = 0
        return
    with nogil, parallel(num_threads=_threads(num_threads)):
        for v in prange(grad_out.shape[1], schedule="static"):
            if floating is float:
                grad_bias[v] = xk_sum_image_f32(&grad_out[0, v, 0, 0], batch, &g_im)
            else:
                grad_bias[v] = xk_sum_image_f64(&grad_out[0, v, 0, 0], batch, &g_im)

"""Raw kernels on preallocated, validated, C-contiguous buffers.

Every backend module (reference, cpu, cuda) defines the same functions with the
same signatures; output buffers arrive uninitialised and every element is written:

    xconv2d_fwd(x, weight, index, bias, out, stride, padding, dilation)
    xconv2d_bwd_input(grad_out, weight, index, rev, grad_x, stride, padding, dilation)
    xconv2d_bwd_weight(grad_out, x, index, grad_weight, stride, padding, dilation)
    xconv2d_bwd_bias(grad_out, grad_bias)
    xlinear_fwd(x, weight, index, bias, out)
    xlinear_bwd_input(grad_out, weight, index, rev, grad_x)
    xlinear_bwd_weight(grad_out, x, index, grad_weight)
    xlinear_bwd_bias(grad_out, grad_bias)

A backend may also define prepare_xconv2d_fwd(x, weight, index, bias, stride, padding,
dilation): a callable (x, weight, bias) -> new output, or None for arrays of another
geometry, that checks only what changes between calls (the cpu backend's).

Shapes: x (B, Cin, H, W) or (B, Cin); weight (Cout, D, kh, kw) or (Cout, D);
index (Cout, D) int64 host array; bias (Cout,) or None; rev the
xkern.ops.adjacency.ReverseAdjacency of index (host arrays); stride, padding,
dilation (h, w) int pairs.  xkern.ops validates every argument first; the compiled cpu
and the cuda backends also check that shapes, index entries and rev fit together
(ValueError naming the argument; _checks.py), so that a direct call cannot make their
kernels read or write out of bounds.
"""

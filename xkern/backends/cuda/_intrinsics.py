"""Device intrinsics numba does not expose, each with a Python twin for the simulator.

load4(stage, i) reads stage[i:i+4] (a dynamic shared array, i a multiple of 4) as one
16-byte vector load, `ld.shared.v4.f32` (two `ld.shared.v2.f64` for float64): a quarter
of the load instructions of four scalar loads.  It is aligned because the staged
kernels declare no static shared memory: the dynamic array starts the block's window.

broadcast(value, lane, table, i) returns lane's value to the whole warp (`shfl.sync`),
where lane loaded value = table[i]; the simulator, which has no shuffles, reads
table[i] again (on the device those arguments are unused and compiled away).

device_function(func) makes a helper callable from kernels (plain Python in the simulator).
"""
from numba import types

from ._interop import SIMULATOR

FULL_MASK = 0xFFFFFFFF

if SIMULATOR:
    def load4(stage, i):
        return stage[i], stage[i + 1], stage[i + 2], stage[i + 3]

    def broadcast(value, lane, table, i):
        return table[i]

    def device_function(func):
        return func
else:
    from numba import cuda
    from llvmlite import ir
    from numba.core import cgutils
    from numba.cuda.extending import intrinsic

    SHARED = 3  # NVPTX address space of shared memory

    @intrinsic
    def load4(typingctx, stage, i):
        sig = types.UniTuple(stage.dtype, 4)(stage, i)

        def codegen(context, builder, sig, args):
            arrty = sig.args[0]
            arr = context.make_array(arrty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, arrty, arr, [args[1]],
                                           wraparound=False, boundscheck=False)
            elem = context.get_value_type(arrty.dtype)
            width = 16 // (arrty.dtype.bitwidth // 8)  # elements per 16-byte vector
            shared = builder.addrspacecast(ptr, ir.PointerType(elem, SHARED))
            values = []
            for k in range(4 // width):
                part = builder.gep(shared, [ir.IntType(32)(k * width)]) if k else shared
                vec = builder.load(builder.bitcast(part, ir.PointerType(ir.VectorType(elem, width), SHARED)),
                                   align=16)
                values += [builder.extract_element(vec, ir.IntType(32)(j)) for j in range(width)]
            return context.make_tuple(builder, sig.return_type, values)

        return sig, codegen

    def device_function(func):
        return cuda.jit(device=True, inline="always")(func)

    @device_function
    def broadcast(value, lane, table, i):
        return cuda.shfl_sync(FULL_MASK, value, lane)

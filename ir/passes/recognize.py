"""recognize: rewrite op patterns as the composite ops that targets have one kernel for.

    matmul(x, transpose(W)) [+ b]              -> linear(x, W [, b])
    conv2d(x, W) + reshape(b, [C, 1, 1])       -> conv2d(x, W, b)
    matmul(softmax(s * c [masked]), v)         -> attention(q, k, v, scale=c, causal=...)
        where s = matmul(q, kT), kT = k with its last two axes swapped

Linear is PyTorch's `F.linear` (and MindSpore's dense, one GEMM with the transposed weight read
in place); a convolution's bias is added by the convolution's own kernel (oneDNN's, MindSpore's)
rather than by a pass of its own over the output; attention is `F.scaled_dot_product_attention`,
a fused kernel that never materializes the [L, S] score matrix per head on its own. The mask
counts as causal when it is the one the prelude's MultiHeadAttention builds: key index j > query
index i set to -inf, the indices being `iota` reshaped to a column [L, 1] and a row [1, S]
(`where(i < j, -inf, s)`, or the same with the comparison mirrored, or
`where(j <= i, s, -inf)`). The scale is a splat constant `c > 0` multiplied in (or `1 / c`
divided by), else 1.

Every intermediate of a pattern must have no reader outside it (and not be an output), so the
rewrite removes work rather than duplicating it; the pattern's nodes are left for `dce`. It runs
after fold-batch-norm, which folds into the matmul form, and before freeze, which would otherwise
store Linear's transposed weight.
"""

from __future__ import annotations

from ..graph import Graph, Node, Value
from ..types import Dim, normalize_axis
from .manager import Pass, PassContext
from .rewrite import Rewriter, is_splat_of, rewrite, splat


class _Readers:
    """Who reads each value: a pattern's intermediates must be read by the pattern alone."""

    def __init__(self, graph: Graph):
        self.users = graph.users()
        self.outputs = set(graph.outputs)

    def only(self, v: Value) -> Node | None:
        """The one node that reads `v`, when `v` is not also an output."""
        readers = self.users.get(v, [])
        return readers[0] if len(readers) == 1 and v not in self.outputs else None

    def producer(self, v: Value, op: str, reader: Node) -> Node | None:
        """`v`'s producer when it is an `op` and `reader` alone reads `v`."""
        node = v.producer
        return node if node is not None and node.op == op and self.only(v) is reader else None


class Recognize(Pass):
    name = "recognize"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        readers = _Readers(graph)

        def rule(rw: Rewriter, node: Node) -> list[Value] | None:
            if node.op == "matmul":
                fused = _attention(rw, node, readers)
                if fused is not None:
                    return fused
                parts = _linear_parts(node)
                if parts is None or _bias_add(node, readers) is not None:
                    return None  # not linear, or linear with its bias: rewritten at the add
                return [rw.emit("linear", *parts)]
            if node.op == "add":
                for mm, bias in (node.operands, reversed(node.operands)):
                    parts = _linear_parts(mm.producer) if mm.producer is not None else None
                    if parts is not None and _bias_add(mm.producer, readers) is node:
                        return [rw.emit("linear", *parts, bias)]
                    conv = _conv_bias(mm, bias, readers)
                    if conv is not None:
                        return [rw.emit_op("conv2d", *conv.operands, bias.producer.operands[0], **conv.attrs)[0]]
            return None

        rewrite(graph, rule)
        return graph


def _linear_parts(node: Node) -> tuple[Value, Value] | None:
    """(x, W) when `node` is matmul(x, transpose(W)) with a 2-D W."""
    if node.op != "matmul":
        return None
    x, t = node.operands
    if t.type.rank != 2 or t.producer is None or t.producer.op != "transpose" or x.type.rank < 2:
        return None
    return x, t.producer.operands[0]


def _bias_add(node: Node, readers: _Readers) -> Node | None:
    """The add that alone reads the matmul's result and adds a bias [out] to it."""
    add = readers.only(node.result)
    if add is None or add.op != "add":
        return None
    bias = add.operands[1] if add.operands[0] is node.result else add.operands[0]
    same = bias.dtype is node.result.dtype and bias.type.rank == 1
    return add if same and bias.shape == node.result.shape[-1:] else None


def _conv_bias(y: Value, bias: Value, readers: _Readers) -> Node | None:
    """The conv2d without a bias that computes `y`, read by the add alone, when `bias` is a
    vector [C] of its dtype reshaped to [C, 1, 1] (as the prelude's Conv2d adds its bias)."""
    conv = y.producer
    if conv is None or conv.op != "conv2d" or len(conv.operands) != 2 or readers.only(y) is None:
        return None
    shaped = bias.producer
    if shaped is None or shaped.op != "reshape" or bias.shape != (y.shape[1], 1, 1):
        return None
    vector = shaped.operands[0]
    return conv if vector.shape == (y.shape[1],) and vector.dtype is y.dtype else None


def _attention(rw: Rewriter, node: Node, readers: _Readers) -> list[Value] | None:
    """attention(q, k, v) for `node` = matmul(softmax(scores), v), or None."""
    producer = readers.producer
    probs, v = node.operands
    softmax = producer(probs, "softmax", node)
    if softmax is None or normalize_axis(softmax.attrs["axis"], probs.type.rank) != probs.type.rank - 1:
        return None
    scores, causal = softmax.operands[0], False
    where = producer(scores, "where", softmax)
    if where is not None:
        cond, a, b = where.operands
        mask = _mask(cond, *probs.shape[-2:])
        if is_splat_of(a, float("-inf")) and mask == "future":
            scores = b
        elif is_splat_of(b, float("-inf")) and mask == "past":
            scores = a
        else:
            return None
        if scores.type != where.result.type:
            return None
        causal, reader = True, where
    else:
        reader = softmax
    scale, product = 1.0, scores
    for op, invert in (("mul", False), ("div", True)):
        scaled = producer(scores, op, reader)
        if scaled is None:
            continue
        x, c = scaled.operands
        if op == "mul" and splat(x) is not None:
            x, c = c, x
        value = splat(c)
        if value is None or c.type.rank > 0 or not float(value) > 0:
            return None
        scale, product, reader = (1.0 / float(value) if invert else float(value)), x, scaled
    matmul = producer(product, "matmul", reader)
    if matmul is None:
        return None
    q, k_t = matmul.operands
    rank = k_t.type.rank
    if not (rank >= 2 and q.type.rank == v.type.rank == rank and q.shape[:-2] == k_t.shape[:-2] == v.shape[:-2]
            and k_t.shape[-1] == v.shape[-2] and q.dtype.is_float):
        return None
    swap = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    inner, perm = k_t, swap
    if k_t.producer is not None and k_t.producer.op == "transpose":
        inner, outer = k_t.producer.operands[0], k_t.producer.attrs["perm"]
        perm = tuple(outer[p] for p in swap)
    key = inner if perm == tuple(range(rank)) else rw.emit("transpose", inner, perm=perm)
    return [rw.emit("attention", q, key, v, scale=scale, causal=causal)]


def _index(v: Value) -> tuple[str, Dim] | None:
    """("query", n) for iota(n) as a column [n, 1]; ("key", n) for iota(n) as a row [1, n] or [n]."""
    node = v.producer
    if node is not None and node.op == "reshape":
        node = node.operands[0].producer
    if node is None or node.op != "iota":
        return None
    n = node.attrs["length"]
    if v.shape == (n, 1):
        return "query", n
    if v.shape in ((1, n), (n,)):
        return "key", n
    return None


#: (comparison, the role of its first operand) -> what it states about key index j and query index i.
_RELATION = {("lt", "query"): "future", ("gt", "key"): "future", ("ge", "query"): "past", ("le", "key"): "past"}


def _mask(cond: Value, length: Dim, source: Dim) -> str | None:
    """"future" when `cond` is j > i over [length, source], "past" when it is j <= i, else None."""
    node = cond.producer
    if node is None or node.op not in ("lt", "gt", "le", "ge"):
        return None
    first, second = (_index(v) for v in node.operands)
    if first is None or second is None or dict([first, second]) != {"query": length, "key": source}:
        return None
    return _RELATION.get((node.op, first[0]))

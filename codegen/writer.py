"""The module writer every target shares: naming, indentation, source comments, the node walk.

A target supplies a `Target`: its op lowering table (`rules`, whose keys are its capabilities),
how it spells dtypes, params and shapes, and the module skeleton around the body. The writer
turns a graph into straight-line code, one assignment per node, with a comment quoting the DSL
line each block came from. User text reaches the output only through `Namespace` (validated
identifiers) or `repr` (literals).
"""

from __future__ import annotations

import ast
import builtins
import itertools
import keyword
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir.errors import ShipeiError, SourceLoc
from ..ir.graph import Graph, Node, Value
from ..ir.names import IDENTIFIER, Namespace
from ..ir.region import Region, layer_calls, regions
from ..ir.registry import AttrKind, WorkspaceRule, get_op
from ..ir.types import Dim, DType, Sym
from .buffers import BufferPlan, like_operand, plan_buffers
from .wrap import wrap_line


def python_namespace(reserved: Iterable[str] = ()) -> Namespace:
    """A namespace for generated Python: no name shadows a keyword, a builtin, `self` or `reserved`."""
    return Namespace({*reserved, *keyword.kwlist, *dir(builtins), "self"})


class Code:
    """Lines of Python with indentation managed by `block()`."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._indent = 0

    def __call__(self, *lines: str) -> None:
        for line in lines:
            self.lines.append("    " * self._indent + line if line else "")

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        self(header)
        self._indent += 1
        yield
        self._indent -= 1

    def text(self) -> str:
        """The code, long lines wrapped to the project's line length (`codegen.wrap`)."""
        return "\n".join(out for line in self.lines for out in wrap_line(line)).rstrip() + "\n"


def names_in(*texts: str) -> frozenset[str]:
    """Every identifier-like word in pieces of a module's fixed code, locals of its functions
    included: what a module-level name those functions read (the model's class) must not be.
    Words in strings and comments count too, which only reserves a few names more."""
    return frozenset(word for text in texts for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))


#: A statement at a module's top level that binds a name: a class or function, an assignment, an
#: import. Only unindented lines are statements there, so a scan is as exact as parsing.
_TOP_LEVEL = re.compile(r"^(?:(?:class|def)\s+(\w+)|(\w+)\s*=(?!=)|import\s+(\w+)[\w.]*(?:\s+as\s+(\w+))?"
                        r"|from\s+\S+\s+import\s+([\w, ]+))", re.M)


def top_level_names(*texts: str) -> frozenset[str]:
    """The names pieces of a module's fixed code bind at its top level: the globals a name made from
    user text must not shadow."""
    names: set[str] = set()
    for m in (m for text in texts for m in _TOP_LEVEL.finditer(text)):
        defined, assigned, imported, alias, listed = m.groups()
        if listed:
            names.update(part.split()[-1] for part in listed.split(","))
        else:
            names.add(defined or assigned or alias or imported)
    return frozenset(names)


def prefixed_params(params: str) -> LayerRef:
    """A layer's params in a dict keyed by dotted names (`params['h.0.ln_1.weight']`): its function
    takes the key prefix `'h.0.'`."""
    return LayerRef(lambda path: repr(path + "."),
                    lambda layer, v, path: f"{params}[{layer} + {v.name[len(path) + 1:]!r}]")


def called_helpers(helpers: Iterable[str], code: Code) -> list[str]:
    """The helpers (module-level snippets, each named by the first function it defines) that `code`
    calls, or that a helper it calls calls, in the order given: a program holds no helper it does
    not use (`torch.softmax(` calls torch's, not the helper `softmax`)."""
    calls = {h: re.compile(r"(?<![\w.])" + re.search(r"def (\w+)", h).group(1) + r"\(") for h in helpers}
    text, called = "\n".join(code.lines), set()
    while found := {h for h, call in calls.items() if h not in called and call.search(text)}:
        called |= found
        text = "\n".join(found)
    return [h for h in calls if h in called]


def nan_kept(reduce: Callable[[Emit, Node], str], template: str) -> Callable[[Emit, Node], str]:
    """A max or min reduction (`reduce`) made NaN where the elements it reduces hold one, for a
    framework whose kernel skips NaN: a float operand takes `template`, formatted with the operand
    {x}, the reduction {reduced}, its arguments as jnp and tf take them {args} (`reduce_args`), its
    axes {axes} (all where the IR says None), {keepdims} and the result's {dtype}. Other dtypes hold
    no NaN."""

    def rule(e: Emit, node: Node) -> str:
        x = node.operands[0]
        if not x.dtype.is_float:
            return reduce(e, node)
        axes = node.attrs["axes"] if node.attrs["axes"] is not None else tuple(range(x.type.rank))
        return template.format(x=e.arg(node, 0), reduced=reduce(e, node), args=reduce_args(node),
                               axes=repr(tuple(axes)), keepdims=repr(node.attrs["keepdims"]),
                               dtype=e.dtype(node.result.dtype))

    return rule


def reduce_args(node: Node) -> str:
    """A reduction's axes and keepdims, as the arguments after its operand that jnp and tf take."""
    axes = node.attrs["axes"]
    return ("" if axes is None else f", axis={tuple(axes)!r}") + (", keepdims=True" if node.attrs["keepdims"] else "")


def param_path(value: Value) -> list[str]:
    """A param's dotted name as validated segments: identifiers or non-negative integers. A
    segment reaches generated code only as an attribute (a keyword one through getattr) or a
    repr'd key; the error points at where the user declared it."""
    parts = value.name.split(".")
    for part in parts:
        if not (IDENTIFIER.match(part) or part.isdigit()):
            raise ShipeiError(f"parameter name '{value.name}' cannot be used in generated code",
                              value.param.loc if value.param else None,
                              hint="names are identifiers separated by dots")
    return parts


def inert_text(text: str) -> str:
    """User text (a path, a source line) made safe inside a docstring or a comment: what could end
    either early, or escape a character — line breaks and other unprintables, quotes, backslashes —
    becomes '?'."""
    return "".join(c if c.isprintable() and c not in "\"'" else "?" for c in text)


Rule = Callable[["Emit", Node], str]


@dataclass(frozen=True)
class LayerRef:
    """How a repeated layer's function reads its params from one argument: `layer(path)` is the
    argument at a call (`self.h[0]`, `'h.0.'`), `param(arg, value, path)` a param through it
    (`layer.ln_1.weight`, `params[layer + 'ln_1.weight']`)."""

    layer: Callable[[str], str]
    param: Callable[[str, Value, str], str]


@dataclass
class Target:
    """What distinguishes one backend: its lowering table, spellings and the glue its module needs.

    `runtime_code` defines `available_devices()`, `load(weights, device)` and
    `run(model, inputs, device)` in the generated module: the contract the runtime relies on.
    """

    name: str
    framework: str
    extra: str
    dtypes: dict[DType, str]
    rules: dict[str, Rule | str]
    imports: tuple[str, ...] = ()
    std_imports: tuple[str, ...] = ()  # of the standard library, beside the module's `import os`
    #: code that must run before the framework is imported (settings it reads once, at import)
    preamble: str = ""
    runtime_code: str = ""
    shape_of: str = "{x}.shape[{axis}]"
    unsupported_dtypes: dict[str, frozenset[DType]] = field(default_factory=dict)
    #: `del` each value after its last read, as torch.fx's code does: an eager framework then
    #: frees (or reuses) its memory at once. Traced targets see no difference.
    free_dead_values: bool = False
    #: dtype -> how a float literal of that dtype is written (`{}` is its repr); plain repr if absent.
    float_literals: dict[DType, str] = field(default_factory=dict)
    #: op -> its spelling that writes the result over operand 0 (`{0}.add_({1})`), used where
    #: `codegen.buffers` finds that safe when the body reuses buffers; empty for traced targets.
    inplace: dict[str, Rule | str] = field(default_factory=dict)
    #: op -> its spelling that writes the result into `{out}`, a buffer the program keeps between
    #: calls (`codegen.buffers`), for results in `into_dtypes`; `kept_buffer` spells that buffer,
    #: with {slot}, {shape} and {like} (`codegen.buffers.like_operand`).
    into: dict[str, Rule | str] = field(default_factory=dict)
    into_dtypes: frozenset[DType] = frozenset()
    kept_buffer: str = ""
    #: ops the target computes into a new tensor, never a view of an operand.
    fresh: frozenset[str] = frozenset()
    #: names the model function reads for its rules besides values and symbols (torch's `self`
    #: and `device`): a fused group hoisted out of that function takes those it reads as arguments.
    model_locals: frozenset[str] = frozenset()
    #: fixed code a module may hold besides `runtime_code`: helper functions, option constants.
    helpers: tuple[str, ...] = ()
    #: module-level names the target's model writer defines outside its fixed code (jax's `forward`).
    defines: frozenset[str] = frozenset()
    #: the activation layout its convolutions prefer (the layout pass converts to it)
    layout: str = "NCHW"
    #: whether its code multiplies int8 weights itself (the quantize pass folds scales past matmuls)
    int8_matmul: bool = False
    #: mixed precision: a 16-bit dtype -> the emit options that compute matmul and convolution in it
    #: over float32 params (what training with `precision=` compiles); a dtype absent is not offered
    autocast: dict[DType, dict[str, Any]] = field(default_factory=dict)
    #: the emit options of a program that trains (one the framework's autodiff differentiates)
    training_options: dict[str, Any] = field(default_factory=dict)
    #: the results its default program never holds (computed inside a kernel's call with the ops
    #: after it: torch's oneDNN post-ops), for the memory estimate; None: it holds every one
    fused_values: Callable[[Graph], frozenset[Value]] | None = None
    #: bytes its default program's kernel for a node allocates beyond the result while the operands
    #: are held (torch's narrow rows: a transposed copy), for the memory estimate; None: none
    kernel_scratch: Callable[[Node, Mapping[str, int]], int] | None = None
    #: ops whose kernels here hold another workspace than their `OpDef.workspace` says (torch's CPU
    #: flash attention: no scores), for the memory estimate
    workspace: dict[str, WorkspaceRule] = field(default_factory=dict)

    @property
    def fixed_code(self) -> tuple[str, ...]:
        """Every piece of code the target writes as it is, around the model."""
        return (*self.std_imports, self.preamble, *self.imports, self.runtime_code, *self.helpers)

    def supports(self, op: str, dtype: DType) -> bool:
        return op in self.rules and dtype not in self.unsupported_dtypes.get(op, frozenset())


class Emit:
    """State while emitting one graph's body: names of values and the rendering helpers rules use."""

    def __init__(self, target: Target, graph: Graph, names: Namespace,
                 param_ref: Callable[[Value], str], constant_ref: Callable[[Node], str]):
        self.target = target
        self.graph = graph
        self.names = names
        self.param_ref = param_ref
        self.constant_ref = constant_ref
        self.values: dict[Value, str] = {}
        self.symbols: dict[str, str] = {}
        #: where results go besides new tensors, as `plan` decided (nowhere until it runs)
        self.buffers = BufferPlan()
        self.out = ""  # the kept buffer of the node being rendered with an `into` rule
        #: where fused groups go as module-level functions, each under this decorator line where one
        #: is given (torch's regional compilation): an eager forward then does not define them anew
        #: on every call. None keeps them local functions of the model (traced targets, which run
        #: forward's Python once).
        self.hoist: tuple[Code, str | None] | None = None
        #: how a repeated layer's function reaches its params from one argument, where the target
        #: can (torch's submodule, a key prefix); None: each param is an argument
        self.layer_ref: LayerRef | None = None
        #: a kernel of the target's that computes an op with the elementwise ops after it as one call
        #: (torch's oneDNN post-ops): given a node and those written after it (in its fused group,
        #: or outside any), how many the call computes, the last of them and the call; None where
        #: it has none there
        self.epilogue: Callable[[Emit, Node, Iterable[Node]], tuple[int, Node, str] | None] | None = None
        self._bindings: tuple[Code, int, int] | None = None  # where `bind_symbols` wrote

    # -- helpers for rules ------------------------------------------------------------------
    def arg(self, node: Node, i: int) -> str:
        return self.values[node.operands[i]]

    def args(self, node: Node) -> list[str]:
        return [self.values[v] for v in node.operands]

    def dtype(self, dtype: DType) -> str:
        return self.target.dtypes[dtype]

    def float(self, dtype: DType, value: float) -> str:
        """A float literal that a `dtype` computation reads at full precision."""
        return self.target.float_literals.get(dtype, "{}").format(py_literal(float(value)))

    def dim(self, d: Dim) -> str:
        if isinstance(d, int):
            return str(d)
        terms = []
        for mono, coeff in d.terms:
            factors = ([str(coeff)] if coeff != 1 or not mono else []) + [self.symbols[s] for s in mono]
            terms.append("*".join(factors))
        return " + ".join(terms) if len(terms) == 1 else "(" + " + ".join(terms) + ")"

    def dims(self, dims: tuple[Dim, ...]) -> str:
        inner = ", ".join(self.dim(d) for d in dims)
        return f"({inner},)" if len(dims) == 1 else f"({inner})"

    def format(self, template: str, node: Node, **values: Any) -> str:
        """Fill a rule template: {0}, {1}... are operands, {args} all of them, {name} an attr (its
        value in `values` where given there)."""
        attrs = {k: self.literal(node.op, k, values.get(k, v)) for k, v in node.attrs.items()}
        if node.results:
            attrs["out_dtype"] = self.dtype(node.results[0].dtype)
        if self.out:
            attrs["out"] = self.out
        return template.format(*self.args(node), args=", ".join(self.args(node)), **attrs)

    def literal(self, op: str, attr: str, value: Any) -> str:
        kind = get_op(op).attrs[attr].kind
        if kind is AttrKind.DTYPE:
            return self.dtype(value)
        if kind is AttrKind.DIM:
            return self.dim(value)
        if kind is AttrKind.DIMS:
            return self.dims(value)
        if kind is AttrKind.ARRAY:
            return py_literal(np.asarray(value).tolist())
        return py_literal(value)

    # -- the walk ---------------------------------------------------------------------------
    def bind_symbols(self, code: Code, input_names: list[str]) -> None:
        """Bind each shape symbol to the first input dim that names it, here: `B = x.shape[0]`.
        The body (`body`) keeps only those it reads."""
        start = len(code.lines)
        for value, name in zip(self.graph.inputs, input_names):
            for axis, d in enumerate(value.shape):
                if isinstance(d, Sym) and len(d.symbols) == 1 and str(d) in d.symbols and str(d) not in self.symbols:
                    self.symbols[str(d)] = self.names.fresh(str(d))
                    code(f"{self.symbols[str(d)]} = {self.target.shape_of.format(x=name, axis=axis)}")
        self._bindings = (code, start, len(code.lines))

    def _unbind_unused(self) -> None:
        """Drop the symbol bindings that nothing after them reads (an unused local, to a linter)."""
        if self._bindings is None:
            return
        code, start, end = self._bindings
        read = set(re.findall(r"[A-Za-z_]\w*", "\n".join(code.lines[end:])))
        code.lines[start:end] = [line for line in code.lines[start:end] if line.split(" = ")[0].strip() in read]

    def plan(self, reuse_buffers: bool = False, keep_buffers: bool = False) -> None:
        """Decide, before the body is written, which results overwrite dying operands
        (`reuse_buffers`) and which go into kept buffers (`keep_buffers`): see `codegen.buffers`."""
        if reuse_buffers or keep_buffers:
            self.buffers = plan_buffers(self.graph, self.target, self.graph.last_reads(), reuse=reuse_buffers,
                                        keep=keep_buffers,
                                        donated=[v for v in self.graph.inputs if v.name in self.graph.donated])

    def body(self, code: Code) -> None:
        """One assignment per node, each DSL statement's block headed by its source line. A
        repeated layer's call (`ir.region.layer_calls`: a Block used twice) is a call of one
        function for the layer, and each fused region (a run of nodes with one `Node.group`) a
        call of its own function: local, or at module level where `hoist` says. Results go where
        `plan` put them."""
        self._last_loc: tuple[str, int] | None = None
        self._count = 0
        self._inline = inline_scalars(self.graph)
        self._last_read = self.graph.last_reads()
        self._position = {id(n): i for i, n in enumerate(self.graph.nodes)}
        self._functions: dict[str, str] = {}  # a shared function's canonical text -> its name
        self._calls = layer_calls(self.graph)
        for value in self.graph.params:
            self.values[value] = self.param_ref(value)
        self._walk(code, self.graph.nodes, lambda n: ("layer", self._calls[n]) if n in self._calls else n.group)
        self._unbind_unused()

    def _walk(self, code: Code, nodes: list[Node], key: Callable[[Node], Any]) -> None:
        """Write `nodes`: runs with one key that is not None are a function each (a layer's call, a
        fused group), the rest a statement each; dead values are freed where the target does so."""
        live: list[Value] = []
        runs = regions(self.graph, lambda n: n if key(n) is None else key(n), nodes)
        alone = [key(r.nodes[0]) is None for r in runs]  # a node outside any layer's call or group
        i = 0
        while i < len(runs):
            run, kind = runs[i], key(runs[i].nodes[0])
            if kind is None:  # a statement, or with the ones after it one call of the target's kernel
                after = (runs[j].nodes[0] for j in itertools.takewhile(alone.__getitem__, range(i + 1, len(runs))))
                taken, defined = self.statements(code, run.nodes[0], after)
                run, i = runs[i + taken - 1], i + taken
            elif isinstance(kind, tuple):  # ("layer", call)
                defined, i = self.layer_call(code, run), i + 1
            else:
                defined, i = self.region(code, run), i + 1
            if self.target.free_dead_values:
                end = self._position[id(run.nodes[-1])]
                dead = [v for v in live + defined if self._last_read.get(v, -1) <= end]
                live = [v for v in live + defined if self._last_read.get(v, -1) > end]
                if dead:  # on the line that read them last, as torch.fx writes it
                    code.lines[-1] += f";  del {', '.join(self.values[v] for v in dead)}"

    def statement(self, code: Code, node: Node) -> list[Value]:
        """The node's assignment; the values it names."""
        if node in self._inline:
            dtype = node.result.dtype
            scalar = np.asarray(node.attrs["value"], dtype=dtype.numpy).item()
            self.values[node.result] = self.float(dtype, scalar) if dtype.is_float else repr(scalar)
            return []
        self._source_comment(code, node)
        rule = self.rule_for(node)
        writes, slots = self.buffers.writes, self.buffers.slots
        if node in writes:  # the overwritten operand goes first: add(x, y) as x.add_(y)
            rule = self.target.inplace[node.op]
            if writes[node]:
                node = Node(node.op, node.operands[::-1], node.attrs, node.results, node.loc)
        elif node in slots:
            rule = self.target.into[node.op]
            self.out = self.target.kept_buffer.format(slot=slots[node], shape=self.dims(node.result.shape),
                                                      like=self.values[like_operand(node)])
        try:
            expr = self.constant_ref(node) if node.op == "constant" else render(rule, self, node)
        finally:
            self.out = ""
        return self._assign(code, node.results, expr)

    def _source_comment(self, code: Code, node: Node) -> None:
        """The node's DSL line as a comment, where it starts a new one."""
        if node.loc and (node.loc.file, node.loc.line) != self._last_loc:
            code(f"# {source_comment(node.loc)}")
            self._last_loc = (node.loc.file, node.loc.line)

    def _assign(self, code: Code, results: list[Value], expr: str) -> list[Value]:
        """`results = expr`, each result named from its hint; the results."""
        names = [self.names.fresh(v.hint or f"v{self._count + i}") for i, v in enumerate(results)]
        self._count += len(names)
        for value, name in zip(results, names):
            self.values[value] = name
        code(f"{', '.join(names)} = {expr}")
        return list(results)

    def statements(self, code: Code, node: Node, after: Iterable[Node]) -> tuple[int, list[Value]]:
        """`node` as a statement, or, where the target's `epilogue` computes it with some of the
        nodes written `after` it as one call, that call, which names the last one's results: how
        many nodes were written and the values named."""
        fused = self.epilogue(self, node, after) if self.epilogue else None
        if fused is None:
            return 1, self.statement(code, node)
        taken, last, expr = fused
        self._source_comment(code, node)
        return taken, self._assign(code, last.results, expr)

    def _group_body(self, code: Code, nodes: list[Node]) -> None:
        """A fused group's statements (see `statements`)."""
        i = 0
        while i < len(nodes):
            i += self.statements(code, nodes[i], nodes[i + 1:])[0]

    def region(self, code: Code, region: Region) -> list[Value]:
        """A fused group as a function: see `function`."""
        group = region.nodes[0].group
        ops = ", ".join(dict.fromkeys(n.op for n in region.nodes))
        return self.function(code, region, f"group{group}", f"fused group {group}: {ops}",
                             lambda body: self._group_body(body, region.nodes),
                             shared=bool(self.hoist))

    def layer_call(self, code: Code, region: Region) -> list[Value]:
        """A call of a repeated layer as a call of the layer's function (see `function`), its
        params arguments named as within the layer (`ln_1_weight`); inside, fused groups are
        functions of their own and dead values are freed as in the model's body."""
        path, _ = self._calls[region.nodes[0]]
        definition = self.graph.layers[path]
        snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", definition).lower()

        def write(body: Code) -> None:
            self._last_loc = None
            self._walk(body, region.nodes, lambda n: n.group)

        def hint(v: Value) -> str | None:
            return v.name[len(path) + 1:] if v.param is not None and v.name.startswith(path + ".") else None

        comment = f"the layer {definition}, for each of its calls"
        if self.layer_ref is None:
            return self.function(code, region, snake, comment, write, shared=True, hint=hint, decorate=False)
        # the target reaches a layer's params from one argument (torch's submodule, a key prefix)
        layer = self.names.fresh("layer")
        params = [v for v in region.inputs if hint(v)]
        saved = {v: self.values[v] for v in params}
        self.values.update({v: self.layer_ref.param(layer, v, path) for v in params})
        try:
            return self.function(code, region, snake, comment, write, shared=True,
                                 outer={layer: self.layer_ref.layer(path)}, given=set(params), decorate=False)
        finally:
            self.values.update(saved)

    def function(self, code: Code, region: Region, name: str, comment: str, write: Callable[[Code], Any],
                 shared: bool, hint: Callable[[Value], str | None] = lambda v: None,
                 outer: dict[str, str] | None = None, given: set[Value] = frozenset(),
                 decorate: bool = True) -> list[Value]:
        """A region as a function and its call: the values it reads (params included) and the
        shape symbols it uses are its arguments, and it returns the values read after it; a
        target's own names (imports, `device`) it reads as usual, or as arguments where `hoist`
        puts it at module level. A `shared` function is written once for every region that
        computes the same on values of the same types. `outer` are arguments given already (name
        -> expression at the call site), through which the body reads the values `given`. Returns
        the values the call names. Only a `decorate`d function gets the hoist decorator (a fused
        group's, not a layer's whose groups have it)."""
        nodes = region.nodes
        inside = {r for n in nodes for r in n.results}
        outer = dict(outer or {})  # argument name -> expression at the call site
        saved = dict(self.values)
        for v in region.inputs:
            expr = self.values[v]
            if v.producer in self._inline or expr in outer or v in given:
                continue
            named = hint(v)
            arg = (self.names.fresh(named) if named else expr if IDENTIFIER.match(expr)
                   else self.names.fresh(v.name or "const"))
            outer[arg] = expr
            self.values[v] = arg
        body = Code()
        write(body)
        results = region.outputs
        body(f"return {', '.join(self.values[v] for v in results)}" if results else "return None")
        local = set(self.values.values()) | set(self.symbols.values())
        if self.hoist:
            local |= self.target.model_locals
        for free in sorted((_free_names(body.lines) & local) - set(outer)):
            outer[free] = free  # a shape symbol or value the body reads by name
        args = list(outer)
        where, decorator = self.hoist if self.hoist else (code, None)
        decorators = [decorator] if decorator and decorate else []
        if shared:  # the same layer, repeated: one function (one compilation where a compiler caches)
            types = " ".join(str(v.type) for n in nodes for v in (*n.operands, *n.results))
            key = f"{types}\n{_canonical(args, body.lines)}"
            if key not in self._functions:
                self._functions[key] = self._define(where, name, comment, args, body, decorators)
            fn = self._functions[key]
        else:
            fn = self._define(where, name, comment, args, body, decorators)
        names = [self.values[v] for v in results]
        self.values.update({k: v for k, v in saved.items() if k not in inside})
        code(f"{', '.join(names) or '_'} = {fn}({', '.join(outer.values())})")
        return results

    def _define(self, where: Code, name: str, comment: str, args: list[str], body: Code,
                decorators: list[str]) -> str:
        """Write a function into `where` (and blank lines after it at module level); its name."""
        fn = self.names.fresh(name)
        where(f"# {comment}", *decorators)
        with where.block(f"def {fn}({', '.join(args)}):"):
            where(*body.lines)
        if self.hoist and where is self.hoist[0]:
            where("", "")
        return fn

    def rule_for(self, node: Node) -> Rule | str:
        rule = self.target.rules.get(node.op)
        dtypes = {v.dtype for v in node.operands + node.results}
        if rule is None or not all(self.target.supports(node.op, d) for d in dtypes):
            where = f" (from {node.loc})" if node.loc else ""
            raise ShipeiError(f"target '{self.target.name}' cannot lower op '{node.op}' on "
                              f"{', '.join(sorted(str(d) for d in dtypes))}{where}", node.loc,
                              hint="see the target's capability table: shipei.codegen.capabilities()")
        return rule


def computed_in(rule: Rule | str, when: frozenset[DType], compute: DType, cast: str) -> Rule:
    """`rule` for nodes whose result dtype is in `when`, computed at `compute`: those operands are
    cast to it and the result back, rounding once as the reference does (op by op in 16 bits, the
    roundings of a composite op exceed the 16-bit tolerances). `cast` spells a cast, with `{x}` and
    `{dtype}`: a call (`tf.cast({x}, {dtype})`) or a method (`{x}.astype({dtype})`)."""

    def wrapped(e: Emit, node: Node) -> str:
        dtype = node.results[0].dtype
        if dtype not in when:
            return render(rule, e, node)
        saved = {v: e.values[v] for v in node.operands}
        for v in node.operands:
            if v.dtype in when:
                e.values[v] = cast.format(x=e.values[v], dtype=e.dtype(compute))
        try:
            expr = render(rule, e, node)
        finally:
            e.values.update(saved)
        if cast.startswith("{x}.") and not _primary(expr):
            expr = f"({expr})"
        return cast.format(x=expr, dtype=e.dtype(dtype))

    return wrapped


def _primary(expr: str) -> bool:
    """Whether a method can be called on `expr` as it is: a name, call, attribute or subscript."""
    return isinstance(ast.parse(expr, mode="eval").body, (ast.Call, ast.Attribute, ast.Subscript, ast.Name))


def render(rule: Rule | str, e: Emit, node: Node) -> str:
    """A rule's expression for `node`: a callable rule is called, a template is filled."""
    return rule(e, node) if callable(rule) else e.format(rule, node)


def _canonical(args: list[str], lines: list[str]) -> str:
    """A function's text with its arguments, locals and nested functions renamed by position,
    comments dropped: equal for two groups that compute the same on different values (a repeated
    layer's)."""
    tree = ast.parse("\n".join(lines))
    names = {a: f"_a{i}" for i, a in enumerate(args)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id not in names:
            names[node.id] = f"_t{len(names)}"
        elif isinstance(node, ast.FunctionDef) and node.name not in names:
            names[node.name] = f"_f{len(names)}"
        elif isinstance(node, ast.arg) and node.arg not in names:
            names[node.arg] = f"_p{len(names)}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            node.id = names.get(node.id, node.id)
        elif isinstance(node, ast.FunctionDef):
            node.name = names[node.name]
        elif isinstance(node, ast.arg):
            node.arg = names[node.arg]
    return f"({', '.join(names[a] for a in args)})\n{ast.unparse(tree)}"


def _free_names(lines: list[str]) -> set[str]:
    """Names a function body reads but never assigns."""
    loads, stores = set(), set()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Name):
            (stores if isinstance(node.ctx, ast.Store) else loads).add(node.id)
    return loads - stores


def pads_last_dim_first(pads: tuple[int, ...]) -> tuple[int, ...]:
    """IR pads (before, after per axis, first axis first) in the order F.pad and ops.pad take."""
    return tuple(p for i in reversed(range(len(pads) // 2)) for p in (pads[2 * i], pads[2 * i + 1]))


def pair(v: tuple[int, ...]) -> tuple[int, int]:
    """An int-pair attribute (kernel, stride, padding, dilation) as (h, w): the IR allows one int for both."""
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def attention(e: Emit, node: Node, scores: str, causal: str, out: str) -> str:
    """softmax(q @ k^T * scale [causal mask]) @ v in a target's spellings: `scores` formats q, k and
    scale; `causal` formats scores, length (queries), source (keys) and fill (-inf at the result's
    dtype) into scores where query i sees only keys j <= i; `out` formats scores and v."""
    q, k, v = e.args(node)
    text = scores.format(q=q, k=k, scale=e.float(node.result.dtype, node.attrs["scale"]))
    if node.attrs["causal"]:
        length, source = (e.dim(x.shape[-2]) for x in node.operands[:2])
        text = causal.format(scores=text, length=length, source=source, fill=e.float(node.result.dtype, -np.inf))
    return out.format(scores=text, v=v)


def is_global_average(node: Node) -> bool:
    """An avg_pool2d whose one window covers the whole unpadded image: a mean over H and W, which
    XLA reduces faster than a reduce_window."""
    return (node.result.shape[2:] == (1, 1) and pair(node.attrs["kernel"]) == node.operands[0].shape[2:]
            and pair(node.attrs["padding"]) == (0, 0))


def py_literal(value: Any) -> str:
    """Python source for nested lists of numbers, spelling inf and nan as float('inf')."""
    if isinstance(value, list):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(py_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, float) and not np.isfinite(value):
        return f"float({str(value)!r})"
    return repr(value)


#: Ops every target writes as a Python operator, where a Python scalar operand keeps the tensor's dtype.
SCALAR_OPERAND_OPS = frozenset({"add", "sub", "mul", "div"})


def inline_scalars(graph: Graph) -> set[Node]:
    """Rank-0 numeric constants read only as an operator's operand beside a tensor: `x * 0.5`.
    A graph output stays a tensor: the program returns tensors."""
    users = graph.users()
    outputs = set(graph.outputs)
    out: set[Node] = set()
    for node in graph.nodes:
        if (node.op != "constant" or node.result.type.rank or node.result.dtype is DType.bool
                or not np.isfinite(node.attrs["value"]) or node.result in outputs):
            continue
        readers = users.get(node.result, [])
        if readers and all(u.op in SCALAR_OPERAND_OPS and any(v is not node.result for v in u.operands)
                           and not any(v.producer in out for v in u.operands) for u in readers):
            out.add(node)
    return out


def hoisted_constants(graph: Graph, names: Namespace, hint: str) -> dict[Node, str]:
    """A name (`hint` + its number) for each constant the program holds once, outside the body:
    every constant but the scalars the body writes inline (`inline_scalars`)."""
    inlined = inline_scalars(graph)
    constants = [n for n in graph.nodes if n.op == "constant" and n not in inlined]
    return {node: names.fresh(f"{hint}{i}") for i, node in enumerate(constants)}


def source_comment(loc: SourceLoc) -> str:
    """`file:line  text` for a comment; unprintable characters (line breaks) cannot end it early."""
    text = f"{loc.file}:{loc.line}" + (f"  {loc.text.strip()}" if loc.text.strip() else "")
    return "".join(c if c.isprintable() else "?" for c in text)

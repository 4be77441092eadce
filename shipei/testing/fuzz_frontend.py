"""`shipei fuzz --frontend`: broken and hostile programs through the front end and the four code
generators.

Each input is a valid program (`SEEDS`) mutated one to three times: tokens deleted, duplicated or
swapped, the text truncated, odd unicode inserted, numbers made huge or negative, an expression
nested hundreds deep, a name replaced by a hostile one (a dunder, a Python keyword, a name that
torch, MindSpore or a generated module already uses), and sometimes a hostile file name. A worker
process elaborates it, verifies the IR and generates all four programs, and says what happened:

- `ok`: it compiled; each generated program is valid Python holding no user text as code;
- `located`: a `ShipeiError` with a source location, as every bad input should give;
- `unlocated`: a `ShipeiError` without one;
- `traceback`: any other exception escaped;
- `unsafe`: a generated program that is not Python, or that holds user text as code;
- `hang`: no answer within the deadline (the worker is killed and restarted).

Everything but `ok` and `located` is a finding, saved as `NNN-kind.sp` with a `.txt` saying what
happened and the file name it was compiled under. Workers are `python -m
shipei.testing.fuzz_frontend --worker`, one per core; generation stays in the parent, so a seed
gives the same inputs whatever the number of workers.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import random
import re
import resource
import select
import signal
import subprocess
import sys
import time
import tokenize
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..runtime.workers import receive, replies_stream, send
from .fuzz import _columns

KINDS = ("ok", "located", "unlocated", "traceback", "unsafe", "hang")
FINDINGS = ("unlocated", "traceback", "unsafe", "hang")

#: Valid programs covering the DSL's constructs: every mutation starts from one of these.
SEEDS = [
    """model MLP(hidden: int = 16, classes: int = 4) {
    fc1 = Linear(8, hidden)
    fc2 = Linear(hidden, classes)
    forward(x: f32[B, 8]) -> f32[B, classes] {
        h = relu(fc1(x))
        return softmax(fc2(h), axis=-1)
    }
}
""",
    """layer Block(c: int) {
    conv = Conv2d(c, c, 3, padding=1, bias=false)
    bn = BatchNorm2d(c)
    forward(x: f32[N, c, H, W]) -> f32[N, c, H, W] {
        return relu(bn(conv(x)) + x)
    }
}

model Net(width: int = 4, depth: int = 2) {
    stem = Conv2d(3, width, 3, stride=1, padding=1)
    for i in range(depth) {
        blocks[i] = Block(width)
    }
    pool = AdaptiveAvgPool2d(1)
    head = Linear(width, 10)
    forward(x: f32[B, 3, 8, 8]) -> f32[B, 10] {
        y = max_pool2d(relu(stem(x)), 2, stride=2)
        for i in range(depth) { y = blocks[i](y) }
        return head(flatten(pool(y), start_dim=1))
    }
}
""",
    """layer Attention(d: int, heads: int) {
    ln = LayerNorm(d)
    attn = MultiHeadAttention(d, heads, causal=true)
    forward(x: f32[B, T, d]) -> f32[B, T, d] {
        return x + attn(ln(x))
    }
}

model Tiny(vocab: int = 32, d: int = 8, heads: int = 2, n: int = 2, max_len: int = 16) {
    wte = Embedding(vocab, d)
    wpe = Embedding(max_len, d)
    for i in range(n) { h[i] = Attention(d, heads) }
    lm_head = Linear(d, vocab, bias=false)
    forward(tokens: i64[B, T]) -> f32[B, T, vocab] {
        x = wte(tokens) + wpe(arange(T))
        for i in range(n) { x = h[i](x) }
        return lm_head(x)
    }
}
""",
    """model Ops(n: int = 3, scale: float = 0.5, flag: bool = true) {
    param w: f32[n, 4] = normal(std=0.02)
    buffer count: i64[] = zeros()
    forward(x: f32[B, 4], mask: bool[B, 4]) -> f32[B, n], f32[B] {
        on gpu {
            y = x @ w.T * scale
        }
        @on(cpu) z = where(mask, x, 0.0)
        if flag and n > 2 { y = gelu(y, approximate="tanh") } else { y = tanh(y) }
        s = sum(z, axis=[1], keepdim=false)
        a, b = split(y, [1, n - 1], axis=1)
        return concat([a, b], axis=1) - mean(y, axis=1, keepdim=true), s ** 2
    }
}
""",
    """layer Scale(k: float = 2.0) {
    forward(x: f32[..., C]) -> f32[..., C] { return x * k }
}

model Shapes(c: int = 6) {
    s = Scale(3.0)
    forward(x: f32[B, T, c]) -> f32[B * T, c // 2, 2] {
        y = s(x[..., 0:c])
        return reshape(transpose(y, [1, 0, 2]), [B * T, c // 2, 2])
    }
}
""",
]

#: Names that broke something once, or could: Python's own, names torch and MindSpore objects and
#: the generated modules define, the DSL's own words, and words that are only names in backticks.
HOSTILE_NAMES = [
    "__class__", "__dict__", "__init__", "__call__", "__import__", "_parameters", "_modules", "_buffers", "_version",
    "training", "train", "eval", "forward", "construct", "cells", "to", "cuda", "None", "True", "False", "lambda",
    "def", "class", "self", "super", "weights", "device", "model", "layer", "param", "buffer", "on", "torch", "F",
    "np", "jax", "jnp", "tf", "ms", "ops", "nn", "os", "run", "load", "WEIGHTS", "INPUTS", "PARAMS", "KeptBuffers",
    "_kept", "v0", "const0", "CONST0", "B", "T", "x", "`for`", "`if`", "`return`", "`true`", "`model`", "`in`",
    "`__class__`", "import", "return", "for", "if", "else", "not", "and", "or", "in", "true", "false",
    "__", "_", "ñame", "x" * 300,
]
NUMBERS = ["0", "-1", "-3", "1", "2", "7", "4294967296", "9223372036854775807", "9223372036854775808",
           "99999999999999999999999", "10 ** 10 ** 10", "2 ** 63", "1e308", "1e999", "-1e-308", "0.0", "nan", "inf",
           "-inf", "3.5", "(0 - 5)", "range(10 ** 13)", "[0, 1, 2]", "\"text\"", "true"]
ODD_TEXT = ["\x00", "\ufeff", "\u202e", "\u2028", "\r", "\t", "\f", "é", "ℌ", "😀", "\\", "\"", "'", "\"\"\"", "#",
            "`", "@", "$", "?", "{", "}", "(", ")", "[", "]", ",", ":", ";", "...", "->", "**"]
HOSTILE_FILES = ['x"""; __import__("os").system("echo PWNED"); """.sp', "a\nb.sp", "a'b.sp", "c:\\dir\\m.sp",
                 "é.sp", "m.sp\u2028__import__('os')", "#.sp", "<prelude>/nn.sp"]
#: A name no generated program defines: where it shows as code, user text became code.
INJECTED = "__import__"

_TOKEN = re.compile(r'`\w+`|"(?:[^"\\\n]|\\.)*"|\d+\.\d*(?:[eE][+-]?\d+)?|\w+|\*\*|//|==|!=|<=|>=|->|\.\.\.|\s+|\S')


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _words(tokens: list[str]) -> list[int]:
    return [i for i, t in enumerate(tokens) if t[0].isalpha() or t[0] in "_`"]


def _numbers(tokens: list[str]) -> list[int]:
    return [i for i, t in enumerate(tokens) if t[0].isdigit()]


def _solid(tokens: list[str]) -> list[int]:
    return [i for i, t in enumerate(tokens) if not t.isspace()] or [0]


def _delete(tokens: list[str], rng: random.Random) -> None:
    del tokens[rng.choice(_solid(tokens))]


def _duplicate(tokens: list[str], rng: random.Random) -> None:
    i = rng.choice(_solid(tokens))
    tokens.insert(i, tokens[i])


def _swap(tokens: list[str], rng: random.Random) -> None:
    solid = _solid(tokens)
    i, j = rng.choice(solid), rng.choice(solid)
    tokens[i], tokens[j] = tokens[j], tokens[i]


def _truncate(tokens: list[str], rng: random.Random) -> None:
    del tokens[rng.randrange(len(tokens)):]


def _odd(tokens: list[str], rng: random.Random) -> None:
    tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(ODD_TEXT))


def _number(tokens: list[str], rng: random.Random) -> None:
    where = _numbers(tokens) or _solid(tokens)
    tokens[rng.choice(where)] = rng.choice(NUMBERS)


def _nest(tokens: list[str], rng: random.Random) -> None:
    """Wrap a name or number in hundreds of calls, parentheses, minus signs or lists."""
    where = _words(tokens) + _numbers(tokens) or _solid(tokens)
    i = rng.choice(where)
    depth = rng.choice([50, 99, 101, 200, 600, 1200])
    opener, closer = rng.choice([("relu(", ")"), ("(", ")"), ("-", ""), ("[", "]"), ("not ", ""), ("x + ", ""),
                                 ("", " + x"), ("2 ** ", "")])
    tokens[i] = opener * depth + tokens[i] + closer * depth


def _name(tokens: list[str], rng: random.Random) -> None:
    """A hostile name in place of a name, in every place one is: all uses of one name at once
    (so a program stays consistent), or a single one."""
    words = _words(tokens)
    if not words:
        return
    old, new = tokens[rng.choice(words)], rng.choice(HOSTILE_NAMES)
    every = rng.random() < 0.7
    for i in words:
        if tokens[i] == old and (every or rng.random() < 0.3):
            tokens[i] = new


def _splice(tokens: list[str], rng: random.Random) -> None:
    """A run of tokens from a seed program, inserted anywhere: statements and clauses out of place."""
    donor = _tokens(rng.choice(SEEDS))
    start = rng.randrange(len(donor))
    i = rng.randrange(len(tokens) + 1)
    tokens[i:i] = donor[start:start + rng.randint(1, 12)]


MUTATIONS: list[Callable[[list[str], random.Random], None]] = [
    _delete, _duplicate, _swap, _truncate, _odd, _number, _nest, _name, _name, _name, _splice, _splice]


def mutate(text: str, rng: random.Random) -> str:
    """One to three random mutations of `text`."""
    tokens = _tokens(text)
    for _ in range(rng.choice([1, 1, 2, 3])):
        if tokens:
            rng.choice(MUTATIONS)(tokens, rng)
    return "".join(tokens)


def inputs(seed: int) -> Iterator[tuple[str, str]]:
    """(program, file name) pairs, the same for the same seed."""
    rng = random.Random(seed)
    while True:
        file = rng.choice(HOSTILE_FILES) if rng.random() < 0.1 else "m.sp"
        yield mutate(rng.choice(SEEDS), rng), file


# -- the worker: what one input does -----------------------------------------------------------
def examine(text: str, file: str) -> tuple[str, str]:
    """(kind, detail) for one program compiled under the file name `file`."""
    from ..codegen import TARGETS, emit
    from ..frontend import elaborate_source
    from ..ir.errors import ShipeiError
    from ..ir.verifier import verify

    try:
        graph = elaborate_source(text, file)
        verify(graph)
        for target in TARGETS:
            unsafe = unsafe_code(emit(graph, target, file).source)
            if unsafe:
                return "unsafe", f"{target}: {unsafe}"
    except ShipeiError as e:
        return ("located" if e.loc else "unlocated"), str(e)
    except Exception:  # noqa: BLE001 - what escapes is the finding
        return "traceback", traceback.format_exc(limit=-8)
    return "ok", ""


def unsafe_code(source: str) -> str:
    """Why a generated program is unsafe, or "": not Python, or `INJECTED` outside strings and comments."""
    try:
        compile(source, "<generated>", "exec")
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (SyntaxError, tokenize.TokenError, ValueError) as e:
        return f"not Python: {e}"
    for tok in tokens:
        if tok.type == tokenize.NAME and tok.string == INJECTED:
            return f"user text as code at line {tok.start[0]}: {tok.line.strip()}"
    return ""


def worker_main() -> None:
    """Requests (program, file) on stdin, replies (kind, detail) on the original stdout. Memory is
    capped, so a runaway allocation raises MemoryError (a finding) instead of meeting the OOM killer."""
    replies = replies_stream()
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.RLIM_INFINITY))
    examine(SEEDS[0], "warm.sp")  # imports, the prelude, and torch's and MindSpore's names, once
    send(replies, ("ready", ""))
    while True:
        try:
            text, file = receive(0, None)
        except EOFError:
            return
        send(replies, examine(text, file))


# -- the parent ---------------------------------------------------------------------------------
@dataclass
class Finding:
    kind: str
    detail: str
    text: str
    file: str
    count: int = 1
    path: Path | None = None


@dataclass
class FrontendSummary:
    counts: collections.Counter = field(default_factory=collections.Counter)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    startup: float = 0.0

    @property
    def inputs(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> bool:
        return any(self.counts[k] for k in FINDINGS)

    def table(self) -> str:
        rows = [("inputs", *KINDS), (str(self.inputs), *(str(self.counts[k]) for k in KINDS))]
        lines = _columns(rows)
        rate = self.inputs / (self.seconds - self.startup) if self.seconds > self.startup else 0.0
        lines += ["", f"{self.inputs} inputs in {self.seconds:.1f} s ({rate:.0f} inputs/s after "
                      f"{self.startup:.1f} s of worker start-up)"]
        lines += [f"{f.kind} (seen {f.count}x){f' -> {f.path}' if f.path else ''}: {_headline(f)}"
                  for f in self.findings] or ["no findings"]
        return "\n".join(lines) + "\n"


def _headline(finding: Finding) -> str:
    """A traceback's last line (the exception), an error's first (its message)."""
    lines = [line.strip() for line in finding.detail.strip().splitlines() if line.strip()] or [""]
    return lines[-1] if finding.kind == "traceback" else lines[0]


def _signature(kind: str, detail: str) -> tuple[str, str]:
    """Findings with one signature are taken for one bug: a traceback by its last lines, an
    unlocated error by its message, numbers blanked."""
    lines = [line.strip() for line in detail.strip().splitlines() if line.strip()]
    key = " | ".join(lines[-2:] if kind == "traceback" else lines[:1])
    return kind, re.sub(r"\d+", "N", key)


class _Worker:
    """One worker process and the input it is working on."""

    def __init__(self, log: Path):
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "shipei.testing.fuzz_frontend", "--worker"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True)
        self.job: tuple[str, str] | None = None
        self.deadline = 0.0

    def fileno(self) -> int:
        return self.proc.stdout.fileno()

    def give(self, job: tuple[str, str], timeout: float) -> None:
        self.job, self.deadline = job, time.monotonic() + timeout
        send(self.proc.stdin, job)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class FrontendFuzzer:
    """Runs `shipei fuzz --frontend`; stops after `seconds` or `count` inputs, whichever comes first.
    The inputs are `inputs(seed)`, or the (program, file name) pairs of `programs` (a saved corpus)."""

    def __init__(self, seconds: float | None = 60.0, count: int | None = None, seed: int = 0,
                 workers: int | None = None, timeout: float = 10.0, out: str | os.PathLike | None = "fuzz-out",
                 progress: TextIO | None = sys.stderr, programs: Iterable[tuple[str, str]] | None = None):
        self.seconds, self.count, self.seed, self.timeout = seconds, count, seed, timeout
        self.programs = programs
        self.workers = workers or os.cpu_count() or 1
        self.out = Path(out) if out is not None else None
        self.progress = progress

    def run(self) -> FrontendSummary:
        summary = FrontendSummary()
        start = time.monotonic()
        log_dir = self.out or Path(os.environ.get("TMPDIR", "/tmp"))
        log_dir.mkdir(parents=True, exist_ok=True)
        pool = [self._start(log_dir) for _ in range(self.workers)]
        summary.startup = time.monotonic() - start
        end = start + self.seconds if self.seconds is not None else float("inf")
        source = iter(self.programs) if self.programs is not None else inputs(self.seed)
        seen: dict[tuple[str, str], Finding] = {}
        issued = 0
        last_report = time.monotonic()
        try:
            for w in pool:
                issued = self._feed(w, source, issued, end)
            while any(w.job for w in pool):
                busy = [w for w in pool if w.job]
                wait = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                ready, _, _ = select.select(busy, [], [], wait)
                for w in busy:
                    if w in ready:
                        kind, detail = self._reply(w)
                    elif time.monotonic() >= w.deadline:
                        w.kill()
                        kind, detail = "hang", f"no answer within {self.timeout:.0f} s"
                    else:
                        continue
                    self._record(summary, seen, w.job, kind, detail)
                    w.job = None
                    if w.proc.poll() is not None:
                        pool[pool.index(w)] = w = self._start(log_dir)
                    issued = self._feed(w, source, issued, end)
                if self.progress and time.monotonic() - last_report > 5:
                    last_report = time.monotonic()
                    print(f"\rfuzz --frontend: {summary.inputs} inputs, "
                          f"{sum(summary.counts[k] for k in FINDINGS)} findings", end="", file=self.progress)
        finally:
            for w in pool:
                w.kill()
        if self.progress:
            print(file=self.progress)
        summary.seconds = time.monotonic() - start
        summary.findings = list(seen.values())
        self._save(summary)
        return summary

    def _start(self, log_dir: Path) -> _Worker:
        worker = _Worker(log_dir / "frontend-worker.log")
        ready, _, _ = select.select([worker], [], [], 300)
        if not ready or receive(worker.fileno(), time.monotonic() + 1)[0] != "ready":
            worker.kill()
            raise RuntimeError(f"a frontend fuzz worker did not start; see {worker.log}")
        return worker

    def _feed(self, w: _Worker, source: Iterator[tuple[str, str]], issued: int, end: float) -> int:
        job = next(source, None) if (self.count is None or issued < self.count) and time.monotonic() < end else None
        if job is None:
            return issued
        w.give(job, self.timeout)
        return issued + 1

    def _reply(self, w: _Worker) -> tuple[str, str]:
        try:
            return receive(w.fileno(), time.monotonic() + self.timeout)
        except (EOFError, TimeoutError):
            code = w.proc.wait()
            return "traceback", f"the worker died (exit status {code}) on this input"

    def _record(self, summary: FrontendSummary, seen: dict[tuple[str, str], Finding], job: tuple[str, str],
                kind: str, detail: str) -> None:
        summary.counts[kind] += 1
        if kind in FINDINGS:
            key = _signature(kind, detail)
            if key in seen:
                seen[key].count += 1
            else:
                seen[key] = Finding(kind, detail, *job)

    def _save(self, summary: FrontendSummary) -> None:
        if self.out is None:
            return
        for i, f in enumerate(summary.findings):
            f.path = self.out / f"{i:03d}-{f.kind}.sp"
            f.path.write_text(f.text, encoding="utf-8", errors="surrogateescape")
            f.path.with_suffix(".txt").write_text(f"compiled as {f.file!r}\n\n{f.detail}\n", encoding="utf-8",
                                                  errors="surrogateescape")
        (self.out / "frontend-summary.txt").write_text(summary.table(), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    if parser.parse_args().worker:
        worker_main()


if __name__ == "__main__":
    main()

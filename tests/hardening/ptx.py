"""A static check of the index arithmetic in PTX: every global-memory address must be computed in
64 bits from anything that scales with the problem size.

Model. A value is *unbounded* when it comes from a kernel parameter (tensor sizes, strides), a block
index (%ctaid, %nctaid) or memory, or is computed from one. Thread indices and constants are bounded
by the block size. For every global (or generic) load, store and atomic we walk the address register
back through its definitions; any 32-bit integer add/sub/mul/mad/shl on an unbounded value on that
path can wrap past 2**31 before it is widened, and so can a 64->32-bit truncation of one. Those are
reported. ``mul.wide`` (32x32->64) is safe: the product is exact. So is nvcc's fast path for 64-bit
division, which truncates both operands to 32 bits only after testing that their high words are zero
(``or.b64 t, a, b; and.b64 t, t, 0xffffffff00000000; setp.eq``): such guarded truncations are bounded,
and so is anything masked with a small constant (``x & 31``, a lane index) or the ``or`` of a guarded
value with one. Debug-info directives are dropped before parsing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_REGISTER = re.compile(r"%[A-Za-z_][\w]*(?:\.[xyz])?")
# Only the x grid dimension reaches 2**31 - 1 blocks; y and z stop below 2**16, so LLVM may (and does)
# compute ``program_id(1) * BLOCK`` in 32 bits once it has proved the product fits.
_UNBOUNDED_SPECIAL = re.compile(r"%(?:n?ctaid\.x|clusterid|nclusterid)")
_NO_DESTINATION = ("st.", "red.", "bra", "ret", "exit", "bar.", "barrier", "prefetch", "membar", "fence", "trap",
                   "call", "cp.async", "griddepcontrol", "@")
_NARROW_ARITHMETIC = re.compile(r"^(add|sub|mul|mad|mul24|mad24|shl)(\.(lo|hi|sat|cc))?\.(s32|u32|b32)$")
_TRUNCATION = re.compile(r"^cvt(\.rn|\.rz|\.rm|\.rp)?\.(s32|u32)\.(s64|u64)$")
_MEMORY = re.compile(r"^(ld|st|atom|red)(\.(global|weak|relaxed|acquire|release|volatile|nc|L1::\S+|L2::\S+|gpu|sys))*"
                     r"(\.v\d)?\.(b|s|u|f)(8|16|32|64)")


@dataclass(frozen=True)
class Instruction:
    opcode: str
    operands: tuple[str, ...]
    text: str

    @property
    def destinations(self) -> tuple[str, ...]:
        if self.opcode.startswith(_NO_DESTINATION) or not self.operands:
            return ()
        return tuple(_REGISTER.findall(self.operands[0]))

    @property
    def sources(self) -> tuple[str, ...]:
        first = 0 if self.opcode.startswith(_NO_DESTINATION) else 1
        return tuple(r for operand in self.operands[first:] for r in _REGISTER.findall(operand))


@dataclass(frozen=True)
class Finding:
    kernel: str
    instruction: str
    reason: str

    def __str__(self):
        return f"{self.kernel}: {self.reason}: `{self.instruction}`"


def _split_operands(text: str) -> tuple[str, ...]:
    operands, depth, current = [], 0, []
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            operands.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if "".join(current).strip():
        operands.append("".join(current).strip())
    return tuple(operands)


def kernels(ptx: str) -> dict[str, list[Instruction]]:
    """Instructions of every ``.entry`` in a PTX module, by kernel name."""
    ptx = re.sub(r"//[^\n]*", "", ptx)
    # Debug-info directives (.loc, .file) end at the line, not at a semicolon: left in, each would swallow
    # the instruction after it (an ``or.b64`` of a division guard, or an index product) unseen.
    ptx = re.sub(r"(?m)^\s*\.(loc|file)\b[^\n]*$", "", ptx)
    found = {}
    for match in re.finditer(r"\.entry\s+([\w$]+)\s*\(", ptx):
        start = ptx.index("{", match.end())
        depth, end = 0, start
        for end in range(start, len(ptx)):
            depth += {"{": 1, "}": -1}.get(ptx[end], 0)
            if depth == 0:
                break
        body = ptx[start + 1:end]
        instructions = []
        for statement in body.split(";"):
            statement = re.sub(r"^[\s{}]*(\$?[\w$]+:\s*)*[\s{}]*", "", statement).strip()
            if not statement or statement.startswith("."):
                continue
            predicate = re.match(r"@!?%\w+\s+", statement)
            if predicate:
                statement = statement[predicate.end():]
            opcode, _, rest = statement.partition(" ")
            opcode, rest = opcode.strip(), rest.strip()
            instructions.append(Instruction(opcode, _split_operands(rest), statement))
        found[match.group(1)] = instructions
    return found


def _address_registers(instruction: Instruction) -> tuple[str, ...]:
    if not _MEMORY.match(instruction.opcode) or any(space in instruction.opcode for space in
                                                    (".param", ".shared", ".local", ".const")):
        return ()
    registers = []
    for operand in instruction.operands:
        if operand.startswith("["):
            registers += _REGISTER.findall(operand)
    return tuple(registers)


_HIGH_WORD = ("-4294967296", "0xFFFFFFFF00000000", "0xffffffff00000000", "-0x100000000")


def _literal(operand: str) -> int | None:
    try:
        return int(operand, 0)
    except ValueError:
        return None


def _masked_small(instruction: Instruction) -> bool:
    """``and`` with a small non-negative constant (a lane or vector index, x & 31), or an unsigned bit-field
    extract of fewer than 31 bits (``bfe.u32 d, x, pos, len``, LLVM's form of (x >> pos) & (2^len - 1)):
    bounded whatever x is."""
    if instruction.opcode.startswith("bfe.u"):
        length = _literal(instruction.operands[-1])
        return length is not None and 0 <= length < 31
    if not instruction.opcode.startswith("and."):
        return False
    return any(v is not None and 0 <= v < 2**31 for v in map(_literal, instruction.operands[1:]))


def _high_word_guarded(instructions: list[Instruction], definitions: dict) -> set[str]:
    """Registers whose high 32 bits the kernel tests for zero before truncating them."""
    guarded = set()
    for instruction in instructions:
        if instruction.opcode == "and.b64" and len(instruction.operands) == 3 and instruction.operands[2] in _HIGH_WORD:
            tested = instruction.operands[1]
            guarded.add(tested)
            for definition in definitions.get(tested, ()):
                if definition.opcode == "or.b64":
                    guarded.update(definition.sources)

    def small(register: str) -> bool:  # x & 63, possibly widened: a lane index
        return all(_masked_small(d) or (d.opcode.startswith("cvt.u64.") and all(map(small, d.sources)))
                   for d in definitions.get(register, ())) and register in definitions

    # Triton's block offsets are ``pid * BLOCK | lane``: LLVM tests the high word of ``pid * BLOCK`` only,
    # which bounds the combined value as well, since the lane is below BLOCK.
    widened = True
    while widened:
        widened = False
        for register, defined in definitions.items():
            if register not in guarded and all(d.opcode == "or.b64" and all(r in guarded or small(r) for r in d.sources)
                                               for d in defined):
                guarded.add(register)
                widened = True
    return guarded


def check_index_width(name: str, instructions: list[Instruction]) -> list[Finding]:
    definitions: dict[str, list[Instruction]] = {}
    for instruction in instructions:
        for register in instruction.destinations:
            definitions.setdefault(register, []).append(instruction)
    guarded = _high_word_guarded(instructions, definitions)

    def bounded_truncation(instruction: Instruction) -> bool:
        return bool(_TRUNCATION.match(instruction.opcode)) and all(r in guarded for r in instruction.sources)

    # Unbounded values: a fixed point over the (possibly looping) definitions.
    unbounded: set[str] = set()
    changed = True
    while changed:
        changed = False
        for instruction in instructions:
            if bounded_truncation(instruction) or _masked_small(instruction):
                continue
            loads = instruction.opcode.startswith(("ld.", "atom.", "ldu."))
            source_unbounded = loads or any(r in unbounded or _UNBOUNDED_SPECIAL.match(r) for r in instruction.sources)
            if source_unbounded:
                for register in instruction.destinations:
                    if register not in unbounded:
                        unbounded.add(register)
                        changed = True

    findings, seen = [], set()
    for instruction in instructions:
        pending = list(_address_registers(instruction))
        visited = set()
        while pending:
            register = pending.pop()
            if register in visited:
                continue
            visited.add(register)
            for definition in definitions.get(register, ()):
                if _masked_small(definition):
                    continue  # its value is bounded by the mask; how it was computed cannot matter
                narrow = _NARROW_ARITHMETIC.match(definition.opcode)
                truncation = _TRUNCATION.match(definition.opcode)
                risky = [r for r in definition.sources if r in unbounded or _UNBOUNDED_SPECIAL.match(r)]
                if (narrow or truncation) and risky and not bounded_truncation(definition) and definition.text not in seen:
                    seen.add(definition.text)
                    reason = "32-bit index arithmetic" if narrow else "64->32-bit truncation of an index"
                    findings.append(Finding(name, definition.text, f"{reason} on {', '.join(risky)} feeds an address"))
                pending.extend(definition.sources)
    return findings


def check_module(ptx: str) -> tuple[list[str], list[Finding]]:
    """(kernel names, findings) of a PTX module."""
    entries = kernels(ptx)
    findings = [f for name, body in entries.items() for f in check_index_width(name, body)]
    return sorted(entries), findings


def memory_accesses(ptx: str) -> int:
    """How many global/generic memory instructions the module has (to show the check saw real code)."""
    return sum(1 for body in kernels(ptx).values() for i in body if _address_registers(i))

"""torch.library.opcheck for every registered spikeops op and torch.compile(fullgraph=True) for every
exported module, beyond tests/test_registration.py (which checks the float32 neuron ops and three
neuron modules inside a Linear block).

Opcheck samples are not written by hand: every spikeops op call that the registry's cases make
(forward and backward, every dtype, every backend that runs here) is recorded and replayed through
opcheck. An op that no case reaches fails ``test_every_registered_op_is_exercised``; the fix is an
``OpCase`` for its public entry point in registry.py (or, for an op outside that shape, a call in
``ENTRY_POINT_CALLS``).
"""
import dataclasses
import importlib
import inspect
import pkgutil

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import spikeops

from .registry import (CASES, ENTRY_POINT_CALLS, MODULE_CASES, PENDING_MODULES, PENDING_OPS, backend_supports,
                       option_sets, run_case)

pytestmark = pytest.mark.skipif(not spikeops.backends.extension_available(), reason="spikeops._C not built")


def registered_ops() -> set[str]:
    """Every op in the spikeops namespace, after importing every operator package (Python custom ops
    register on import)."""
    for info in pkgutil.walk_packages(spikeops.ops.__path__, "spikeops.ops."):
        importlib.import_module(info.name)
    return {name for name in torch._C._dispatch_get_all_op_names() if name.startswith("spikeops::")}


class _RecordSpikeopsCalls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "spikeops":
            clone = lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
            self.calls.append((func, torch.utils._pytree.tree_map(clone, args),
                               torch.utils._pytree.tree_map(clone, kwargs)))
        return func(*args, **kwargs)


def _record_calls():
    """One recorded call per (op, input dtypes, optional-argument pattern) over every case."""
    recorded = {}

    def keep(recorder):
        for func, args, kwargs in recorder.calls:
            pattern = tuple(str(a.dtype) if isinstance(a, torch.Tensor) else type(a).__name__
                            for a in torch.utils._pytree.tree_leaves((args, kwargs)))
            recorded.setdefault((func.name(), pattern), (func, args, kwargs))

    for call in ENTRY_POINT_CALLS:
        with (recorder := _RecordSpikeopsCalls()):
            call()
        keep(recorder)
    for case in CASES.values():
        for backend in ("cpu", "triton"):
            for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
                if not backend_supports(case, backend, dtype):
                    continue
                for options in option_sets(case):
                    inputs = case.make_inputs((3, 2, 5), dtype, "cpu", torch.Generator().manual_seed(0))
                    recorder = _RecordSpikeopsCalls()
                    with recorder:
                        run_case(case, backend, inputs, options)
                    keep(recorder)
    return recorded


RECORDED = _record_calls()


def test_every_registered_op_is_exercised():
    registered = registered_ops()
    missing = registered - {name for name, _ in RECORDED} - set(PENDING_OPS)
    assert not missing, (f"no hardening case calls {sorted(missing)}: add an OpCase for the public entry point "
                         "that reaches it in tests/hardening/registry.py")
    stale = set(PENDING_OPS) & {name for name, _ in RECORDED}
    assert not stale, f"remove {sorted(stale)} from PENDING_OPS: a case covers them now"


def _opcheck_id(key):
    name, pattern = key
    return f"{name.split('::')[1]}[{','.join(p.replace('torch.', '') for p in pattern if p.startswith('torch.'))}]"


@pytest.mark.parametrize("key", sorted(RECORDED, key=str), ids=[_opcheck_id(k) for k in sorted(RECORDED, key=str)])
def test_opcheck(key):
    func, args, kwargs = RECORDED[key]
    torch.library.opcheck(func, args, kwargs)


def exported_modules() -> set[type]:
    """Concrete nn.Module classes in spikeops' public namespace (abstract ``Base*`` classes excluded)."""
    classes = set()
    for name in spikeops.__all__:
        value = getattr(spikeops, name)
        if inspect.isclass(value) and issubclass(value, torch.nn.Module) and not name.startswith("Base"):
            classes.add(value)
    return classes


def test_every_exported_module_has_a_compile_case():
    exported = exported_modules()
    covered = {case.cls for case in MODULE_CASES}
    missing = {c.__name__ for c in exported - covered} - PENDING_MODULES
    assert not missing, f"no torch.compile case for {sorted(missing)}: add a ModuleCase in tests/hardening/registry.py"
    stale = PENDING_MODULES - {c.__name__ for c in exported - covered}
    assert not stale, f"remove {sorted(stale)} from PENDING_MODULES: covered now, or no longer exported"


# One attention block under Inductor too (its C++ code generation takes about a minute on 2 cores).
INDUCTOR_BLOCKS = [dataclasses.replace(c, compile_backend="inductor", label=c.label + "-inductor")
                   for c in MODULE_CASES if c.label == "EMSA"]


@pytest.mark.parametrize("module_case", MODULE_CASES + [pytest.param(c, marks=pytest.mark.slow) for c in INDUCTOR_BLOCKS],
                         ids=[c.label for c in MODULE_CASES + INDUCTOR_BLOCKS])
def test_torch_compile_fullgraph(module_case):
    """Compiled (fullgraph, the case's backend: Inductor, or aot_eager for the attention blocks, one of
    which also runs under Inductor, marked slow) equals eager: outputs, input and parameter gradients."""
    torch.manual_seed(0)
    eager = module_case.make()
    twin = module_case.make()
    twin.load_state_dict(eager.state_dict())
    eager.train(), twin.train()
    compiled = torch.compile(twin, fullgraph=True, backend=module_case.compile_backend)
    inputs_eager = module_case.make_inputs()
    inputs_compiled = module_case.make_inputs()
    out_eager, out_compiled = eager(*inputs_eager), compiled(*inputs_compiled)
    torch.testing.assert_close(out_compiled, out_eager, atol=1e-5, rtol=1e-5)
    weight = torch.randn(out_eager.shape, generator=torch.Generator().manual_seed(1))
    (out_eager * weight).sum().backward()
    (out_compiled * weight).sum().backward()
    for a, b in zip(inputs_eager, inputs_compiled):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-5, msg=lambda m: f"input grad: {m}")
    for (name, b_eager), (_, b_compiled) in zip(eager.named_buffers(), twin.named_buffers()):
        # Running statistics and batch counts updated in forward: the compiled graph must update them too.
        torch.testing.assert_close(b_compiled, b_eager, atol=1e-6, rtol=1e-6, msg=lambda m: f"buffer {name}: {m}")
    for (name, p_eager), (_, p_compiled) in zip(eager.named_parameters(), twin.named_parameters()):
        # A conv bias right before a train-mode BatchNorm has a zero gradient in exact arithmetic, so its
        # gradient is rounding noise (~1e-6) that Inductor's fused reductions round differently: 1e-4.
        torch.testing.assert_close(p_compiled.grad, p_eager.grad, atol=1e-4, rtol=1e-5,
                                   msg=lambda m: f"grad {name}: {m}")

"""Ways to store the same values with other strides, shared by the layout tests and the fuzzer."""
import torch


def transposed(t):  # time becomes the fastest-moving dimension in memory
    return t.transpose(0, -1).contiguous().transpose(0, -1)


def sliced(t):  # interior of a NaN-padded buffer: storage offset and padded strides
    big = torch.full([s + 2 for s in t.shape], float("nan"), dtype=t.dtype)
    window = big[tuple(slice(1, 1 + s) for s in t.shape)]
    window.copy_(t)
    return window


def every_other(t):  # step-2 slicing of the innermost dimension
    big = torch.full((*t.shape[:-1], 2 * t.shape[-1]), float("nan"), dtype=t.dtype)
    big[..., ::2] = t
    return big[..., ::2]


def channels_last(t):
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}[t.dim()]
    return t.contiguous(memory_format=fmt)


def expanded_neurons(t):  # one neuron broadcast over the last dimension (stride 0)
    return t.narrow(-1, 0, 1).expand(t.shape)


def expanded_time(t):  # the first time step repeated (stride 0 over T)
    return t.narrow(0, 0, 1).expand(t.shape)


LAYOUTS = {"transposed": transposed, "sliced": sliced, "every_other": every_other, "channels_last": channels_last,
           "channels_last_3d": channels_last, "expanded_neurons": expanded_neurons, "expanded_time": expanded_time}


def applicable(layout: str, shape) -> bool:
    """Whether ``layout`` can restride a tensor of ``shape`` (into a non-contiguous one or not)."""
    if layout == "channels_last":
        return len(shape) == 4
    if layout == "channels_last_3d":
        return len(shape) == 5
    if layout in ("expanded_neurons", "every_other"):
        return len(shape) >= 2 and shape[-1] >= 1
    if layout == "expanded_time":
        return len(shape) >= 1 and shape[0] >= 1
    return len(shape) >= 1

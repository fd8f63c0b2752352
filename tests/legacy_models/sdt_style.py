# A small spike-driven transformer written the way the Spike-Driven-Transformer-V2 code writes its models
# (membrane-shortcut blocks, neurons before convolutions, a separable-conv token mixer, a head_lif, a neuron
# before the classifier, IF neurons and soft reset in places). Written for the spikeops.legacy tests.
import torch
import torch.nn as nn
from spikingjelly.clock_driven.neuron import (
    MultiStepParametricLIFNode,
    MultiStepLIFNode,
    MultiStepIFNode,
)
from spikingjelly.clock_driven import layer


class SepConv(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lif1 = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.pwconv1 = nn.Conv2d(dim, 2 * dim, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * dim)
        self.lif2 = MultiStepIFNode(v_reset=None, detach_reset=True, backend="cupy")
        self.dwconv = nn.Conv2d(2 * dim, 2 * dim, kernel_size=3, padding=1, groups=2 * dim, bias=False)
        self.pwconv2 = nn.Conv2d(2 * dim, dim, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.lif1(x)
        x = self.bn1(self.pwconv1(x.flatten(0, 1))).reshape(T, B, -1, H, W)
        x = self.lif2(x)
        x = self.bn2(self.pwconv2(self.dwconv(x.flatten(0, 1)))).reshape(T, B, -1, H, W)
        return x


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = 0.125
        self.head_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.q_conv = layer.SeqToANNContainer(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.k_conv = layer.SeqToANNContainer(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.v_conv = layer.SeqToANNContainer(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.q_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.k_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.v_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.attn_lif = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend="cupy")
        self.proj_conv = layer.SeqToANNContainer(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))

    def forward(self, x):
        T, B, C, H, W = x.shape
        N = H * W
        x = self.head_lif(x)

        def heads(y):
            return y.flatten(3).transpose(-1, -2).reshape(T, B, N, self.heads, C // self.heads).permute(0, 1, 3, 2, 4)

        q = heads(self.q_lif(self.q_conv(x)))
        k = heads(self.k_lif(self.k_conv(x)))
        v = heads(self.v_lif(self.v_conv(x)))
        x = k.transpose(-2, -1) @ v
        x = (q @ x) * self.scale
        x = x.transpose(3, 4).reshape(T, B, C, H, W).contiguous()
        x = self.attn_lif(x)
        return self.proj_conv(x)


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.conv = SepConv(dim)
        self.attn = Attention(dim, heads)
        self.fc1_lif = MultiStepParametricLIFNode(init_tau=2.0, detach_reset=True, backend="cupy")
        self.fc1 = layer.SeqToANNContainer(nn.Conv2d(dim, 2 * dim, 1), nn.BatchNorm2d(2 * dim))
        self.fc2_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.fc2 = layer.SeqToANNContainer(nn.Conv2d(2 * dim, dim, 1), nn.BatchNorm2d(dim))

    def forward(self, x):
        x = x + self.conv(x)
        x = x + self.attn(x)
        return x + self.fc2(self.fc2_lif(self.fc1(self.fc1_lif(x))))


class TinySDT(nn.Module):
    def __init__(self, T=2, in_channels=3, dim=16, heads=2, num_classes=5):
        super().__init__()
        self.T = T
        self.encode_conv = nn.Conv2d(in_channels, dim, kernel_size=3, stride=2, padding=1)
        self.encode_bn = nn.BatchNorm2d(dim)
        self.block = nn.ModuleList([Block(dim, heads)])
        self.lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        T, B = x.shape[:2]
        x = self.encode_conv(x.flatten(0, 1))
        x = self.encode_bn(x).reshape(T, B, *x.shape[1:])
        for blk in self.block:
            x = blk(x)
        x = self.lif(x.flatten(3).mean(3))
        return self.head(x).mean(0)

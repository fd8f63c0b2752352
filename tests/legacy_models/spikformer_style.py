# A small Spikformer written the way the Spikformer CIFAR/DVS code writes its models (Linear + BatchNorm1d
# projections on [T*B, N, C], MultiStepLIFNode, layer/surrogate from spikingjelly.clock_driven, a surrogate
# passed explicitly, a single-step neuron in a MultiStepContainer). Written for the spikeops.legacy tests.
import torch
import torch.nn as nn
from spikingjelly.clock_driven.neuron import MultiStepLIFNode, LIFNode
from spikingjelly.clock_driven import layer, surrogate


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1_linear = nn.Linear(dim, hidden)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc1_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy')
        self.fc2_linear = nn.Linear(hidden, dim)
        self.fc2_bn = nn.BatchNorm1d(dim)
        self.fc2_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy')
        self.hidden = hidden

    def forward(self, x):
        T, B, N, C = x.shape
        x = self.fc1_linear(x.flatten(0, 1))
        x = self.fc1_bn(x.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, self.hidden).contiguous()
        x = self.fc1_lif(x)
        x = self.fc2_linear(x.flatten(0, 1))
        x = self.fc2_bn(x.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C).contiguous()
        return self.fc2_lif(x)


class SSA(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = 0.125
        for name in ('q', 'k', 'v'):
            setattr(self, f'{name}_linear', nn.Linear(dim, dim))
            setattr(self, f'{name}_bn', nn.BatchNorm1d(dim))
            setattr(self, f'{name}_lif', MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy'))
        self.attn_lif = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend='cupy')
        self.proj_linear = nn.Linear(dim, dim)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = MultiStepLIFNode(tau=2.0, detach_reset=True,
                                         surrogate_function=surrogate.ATan(alpha=3.0), backend='torch')

    def qkv(self, name, flat, T, B, N, C):
        y = getattr(self, f'{name}_linear')(flat)
        y = getattr(self, f'{name}_bn')(y.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C).contiguous()
        y = getattr(self, f'{name}_lif')(y)
        return y.reshape(T, B, N, self.heads, C // self.heads).permute(0, 1, 3, 2, 4).contiguous()

    def forward(self, x):
        T, B, N, C = x.shape
        flat = x.flatten(0, 1)
        q, k, v = (self.qkv(n, flat, T, B, N, C) for n in ('q', 'k', 'v'))
        attn = (q @ k.transpose(-2, -1)) * self.scale
        x = (attn @ v).transpose(2, 3).reshape(T, B, N, C).contiguous()
        x = self.attn_lif(x).flatten(0, 1)
        x = self.proj_bn(self.proj_linear(x).transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C)
        return self.proj_lif(x)


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.attn = SSA(dim, heads)
        self.mlp = MLP(dim, dim * 4)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class TinySpikformer(nn.Module):
    def __init__(self, T=2, in_channels=3, dim=16, heads=2, depth=1, num_classes=5):
        super().__init__()
        self.T = T
        self.proj_conv = nn.Conv2d(in_channels, dim, kernel_size=3, stride=1, padding=1, bias=False)
        self.proj_bn = nn.BatchNorm2d(dim)
        self.proj_lif = layer.MultiStepContainer(LIFNode(tau=2.0, detach_reset=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.rpe_conv = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(dim)
        self.rpe_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy')
        self.block = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        T, B, C, H, W = x.shape
        x = self.proj_bn(self.proj_conv(x.flatten(0, 1))).reshape(T, B, -1, H, W)
        x = self.maxpool(self.proj_lif(x).flatten(0, 1))
        x_feat = x
        x = self.rpe_bn(self.rpe_conv(x)).reshape(T, B, -1, H // 2, W // 2)
        x = self.rpe_lif(x).flatten(0, 1) + x_feat
        x = x.reshape(T, B, -1, (H // 2) * (W // 2)).transpose(-1, -2)  # T B N C
        for blk in self.block:
            x = blk(x)
        return self.head(x.mean(2).mean(0))

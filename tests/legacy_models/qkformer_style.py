# A small hierarchical spiking transformer written the way the QKFormer code base writes its models
# (spikingjelly.clock_driven imports, MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy'), Conv+BN on
# x.flatten(0, 1), a stage-3 self-attention whose proj_lif runs over the flattened T*B axis). Written for the
# spikeops.legacy tests; it runs unchanged on spikingjelly 0.0.0.0.12.
import torch
import torch.nn as nn
from spikingjelly.clock_driven.neuron import MultiStepParametricLIFNode, MultiStepLIFNode
from spikingjelly.clock_driven import layer


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1_conv = nn.Conv2d(dim, hidden, kernel_size=1, stride=1)
        self.fc1_bn = nn.BatchNorm2d(hidden)
        self.fc1_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy')
        self.fc2_conv = nn.Conv2d(hidden, dim, kernel_size=1, stride=1)
        self.fc2_bn = nn.BatchNorm2d(dim)
        self.fc2_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy')
        self.hidden = hidden

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.fc1_bn(self.fc1_conv(x.flatten(0, 1))).reshape(T, B, self.hidden, H, W).contiguous()
        x = self.fc1_lif(x)
        x = self.fc2_bn(self.fc2_conv(x.flatten(0, 1))).reshape(T, B, C, H, W).contiguous()
        return self.fc2_lif(x)


class TokenQK(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.q_bn = nn.BatchNorm1d(dim)
        self.q_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy')
        self.k_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.k_bn = nn.BatchNorm1d(dim)
        self.k_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy')
        self.attn_lif = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend='cupy')
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy')

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = x.flatten(3)
        N = x.shape[-1]
        flat = x.flatten(0, 1)
        q = self.q_lif(self.q_bn(self.q_conv(flat)).reshape(T, B, C, N)).reshape(T, B, self.heads, C // self.heads, N)
        k = self.k_lif(self.k_bn(self.k_conv(flat)).reshape(T, B, C, N)).reshape(T, B, self.heads, C // self.heads, N)
        attn = self.attn_lif(q.sum(dim=3, keepdim=True))
        x = (attn * k).flatten(2, 3)
        x = self.proj_bn(self.proj_conv(x.flatten(0, 1))).reshape(T, B, C, H, W)
        return self.proj_lif(x)


class SelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = 0.125
        for name in ('q', 'k', 'v'):
            setattr(self, f'{name}_conv', nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False))
            setattr(self, f'{name}_bn', nn.BatchNorm1d(dim))
            setattr(self, f'{name}_lif', MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy'))
        self.attn_lif = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend='cupy')
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy')

    def split(self, name, flat, T, B, C, N):
        out = getattr(self, f'{name}_lif')(getattr(self, f'{name}_bn')(getattr(self, f'{name}_conv')(flat)).reshape(T, B, C, N))
        return out.transpose(-1, -2).reshape(T, B, N, self.heads, C // self.heads).permute(0, 1, 3, 2, 4)

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = x.flatten(3)
        N = x.shape[-1]
        flat = x.flatten(0, 1)
        q, k, v = (self.split(n, flat, T, B, C, N) for n in ('q', 'k', 'v'))
        x = (q @ (k.transpose(-2, -1) @ v)) * self.scale
        x = self.attn_lif(x.transpose(3, 4).reshape(T, B, C, N).contiguous())
        # as in the QKFormer code: the projection neuron sees [T*B, C, N], i.e. T*B "time steps"
        x = self.proj_lif(self.proj_bn(self.proj_conv(x.flatten(0, 1)))).reshape(T, B, C, H, W)
        return x


class Block(nn.Module):
    def __init__(self, dim, heads, token_attention):
        super().__init__()
        self.attn = TokenQK(dim, heads) if token_attention else SelfAttention(dim, heads)
        self.mlp = MLP(dim, dim * 2)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class TinyQKFormer(nn.Module):
    def __init__(self, T=2, in_channels=3, dim=16, heads=2, num_classes=5):
        super().__init__()
        self.T = T
        self.stem = layer.SeqToANNContainer(nn.Conv2d(in_channels, dim, kernel_size=3, stride=2, padding=1, bias=False),
                                            nn.BatchNorm2d(dim))
        self.stem_lif = MultiStepParametricLIFNode(init_tau=2.0, detach_reset=True, backend='cupy')
        self.stage1 = nn.ModuleList([Block(dim, heads, token_attention=True)])
        self.down = layer.SeqToANNContainer(nn.Conv2d(dim, dim, kernel_size=3, stride=2, padding=1, bias=False),
                                            nn.BatchNorm2d(dim))
        self.down_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend='cupy')
        self.stage2 = nn.ModuleList([Block(dim, heads, token_attention=False)])
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        x = self.stem_lif(self.stem(x))
        for blk in self.stage1:
            x = blk(x)
        x = self.down_lif(self.down(x))
        for blk in self.stage2:
            x = blk(x)
        return self.head(x.flatten(3).mean(3).mean(0))

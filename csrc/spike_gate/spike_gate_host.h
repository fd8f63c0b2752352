// Host-side glue of the attention launchers (CPU and CUDA): unpacking the geometry list sent by
// spikeops/ops/attention/layout.py, the tensor checks run before any kernel, and output allocation.
#pragma once
#include <c10/util/safe_numerics.h>
#include <torch/types.h>

#include "spike_gate/spike_gate_math.h"
#include "neuron/neuron_host.h"

namespace spikeops {

inline at::ScalarType membrane_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The attention neuron's parameters: a LIF with a fixed tau (what spikeops/ops/attention builds).
inline NeuronParams attention_params(c10::ArrayRef<double> cfg, const at::Tensor& like) {
  const NeuronParams p = params_from_config(cfg, c10::nullopt, like);
  TORCH_CHECK(p.charge_law == static_cast<int32_t>(ChargeLaw::DivideByTau), "spikeops: cfg: attention neurons are "
              "LIF (charge law divide_by_tau), got charge law ", kChargeLawNames[p.charge_law]);
  return p;
}

// The geometry list is checked against a before any kernel reads it: every index the kernels form must lie
// inside a. The kernels accept exactly the layouts spikeops/ops/attention/layout.py::geometry produces, where a
// time slice is [M / L groups, R reduced elements, L lanes] in row-major order: stride_g = R*L, stride_r = L,
// stride_l = 1 (or 0 when L = 1). That map is a bijection onto the slice, so every element is read and written
// exactly once (no race between neurons in backward) and none outside the slice.
inline GateGeometry gate_geometry(c10::ArrayRef<int64_t> geo, const at::Tensor& a) {
  TORCH_CHECK(geo.size() == 6, "spikeops: spike_gate: geometry: expected 6 fields (M, R, L, stride_g, stride_r, "
              "stride_l), got ", geo.size(), ": ", geo);
  TORCH_CHECK(a.dim() >= 1 && a.size(0) >= 1, "spikeops: spike_gate: a: expected [T, ...] with T >= 1, got shape ",
              a.sizes());
  GateGeometry g{a.size(0), geo[0], geo[1], geo[2], geo[3], geo[4], geo[5]};
  TORCH_CHECK(g.M >= 0 && g.R >= 0 && g.L >= 1 && g.M % g.L == 0, "spikeops: spike_gate: geometry: expected M >= 0, "
              "R >= 0 and L >= 1 dividing M, got M=", g.M, " R=", g.R, " L=", g.L);
  int64_t slice = 0, total = 0;
  TORCH_CHECK(!c10::mul_overflows(g.M, g.R, &slice) && !c10::mul_overflows(g.T, slice, &total) &&
                  total == a.numel(),
              "spikeops: spike_gate: geometry: expected T*M*R to equal the ", a.numel(), " elements of a (shape ",
              a.sizes(), "), got T=", g.T, " M=", g.M, " R=", g.R);
  // R*L <= R*M = slice: no overflow below.
  const bool lanes_ok = g.stride_l == 1 || (g.L == 1 && g.stride_l == 0);
  TORCH_CHECK(g.stride_g == g.R * g.L && g.stride_r == g.L && lanes_ok,
              "spikeops: spike_gate: geometry: expected strides stride_g = R*L = ", g.R * g.L, ", stride_r = L = ",
              g.L, ", stride_l = 1", g.L == 1 ? " (or 0)" : "", " for M=", g.M, " R=", g.R, " L=", g.L,
              ", got stride_g=", g.stride_g, " stride_r=", g.stride_r, " stride_l=", g.stride_l);
  return g;
}

inline void check_like(const at::Tensor& x, const at::Tensor& like, const char* name) {
  TORCH_CHECK(x.sizes() == like.sizes() && x.scalar_type() == like.scalar_type() && x.device() == like.device() &&
                  x.is_contiguous(),
              "spikeops: ", name, " must be contiguous and match shape ", like.sizes(), ", dtype ", like.scalar_type(),
              " and device ", like.device(), "; got ", x.sizes(), " ", x.scalar_type(), " on ", x.device());
}

inline void check_gate_inputs(const at::Tensor& a, const c10::optional<at::Tensor>& a2, const at::Tensor& gate) {
  TORCH_CHECK(a.is_contiguous(), "spikeops: a must be contiguous");
  if (a2.has_value()) check_like(*a2, a, "a2");
  check_like(gate, a, "gate");
}

inline void check_gate_state(const at::Tensor& h, const at::Tensor& spikes, const GateGeometry& g, const at::Tensor& a) {
  TORCH_CHECK(h.dim() == 2 && h.size(0) == g.T && h.size(1) == g.M && h.scalar_type() == membrane_dtype(a) &&
                  h.is_contiguous() && h.device() == a.device(),
              "spikeops: saved membrane must be contiguous [T, M] = [", g.T, ", ", g.M, "] ", membrane_dtype(a),
              ", got ", h.sizes(), " ", h.scalar_type());
  TORCH_CHECK(spikes.sizes() == h.sizes() && spikes.scalar_type() == at::kChar && spikes.is_contiguous() &&
                  spikes.device() == a.device(),
              "spikeops: saved spikes must be contiguous int8 [T, M]");
}

struct GateForwardOutputs {
  at::Tensor out, h, spikes;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> as_tuple() const { return {out, h, spikes}; }
};

inline GateForwardOutputs allocate_gate_forward(const at::Tensor& a, const at::Tensor& gate, const GateGeometry& g) {
  return {at::empty_like(gate), at::empty({g.T, g.M}, a.options().dtype(membrane_dtype(a))),
          at::empty({g.T, g.M}, a.options().dtype(at::kChar))};
}

struct GateBackwardOutputs {
  at::Tensor grad_a, grad_a2, grad_gate;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> as_tuple() const { return {grad_a, grad_a2, grad_gate}; }
};

inline GateBackwardOutputs allocate_gate_backward(const at::Tensor& a, const c10::optional<at::Tensor>& a2,
                                                  const at::Tensor& gate) {
  return {at::empty_like(a), a2.has_value() ? at::empty_like(*a2) : at::empty({0}, a.options()),
          at::empty_like(gate)};
}

}  // namespace spikeops

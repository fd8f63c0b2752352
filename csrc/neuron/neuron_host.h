// Host-side glue shared by the CPU and CUDA launchers: unpacking the neuron configuration the Python
// side sends (spikeops/ops/neuron/config.py::NeuronConfig, by the field names of neuron_math.h) and the
// tensor checks both launchers run before any kernel starts.
#pragma once
#include <torch/types.h>
#include <c10/util/ArrayRef.h>

#include <string>
#include <vector>

#include "neuron/neuron_math.h"

namespace spikeops {

#define SPIKEOPS_COUNT_FIELD(type, name) +1
constexpr int64_t kNeuronConfigFields = 0 SPIKEOPS_NEURON_CONFIG_FIELDS(SPIKEOPS_COUNT_FIELD);
#undef SPIKEOPS_COUNT_FIELD

// The field names in the order params_from_config reads them (exported to Python for a test).
inline std::vector<std::string> neuron_config_fields() {
#define SPIKEOPS_FIELD_NAME(type, name) #name,
  return {SPIKEOPS_NEURON_CONFIG_FIELDS(SPIKEOPS_FIELD_NAME)};
#undef SPIKEOPS_FIELD_NAME
}

// `leak` (PLIF's learnable 1/tau) is float64 for float64 input and float32 otherwise, so gradcheck
// sees the exact leak the reference uses. The kernels read it from the tensor; params.leak is set here
// for the fixed-tau law only.
inline NeuronParams params_from_config(c10::ArrayRef<double> cfg, const c10::optional<at::Tensor>& leak,
                                       const at::Tensor& x) {
  TORCH_CHECK(static_cast<int64_t>(cfg.size()) == kNeuronConfigFields, "spikeops: cfg: expected the ",
              kNeuronConfigFields, " neuron configuration fields, got ", cfg.size());
  NeuronParams p{};
  int64_t field = 0;
#define SPIKEOPS_READ_FIELD(type, name) p.name = static_cast<type>(cfg[field++]);
  SPIKEOPS_NEURON_CONFIG_FIELDS(SPIKEOPS_READ_FIELD)
#undef SPIKEOPS_READ_FIELD
  TORCH_CHECK(p.charge_law >= 0 && p.charge_law < kNumChargeLaws, "spikeops: cfg: charge law ", p.charge_law,
              " out of range [0, ", kNumChargeLaws, ")");
  TORCH_CHECK(p.surrogate >= 0 && p.surrogate < kNumSurrogates, "spikeops: surrogate id ", p.surrogate,
              " out of range [0, ", kNumSurrogates, ")");
  TORCH_CHECK(p.fire_mode >= 0 && p.fire_mode <= 2, "spikeops: fire mode ", p.fire_mode, " out of range [0, 2]");
  const bool learnable = p.charge_law == static_cast<int32_t>(ChargeLaw::MultiplyLeak);
  TORCH_CHECK(leak.has_value() == learnable, "spikeops: leak: the ", kChargeLawNames[p.charge_law],
              " charge law ", learnable ? "needs" : "takes no", " leak tensor");
  p.leak = p.charge_law == static_cast<int32_t>(ChargeLaw::DivideByTau) ? 1.0 / p.tau : 0.0;
  if (leak.has_value()) {
    const auto want = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    TORCH_CHECK(leak->numel() == 1 && leak->scalar_type() == want && leak->device() == x.device(),
                "spikeops: leak must be a one-element ", want, " tensor on x's device, got ", leak->scalar_type(),
                " with ", leak->numel(), " elements on ", leak->device());
  }
  return p;
}

// x is [T, N] contiguous (the Python side flattens and makes it contiguous); v0 is [N], or [1]: one resting
// membrane for every neuron, so that a constant start costs backward 4 bytes rather than one value a neuron.
inline void check_sequence(const at::Tensor& x, const at::Tensor& v0) {
  TORCH_CHECK(x.dim() == 2, "spikeops: x must be [T, N], got ", x.sizes());
  TORCH_CHECK(x.is_contiguous(), "spikeops: x must be contiguous");
  TORCH_CHECK(v0.dim() == 1 && (v0.size(0) == x.size(1) || v0.size(0) == 1), "spikeops: v0 must be [", x.size(1),
              "] or [1], got ", v0.sizes());
  TORCH_CHECK(v0.scalar_type() == x.scalar_type() && v0.device() == x.device() && v0.is_contiguous(),
              "spikeops: v0 must be a contiguous tensor of x's dtype and device");
}

inline void check_gradient(const c10::optional<at::Tensor>& grad, const at::Tensor& like, const char* name) {
  if (!grad.has_value()) return;
  TORCH_CHECK(grad->sizes() == like.sizes() && grad->is_contiguous() && grad->scalar_type() == like.scalar_type() &&
                  grad->device() == like.device(),
              "spikeops: ", name, " must be contiguous and match shape ", like.sizes(), " and dtype ",
              like.scalar_type(), ", got ", grad->sizes(), " ", grad->scalar_type());
}

inline void check_backward_inputs(const at::Tensor& grad_spikes, const c10::optional<at::Tensor>& grad_v_seq,
                                  const c10::optional<at::Tensor>& grad_v_last, const at::Tensor& x,
                                  const at::Tensor& v0) {
  check_sequence(x, v0);
  check_gradient(grad_spikes, x, "grad_spikes");
  check_gradient(grad_v_seq, x, "grad_v_seq");
  if (grad_v_last.has_value())
    TORCH_CHECK(grad_v_last->dim() == 1 && grad_v_last->size(0) == x.size(1) && grad_v_last->is_contiguous() &&
                    grad_v_last->scalar_type() == x.scalar_type() && grad_v_last->device() == x.device(),
                "spikeops: grad_v_last must be a contiguous [", x.size(1), "] tensor of x's dtype, got ",
                grad_v_last->sizes(), " ", grad_v_last->scalar_type());
}

// 1 where every neuron has its own initial membrane, 0 where one value serves all (v0 of one element).
inline int64_t membrane_stride(const at::Tensor& x, const at::Tensor& v0) {
  return v0.size(0) == x.size(1) ? 1 : 0;
}

// Outputs of both launchers, allocated in one place so the CPU and CUDA paths cannot drift apart.
// Forward writes only what the caller receives: backward recomputes H and the spikes from x and v0.
struct ForwardOutputs {
  at::Tensor spikes, v_last, v_seq;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> as_tuple() const { return {spikes, v_last, v_seq}; }
};

// A membrane not asked for is an empty tensor, so the kernels get no buffer to write it to.
inline ForwardOutputs allocate_forward(const at::Tensor& x, const at::Tensor& v0, bool store_v_seq,
                                       bool store_v_last) {
  return {at::empty_like(x), at::empty({store_v_last ? x.size(1) : 0}, x.options()),
          store_v_seq ? at::empty_like(x) : at::empty({0}, x.options())};
}

struct BackwardOutputs {
  at::Tensor grad_x, grad_v0, grad_leak;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> as_tuple() const { return {grad_x, grad_v0, grad_leak}; }
};

// The leak gradient per neuron is accumulated and returned in the membrane's precision (float64 for
// float64 input); the caller reduces it over neurons.
inline BackwardOutputs allocate_backward(const at::Tensor& x, const at::Tensor& v0, bool need_leak_grad) {
  const auto leak_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  // grad_v0 has one value a neuron; for a shared v0 the caller sums it.
  return {at::empty_like(x), at::empty({x.size(1)}, x.options()),
          at::empty({need_leak_grad ? x.size(1) : 0}, x.options().dtype(leak_dtype))};
}

template <typename scalar_t>
scalar_t* data_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<scalar_t>() : nullptr;
}

}  // namespace spikeops

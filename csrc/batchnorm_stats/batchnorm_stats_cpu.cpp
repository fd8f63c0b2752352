// Training batch-norm statistics on the CPU (schema: batchnorm_stats_schema.cpp), ATen's bit for bit.
//
// For a contiguous float32 [N, C, *] input with more than one element per sample and channel, ATen's CPU batch
// norm sums each channel in one double accumulator, sample by sample, element by element: the values, giving
// mean = float(sum / count); then (x - mean) * (x - mean), each term rounded to float, giving var_sum, stored
// as float. (Not float64: there the term and the addition are one double expression, which ATen's vectorised
// builds may compile to a fused multiply-add or not; float64 stays with ATen.) One dependent chain of
// additions per channel, so ATen's loop runs at one addition per add latency, a fraction of what the memory
// system delivers. Here a thread keeps kLanes channels' chains going at once, each added in exactly ATen's
// order: the sums are ATen's to the bit, and the additions of different channels overlap.
//
// The per-channel step after it is ATen's batch_norm_cpu_update_stats_template: invstd = 1 / sqrt(var + eps)
// in double with var = var_sum / count in the input dtype; running_mean and running_var moved by momentum
// rounded to the input dtype, the variance unbiased (var_sum / (count - 1)). Every operation is written with
// ATen's operand types so it rounds where ATen's does; the build keeps floating-point contraction off
// (common/cpu_clones.h). spikeops/ops/batchnorm_neuron/statistics.py probes the result against ATen once per
// dtype and uses this kernel only where they agree.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "common/cpu_clones.h"

namespace spikeops {
namespace {

constexpr int64_t kLanes = 8;  // channels summed side by side: enough independent additions to fill the adders

// Sums of kLanes (or fewer, the last group) channels starting at `first`, in ATen's order: mean[c] and
// var_sum[c] as ATen's collect-stats kernel leaves them.
template <typename scalar_t>
SPIKEOPS_CPU_CLONES void channel_sums(const scalar_t* __restrict__ x, int64_t batch, int64_t channels, int64_t image,
                                      int64_t first, int64_t lanes, scalar_t* __restrict__ mean,
                                      scalar_t* __restrict__ var_sum) {
  const int64_t count = batch * image;
  double sum[kLanes] = {};
  for (int64_t n = 0; n < batch; ++n) {
    const scalar_t* plane = x + (n * channels + first) * image;
    for (int64_t i = 0; i < image; ++i)
      for (int64_t l = 0; l < lanes; ++l) sum[l] += plane[l * image + i];
  }
  scalar_t centre[kLanes];
  for (int64_t l = 0; l < lanes; ++l) {
    centre[l] = static_cast<scalar_t>(sum[l] / count);
    mean[first + l] = centre[l];
    sum[l] = 0;
  }
  for (int64_t n = 0; n < batch; ++n) {
    const scalar_t* plane = x + (n * channels + first) * image;
    for (int64_t i = 0; i < image; ++i)
      for (int64_t l = 0; l < lanes; ++l) {
        const scalar_t value = plane[l * image + i];
        sum[l] += (value - centre[l]) * (value - centre[l]);
      }
  }
  for (int64_t l = 0; l < lanes; ++l) var_sum[first + l] = static_cast<scalar_t>(sum[l]);
}

template <typename scalar_t>
void statistics(const at::Tensor& input, at::Tensor& mean, at::Tensor& invstd, scalar_t* running_mean,
                scalar_t* running_var, double momentum, double eps) {
  const int64_t batch = input.size(0), channels = input.size(1);
  const int64_t image = input.numel() / batch / channels, count = batch * image;
  const scalar_t* x = input.const_data_ptr<scalar_t>();
  scalar_t* mean_data = mean.data_ptr<scalar_t>();
  scalar_t* invstd_data = invstd.data_ptr<scalar_t>();  // holds var_sum until the last step
  const int64_t groups = (channels + kLanes - 1) / kLanes;
  at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g)
      channel_sums<scalar_t>(x, batch, channels, image, g * kLanes, std::min(kLanes, channels - g * kLanes),
                             mean_data, invstd_data);
  });
  const scalar_t momentum_ = static_cast<scalar_t>(momentum);
  for (int64_t c = 0; c < channels; ++c) {
    const scalar_t var_sum = invstd_data[c];
    const double var = var_sum / count;  // divided in the input dtype, as ATen does
    invstd_data[c] = static_cast<scalar_t>((var != 0 || eps != 0) ? 1.0 / std::sqrt(var + eps) : 0.0);
    if (running_mean != nullptr) running_mean[c] = momentum_ * mean_data[c] + (1 - momentum_) * running_mean[c];
    if (running_var != nullptr) {
      const double unbiased_var = var_sum / (count - 1);
      running_var[c] = static_cast<scalar_t>(momentum_ * unbiased_var + (1 - momentum_) * running_var[c]);
    }
  }
}

void check_running(const c10::optional<at::Tensor>& stat, const char* name, const at::Tensor& input) {
  if (!stat.has_value()) return;
  TORCH_CHECK(stat->device() == input.device() && stat->scalar_type() == input.scalar_type() &&
                  stat->dim() == 1 && stat->size(0) == input.size(1) && stat->is_contiguous(),
              "spikeops::batch_norm_statistics: ", name, " must be a contiguous [", input.size(1),
              "] tensor (input's channel count) of input's dtype and device, got ", stat->sizes(), " ",
              stat->scalar_type(), " on ", stat->device(), stat->is_contiguous() ? "" : ", not contiguous");
}

std::tuple<at::Tensor, at::Tensor> batch_norm_statistics_cpu(const at::Tensor& input,
                                                             const c10::optional<at::Tensor>& running_mean,
                                                             const c10::optional<at::Tensor>& running_var,
                                                             double momentum, double eps) {
  const char* op = "spikeops::batch_norm_statistics";
  TORCH_CHECK(input.device().is_cpu(), op, ": input must be a CPU tensor, got one on ", input.device());
  TORCH_CHECK(input.scalar_type() == at::kFloat, op, ": input must be float32, got ", input.scalar_type());
  TORCH_CHECK(input.dim() >= 3, op, ": input must be [N, C, *] with at least one dim after C, got shape ",
              input.sizes());
  TORCH_CHECK(input.numel() > 0, op, ": input must have at least one element, got shape ", input.sizes());
  TORCH_CHECK(input.is_contiguous() && input.suggest_memory_format() == at::MemoryFormat::Contiguous, op,
              ": input must be contiguous (row-major), got strides ", input.strides());
  TORCH_CHECK(input.numel() / input.size(0) / input.size(1) > 1, op,
              ": input must have more than one element per sample and channel (ATen sums [N, C, 1...] input "
              "in another order), got shape ", input.sizes());
  check_running(running_mean, "running_mean", input);
  check_running(running_var, "running_var", input);
  TORCH_CHECK(std::isfinite(momentum), op, ": momentum must be finite, got ", momentum);
  TORCH_CHECK(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
  at::Tensor mean = at::empty({input.size(1)}, input.options());
  at::Tensor invstd = at::empty({input.size(1)}, input.options());
  statistics<float>(input, mean, invstd, running_mean ? running_mean->data_ptr<float>() : nullptr,
                    running_var ? running_var->data_ptr<float>() : nullptr, momentum, eps);
  return {mean, invstd};
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  m.impl("batch_norm_statistics", &spikeops::batch_norm_statistics_cpu);
}

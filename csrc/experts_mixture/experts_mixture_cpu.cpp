// Spiking experts mixture on the CPU: schemas, and kernels parallel over tokens. Per-token math is
// experts_mixture_math.h, shared with CUDA; the router gradient's dot products (the header's
// router_grad, one per expert) run side by side through cpu::row_sums, each in channel order.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <vector>

#include "common/cpu_row_sums.h"
#include "experts_mixture/experts_mixture_math.h"

namespace spikeops {
namespace experts {

void check_inputs(const at::Tensor& router, const at::Tensor& experts) {
  TORCH_CHECK(router.dim() == 2 && router.is_contiguous(), "spikeops: router must be a contiguous [M, E] tensor, got ",
              router.sizes());
  TORCH_CHECK(experts.dim() == 3 && experts.size(0) == router.size(0) && experts.size(1) == router.size(1) &&
                  experts.is_contiguous(),
              "spikeops: experts must be a contiguous [M, E, C] tensor matching router ", router.sizes(), ", got ",
              experts.sizes());
  TORCH_CHECK(experts.scalar_type() == router.scalar_type() && experts.device() == router.device(),
              "spikeops: router and experts must share dtype and device");
}

void check_grad(const at::Tensor& grad_y, const at::Tensor& experts) {
  TORCH_CHECK(grad_y.dim() == 2 && grad_y.size(0) == experts.size(0) && grad_y.size(1) == experts.size(2) &&
                  grad_y.is_contiguous() && grad_y.scalar_type() == experts.scalar_type() &&
                  grad_y.device() == experts.device(),
              "spikeops: grad_y must be a contiguous [M, C] tensor of the experts' dtype and device, got ", grad_y.sizes(),
              " ", grad_y.scalar_type(), " on ", grad_y.device());
}

namespace {

constexpr int64_t kTokenGrain = 64;

template <typename scalar_t>
using acc_type = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;

at::Tensor forward_cpu(const at::Tensor& router, const at::Tensor& experts) {
  check_inputs(router, experts);
  const int64_t M = experts.size(0), E = experts.size(1), C = experts.size(2);
  at::Tensor y = at::empty({M, C}, experts.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, experts.scalar_type(), "experts_mixture_forward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* r = router.data_ptr<scalar_t>();
    const scalar_t* a = experts.data_ptr<scalar_t>();
    scalar_t* out = y.data_ptr<scalar_t>();
    at::parallel_for(0, M, kTokenGrain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(C);
      for (int64_t t = begin; t < end; ++t) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        accumulate_gated_row<scalar_t, acc_t>(r + t * E, a + t * E * C, E, C, acc.data());
        for (int64_t c = 0; c < C; ++c) out[t * C + c] = static_cast<scalar_t>(acc[c]);
      }
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_y, const at::Tensor& router,
                                                const at::Tensor& experts) {
  check_inputs(router, experts);
  check_grad(grad_y, experts);
  const int64_t M = experts.size(0), E = experts.size(1), C = experts.size(2);
  at::Tensor grad_router = at::empty_like(router), grad_experts = at::empty_like(experts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, experts.scalar_type(), "experts_mixture_backward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* r = router.data_ptr<scalar_t>();
    const scalar_t* a = experts.data_ptr<scalar_t>();
    const scalar_t* dy = grad_y.data_ptr<scalar_t>();
    scalar_t* dr = grad_router.data_ptr<scalar_t>();
    scalar_t* da = grad_experts.data_ptr<scalar_t>();
    at::parallel_for(0, M, kTokenGrain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> router_grads(E);
      for (int64_t t = begin; t < end; ++t) {
        cpu::row_sums<scalar_t, acc_t>(a + t * E * C, dy + t * C, 0, E, C, router_grads.data());
        for (int64_t i = 0; i < E; ++i) {
          const int64_t row = t * E + i;
          const acc_t gate = static_cast<acc_t>(r[row]);
          dr[row] = static_cast<scalar_t>(router_grads[i]);
          for (int64_t c = 0; c < C; ++c) da[row * C + c] = static_cast<scalar_t>(gate * static_cast<acc_t>(dy[t * C + c]));
        }
      }
    });
  });
  return {grad_router, grad_experts};
}

}  // namespace
}  // namespace experts
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  m.impl("experts_mixture_forward", &spikeops::experts::forward_cpu);
  m.impl("experts_mixture_backward", &spikeops::experts::backward_cpu);
}

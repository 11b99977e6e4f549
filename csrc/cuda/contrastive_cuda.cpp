// CUDA dispatch-key glue for info_nce_fwd/bwd and soft_nn_fwd/bwd: validate (../checks.h), make contiguous,
// allocate outputs and scratch, launch the torch-free kernels of contrastive.cu on the current stream.
#include <torch/library.h>

#include "glue.h"

namespace sslsteal_cuda {
namespace {

using at::Tensor;

ContrastiveArgs info_nce_args(const Tensor& a, const Tensor& b, double temperature) {
  ContrastiveArgs args{};
  args.dtype = glue::dtype_of(a, "info_nce");
  args.fp32_mode = glue::fp32_mode(a);
  args.soft_nn = false;
  args.rows0 = a.data_ptr();
  args.rows1 = b.data_ptr();
  args.split = a.size(0);
  args.n = a.size(0) + b.size(0);
  args.D = a.size(1);
  args.labels = nullptr;
  args.temperature = temperature;
  return args;
}

std::tuple<Tensor, Tensor, Tensor> info_nce_fwd_cuda(const Tensor& a_in, const Tensor& b_in, double temperature) {
  const char* op = "info_nce_fwd";
  sslsteal::check_info_nce_inputs(op, a_in, b_in, temperature);
  const c10::cuda::CUDAGuard guard(a_in.device());
  const Tensor a = a_in.contiguous(), b = b_in.contiguous();
  const int64_t n = a.size(0) + b.size(0);
  const auto sd = sslsteal::stat_dtype(a.scalar_type());
  Tensor loss = at::empty({n}, a.options());
  Tensor lse_all = at::empty({n}, a.options().dtype(sd));
  Tensor lse_pos = at::empty({n}, a.options().dtype(sd));
  const ContrastiveArgs args = info_nce_args(a, b, temperature);
  Tensor ws = glue::scratch(contrastive_fwd_workspace_bytes(args), a);
  glue::check_status(contrastive_fwd(args, loss.data_ptr(), lse_all.data_ptr(), lse_pos.data_ptr(), ws.data_ptr(),
                                     glue::stream_for(a)),
                     op);
  return {loss, lse_all, lse_pos};
}

std::tuple<Tensor, Tensor> info_nce_bwd_cuda(const Tensor& grad_rows, const Tensor& a_in, const Tensor& b_in,
                                             const Tensor& lse_all, const Tensor& lse_pos, double temperature) {
  const char* op = "info_nce_bwd";
  sslsteal::check_info_nce_inputs(op, a_in, b_in, temperature);
  const int64_t n = a_in.size(0) + b_in.size(0);
  sslsteal::check_loss_bwd_vectors(op, grad_rows, lse_all, lse_pos, n, a_in, "a");
  const c10::cuda::CUDAGuard guard(a_in.device());
  const Tensor a = a_in.contiguous(), b = b_in.contiguous();
  Tensor ga = at::empty_like(a, at::MemoryFormat::Contiguous);
  Tensor gb = at::empty_like(b, at::MemoryFormat::Contiguous);
  const ContrastiveArgs args = info_nce_args(a, b, temperature);
  const int device = a.device().index();
  Tensor ws = glue::scratch(contrastive_bwd_workspace_bytes(args, device), a);
  const Tensor g = grad_rows.contiguous(), la = lse_all.contiguous(), lp = lse_pos.contiguous();
  glue::check_status(contrastive_bwd(args, g.data_ptr(), la.data_ptr(), lp.data_ptr(), ga.data_ptr(), gb.data_ptr(),
                                     ws.data_ptr(), device, glue::stream_for(a)),
                     op);
  return {ga, gb};
}

// z minus its distance_shift, contiguous: SoftNN's logits and gradient only see differences of rows,
// so shifting keeps float32 precise far from the origin (../numerics.h). Same shift forward and back.
Tensor soft_nn_rows(const Tensor& z) { return glue::shifted(z, sslsteal::distance_shift(z)); }

ContrastiveArgs soft_nn_args(const Tensor& z, const Tensor& labels64, double temperature) {
  ContrastiveArgs args{};
  args.dtype = glue::dtype_of(z, "soft_nn");
  args.fp32_mode = glue::fp32_mode(z);
  args.soft_nn = true;
  args.rows0 = z.data_ptr();
  args.rows1 = z.data_ptr();
  args.split = z.size(0);
  args.n = z.size(0);
  args.D = z.size(1);
  args.labels = labels64.data_ptr<int64_t>();
  args.temperature = temperature;
  return args;
}

std::tuple<Tensor, Tensor, Tensor> soft_nn_fwd_cuda(const Tensor& z_in, const Tensor& labels, double temperature) {
  const char* op = "soft_nn_fwd";
  sslsteal::check_soft_nn_inputs(op, z_in, labels, temperature);
  const c10::cuda::CUDAGuard guard(z_in.device());
  const Tensor z = soft_nn_rows(z_in);
  const Tensor lab = labels.to(at::kLong).contiguous();
  const int64_t n = z.size(0);
  const auto sd = sslsteal::stat_dtype(z.scalar_type());
  Tensor loss = at::empty({n}, z.options());
  Tensor lse_all = at::empty({n}, z.options().dtype(sd));
  Tensor lse_pos = at::empty({n}, z.options().dtype(sd));
  const ContrastiveArgs args = soft_nn_args(z, lab, temperature);
  Tensor ws = glue::scratch(contrastive_fwd_workspace_bytes(args), z);
  glue::check_status(contrastive_fwd(args, loss.data_ptr(), lse_all.data_ptr(), lse_pos.data_ptr(), ws.data_ptr(),
                                     glue::stream_for(z)),
                     op);
  return {loss, lse_all, lse_pos};
}

Tensor soft_nn_bwd_cuda(const Tensor& grad_rows, const Tensor& z_in, const Tensor& labels, const Tensor& lse_all,
                        const Tensor& lse_pos, double temperature) {
  const char* op = "soft_nn_bwd";
  sslsteal::check_soft_nn_inputs(op, z_in, labels, temperature);
  const int64_t n = z_in.size(0);
  sslsteal::check_loss_bwd_vectors(op, grad_rows, lse_all, lse_pos, n, z_in, "z");
  const c10::cuda::CUDAGuard guard(z_in.device());
  const Tensor z = soft_nn_rows(z_in);
  const Tensor lab = labels.to(at::kLong).contiguous();
  Tensor gz = at::empty_like(z, at::MemoryFormat::Contiguous);
  const ContrastiveArgs args = soft_nn_args(z, lab, temperature);
  const int device = z.device().index();
  Tensor ws = glue::scratch(contrastive_bwd_workspace_bytes(args, device), z);
  const Tensor g = grad_rows.contiguous(), la = lse_all.contiguous(), lp = lse_pos.contiguous();
  glue::check_status(contrastive_bwd(args, g.data_ptr(), la.data_ptr(), lp.data_ptr(), gz.data_ptr(), gz.data_ptr(),
                                     ws.data_ptr(), device, glue::stream_for(z)),
                     op);
  return gz;
}

}  // namespace
}  // namespace sslsteal_cuda

TORCH_LIBRARY_IMPL(sslsteal_fast, CUDA, m) {
  m.impl("info_nce_fwd", &sslsteal_cuda::info_nce_fwd_cuda);
  m.impl("info_nce_bwd", &sslsteal_cuda::info_nce_bwd_cuda);
  m.impl("soft_nn_fwd", &sslsteal_cuda::soft_nn_fwd_cuda);
  m.impl("soft_nn_bwd", &sslsteal_cuda::soft_nn_bwd_cuda);
}

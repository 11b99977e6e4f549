// Host-only table of the dynamic shared memory each contrastive kernel layout asks for (bytes), next to
// the opt-in limits of the architectures the package targets. Built and run by scripts/cuda_check.sh;
// it makes no CUDA call, so it runs on a machine without a GPU. The backward's large layout is used
// where it fits the device's limit, the small one elsewhere (contrastive.cu: bwd_small_tiles).
#include <cstdio>

#include "../contrastive.cu"

namespace {

using namespace sslsteal_cuda::detail;

template <class Mma>
void row(const char* name) {
  std::printf("  %-12s fwd %7zu   bwd large %7zu   bwd small %7zu\n", name, FwdSmem<Mma>::kBytes,
              BwdCfg<Mma, false>::kBytes, BwdCfg<Mma, true>::kBytes);
}

}  // namespace

int main() {
  std::printf(
      "dynamic shared memory per block (bytes); opt-in limits: sm_80 166912, sm_86/sm_89/sm_120 101376, "
      "sm_90/sm_100 232448\n");
  row<MmaTf32<true>>("float32");
  row<MmaF64>("float64");
  row<MmaHalf<__nv_bfloat16>>("bfloat16");
  row<MmaHalf<__half>>("float16");
  return 0;
}

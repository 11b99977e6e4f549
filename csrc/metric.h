// The metric codes of pairwise_distance and topk_similarity, shared by the CPU kernels, the CUDA
// kernels and their torch glue. Torch-free, so cuda/kernels.h (and every .cu) can include it; the
// schema's metric strings are turned into it in one place, sslsteal::parse_metric (checks.h).
#pragma once

namespace sslsteal {

// The values are part of the CUDA kernels' ABI (they pass the code to the device as an int).
enum class Metric : int { kSqEuclidean = 0, kEuclidean = 1, kCosine = 2 };

}  // namespace sslsteal

// The Tensor API in a few lines: build lazily, compile and run on to_vector().
#include <cstdio>

#include <kiln/kiln.h>

int main() {
  auto a = kiln::Tensor::rand({512, 1024}, kiln::f32, /*seed=*/1);
  auto b = kiln::Tensor::rand({1024, 256}, kiln::f32, 2);
  auto y = (a.matmul(b) + 1.0f).relu().sum(/*axis=*/1);
  std::vector<float> out = y.to_vector<float>();  // JIT-compiles and runs on the CPU
  std::printf("y has %zu values; y[0] = %f, y[511] = %f\n", out.size(), out[0], out[511]);
  return 0;
}

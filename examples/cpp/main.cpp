// Loads pyops' operator library and calls pyops::point_sample through the dispatcher, the way
// any libtorch program can, then checks it against ATen's grid_sampler.
//
//   pyops_example /path/to/pyops/_C.abi3.so
#include <dlfcn.h>

#include <cstdio>
#include <optional>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s PATH_TO_PYOPS_C_LIBRARY\n", argv[0]);
    return 2;
  }
  // Loading the library runs its TORCH_LIBRARY registrations. Lazy binding: the few Python
  // symbols of its module-init function are never called from here.
  if (dlopen(argv[1], RTLD_LAZY | RTLD_GLOBAL) == nullptr) {
    std::fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
    return 1;
  }
  auto point_sample =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("pyops::point_sample", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, bool, const std::optional<at::Tensor>&)>();

  at::manual_seed(0);
  const at::Tensor features = at::randn({2, 16, 24, 32});
  const at::Tensor coords = at::rand({2, 100, 2});
  const at::Tensor out = point_sample.call(features, coords, false, std::nullopt);

  const at::Tensor grid = (coords * 2 - 1).unsqueeze(2);
  const at::Tensor expected = at::grid_sampler(features, grid, 0, 0, false).squeeze(3);
  const double err = (out - expected).abs().max().item<double>();
  std::printf("pyops::point_sample %s, max |pyops - grid_sampler| = %.3g\n",
              c10::str(out.sizes()).c_str(), err);
  return err < 1e-5 ? 0 : 1;
}

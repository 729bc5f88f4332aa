// Python bindings (thin): numpy arrays in, numpy arrays out. Only translate types; checks and errors
// come from the library (hisa::Error becomes ValueError).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "hisa/error.hpp"
#include "hisa/evaluate.hpp"
#include "hisa/indexer.hpp"

namespace py = pybind11;

namespace {

// q/k arrays: float32, or uint16 holding bf16 bits, or uint8 holding fp8 e4m3 bits.
hisa::DType qk_dtype(const py::array& a, const std::string& name) {
  if (py::isinstance<py::array_t<float>>(a)) return hisa::DType::F32;
  if (a.dtype().kind() == 'u' && a.itemsize() == 2) return hisa::DType::BF16;
  if (a.dtype().kind() == 'u' && a.itemsize() == 1) return hisa::DType::F8E4M3;
  throw hisa::Error(name + ": expected float32, uint16 (bf16 bits) or uint8 (fp8 e4m3 bits), got " +
                    std::string(py::str(a.dtype())));
}

template <typename T>
const T* ptr_or_null(const std::optional<py::array_t<T, py::array::c_style | py::array::forcecast>>& a) {
  return a ? a->data() : nullptr;
}

hisa::SelectConfig make_config(const std::string& method, int block_size, int top_blocks, int topk, int sink,
                               int local, const std::string& pooling) {
  hisa::SelectConfig c;
  c.method = hisa::method_from_name(method);
  c.block_size = block_size;
  c.top_blocks = top_blocks;
  c.topk = topk;
  c.sink_blocks = sink;
  c.local_blocks = local;
  c.pooling = pooling == "max" ? hisa::Pooling::Max : hisa::Pooling::Mean;
  c.validate();
  return c;
}

using I32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;

py::tuple select_prefill(py::array q, py::array k, std::optional<F32> k_scale, F32 w, std::optional<I32> cu_q,
                         std::optional<I32> cu_k, std::optional<I32> ks, std::optional<I32> ke,
                         const std::string& method, int block_size, int top_blocks, int topk, int sink, int local,
                         const std::string& pooling, const std::string& device) {
  const hisa::SelectConfig cfg = make_config(method, block_size, top_blocks, topk, sink, local, pooling);
  HISA_CHECK(q.ndim() == 3, "q must be [T, H, D], got ", q.ndim(), " dimensions");
  HISA_CHECK(k.ndim() == 2, "k must be [S, D], got ", k.ndim(), " dimensions");
  q = py::array::ensure(q, py::array::c_style);
  k = py::array::ensure(k, py::array::c_style);
  hisa::PrefillInputs in;
  in.dtype = qk_dtype(q, "q");
  HISA_CHECK(qk_dtype(k, "k") == in.dtype, "q and k must have the same dtype");
  in.num_q = q.shape(0);
  in.num_heads = int(q.shape(1));
  in.head_dim = int(q.shape(2));
  in.num_k = k.shape(0);
  HISA_CHECK(k.shape(1) == in.head_dim, "k must be [S, D] with D = ", in.head_dim);
  HISA_CHECK(w.ndim() == 2 && w.shape(0) == in.num_q && w.shape(1) == in.num_heads, "w must be [T, H]");
  HISA_CHECK(!k_scale || (k_scale->ndim() == 1 && k_scale->shape(0) == in.num_k), "k_scale must be [S]");
  in.q = q.data();
  in.k = k.data();
  in.k_scale = ptr_or_null(k_scale);
  in.w = w.data();
  I32 one_q, one_k;
  if (cu_q || cu_k) {
    HISA_CHECK(cu_q && cu_k, "cu_seqlens_q and cu_seqlens_k go together");
    HISA_CHECK(cu_q->size() == cu_k->size() && cu_q->size() >= 2, "cu_seqlens must both be [N + 1]");
    in.num_seqs = int(cu_q->size() - 1);
    in.cu_seqlens_q = cu_q->data();
    in.cu_seqlens_k = cu_k->data();
  } else if (ks || ke) {
    HISA_CHECK(ks && ke && ks->size() == in.num_q && ke->size() == in.num_q, "ks and ke must both be [T]");
    in.ks = ks->data();
    in.ke = ke->data();
  } else {
    one_q = I32(std::vector<py::ssize_t>{2});
    one_k = I32(std::vector<py::ssize_t>{2});
    one_q.mutable_at(0) = 0, one_q.mutable_at(1) = int32_t(in.num_q);
    one_k.mutable_at(0) = 0, one_k.mutable_at(1) = int32_t(in.num_k);
    in.num_seqs = 1;
    in.cu_seqlens_q = one_q.data();
    in.cu_seqlens_k = one_k.data();
  }
  py::array_t<int32_t> indices({in.num_q, py::ssize_t(cfg.out_width())});
  py::array_t<int32_t> blocks({in.num_q, py::ssize_t(cfg.has_blocks() ? cfg.top_blocks : 0)});
  hisa::SelectOutputs out{indices.mutable_data(), cfg.has_blocks() ? blocks.mutable_data() : nullptr};
  auto backend = hisa::make_indexer(device);
  {
    py::gil_scoped_release release;
    backend->select_prefill(in, cfg, out);
  }
  return py::make_tuple(indices, blocks);
}

}  // namespace

PYBIND11_MODULE(_hisa, m) {
  m.doc() = "hisa: flat DSA and hierarchical HISA top-k selection for sparse-attention indexers";
  py::register_exception<hisa::Error>(m, "Error", PyExc_ValueError);
  m.def("select_prefill", &select_prefill, py::arg("q"), py::arg("k"), py::arg("k_scale") = py::none(),
        py::arg("w"), py::arg("cu_seqlens_q") = py::none(), py::arg("cu_seqlens_k") = py::none(),
        py::arg("ks") = py::none(), py::arg("ke") = py::none(), py::arg("method") = "hisa",
        py::arg("block_size") = 128, py::arg("top_blocks") = 64, py::arg("topk") = 2048,
        py::arg("sink_blocks") = 1, py::arg("local_blocks") = 1, py::arg("pooling") = "mean",
        py::arg("device") = "cpu",
        "Select top-k key positions per query row. q [T,H,D] and k [S,D]: float32, uint16 (bf16 bits) or "
        "uint8 (fp8 e4m3 bits); w [T,H] float32. Returns (indices [T, width] int32, blocks [T, m] int32); "
        "valid entries first, then -1.");
  m.def("backends", &hisa::backend_names, "Backends compiled into this build");
  m.def("cuda_available", &hisa::cuda_available);
}

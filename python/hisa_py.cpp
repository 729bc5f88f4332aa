// Python bindings (thin): numpy arrays in, numpy arrays out. Only translate types; checks and errors
// come from the library (hisa::Error becomes ValueError).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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
  c.pooling = hisa::pooling_from_name(pooling);
  c.validate();
  return c;
}

using I32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;

// Index arrays (cu_seqlens, ks, ke): arrays or sequences of any integer dtype whose values fit in
// int32. Floats are refused rather than truncated.
std::optional<I32> int32_array(const std::optional<py::object>& obj, const char* name) {
  if (!obj || obj->is_none()) return std::nullopt;
  const py::array a = py::array::ensure(*obj);
  HISA_CHECK(a, name, ": expected an integer array (int32)");
  const char kind = a.dtype().kind();
  HISA_CHECK(kind == 'i' || kind == 'u', name, ": expected an integer array (int32), got dtype ",
             std::string(py::str(a.dtype())));
  const auto wide = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
  HISA_CHECK(wide, name, ": cannot read it as int64");
  I32 out(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
  const int64_t* v = wide.data();
  int32_t* o = out.mutable_data();
  for (py::ssize_t i = 0; i < wide.size(); ++i) {
    HISA_CHECK(v[i] >= INT32_MIN && v[i] <= INT32_MAX, name, "[", i, "] = ", v[i],
               " does not fit in int32");
    o[i] = int32_t(v[i]);
  }
  return out;
}

py::tuple select_prefill(py::array q, py::array k, F32 w, std::optional<F32> k_scale,
                         std::optional<py::object> cu_seqlens_q,
                         std::optional<py::object> cu_seqlens_k, std::optional<py::object> ks_array,
                         std::optional<py::object> ke_array, const std::string& method,
                         int block_size, int top_blocks, int topk, int sink, int local,
                         const std::string& pooling, const std::string& device) {
  const std::optional<I32> cu_q = int32_array(cu_seqlens_q, "cu_seqlens_q");
  const std::optional<I32> cu_k = int32_array(cu_seqlens_k, "cu_seqlens_k");
  const std::optional<I32> ks = int32_array(ks_array, "ks");
  const std::optional<I32> ke = int32_array(ke_array, "ke");
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
  m.def("select_prefill", &select_prefill, py::arg("q"), py::arg("k"), py::arg("w"), py::kw_only(),
        py::arg("k_scale") = py::none(), py::arg("cu_seqlens_q") = py::none(),
        py::arg("cu_seqlens_k") = py::none(), py::arg("ks") = py::none(),
        py::arg("ke") = py::none(), py::arg("method") = "hisa", py::arg("block_size") = 128,
        py::arg("top_blocks") = 64, py::arg("topk") = 2048, py::arg("sink_blocks") = 1,
        py::arg("local_blocks") = 1, py::arg("pooling") = "mean", py::arg("device") = "cpu",
        "Select top-k key positions per query row. q [T,H,D] and k [S,D]: float32, uint16 (bf16 "
        "bits) or "
        "uint8 (fp8 e4m3 bits); w [T,H] float32; k_scale [S] float32; cu_seqlens_q/cu_seqlens_k "
        "[N+1] or "
        "ks/ke [T]: integer arrays. Returns (indices [T, width] int32, blocks [T, m] int32); "
        "positions "
        "relative to each sequence's start, valid entries first, then -1.");
  m.def("backends", &hisa::backend_names, "Backends compiled into this build");
  m.def("cuda_available", &hisa::cuda_available);
}

// Python bindings (thin): arrays in, selections out. Every array argument may be a NumPy array
// (or anything NumPy reads through the array interface), an object that speaks DLPack
// (`__dlpack__` / `__dlpack_device__`: PyTorch, CuPy, JAX ...) or a DLPack capsule. Host memory
// goes to the host backends (hisa::Indexer), CUDA memory to the device-pointer API (hisa::cuda) on
// the caller's stream; nothing is copied between host and device. Outputs are given by the caller
// (the Python package allocates them next to the inputs). Checks and messages are the library's;
// hisa::Error becomes hisa.Error (a ValueError).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dlpack_abi.hpp"
#include "hisa/dtype.hpp"
#include "hisa/error.hpp"
#include "hisa/fidelity.hpp"
#include "hisa/indexer.hpp"
#include "hisa/judge.hpp"
#include "hisa/pooled.hpp"
#include "hisa/reference.hpp"
#include "hisa/validate.hpp"

#if HISA_WITH_CUDA
#include <cuda_runtime.h>

#include "hisa/cuda.hpp"
#endif

namespace py = pybind11;

namespace {

using hisa::DType;
namespace dl = hisa::dlpack;

// ---------------------------------------------------------------------------------------------
// One array argument, read without copying: where it lives, its shape and element type.

struct Arr {
  std::string name;
  void* data = nullptr;
  std::vector<int64_t> shape;
  dl::DataType dtype{0, 0, 1};
  bool given = false;
  bool cuda = false;  // CUDA device memory (else host-readable)
  int device = -1;    // CUDA device id
  bool writable = true;
  std::shared_ptr<void> keep;  // the NumPy array or the consumed DLPack tensor

  int ndim() const { return int(shape.size()); }
  int64_t dim(int i) const { return shape[size_t(i)]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  std::string where() const { return cuda ? "cuda:" + std::to_string(device) : "cpu"; }
  std::string shape_str() const {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

std::string dtype_str(dl::DataType t) {
  if (t.lanes != 1) return "a vector type";
  switch (t.code) {
    case dl::kInt:
      return "int" + std::to_string(t.bits);
    case dl::kUInt:
      return "uint" + std::to_string(t.bits);
    case dl::kFloat:
      return "float" + std::to_string(t.bits);
    case dl::kBfloat:
      return "bfloat16";
    case dl::kBool:
      return "bool";
    case dl::kFloat8_e4m3fn:
      return "float8_e4m3fn";
  }
  return "dlpack type code " + std::to_string(t.code);
}

bool is(dl::DataType t, uint8_t code, int bits) {
  return t.code == code && t.bits == bits && t.lanes == 1;
}

// Row-major compactness; dimensions of size 1 may carry any stride.
void check_compact(const std::string& name, const std::vector<int64_t>& shape,
                   const int64_t* strides, int64_t unit) {
  if (!strides) return;
  for (int64_t n : shape)
    if (n == 0) return;  // an empty array has no layout to check
  int64_t expect = unit;
  for (int i = int(shape.size()) - 1; i >= 0; --i) {
    if (shape[size_t(i)] != 1)
      HISA_CHECK(strides[i] == expect, name,
                 " must be contiguous (row-major); make a contiguous copy first (.contiguous() "
                 "in PyTorch, np.ascontiguousarray in NumPy)");
    expect *= shape[size_t(i)];
  }
}

// Host arrays through NumPy's array interface (`__array_interface__`: data pointer, shape,
// strides, typestr), not NumPy's C API: the module then works with NumPy 1 and 2 whatever the
// pybind11 it was built with (pybind11 before 2.12, Debian's 2.10 among them, predates NumPy 2).
Arr from_array_interface(py::object obj, const std::string& name) {
  const py::dict ai = obj.attr("__array_interface__");
  Arr r;
  r.name = name;
  r.given = true;
  HISA_CHECK(!ai.contains("mask") || ai["mask"].is_none(), name,
             ": masked arrays are not supported");
  const py::tuple data = ai["data"];
  r.data = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
  r.writable = !data[1].cast<bool>();
  for (auto d : py::tuple(ai["shape"])) r.shape.push_back(d.cast<int64_t>());
  const std::string ts = ai["typestr"].cast<std::string>();  // e.g. "<f4", "|u1", "|b1"
  HISA_CHECK(ts.size() >= 3 && ts[0] != '>', name, ": big-endian arrays are not supported (",
             ts, ")");
  const int bytes = std::stoi(ts.substr(2));
  const char kind = ts[1];
  const int bits = bytes * 8;
  if (kind == 'f')
    r.dtype = {dl::kFloat, uint8_t(bits), 1};
  else if (kind == 'i')
    r.dtype = {dl::kInt, uint8_t(bits), 1};
  else if (kind == 'u')
    r.dtype = {dl::kUInt, uint8_t(bits), 1};
  else if (kind == 'b')
    r.dtype = {dl::kBool, 8, 1};
  else
    r.dtype = {255, uint8_t(bits), 1};
  if (ai.contains("strides") && !ai["strides"].is_none()) {
    std::vector<int64_t> strides;
    for (auto d : py::tuple(ai["strides"])) strides.push_back(d.cast<int64_t>());
    check_compact(name, r.shape, strides.data(), bytes);
  }
  r.keep = std::make_shared<py::object>(std::move(obj));
  return r;
}

// A new C-contiguous NumPy array of `shape` and dtype `dtype` ("float64", ...) and its data.
std::pair<py::object, void*> new_array(const std::vector<int64_t>& shape, const char* dtype) {
  py::tuple t(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t[i] = py::int_(shape[i]);
  py::object a = py::module_::import("numpy").attr("empty")(t, py::arg("dtype") = dtype);
  const py::tuple data = a.attr("__array_interface__")["data"];
  return {a, reinterpret_cast<void*>(data[0].cast<uintptr_t>())};
}

// Consumes a DLPack capsule: renames it "used_..." (so that its own destructor leaves the tensor
// alone) and calls the producer's deleter when the Arr goes (with the GIL held).
Arr from_capsule(py::capsule cap, const std::string& name) {
  const char* cname = cap.name();
  const std::string cn = cname ? cname : "";
  dl::Tensor* t = nullptr;
  Arr r;
  r.name = name;
  if (cn == "dltensor") {
    auto* mt = static_cast<dl::ManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
    HISA_CHECK(mt, name, ": invalid DLPack capsule");
    PyCapsule_SetName(cap.ptr(), "used_dltensor");
    r.keep = std::shared_ptr<void>(mt, [](void* p) {
      auto* m = static_cast<dl::ManagedTensor*>(p);
      if (m->deleter) m->deleter(m);
    });
    t = &mt->dl_tensor;
  } else if (cn == "dltensor_versioned") {
    auto* mt = static_cast<dl::ManagedTensorVersioned*>(
        PyCapsule_GetPointer(cap.ptr(), "dltensor_versioned"));
    HISA_CHECK(mt, name, ": invalid DLPack capsule");
    HISA_CHECK(mt->version.major == 1, name, ": DLPack version ", mt->version.major,
               " is not supported (1.x is)");
    PyCapsule_SetName(cap.ptr(), "used_dltensor_versioned");
    r.keep = std::shared_ptr<void>(mt, [](void* p) {
      auto* m = static_cast<dl::ManagedTensorVersioned*>(p);
      if (m->deleter) m->deleter(m);
    });
    r.writable = !(mt->flags & dl::kFlagReadOnly);
    t = &mt->dl_tensor;
  } else {
    throw hisa::Error(name + ": a capsule that is not a DLPack tensor ('" + cn + "')");
  }
  r.given = true;
  const int32_t dev = t->device.device_type;
  HISA_CHECK(dev == dl::kCPU || dev == dl::kCUDA || dev == dl::kCUDAHost || dev == dl::kCUDAManaged,
             name, ": memory of DLPack device type ", dev, " is not supported (CPU or CUDA)");
  r.cuda = dev == dl::kCUDA || dev == dl::kCUDAManaged;
  r.device = r.cuda ? t->device.device_id : -1;
  r.dtype = t->dtype;
  HISA_CHECK(r.dtype.lanes == 1, name, ": vector element types are not supported");
  r.shape.assign(t->shape, t->shape + t->ndim);
  check_compact(name, r.shape, t->strides, 1);
  r.data = static_cast<char*>(t->data) + t->byte_offset;
  return r;
}

// Any array argument. `stream` is the consumer's CUDA stream (DLPack's convention: 1 is the
// legacy default stream); the producer orders its pending work before it.
Arr view(py::handle obj, const std::string& name, int64_t stream) {
  if (obj.is_none()) {
    Arr r;
    r.name = name;
    return r;
  }
  if (PyCapsule_CheckExact(obj.ptr()))
    return from_capsule(py::reinterpret_borrow<py::capsule>(obj), name);
  // NumPy arrays (and anything else with the array interface) first: host memory, no capsule.
  if (py::hasattr(obj, "__array_interface__"))
    return from_array_interface(py::reinterpret_borrow<py::object>(obj), name);
  if (py::hasattr(obj, "__dlpack__")) {
    const py::tuple dev = obj.attr("__dlpack_device__")();
    const int type = dev[0].cast<int>();
    py::object cap;
    if (type == dl::kCUDA || type == dl::kCUDAManaged)
      cap = obj.attr("__dlpack__")(py::arg("stream") = stream == 0 ? 1 : stream);
    else
      cap = obj.attr("__dlpack__")();
    return from_capsule(py::reinterpret_borrow<py::capsule>(cap), name);
  }
  if (py::hasattr(obj, "__array__") || py::isinstance<py::sequence>(obj)) {
    // (lists, tuples, objects NumPy converts: as a contiguous NumPy array)
    py::object a = py::module_::import("numpy").attr("ascontiguousarray")(obj);
    return from_array_interface(std::move(a), name);
  }
  throw hisa::Error(name + ": expected a NumPy array, an object with __dlpack__ or the array " +
                    "interface, got " +
                    std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
}

void check_shape(const Arr& a, std::vector<int64_t> want, const std::string& form) {
  HISA_CHECK(a.shape == want, a.name, " must be ", form, ", got shape ", a.shape_str());
}

// q / k element type: float32, bfloat16 (or uint16 holding its bits), fp8 e4m3 (float8_e4m3fn,
// or uint8 holding its bits).
DType qk_dtype(const Arr& a) {
  if (is(a.dtype, dl::kFloat, 32)) return DType::F32;
  if (is(a.dtype, dl::kBfloat, 16) || is(a.dtype, dl::kUInt, 16)) return DType::BF16;
  if (is(a.dtype, dl::kFloat8_e4m3fn, 8) || is(a.dtype, dl::kUInt, 8)) return DType::F8E4M3;
  throw hisa::Error(a.name + ": expected float32, bfloat16 (or uint16 bits), float8_e4m3fn (or " +
                    "uint8 bits), got " + dtype_str(a.dtype));
}

void need_f32(const Arr& a) {
  HISA_CHECK(is(a.dtype, dl::kFloat, 32), a.name, ": expected float32, got ", dtype_str(a.dtype));
}

// Every given input lives where `ref` lives (one CUDA device, or the host).
void same_place(const Arr& ref, std::initializer_list<const Arr*> others) {
  for (const Arr* a : others) {
    if (!a->given) continue;
    HISA_CHECK(a->cuda == ref.cuda && a->device == ref.device, a->name, " is on ", a->where(),
               " but ", ref.name, " is on ", ref.where(),
               " (hisa copies nothing between devices: move them to one place)");
  }
}

void check_output(const Arr& a, const Arr& ref, std::vector<int64_t> want) {
  HISA_CHECK(a.given, a.name, " must be given");
  HISA_CHECK(is(a.dtype, dl::kInt, 32), a.name, ": expected int32, got ", dtype_str(a.dtype));
  check_shape(a, want, "[" + std::to_string(want[0]) + ", " + std::to_string(want[1]) + "]");
  HISA_CHECK(a.writable, a.name, " is read-only");
  same_place(ref, {&a});
}

// given_blocks (cross-layer reuse): int32 [rows, m] where the lead array lives; nullptr if absent.
const int32_t* given_blocks_of(const Arr& g, const Arr& lead, int64_t rows,
                               const hisa::SelectConfig& cfg) {
  if (!g.given) return nullptr;
  HISA_CHECK(cfg.has_blocks(), "given_blocks is for methods hisa and block (method ",
             hisa::method_name(cfg.method), " chooses no blocks)");
  HISA_CHECK(is(g.dtype, dl::kInt, 32), g.name, ": expected int32, got ", dtype_str(g.dtype));
  check_shape(g, {rows, cfg.top_blocks}, "[" + std::to_string(rows) + ", " +
                                             std::to_string(cfg.top_blocks) + "]");
  same_place(lead, {&g});
  return static_cast<const int32_t*>(g.data);
}

// An int32 index array. Device arrays must be int32 already (nothing is converted on the
// device); host arrays of another integer type are converted when every value fits.
struct Index {
  const int32_t* ptr = nullptr;
  std::vector<int32_t> copy;
};
Index index_array(const Arr& a) {
  Index r;
  if (!a.given) return r;
  const uint8_t code = a.dtype.code;
  HISA_CHECK(code == dl::kInt || code == dl::kUInt, a.name,
             ": expected an integer array (int32), got dtype ", dtype_str(a.dtype));
  if (is(a.dtype, dl::kInt, 32)) {
    r.ptr = static_cast<const int32_t*>(a.data);
    return r;
  }
  HISA_CHECK(!a.cuda, a.name, ": expected int32 on the device, got ", dtype_str(a.dtype),
             " (convert it first, e.g. .to(torch.int32))");
  const int64_t n = a.numel();
  r.copy.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t v = 0;
    const char* p = static_cast<const char*>(a.data);
    switch (a.dtype.bits) {
      case 8:
        v = code == dl::kInt ? int64_t(reinterpret_cast<const int8_t*>(p)[i])
                             : int64_t(reinterpret_cast<const uint8_t*>(p)[i]);
        break;
      case 16:
        v = code == dl::kInt ? int64_t(reinterpret_cast<const int16_t*>(p)[i])
                             : int64_t(reinterpret_cast<const uint16_t*>(p)[i]);
        break;
      case 32:
        v = int64_t(reinterpret_cast<const uint32_t*>(p)[i]);
        break;
      case 64: {
        if (code == dl::kInt) {
          v = reinterpret_cast<const int64_t*>(p)[i];
        } else {
          const uint64_t u = reinterpret_cast<const uint64_t*>(p)[i];
          HISA_CHECK(u <= uint64_t(INT32_MAX), a.name, "[", i, "] = ", u, " does not fit in int32");
          v = int64_t(u);
        }
        break;
      }
      default:
        throw hisa::Error(a.name + ": unsupported integer width");
    }
    HISA_CHECK(v >= INT32_MIN && v <= INT32_MAX, a.name, "[", i, "] = ", v,
               " does not fit in int32");
    r.copy[size_t(i)] = int32_t(v);
  }
  r.ptr = r.copy.data();
  return r;
}

hisa::SelectConfig make_config(const std::string& method, int block_size, int top_blocks, int topk,
                               int sink, int local, const std::string& pooling) {
  hisa::SelectConfig c;
  c.method = hisa::method_from_name(method);
  c.block_size = block_size;
  c.top_blocks = top_blocks;
  c.topk = topk;
  c.sink_blocks = sink;
  c.local_blocks = local;
  c.pooling = hisa::pooling_from_name(pooling);  // an unknown name is an error, never "mean"
  c.validate();
  return c;
}

// ---------------------------------------------------------------------------------------------
// Host backends: one per name, kept for the process (the cuda one keeps its staging buffers).

struct HostBackend {
  std::mutex mu;
  std::unique_ptr<hisa::Indexer> indexer;
};
HostBackend& host_backend(const std::string& name) {
  static std::mutex mu;
  static auto* backends = new std::map<std::string, std::unique_ptr<HostBackend>>();
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = (*backends)[name];
  if (!slot) {
    auto b = std::make_unique<HostBackend>();
    b->indexer = hisa::make_indexer(name);
    slot = std::move(b);
  }
  return *slot;
}

// ---------------------------------------------------------------------------------------------
// The CUDA device-pointer path: one workspace per (device, stream); calls captured into a CUDA
// graph share one workspace per device that never frees a buffer (the graphs keep pointing at
// them), so graphs holding hisa calls are replayed one at a time, as graphs sharing a memory pool.

#if HISA_WITH_CUDA
void cuda_check(cudaError_t e, const char* what) {
  HISA_CHECK(e == cudaSuccess, "cuda: ", what, " failed: ", cudaGetErrorName(e), " (",
             cudaGetErrorString(e), ")");
}

struct DeviceGuard {
  int prev = -1, want;
  explicit DeviceGuard(int d) : want(d) {
    cuda_check(cudaGetDevice(&prev), "cudaGetDevice");
    if (prev != want) cuda_check(cudaSetDevice(want), "cudaSetDevice");
  }
  ~DeviceGuard() {
    if (prev >= 0 && prev != want) cudaSetDevice(prev);
  }
};

struct StreamWorkspace {
  std::mutex mu;
  hisa::cuda::Workspace ws;
};

constexpr uintptr_t kCaptureKey = ~uintptr_t(0);

StreamWorkspace& workspace_for(int device, uintptr_t key) {
  static std::mutex mu;
  // Never destroyed: freeing device memory after the CUDA runtime shut down at exit is an error.
  static auto* all = new std::map<std::pair<int, uintptr_t>, std::unique_ptr<StreamWorkspace>>();
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = (*all)[{device, key}];
  if (!slot) {
    slot = std::make_unique<StreamWorkspace>();
    if (key == kCaptureKey) slot->ws.set_keep_grown(true);
  }
  return *slot;
}

// Runs fn(workspace, options) on `stream` of `device`. Under stream capture: no device-side
// checks (they read a flag back, which capture forbids), and the thread's capture mode relaxed
// for the call so that a workspace that grows may allocate, as PyTorch's allocator does.
template <typename Fn>
void on_stream(int device, int64_t stream, bool validate, Fn&& fn) {
  DeviceGuard guard(device);
  auto* st = reinterpret_cast<cudaStream_t>(uintptr_t(stream));
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  cuda_check(cudaStreamIsCapturing(st, &cap), "cudaStreamIsCapturing");
  HISA_CHECK(cap != cudaStreamCaptureStatusInvalidated,
             "cuda: the stream's graph capture was invalidated by an earlier error");
  const bool capturing = cap == cudaStreamCaptureStatusActive;
  hisa::cuda::Options opt;
  opt.validate = validate && !capturing;
  StreamWorkspace& w = workspace_for(device, capturing ? kCaptureKey : uintptr_t(stream));
  std::lock_guard<std::mutex> lock(w.mu);
  if (!capturing) {
    fn(w.ws, opt, static_cast<void*>(st));
    return;
  }
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  cuda_check(cudaThreadExchangeStreamCaptureMode(&mode), "cudaThreadExchangeStreamCaptureMode");
  try {
    fn(w.ws, opt, static_cast<void*>(st));
  } catch (...) {
    cudaThreadExchangeStreamCaptureMode(&mode);
    throw;
  }
  cuda_check(cudaThreadExchangeStreamCaptureMode(&mode), "cudaThreadExchangeStreamCaptureMode");
}
#endif

#if !HISA_WITH_CUDA
[[noreturn]] void no_cuda_build(const Arr& a) {
  throw hisa::Error(a.name + " is in CUDA memory (" + a.where() +
                    ") but this build of hisa has no CUDA backend (built without nvcc)");
}
#endif

void check_device_backend(const Arr& q, const std::string& backend) {
  HISA_CHECK(backend == "cuda" || backend == "auto", q.name, " is in CUDA memory (", q.where(),
             ") but backend '", backend,
             "' reads host memory: hisa never copies device data to the host (move the inputs "
             "with .cpu(), or use backend 'cuda')");
}

std::string host_backend_name(const std::string& backend) {
  return backend == "auto" ? (hisa::cuda_available() ? "cuda" : "cpu") : backend;
}

// ---------------------------------------------------------------------------------------------
// Prefill

struct Prefill {
  Arr q, k, w, k_scale, cu_q, cu_k, ks, ke;
  Index icu_q, icu_k, iks, ike;
  std::vector<int32_t> one_q, one_k;
  hisa::PrefillInputs in;
};

void read_prefill(Prefill& p, py::handle q, py::handle k, py::handle w, py::handle k_scale,
                  py::handle cu_q, py::handle cu_k, py::handle ks, py::handle ke, int64_t stream) {
  p.q = view(q, "q", stream);
  p.k = view(k, "k", stream);
  p.w = view(w, "w", stream);
  p.k_scale = view(k_scale, "k_scale", stream);
  p.cu_q = view(cu_q, "cu_seqlens_q", stream);
  p.cu_k = view(cu_k, "cu_seqlens_k", stream);
  p.ks = view(ks, "ks", stream);
  p.ke = view(ke, "ke", stream);
  HISA_CHECK(p.q.given && p.k.given && p.w.given, "q, k and w must be given");
  same_place(p.q, {&p.k, &p.w, &p.k_scale, &p.cu_q, &p.cu_k, &p.ks, &p.ke});
  HISA_CHECK(p.q.ndim() == 3, "q must be [T, H, D], got shape ", p.q.shape_str());
  HISA_CHECK(p.k.ndim() == 2, "k must be [S, D], got shape ", p.k.shape_str());
  hisa::PrefillInputs& in = p.in;
  in.dtype = qk_dtype(p.q);
  HISA_CHECK(qk_dtype(p.k) == in.dtype, "q and k must have the same dtype (q is ",
             dtype_str(p.q.dtype), ", k is ", dtype_str(p.k.dtype), ")");
  in.num_q = p.q.dim(0);
  in.num_heads = int(p.q.dim(1));
  in.head_dim = int(p.q.dim(2));
  in.num_k = p.k.dim(0);
  HISA_CHECK(p.k.dim(1) == in.head_dim, "k must be [S, D] with D = ", in.head_dim, " (q's), got ",
             p.k.shape_str());
  need_f32(p.w);
  check_shape(p.w, {in.num_q, in.num_heads},
              "[T, H] = [" + std::to_string(in.num_q) + ", " + std::to_string(in.num_heads) + "]");
  if (p.k_scale.given) {
    need_f32(p.k_scale);
    const bool ok =
        (p.k_scale.ndim() == 1 && p.k_scale.dim(0) == in.num_k) ||
        (p.k_scale.ndim() == 2 && p.k_scale.dim(0) == in.num_k && p.k_scale.dim(1) == 1);
    HISA_CHECK(ok, "k_scale must be [S] or [S, 1] with S = ", in.num_k, ", got shape ",
               p.k_scale.shape_str());
  }
  in.q = p.q.data;
  in.k = p.k.data;
  in.w = static_cast<const float*>(p.w.data);
  in.k_scale = static_cast<const float*>(p.k_scale.data);
  if (p.cu_q.given || p.cu_k.given) {
    HISA_CHECK(p.cu_q.given && p.cu_k.given, "cu_seqlens_q and cu_seqlens_k go together");
    HISA_CHECK(!p.ks.given && !p.ke.given,
               "give either cu_seqlens_q/cu_seqlens_k or ks/ke, not both");
    p.icu_q = index_array(p.cu_q);
    p.icu_k = index_array(p.cu_k);
    HISA_CHECK(p.cu_q.ndim() == 1 && p.cu_k.ndim() == 1 && p.cu_q.dim(0) == p.cu_k.dim(0) &&
                   p.cu_q.dim(0) >= 2,
               "cu_seqlens must both be [N + 1] with N >= 1, got ", p.cu_q.shape_str(), " and ",
               p.cu_k.shape_str());
    in.num_seqs = int(p.cu_q.dim(0) - 1);
    in.cu_seqlens_q = p.icu_q.ptr;
    in.cu_seqlens_k = p.icu_k.ptr;
  } else if (p.ks.given || p.ke.given) {
    HISA_CHECK(p.ks.given && p.ke.given, "ks and ke go together");
    p.iks = index_array(p.ks);
    p.ike = index_array(p.ke);
    HISA_CHECK(
        p.ks.ndim() == 1 && p.ke.ndim() == 1 && p.ks.dim(0) == in.num_q && p.ke.dim(0) == in.num_q,
        "ks and ke must both be [T] with T = ", in.num_q, ", got ", p.ks.shape_str(), " and ",
        p.ke.shape_str());
    in.ks = p.iks.ptr;
    in.ke = p.ike.ptr;
  } else {
    // One sequence: q's rows are the last T of k's S positions.
    HISA_CHECK(!p.q.cuda, "prefill on the device needs cu_seqlens_q/cu_seqlens_k or ks/ke");
    p.one_q = {0, int32_t(in.num_q)};
    p.one_k = {0, int32_t(in.num_k)};
    in.num_seqs = 1;
    in.cu_seqlens_q = p.one_q.data();
    in.cu_seqlens_k = p.one_k.data();
  }
}

void prefill(py::handle q, py::handle k, py::handle w, py::handle k_scale, py::handle cu_q,
             py::handle cu_k, py::handle ks, py::handle ke, py::handle indices, py::handle blocks,
             const std::string& method, int block_size, int top_blocks, int topk, int sink,
             int local, const std::string& pooling, const std::string& backend, int64_t stream,
             bool validate, py::handle given_blocks) {
  const hisa::SelectConfig cfg =
      make_config(method, block_size, top_blocks, topk, sink, local, pooling);
  Prefill p;
  read_prefill(p, q, k, w, k_scale, cu_q, cu_k, ks, ke, stream);
  const Arr given = view(given_blocks, "given_blocks", stream);
  p.in.given_blocks = given_blocks_of(given, p.q, p.in.num_q, cfg);
  Arr out = view(indices, "indices", stream);
  Arr out_blocks = view(blocks, "blocks", stream);
  check_output(out, p.q, {p.in.num_q, cfg.out_width()});
  if (out_blocks.given) check_output(out_blocks, p.q, {p.in.num_q, cfg.top_blocks});
  hisa::SelectOutputs o{
      static_cast<int32_t*>(out.data),
      cfg.has_blocks() && out_blocks.given ? static_cast<int32_t*>(out_blocks.data) : nullptr};
  if (p.q.cuda) {
    check_device_backend(p.q, backend);
#if HISA_WITH_CUDA
    py::gil_scoped_release release;
    on_stream(p.q.device, stream, validate,
              [&](hisa::cuda::Workspace& ws, const hisa::cuda::Options& opt, void* st) {
                hisa::cuda::select_prefill(p.in, cfg, o, ws, st, opt);
              });
#else
    no_cuda_build(p.q);
#endif
    return;
  }
  HostBackend& b = host_backend(host_backend_name(backend));
  py::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(b.mu);
  b.indexer->select_prefill(p.in, cfg, o);
}

// ---------------------------------------------------------------------------------------------
// Decode from the paged cache (DeepGEMM / vLLM layout; DeepGEMM's [pages, page_size, 1, D + 4]
// view as it is).

struct Decode {
  Arr q, w, cache, table, lens, pooled, pooled_scales;
  // hisa / block on CUDA: the device pooled cache (pooled uint8 [B, max_blocks, 128] fp8 keys,
  // pooled_scales float32 [B, max_blocks]), as allocate_pooled_keys makes it.
  bool device_pooled = false;
  Index itable, ilens;
  hisa::DecodeInputs in;
};

void read_decode(Decode& d, py::handle q, py::handle w, py::handle kv_cache, py::handle block_table,
                 py::handle seq_lens, int next_n, py::handle pooled, int64_t stream,
                 py::handle pooled_scales = py::none()) {
  d.q = view(q, "q", stream);
  d.w = view(w, "weights", stream);
  d.cache = view(kv_cache, "kv_cache", stream);
  d.table = view(block_table, "block_table", stream);
  d.lens = view(seq_lens, "context_lens", stream);
  d.pooled = view(pooled, "pooled", stream);
  d.pooled_scales = view(pooled_scales, "pooled_scales", stream);
  HISA_CHECK(d.q.given && d.w.given && d.cache.given && d.table.given && d.lens.given,
             "q, weights, kv_cache, block_table and context_lens must be given");
  same_place(d.q, {&d.w, &d.cache, &d.table, &d.lens, &d.pooled, &d.pooled_scales});
  hisa::DecodeInputs& in = d.in;
  HISA_CHECK(d.table.ndim() == 2, "block_table must be [B, max_pages], got shape ",
             d.table.shape_str());
  in.batch = int(d.table.dim(0));
  in.max_pages = int(d.table.dim(1));
  if (d.q.ndim() == 4) {
    HISA_CHECK(d.q.dim(0) == in.batch, "q [B, next_n, H, D] has B = ", d.q.dim(0),
               " but block_table has ", in.batch, " rows");
    HISA_CHECK(next_n == 0 || next_n == d.q.dim(1), "next_n = ", next_n, " but q is ",
               d.q.shape_str());
    in.next_n = int(d.q.dim(1));
  } else {
    HISA_CHECK(d.q.ndim() == 3, "q must be [B, next_n, H, D] or [B * next_n, H, D], got shape ",
               d.q.shape_str());
    in.next_n = next_n == 0 ? 1 : next_n;
    HISA_CHECK(d.q.dim(0) == int64_t(in.batch) * in.next_n, "q [B * next_n, H, D] must have ",
               int64_t(in.batch) * in.next_n, " rows (B = ", in.batch, ", next_n = ", in.next_n,
               "), got shape ", d.q.shape_str());
  }
  const int64_t rows = int64_t(in.batch) * in.next_n;
  in.num_heads = int(d.q.dim(d.q.ndim() - 2));
  in.head_dim = int(d.q.dim(d.q.ndim() - 1));
  in.q_dtype = qk_dtype(d.q);
  need_f32(d.w);
  const bool w_ok = (d.w.ndim() == 2 && d.w.dim(0) == rows && d.w.dim(1) == in.num_heads) ||
                    (d.w.ndim() == 3 && d.w.dim(0) == in.batch && d.w.dim(1) == in.next_n &&
                     d.w.dim(2) == in.num_heads);
  HISA_CHECK(w_ok, "weights must be [B * next_n, H] = [", rows, ", ", in.num_heads,
             "] or [B, next_n, H], got shape ", d.w.shape_str());
  HISA_CHECK(is(d.cache.dtype, dl::kUInt, 8) || is(d.cache.dtype, dl::kInt, 8),
             "kv_cache: expected uint8, got ", dtype_str(d.cache.dtype));
  const bool cache_ok = (d.cache.ndim() == 3) || (d.cache.ndim() == 4 && d.cache.dim(2) == 1);
  HISA_CHECK(
      cache_ok && d.cache.dim(d.cache.ndim() - 1) == in.head_dim + 4,
      "kv_cache must be [pages, page_size, D + 4] or [pages, page_size, 1, D + 4] with D + 4 = ",
      in.head_dim + 4, ", got shape ", d.cache.shape_str());
  in.num_pages = int(d.cache.dim(0));
  in.page_size = int(d.cache.dim(1));
  in.kv_cache = static_cast<const uint8_t*>(d.cache.data);
  d.itable = index_array(d.table);
  d.ilens = index_array(d.lens);
  HISA_CHECK(d.lens.ndim() == 1 && d.lens.dim(0) == in.batch, "context_lens must be [B] = [",
             in.batch,
             "] here (the package reads the last column of a [B, next_n] form), got shape ",
             d.lens.shape_str());
  in.block_table = d.itable.ptr;
  in.seq_lens = d.ilens.ptr;
  in.q = d.q.data;
  in.w = static_cast<const float*>(d.w.data);
  d.device_pooled = d.pooled.given && d.q.cuda;
  if (d.device_pooled) {
    HISA_CHECK(is(d.pooled.dtype, dl::kUInt, 8) && d.pooled.ndim() == 3 &&
                   d.pooled.dim(0) == in.batch && d.pooled.dim(2) == 128,
               "pooled (the device pooled cache) must be uint8 [B, max_blocks, 128] = [", in.batch,
               ", *, 128] (allocate_pooled_keys), got ", dtype_str(d.pooled.dtype), " ",
               d.pooled.shape_str());
    HISA_CHECK(d.pooled_scales.given && is(d.pooled_scales.dtype, dl::kFloat, 32) &&
                   d.pooled_scales.ndim() == 2 && d.pooled_scales.dim(0) == in.batch &&
                   d.pooled_scales.dim(1) == d.pooled.dim(1),
               "pooled_scales must be float32 [B, max_blocks] = [", in.batch, ", ", d.pooled.dim(1),
               "] beside the device pooled cache, got ",
               d.pooled_scales.given ? d.pooled_scales.shape_str() : std::string("none"));
  } else if (d.pooled.given) {
    need_f32(d.pooled);
    HISA_CHECK(
        d.pooled.ndim() == 3 && d.pooled.dim(0) == in.batch && d.pooled.dim(2) == in.head_dim,
        "pooled must be [B, max_blocks, D] = [", in.batch, ", *, ", in.head_dim, "], got shape ",
        d.pooled.shape_str());
    in.pooled = static_cast<const float*>(d.pooled.data);
    in.pooled_max_blocks = int(d.pooled.dim(1));
  }
}

void decode(py::handle q, py::handle w, py::handle kv_cache, py::handle block_table,
            py::handle seq_lens, int next_n, py::handle pooled, py::handle indices,
            py::handle blocks, const std::string& method, int block_size, int top_blocks, int topk,
            int sink, int local, const std::string& pooling, const std::string& backend,
            int64_t stream, bool validate, py::handle pooled_scales, py::handle given_blocks) {
  const hisa::SelectConfig cfg =
      make_config(method, block_size, top_blocks, topk, sink, local, pooling);
  Decode d;
  read_decode(d, q, w, kv_cache, block_table, seq_lens, next_n, pooled, stream, pooled_scales);
  const int64_t rows = int64_t(d.in.batch) * d.in.next_n;
  const Arr given = view(given_blocks, "given_blocks", stream);
  d.in.given_blocks = given_blocks_of(given, d.q, rows, cfg);
  Arr out = view(indices, "indices", stream);
  Arr out_blocks = view(blocks, "blocks", stream);
  check_output(out, d.q, {rows, cfg.out_width()});
  if (out_blocks.given) check_output(out_blocks, d.q, {rows, cfg.top_blocks});
  hisa::SelectOutputs o{
      static_cast<int32_t*>(out.data),
      cfg.has_blocks() && out_blocks.given ? static_cast<int32_t*>(out_blocks.data) : nullptr};
  if (d.q.cuda) {
    check_device_backend(d.q, backend);
#if HISA_WITH_CUDA
    py::gil_scoped_release release;
    on_stream(d.q.device, stream, validate,
              [&](hisa::cuda::Workspace& ws, const hisa::cuda::Options& opt, void* st) {
                hisa::cuda::PooledCache pc;
                if (d.device_pooled) {
                  pc.keys = static_cast<uint8_t*>(d.pooled.data);
                  pc.scales = static_cast<float*>(d.pooled_scales.data);
                  pc.batch = d.in.batch;
                  pc.max_blocks = int(d.pooled.dim(1));
                  pc.block_size = cfg.block_size;
                }
                hisa::cuda::select_decode(d.in, cfg, o, ws, st, opt,
                                          d.device_pooled ? &pc : nullptr);
              });
#else
    no_cuda_build(d.q);
#endif
    return;
  }
  HostBackend& b = host_backend(host_backend_name(backend));
  py::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(b.mu);
  b.indexer->select_decode(d.in, cfg, o);
}

// ---------------------------------------------------------------------------------------------
// Host-only helpers: pooled keys of the paged cache, fp8 quantisation, the float64 reference,
// judging and fidelity.

void host_only(const Arr& a, const char* what) {
  HISA_CHECK(!a.given || !a.cuda, what, ": ", a.name, " is in CUDA memory (", a.where(),
             "); this function runs on the host only (pass host arrays)");
}

// The paged cache, block table and lengths of a pooled-key update (update_pooled_keys on the host,
// update_pooled_cache on the device), checked; the index arrays' int32 views in it, io, in_.
hisa::DecodeInputs pooled_update_inputs(const Arr& cache, const Arr& table, const Arr& olds,
                                        const Arr& news, Index& it, Index& io, Index& in_) {
  HISA_CHECK(is(cache.dtype, dl::kUInt, 8), "kv_cache: expected uint8, got ",
             dtype_str(cache.dtype));
  HISA_CHECK(
      cache.ndim() == 3 || (cache.ndim() == 4 && cache.dim(2) == 1),
      "kv_cache must be [pages, page_size, D + 4] or [pages, page_size, 1, D + 4], got shape ",
      cache.shape_str());
  HISA_CHECK(table.ndim() == 2, "block_table must be [B, max_pages], got shape ",
             table.shape_str());
  hisa::DecodeInputs c;
  c.batch = int(table.dim(0));
  c.max_pages = int(table.dim(1));
  c.num_pages = int(cache.dim(0));
  c.page_size = int(cache.dim(1));
  c.head_dim = int(cache.dim(cache.ndim() - 1)) - 4;
  c.kv_cache = static_cast<const uint8_t*>(cache.data);
  it = index_array(table), io = index_array(olds), in_ = index_array(news);
  c.block_table = it.ptr;
  HISA_CHECK(news.ndim() == 1 && news.dim(0) == c.batch, "new_lens must be [B] = [", c.batch,
             "], got shape ", news.shape_str());
  HISA_CHECK(!olds.given || (olds.ndim() == 1 && olds.dim(0) == c.batch),
             "old_lens must be [B] = [", c.batch, "], got shape ", olds.shape_str());
  return c;
}

void update_pooled(py::handle kv_cache, py::handle block_table, py::handle old_lens,
                   py::handle new_lens, py::handle pooled, int block_size,
                   const std::string& pooling) {
  Arr cache = view(kv_cache, "kv_cache", 0), table = view(block_table, "block_table", 0);
  Arr olds = view(old_lens, "old_lens", 0), news = view(new_lens, "new_lens", 0);
  Arr out = view(pooled, "pooled", 0);
  for (const Arr* a : {&cache, &table, &olds, &news, &out}) host_only(*a, "update_pooled_keys");
  HISA_CHECK(cache.given && table.given && news.given && out.given,
             "update_pooled_keys: kv_cache, block_table, new_lens and pooled must be given");
  Index it, io, in_;
  const hisa::DecodeInputs c = pooled_update_inputs(cache, table, olds, news, it, io, in_);
  need_f32(out);
  HISA_CHECK(out.writable, "pooled is read-only");
  HISA_CHECK(out.ndim() == 3 && out.dim(0) == c.batch && out.dim(2) == c.head_dim,
             "pooled must be [B, max_blocks, D] = [", c.batch, ", *, ", c.head_dim, "], got shape ",
             out.shape_str());
  const hisa::Pooling pool = hisa::pooling_from_name(pooling);
  py::gil_scoped_release release;
  hisa::update_pooled_keys(c, io.ptr, in_.ptr, block_size, pool, static_cast<float*>(out.data),
                           int(out.dim(1)));
}

// The device pooled cache's update (hisa::cuda::update_pooled_cache) on CUDA arrays.
void update_pooled_device(py::handle kv_cache, py::handle block_table, py::handle old_lens,
                          py::handle new_lens, py::handle pooled, py::handle pooled_scales,
                          int block_size, int64_t stream) {
  Arr cache = view(kv_cache, "kv_cache", stream), table = view(block_table, "block_table", stream);
  Arr olds = view(old_lens, "old_lens", stream), news = view(new_lens, "new_lens", stream);
  Arr keys = view(pooled, "pooled", stream), scales = view(pooled_scales, "pooled_scales", stream);
  HISA_CHECK(cache.given && table.given && news.given && keys.given && scales.given,
             "update_pooled_keys: kv_cache, block_table, new_lens, pooled and pooled_scales must "
             "be given");
  HISA_CHECK(keys.cuda, "update_pooled_keys: the device pooled cache must be in CUDA memory");
  same_place(keys, {&cache, &table, &olds, &news, &scales});
  Index it, io, in_;
  const hisa::DecodeInputs c = pooled_update_inputs(cache, table, olds, news, it, io, in_);
  HISA_CHECK(is(keys.dtype, dl::kUInt, 8) && keys.ndim() == 3 && keys.dim(0) == c.batch &&
                 keys.dim(2) == 128 && keys.writable,
             "pooled must be a writable uint8 [B, max_blocks, 128] = [", c.batch, ", *, 128], got ",
             keys.shape_str());
  HISA_CHECK(is(scales.dtype, dl::kFloat, 32) && scales.ndim() == 2 && scales.dim(0) == c.batch &&
                 scales.dim(1) == keys.dim(1),
             "pooled_scales must be float32 [B, max_blocks] = [", c.batch, ", ", keys.dim(1),
             "], got ", scales.shape_str());
#if HISA_WITH_CUDA
  hisa::cuda::PooledCache pc;
  pc.keys = static_cast<uint8_t*>(keys.data);
  pc.scales = static_cast<float*>(scales.data);
  pc.batch = c.batch;
  pc.max_blocks = int(keys.dim(1));
  pc.block_size = block_size;
  py::gil_scoped_release release;
  on_stream(keys.device, stream, false,
            [&](hisa::cuda::Workspace&, const hisa::cuda::Options&, void* st) {
              hisa::cuda::update_pooled_cache(c, io.ptr, in_.ptr, pc, st);
            });
#else
  no_cuda_build(keys);
#endif
}

void quantize_fp8(py::handle x, py::handle codes, py::handle scale, const std::string& rule) {
  Arr in = view(x, "x", 0), out = view(codes, "codes", 0), sc = view(scale, "scale", 0);
  for (const Arr* a : {&in, &out, &sc}) host_only(*a, "quantize_fp8");
  need_f32(in);
  HISA_CHECK(in.ndim() >= 1, "x must have at least one dimension");
  const int64_t cols = in.dim(in.ndim() - 1), rows = cols ? in.numel() / cols : 0;
  HISA_CHECK(is(out.dtype, dl::kUInt, 8) && out.numel() == in.numel() && out.writable,
             "codes must be a writable uint8 array of x's shape");
  HISA_CHECK(is(sc.dtype, dl::kFloat, 32) && sc.numel() == rows && sc.writable,
             "scale must be a writable float32 array with one entry per row of x");
  hisa::ScaleRule r;
  if (rule == "amax")
    r = hisa::ScaleRule::Amax;
  else if (rule == "ue8m0")
    r = hisa::ScaleRule::UE8M0;
  else
    throw hisa::Error("unknown scale rule '" + rule + "' (expected amax or ue8m0)");
  py::gil_scoped_release release;
  hisa::quantize_fp8_rows(static_cast<const float*>(in.data), size_t(rows), size_t(cols), r,
                          static_cast<uint8_t*>(out.data), static_cast<float*>(sc.data));
}

std::vector<hisa::reference::Row> reference_rows(py::handle q, py::handle k, py::handle w,
                                                 py::handle k_scale, py::handle cu_q,
                                                 py::handle cu_k, py::handle ks, py::handle ke,
                                                 hisa::DType* dtype) {
  Prefill p;
  read_prefill(p, q, k, w, k_scale, cu_q, cu_k, ks, ke, 0);
  for (const Arr* a : {&p.q, &p.k, &p.w, &p.k_scale, &p.cu_q, &p.cu_k, &p.ks, &p.ke})
    host_only(*a, "reference");
  if (dtype) *dtype = p.in.dtype;
  py::gil_scoped_release release;
  return hisa::reference::prefill_rows(p.in);
}

std::vector<hisa::reference::Row> reference_decode_rows(py::handle q, py::handle w,
                                                        py::handle kv_cache, py::handle block_table,
                                                        py::handle seq_lens, int next_n,
                                                        hisa::DType* dtype) {
  Decode d;
  read_decode(d, q, w, kv_cache, block_table, seq_lens, next_n, py::none(), 0);
  for (const Arr* a : {&d.q, &d.w, &d.cache, &d.table, &d.lens}) host_only(*a, "reference");
  if (dtype) *dtype = d.in.q_dtype;
  py::gil_scoped_release release;
  return hisa::reference::decode_rows(d.in);
}

// I(t, p) in float64 for p < e_t; [T, max_t e_t], NaN past each row's end.
py::object scores_of(const std::vector<hisa::reference::Row>& rows) {
  int64_t width = 0;
  for (const auto& r : rows) width = std::max(width, r.visible);
  auto [out, data] = new_array({int64_t(rows.size()), width}, "float64");
  double* o = static_cast<double*>(data);
  std::fill(o, o + int64_t(rows.size()) * width, std::numeric_limits<double>::quiet_NaN());
  for (size_t t = 0; t < rows.size(); ++t) {
    const std::vector<double> s = hisa::reference::token_scores(rows[t]);
    std::copy(s.begin(), s.end(), o + int64_t(t) * width);
  }
  return out;
}

hisa::PooledRounding rounding_from_name(const std::string& n) {
  if (n == "exact") return hisa::PooledRounding::Exact;
  if (n == "fp32") return hisa::PooledRounding::Fp32;
  if (n == "fp8_block") return hisa::PooledRounding::Fp8Block;
  if (n == "bf16") return hisa::PooledRounding::Bf16;
  throw hisa::Error("unknown pooled rounding '" + n +
                    "' (expected exact, fp32, fp8_block or bf16)");
}

// Judges every row (SEMANTICS.md section 7); returns (row, message) for each wrong row. given:
// the call's given_blocks [T, m] (host int32), or none.
std::vector<std::pair<int64_t, std::string>> judge_rows(
    std::vector<hisa::reference::Row> rows, hisa::DType dtype, py::handle indices,
    py::handle blocks, const hisa::SelectConfig& cfg, bool exact, const std::string& rounding,
    py::handle given_blocks) {
  Arr idx = view(indices, "indices", 0), blk = view(blocks, "blocks", 0);
  const Arr given = view(given_blocks, "given_blocks", 0);
  host_only(idx, "judge");
  host_only(blk, "judge");
  host_only(given, "judge");
  const int64_t T = int64_t(rows.size());
  if (const int32_t* g = given_blocks_of(given, idx, T, cfg)) {
    for (int64_t t = 0; t < T; ++t) {
      hisa::reference::Row& r = rows[size_t(t)];
      r.has_given = true;
      for (int c = 0; c < cfg.top_blocks && g[t * cfg.top_blocks + c] >= 0; ++c)
        r.given.push_back(g[t * cfg.top_blocks + c]);
    }
  }
  HISA_CHECK(is(idx.dtype, dl::kInt, 32), "indices: expected int32, got ", dtype_str(idx.dtype));
  check_shape(idx, {T, cfg.out_width()}, "[T, " + std::to_string(cfg.out_width()) + "]");
  if (cfg.has_blocks()) {
    HISA_CHECK(blk.given, "judge: hisa and block selections are judged with their chosen blocks");
    HISA_CHECK(is(blk.dtype, dl::kInt, 32), "blocks: expected int32, got ", dtype_str(blk.dtype));
    check_shape(blk, {T, cfg.top_blocks}, "[T, " + std::to_string(cfg.top_blocks) + "]");
  }
  const hisa::PooledRounding round = rounding_from_name(rounding);
  std::vector<std::pair<int64_t, std::string>> bad;
  const auto* ip = static_cast<const int32_t*>(idx.data);
  const auto* bp = cfg.has_blocks() ? static_cast<const int32_t*>(blk.data) : nullptr;
  py::gil_scoped_release release;
  for (int64_t t = 0; t < T; ++t) {
    std::string m = hisa::judge_row(rows[size_t(t)], cfg, ip + t * cfg.out_width(),
                                    bp ? bp + t * cfg.top_blocks : nullptr,
                                    hisa::judge_rel_eps(dtype), exact, round);
    if (!m.empty()) bad.emplace_back(t, std::move(m));
  }
  return bad;
}

py::dict fidelity(py::handle a, py::handle b, py::handle scores, py::handle visible,
                  int64_t budget_tokens) {
  Arr A = view(a, "a", 0), B = view(b, "b", 0), S = view(scores, "scores", 0),
      V = view(visible, "visible", 0);
  for (const Arr* x : {&A, &B, &S, &V}) host_only(*x, "fidelity");
  HISA_CHECK(A.given && B.given && V.given, "fidelity: a, b and visible must be given");
  HISA_CHECK(is(A.dtype, dl::kInt, 32) && is(B.dtype, dl::kInt, 32),
             "fidelity: a and b must be int32");
  HISA_CHECK(A.ndim() == 2 && B.ndim() == 2 && A.dim(0) == B.dim(0),
             "fidelity: a and b must be [T, width] with the same T, got ", A.shape_str(), " and ",
             B.shape_str());
  const int64_t T = A.dim(0);
  const Index vis = index_array(V);
  HISA_CHECK(V.ndim() == 1 && V.dim(0) == T, "visible must be [T] = [", T, "], got shape ",
             V.shape_str());
  const double* sp = nullptr;
  int64_t ld = 0;
  if (S.given) {
    HISA_CHECK(is(S.dtype, dl::kFloat, 64) && S.ndim() == 2 && S.dim(0) == T,
               "scores must be float64 [T, S], got ", dtype_str(S.dtype), " ", S.shape_str());
    sp = static_cast<const double*>(S.data);
    ld = S.dim(1);
  }
  // a and b may differ in width (block: m * B; flat: k): both are padded to the wider one.
  const int width = int(std::max(A.dim(1), B.dim(1)));
  // Without scores only IoU and recall are reported; row_fidelity still wants a mass, so it gets
  // zeros (its mass is then discarded).
  std::vector<double> zeros;
  if (!sp) {
    int64_t e = 0;
    for (int64_t t = 0; t < T; ++t) e = std::max<int64_t>(e, vis.ptr[t]);
    zeros.assign(size_t(e), 0.0);
  }
  std::vector<int32_t> ra(static_cast<size_t>(width)), rb(static_cast<size_t>(width));
  auto [iou, iou_p] = new_array({T}, "float64");
  auto [recall, recall_p] = new_array({T}, "float64");
  auto [mass, mass_p] = new_array({T}, "float64");
  auto [differ, differ_p] = new_array({T}, "bool");
  std::vector<hisa::RowFidelity> all, diff;
  for (int64_t t = 0; t < T; ++t) {
    std::fill(ra.begin(), ra.end(), -1);
    std::fill(rb.begin(), rb.end(), -1);
    std::copy_n(static_cast<const int32_t*>(A.data) + t * A.dim(1), A.dim(1), ra.begin());
    std::copy_n(static_cast<const int32_t*>(B.data) + t * B.dim(1), B.dim(1), rb.begin());
    HISA_CHECK(!sp || vis.ptr[t] <= ld, "fidelity: visible[", t, "] = ", vis.ptr[t],
               " exceeds the scores' width ", ld);
    const hisa::RowFidelity f = hisa::row_fidelity(
        ra.data(), rb.data(), width, sp ? sp + t * ld : zeros.data(), vis.ptr[t], budget_tokens);
    static_cast<double*>(iou_p)[t] = f.iou;
    static_cast<double*>(recall_p)[t] = f.recall;
    static_cast<double*>(mass_p)[t] = sp ? f.mass_recall : std::numeric_limits<double>::quiet_NaN();
    static_cast<bool*>(differ_p)[t] = f.can_differ;
    all.push_back(f);
    if (f.can_differ) diff.push_back(f);
  }
  auto summary = [&](const std::vector<hisa::RowFidelity>& rows) {
    const hisa::FidelitySummary s = hisa::summarize(rows);
    py::dict d;
    d["rows"] = s.rows;
    d["iou_mean"] = s.iou_mean, d["iou_p1"] = s.iou_p1, d["iou_min"] = s.iou_min;
    d["recall_mean"] = s.recall_mean, d["recall_min"] = s.recall_min;
    if (sp) d["mass_mean"] = s.mass_mean, d["mass_p1"] = s.mass_p1, d["mass_min"] = s.mass_min;
    return d;
  };
  py::dict out;
  out["iou"] = iou, out["recall"] = recall, out["mass_recall"] = mass, out["can_differ"] = differ;
  out["all"] = summary(all);
  out["differ"] = summary(diff);
  return out;
}

// fp8 e4m3 or bf16 bits (uint8 / uint16, host) to float32, by the library's exact decoders.
py::object bits_to_float(py::handle bits) {
  Arr a = view(bits, "bits", 0);
  host_only(a, "to_float");
  DType t;
  if (is(a.dtype, dl::kUInt, 8) || is(a.dtype, dl::kFloat8_e4m3fn, 8))
    t = DType::F8E4M3;
  else if (is(a.dtype, dl::kUInt, 16) || is(a.dtype, dl::kBfloat, 16))
    t = DType::BF16;
  else
    throw hisa::Error("to_float: expected uint8 (fp8 e4m3 bits) or uint16 (bf16 bits), got " +
                      dtype_str(a.dtype));
  auto [out, data] = new_array(a.shape, "float32");
  hisa::to_float(t, a.data, static_cast<float*>(data), size_t(a.numel()));
  return out;
}

// float32 to bf16 bits (round to nearest even), host.
py::object float_to_bf16_bits(py::handle x) {
  Arr a = view(x, "x", 0);
  host_only(a, "to_bf16");
  need_f32(a);
  auto [out, data] = new_array(a.shape, "uint16");
  const float* in = static_cast<const float*>(a.data);
  uint16_t* o = static_cast<uint16_t*>(data);
  for (int64_t i = 0; i < a.numel(); ++i) o[i] = hisa::float_to_bf16(in[i]);
  return out;
}

std::string cuda_device_description() {
#if HISA_WITH_CUDA
  return hisa::cuda::device_description();
#else
  return "";
#endif
}

}  // namespace

PYBIND11_MODULE(_hisa, m) {
  m.doc() =
      "hisa's C++ core (use the hisa package): flat DSA and hierarchical HISA top-k "
      "selection on host or CUDA arrays";
  py::register_exception<hisa::Error>(m, "Error", PyExc_ValueError);
  m.def("prefill", &prefill, py::arg("q"), py::arg("k"), py::arg("w"), py::arg("k_scale"),
        py::arg("cu_seqlens_q"), py::arg("cu_seqlens_k"), py::arg("ks"), py::arg("ke"),
        py::arg("indices"), py::arg("blocks"), py::arg("method"), py::arg("block_size"),
        py::arg("top_blocks"), py::arg("topk"), py::arg("sink_blocks"), py::arg("local_blocks"),
        py::arg("pooling"), py::arg("backend"), py::arg("stream"), py::arg("validate"),
        py::arg("given_blocks") = py::none(),
        "Ragged prefill into the caller's indices [T, width] (and blocks [T, m] or None); "
        "given_blocks [T, m]: another layer's chosen blocks, the block stage skipped.");
  m.def("decode", &decode, py::arg("q"), py::arg("weights"), py::arg("kv_cache"),
        py::arg("block_table"), py::arg("context_lens"), py::arg("next_n"), py::arg("pooled"),
        py::arg("indices"), py::arg("blocks"), py::arg("method"), py::arg("block_size"),
        py::arg("top_blocks"), py::arg("topk"), py::arg("sink_blocks"), py::arg("local_blocks"),
        py::arg("pooling"), py::arg("backend"), py::arg("stream"), py::arg("validate"),
        py::arg("pooled_scales") = py::none(), py::arg("given_blocks") = py::none(),
        "Paged decode into the caller's indices [B * next_n, width]; given_blocks [B * next_n, "
        "m]: another layer's chosen blocks, the block stage skipped (no pooled keys needed).");
  m.def("update_pooled_cache", &update_pooled_device, py::arg("kv_cache"), py::arg("block_table"),
        py::arg("old_lens"), py::arg("new_lens"), py::arg("pooled"), py::arg("pooled_scales"),
        py::arg("block_size"), py::arg("stream"),
        "The device pooled cache's update after a cache write (CUDA arrays).");
  m.def("update_pooled_keys", &update_pooled, py::arg("kv_cache"), py::arg("block_table"),
        py::arg("old_lens"), py::arg("new_lens"), py::arg("pooled"), py::arg("block_size"),
        py::arg("pooling"));
  m.def("quantize_fp8", &quantize_fp8, py::arg("x"), py::arg("codes"), py::arg("scale"),
        py::arg("rule"));
  m.def(
      "reference_scores",
      [](py::handle q, py::handle k, py::handle w, py::handle k_scale, py::handle cu_q,
         py::handle cu_k, py::handle ks, py::handle ke) {
        return scores_of(reference_rows(q, k, w, k_scale, cu_q, cu_k, ks, ke, nullptr));
      },
      py::arg("q"), py::arg("k"), py::arg("w"), py::arg("k_scale"), py::arg("cu_seqlens_q"),
      py::arg("cu_seqlens_k"), py::arg("ks"), py::arg("ke"));
  m.def(
      "reference_decode_scores",
      [](py::handle q, py::handle w, py::handle kv_cache, py::handle block_table,
         py::handle seq_lens, int next_n) {
        return scores_of(
            reference_decode_rows(q, w, kv_cache, block_table, seq_lens, next_n, nullptr));
      },
      py::arg("q"), py::arg("weights"), py::arg("kv_cache"), py::arg("block_table"),
      py::arg("context_lens"), py::arg("next_n"));
  m.def(
      "judge_prefill",
      [](py::handle q, py::handle k, py::handle w, py::handle k_scale, py::handle cu_q,
         py::handle cu_k, py::handle ks, py::handle ke, py::handle indices, py::handle blocks,
         const std::string& method, int block_size, int top_blocks, int topk, int sink, int local,
         const std::string& pooling, bool exact, const std::string& rounding,
         py::handle given) {
        const hisa::SelectConfig cfg =
            make_config(method, block_size, top_blocks, topk, sink, local, pooling);
        hisa::DType dt;
        auto rows = reference_rows(q, k, w, k_scale, cu_q, cu_k, ks, ke, &dt);
        return judge_rows(std::move(rows), dt, indices, blocks, cfg, exact, rounding, given);
      },
      py::arg("q"), py::arg("k"), py::arg("w"), py::arg("k_scale"), py::arg("cu_seqlens_q"),
      py::arg("cu_seqlens_k"), py::arg("ks"), py::arg("ke"), py::arg("indices"), py::arg("blocks"),
      py::arg("method"), py::arg("block_size"), py::arg("top_blocks"), py::arg("topk"),
      py::arg("sink_blocks"), py::arg("local_blocks"), py::arg("pooling"), py::arg("exact"),
      py::arg("rounding"), py::arg("given_blocks") = py::none());
  m.def(
      "judge_decode",
      [](py::handle q, py::handle w, py::handle kv_cache, py::handle block_table,
         py::handle seq_lens, int next_n, py::handle indices, py::handle blocks,
         const std::string& method, int block_size, int top_blocks, int topk, int sink, int local,
         const std::string& pooling, bool exact, const std::string& rounding,
         py::handle given) {
        const hisa::SelectConfig cfg =
            make_config(method, block_size, top_blocks, topk, sink, local, pooling);
        hisa::DType dt;
        auto rows = reference_decode_rows(q, w, kv_cache, block_table, seq_lens, next_n, &dt);
        return judge_rows(std::move(rows), dt, indices, blocks, cfg, exact, rounding, given);
      },
      py::arg("q"), py::arg("weights"), py::arg("kv_cache"), py::arg("block_table"),
      py::arg("context_lens"), py::arg("next_n"), py::arg("indices"), py::arg("blocks"),
      py::arg("method"), py::arg("block_size"), py::arg("top_blocks"), py::arg("topk"),
      py::arg("sink_blocks"), py::arg("local_blocks"), py::arg("pooling"), py::arg("exact"),
      py::arg("rounding"), py::arg("given_blocks") = py::none());
  m.def("fidelity", &fidelity, py::arg("a"), py::arg("b"), py::arg("scores"), py::arg("visible"),
        py::arg("budget_tokens"));
  m.def(
      "check_config",
      [](const std::string& method, int block_size, int top_blocks, int topk, int sink, int local,
         const std::string& pooling) {
        return make_config(method, block_size, top_blocks, topk, sink, local, pooling).out_width();
      },
      py::arg("method"), py::arg("block_size"), py::arg("top_blocks"), py::arg("topk"),
      py::arg("sink_blocks"), py::arg("local_blocks"), py::arg("pooling"),
      "Validates a configuration; returns the width of its indices output.");
  m.def("to_float", &bits_to_float, py::arg("bits"),
        "fp8 e4m3 (uint8) or bf16 (uint16) bits to float32 (host)");
  m.def("to_bf16", &float_to_bf16_bits, py::arg("x"), "float32 to bf16 bits (uint16, RNE; host)");
  m.def("backends", &hisa::backend_names, "Backends compiled into this build");
  m.def("cuda_available", &hisa::cuda_available, "This build has the CUDA backend and sees a GPU");
#if HISA_WITH_CUDA
  m.def(
      "cuda_built", [] { return true; }, "This build has the CUDA backend");
#else
  m.def(
      "cuda_built", [] { return false; }, "This build has the CUDA backend");
#endif
  m.def("cuda_device", &cuda_device_description, "The current CUDA device, or '' without one");
}

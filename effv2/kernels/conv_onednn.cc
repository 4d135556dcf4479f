// 2-D convolution without bias ("same" padding as MindSpore and TensorFlow place it; regular,
// grouped or depthwise) forward, backward-data and backward-weights on oneDNN 3.x, as MindSpore AOT
// custom operators on CPU. MindSpore 2.10's own CPU convolution hands its bundled oneDNN plain NCHW
// tensors, which sends depthwise convolutions to oneDNN's generic GEMM path; here the primitive
// picks its preferred (blocked) layouts, and the NCHW tensors MindSpore passes are reordered in and
// out. oneDNN picks the instruction set (AVX2, AVX-512) at run time.
//
// Linked against MindSpore's own libdnnl (already in the process). That build runs its primitives on
// a thread pool the caller provides (oneDNN's threadpool runtime); a stream made without one runs
// every primitive on the calling thread, as this kernel's first version did. Its streams now carry
// a pool of its own: the calling thread plus one worker per further core of the process's affinity.
// oneDNN splits a primitive's work by the calling thread's "max concurrency" (default: the
// machine's core count), set to the pool's size before a primitive is built or run.
//
// Stride and padding are not attributes: they follow from the shapes MindSpore passes (the output
// of a "same" convolution has ceil(H / stride) rows), so one library serves every layer.
#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/dnnl/dnnl_threadpool.h>
#include <oneapi/dnnl/dnnl_threadpool_iface.hpp>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

namespace {

// oneDNN's threadpool interface on threads of our own. parallel_for(n, fn) runs fn(i, n) for every
// i on the caller and the workers, returning when all have run; one job at a time (a second
// caller waits), a call from inside a job runs inline (oneDNN asks get_in_parallel first).
class Pool final : public dnnl::threadpool_interop::threadpool_iface {
 public:
  explicit Pool(int threads) : threads_(std::max(threads, 1)) {
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { serve(); });
  }
  ~Pool() override {
    {
      std::lock_guard<std::mutex> lock(state_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto &worker : workers_) worker.join();
  }
  int get_num_threads() const override { return threads_; }
  bool get_in_parallel() const override { return inside_; }
  uint64_t get_flags() const override { return 0; }  // synchronous
  void parallel_for(int n, const std::function<void(int, int)> &fn) override {
    if (n <= 0) return;
    if (n == 1 || threads_ == 1 || inside_) {
      for (int i = 0; i < n; ++i) fn(i, n);
      return;
    }
    std::lock_guard<std::mutex> one_job(caller_);
    {
      std::lock_guard<std::mutex> lock(state_);
      job_ = &fn;
      tasks_ = n;
      next_ = 0;
      finished_ = 0;
      ++generation_;
    }
    wake_.notify_all();
    finish(take_tasks(fn, n));
    std::unique_lock<std::mutex> lock(state_);
    // a worker that joined this job holds a reference to fn: return only once it has left
    all_done_.wait(lock, [&] { return finished_ == tasks_ && joined_ == 0; });
    job_ = nullptr;
  }

 private:
  void serve() {
    long seen = 0;
    for (;;) {
      const std::function<void(int, int)> *job;
      int tasks;
      {
        std::unique_lock<std::mutex> lock(state_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        if (job_ == nullptr) continue;  // woken after that job had ended
        job = job_;
        tasks = tasks_;
        ++joined_;
      }
      const int done = take_tasks(*job, tasks);
      std::lock_guard<std::mutex> lock(state_);
      --joined_;
      finished_ += done;
      all_done_.notify_all();
    }
  }
  int take_tasks(const std::function<void(int, int)> &fn, int tasks) {
    inside_ = true;
    int done = 0;
    for (int i = next_++; i < tasks; i = next_++, ++done) fn(i, tasks);
    inside_ = false;
    return done;
  }
  void finish(int done) {
    std::lock_guard<std::mutex> lock(state_);
    finished_ += done;
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex caller_, state_;
  std::condition_variable wake_, all_done_;
  const std::function<void(int, int)> *job_ = nullptr;
  int tasks_ = 0, finished_ = 0, joined_ = 0;
  std::atomic<int> next_{0};
  long generation_ = 0;
  bool stopping_ = false;
  static thread_local bool inside_;
};
thread_local bool Pool::inside_ = false;

// the cores this process may run on (its affinity: msrun and taskset narrow it)
int usable_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(CPU_COUNT(&set), 1);
  return std::max(static_cast<int>(std::thread::hardware_concurrency()), 1);
}

Pool &pool() {
  static Pool threads(usable_cores());
  return threads;
}

// oneDNN reads the calling thread's max concurrency when it builds and when it runs a primitive: the
// pool's size, which follows the affinity where the core count would not
void use_pool_here() { dnnl_threadpool_interop_set_max_concurrency(pool().get_num_threads()); }

dnnl::stream pool_stream(const dnnl::engine &engine) {
  dnnl_stream_t stream = nullptr;
  dnnl_threadpool_interop_stream_create(&stream, engine.get(),
                                        static_cast<dnnl::threadpool_interop::threadpool_iface *>(&pool()));
  return dnnl::stream(stream);
}

using dnnl::memory;
using Tag = memory::format_tag;
using Type = memory::data_type;

dnnl::engine &cpu() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Geometry {
  int64_t n, c, h, w, out_c, out_h, out_w, k, groups, stride, pad_top, pad_left, pad_bottom, pad_right;

  memory::desc activation(Tag tag) const { return {{n, c, h, w}, Type::f32, tag}; }
  memory::desc output(Tag tag) const { return {{n, out_c, out_h, out_w}, Type::f32, tag}; }
  // MindSpore's (out, in / groups, k, k) weights; grouped as oneDNN's (groups, out / groups,
  // in / groups, k, k), the same bytes
  memory::desc weights(bool plain) const {
    if (groups == 1) return {{out_c, c, k, k}, Type::f32, plain ? Tag::oihw : Tag::any};
    return {{groups, out_c / groups, c / groups, k, k}, Type::f32, plain ? Tag::goihw : Tag::any};
  }
  auto key() const { return std::make_tuple(n, c, h, w, out_c, out_h, out_w, k, groups); }
};

// the stride s with ceil(size / s) == out (none: not a "same" convolution), and TensorFlow's split
// of the total padding: the odd pixel goes to the bottom / right
bool same_padding(int64_t size, int64_t out, int64_t k, int64_t &stride, int64_t &before, int64_t &after) {
  for (stride = 1; stride <= k; ++stride) {
    if ((size + stride - 1) / stride == out) {
      const int64_t total = std::max<int64_t>((out - 1) * stride + k - size, 0);
      before = total / 2;
      after = total - before;
      return true;
    }
  }
  return false;
}

// x: (N, C, H, W), weights: (O, C / groups, k, k), y: (N, O, Ho, Wo)
bool geometry(const int64_t *x, const int64_t *weights, const int64_t *y, Geometry &g) {
  if (weights[1] <= 0 || x[1] % weights[1] != 0 || weights[2] != weights[3] || y[0] != x[0] || y[1] != weights[0])
    return false;
  const int64_t groups = x[1] / weights[1];
  if (weights[0] % groups != 0) return false;
  g = {x[0], x[1], x[2], x[3], y[1], y[2], y[3], weights[2], groups, 0, 0, 0, 0, 0};
  int64_t stride_w = 0;
  return same_padding(g.h, g.out_h, g.k, g.stride, g.pad_top, g.pad_bottom) &&
         same_padding(g.w, g.out_w, g.k, stride_w, g.pad_left, g.pad_right) && stride_w == g.stride;
}

// One tensor of a primitive: MindSpore's plain buffer, and where the primitive wants another
// layout, a buffer of that layout and the reorder between the two.
struct Operand {
  memory user, inner;
  dnnl::reorder move;
  bool reordered;

  Operand(const memory::desc &plain, const memory::desc &wanted, bool input)
      : user(plain, cpu(), DNNL_MEMORY_NONE), reordered(plain != wanted) {
    inner = reordered ? memory(wanted, cpu()) : user;
    if (reordered) move = input ? dnnl::reorder(user, inner) : dnnl::reorder(inner, user);
  }
  // before the primitive runs: an output without a reorder is written straight into `data`
  void attach(dnnl::stream &s, const void *data, bool input) {
    user.set_data_handle(const_cast<void *>(data));
    if (reordered && input) move.execute(s, user, inner);
  }
  void take_out(dnnl::stream &s) {
    if (reordered) move.execute(s, inner, user);
  }
};

// A primitive with two inputs and one output, its operands kept between calls (a lock each:
// MindSpore may run two layers of the same shape at once)
struct Kernel {
  dnnl::primitive primitive;
  int first_arg, second_arg, out_arg;
  Operand first, second, out;
  dnnl::stream s;
  std::mutex busy;

  Kernel(dnnl::primitive p, int a, int b, int o, Operand x, Operand y, Operand z)
      : primitive(std::move(p)), first_arg(a), second_arg(b), out_arg(o), first(x), second(y), out(z),
        s(pool_stream(cpu())) {}

  void run(const void *a, const void *b, void *result) {
    std::lock_guard<std::mutex> lock(busy);
    use_pool_here();
    first.attach(s, a, true);
    second.attach(s, b, true);
    out.attach(s, result, false);
    primitive.execute(s, {{first_arg, first.inner}, {second_arg, second.inner}, {out_arg, out.inner}});
    out.take_out(s);
    s.wait();
  }
};

dnnl::convolution_forward::primitive_desc forward_desc(const Geometry &g) {
  return {cpu(),
          dnnl::prop_kind::forward_training,
          dnnl::algorithm::convolution_direct,
          g.activation(Tag::any),
          g.weights(false),
          g.output(Tag::any),
          {g.stride, g.stride},
          {g.pad_top, g.pad_left},
          {g.pad_bottom, g.pad_right}};
}

enum class Direction { kForward, kGradInput, kGradWeights };

std::unique_ptr<Kernel> build(Direction direction, const Geometry &g) {
  const auto hint = forward_desc(g);
  const memory::desc x = g.activation(Tag::nchw), w = g.weights(true), y = g.output(Tag::nchw);
  switch (direction) {
    case Direction::kForward:
      return std::make_unique<Kernel>(dnnl::convolution_forward(hint), DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST,
                                      Operand(x, hint.src_desc(), true), Operand(w, hint.weights_desc(), true),
                                      Operand(y, hint.dst_desc(), false));
    case Direction::kGradInput: {
      dnnl::convolution_backward_data::primitive_desc pd(
          cpu(), dnnl::algorithm::convolution_direct, g.activation(Tag::any), g.weights(false), g.output(Tag::any),
          {g.stride, g.stride}, {g.pad_top, g.pad_left}, {g.pad_bottom, g.pad_right}, hint);
      return std::make_unique<Kernel>(dnnl::convolution_backward_data(pd), DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS,
                                      DNNL_ARG_DIFF_SRC, Operand(y, pd.diff_dst_desc(), true),
                                      Operand(w, pd.weights_desc(), true), Operand(x, pd.diff_src_desc(), false));
    }
    case Direction::kGradWeights: {
      dnnl::convolution_backward_weights::primitive_desc pd(
          cpu(), dnnl::algorithm::convolution_direct, g.activation(Tag::any), g.weights(false), g.output(Tag::any),
          {g.stride, g.stride}, {g.pad_top, g.pad_left}, {g.pad_bottom, g.pad_right}, hint);
      return std::make_unique<Kernel>(dnnl::convolution_backward_weights(pd), DNNL_ARG_SRC, DNNL_ARG_DIFF_DST,
                                      DNNL_ARG_DIFF_WEIGHTS, Operand(x, pd.src_desc(), true),
                                      Operand(y, pd.diff_dst_desc(), true), Operand(w, pd.diff_weights_desc(), false));
    }
  }
  return nullptr;
}

// primitives are built once per layer shape and direction (building one takes longer than running it)
Kernel *kernel_for(Direction direction, const Geometry &g) {
  static std::mutex guard;
  static std::map<decltype(std::tuple_cat(std::make_tuple(0), Geometry{}.key())), std::unique_ptr<Kernel>> kernels;
  std::lock_guard<std::mutex> lock(guard);
  auto key = std::tuple_cat(std::make_tuple(static_cast<int>(direction)), g.key());
  auto &slot = kernels[key];
  if (!slot) slot = build(direction, g);
  return slot.get();
}

bool float32_4d(int count, const int *ndims, const char **dtypes) {
  for (int i = 0; i < count; ++i) {
    if (ndims[i] != 4 || std::strcmp(dtypes[i], "float32") != 0) return false;
  }
  return true;
}

int launch(Direction direction, const Geometry &g, const void *a, const void *b, void *result) {
  try {
    use_pool_here();  // before the primitive is built: it splits its work by this
    kernel_for(direction, g)->run(a, b, result);
    return 0;
  } catch (const dnnl::error &) {
    return 2;
  }
}

}  // namespace

// params: x (N, C, H, W), weights (O, C / groups, k, k), y (N, O, Ho, Wo)
extern "C" int Conv2D(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  Geometry g;
  if (nparam != 3 || !float32_4d(3, ndims, dtypes) || !geometry(shapes[0], shapes[1], shapes[2], g)) return 1;
  return launch(Direction::kForward, g, params[0], params[1], params[2]);
}

// params: dy (N, C, Ho, Wo), weights, x (for its shape), dx
extern "C" int Conv2DGradInput(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                      void *stream, void *extra) {
  Geometry g;
  if (nparam != 4 || !float32_4d(4, ndims, dtypes) || !geometry(shapes[2], shapes[1], shapes[0], g)) return 1;
  return launch(Direction::kGradInput, g, params[0], params[1], params[3]);
}

// params: x, dy, weights (for their shape), dweights
extern "C" int Conv2DGradWeights(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                        void *stream, void *extra) {
  Geometry g;
  if (nparam != 4 || !float32_4d(4, ndims, dtypes) || !geometry(shapes[0], shapes[2], shapes[1], g)) return 1;
  return launch(Direction::kGradWeights, g, params[0], params[1], params[3]);
}

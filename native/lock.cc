// flock(2). A waiting flock(2) cannot be interrupted from another thread (no signal can be aimed
// at one thread of a Node process safely), so flockWait polls with LOCK_NB on a thread of its own
// (blocking.h: never on libuv's pool, where waiters would starve the holder's own fs calls):
// backoff from 1 ms doubling to 20 ms, woken at once by a cancel, checking the deadline between
// attempts. Cost: one thread per waiter and up to 20 ms extra latency after a release. The
// thread uses its own duplicate of the caller's fd (made on the calling thread), so a concurrent
// close() of the caller's fd cannot hand the number to another file under the wait.
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "addon.h"
#include "args.h"
#include "blocking.h"
#include "errors.h"
#include "fd_handle.h"

namespace mk {

namespace {

constexpr uint64_t kMs = 1000 * 1000;  // nanoseconds

class FlockCall;

// Links the JS cancel() function and the call; each side lets go of it once (both on the loop
// thread), the last one frees it.
struct CancelToken {
  FlockCall* call = nullptr;
  int refs = 2;
  void Release() {
    if (--refs == 0) delete this;
  }
};

class FlockCall : public BlockingCall {
 public:
  FlockCall(int fd, int op, int64_t timeoutMs, CancelToken* token)
      : fd_(fd), op_(op), timeoutMs_(timeoutMs), token_(token) {
    token_->call = this;
  }
  ~FlockCall() override {
    token_->call = nullptr;
    token_->Release();
    close(fd_);  // our duplicate: the lock stays with the caller's open file
  }

 protected:
  void Run() override {
    const uint64_t deadline = uv_hrtime() + static_cast<uint64_t>(timeoutMs_) * kMs;
    uint64_t backoff = 1 * kMs;
    for (;;) {
      if (Cancelled()) return;
      if (flock(fd_, op_ | LOCK_NB) == 0) {
        taken_ = true;
        return;
      }
      if (errno == EINTR) continue;
      if (errno != EWOULDBLOCK) {
        err_ = errno;
        return;
      }
      uint64_t sleep = backoff;
      if (timeoutMs_ >= 0) {
        uint64_t now = uv_hrtime();
        if (now >= deadline) return;
        sleep = std::min(sleep, deadline - now);
      }
      SleepUnlessCancelled(sleep);
      backoff = std::min(backoff * 2, 20 * kMs);
    }
  }

  Napi::Value Result(Napi::Env env) override {
    if (err_ != 0) throw ErrnoError(env, err_, "flock");
    // A lock taken in the same instant as a cancel is released again, so that a cancelled
    // wait never leaves the caller holding a lock it was told it did not get.
    if (taken_ && Cancelled()) {
      flock(fd_, LOCK_UN);
      taken_ = false;
    }
    return Napi::Boolean::New(env, taken_);
  }

 private:
  int fd_;
  int op_;
  int64_t timeoutMs_;
  CancelToken* token_;
  bool taken_ = false;
  int err_ = 0;
};

Napi::Value Cancel(const Napi::CallbackInfo& info) {
  auto* token = static_cast<CancelToken*>(info.Data());
  if (token->call != nullptr) token->call->Cancel();
  return info.Env().Undefined();
}

}  // namespace

Napi::Value Addon::FlockTry(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info[0], "fd");
  int op = ArgBool(info[1], "exclusive") ? LOCK_EX : LOCK_SH;
  for (;;) {
    if (flock(fd, op | LOCK_NB) == 0) return Napi::Boolean::New(info.Env(), true);
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(info.Env(), false);
    if (errno != EINTR) throw ErrnoError(info.Env(), errno, "flock");
  }
}

Napi::Value Addon::FlockWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "fd");
  int op = ArgBool(info[1], "exclusive") ? LOCK_EX : LOCK_SH;
  int64_t timeoutMs = ArgInt(info[2], "timeoutMs", -1, INT32_MAX);
  int dup = DupCloexec(fd);
  int dupError = errno;
  Napi::Object handle = Napi::Object::New(env);
  if (dup < 0) {
    // A bad fd fails as flock(2) itself would report it.
    handle.Set("promise", RejectedPromise(env, ErrnoError(env, dupError, "flock")));
    handle.Set("cancel", Napi::Function::New(env, [](const Napi::CallbackInfo&) {}, "cancel"));
    return handle;
  }
  auto* token = new CancelToken();
  Napi::Function cancel = Napi::Function::New(env, Cancel, "cancel", token);
  cancel.AddFinalizer([](Napi::Env, CancelToken* t) { t->Release(); }, token);
  handle.Set("cancel", cancel);
  handle.Set("promise", BlockingCall::Start(env, *this, new FlockCall(dup, op, timeoutMs, token), "multikernel:flock"));
  return handle;
}

Napi::Value Addon::FlockUnlock(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info[0], "fd");
  while (flock(fd, LOCK_UN) < 0) {
    if (errno != EINTR) throw ErrnoError(info.Env(), errno, "flock");
  }
  return info.Env().Undefined();
}

}  // namespace mk

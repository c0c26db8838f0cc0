// Test-only helper addon (see binding.gyp): what the tests need and the production addon must not
// offer.
//
// socketpair(): [fd, fd], an AF_UNIX stream socketpair, non-blocking and close-on-exec, for the
//   tests to wrap with the production addon's dupFd(); close(fd) closes the originals (node:fs
//   would warn in a worker about an fd it did not open).
//
// fakeSyscalls({ rebootDelayMs, rebootErrno, kexecErrno }): installs, for the whole process and
//   for good, a seccomp filter that hands three kinds of system calls to a supervisor thread
//   instead of the kernel (SECCOMP_RET_USER_NOTIF; the supervisor never lets one continue into
//   the kernel):
//   - reboot(2), every one: answered after rebootDelayMs with -rebootErrno (0: success). So the
//     graceful-halt path of the addon can be tested, blocking like the real one, and no
//     reboot(2) of this process can ever reach the kernel;
//   - kexec_file_load(2), every one: the supervisor notes which files the two fd arguments are
//     (readlink of /proc/<tid>/fd/<fd>, read by fakeKexecLog()) and answers -kexecErrno;
//   - flock(fd, op) with FAKE_FD_BASE < fd < FAKE_FD_BASE + 4096: answered at once with the
//     errno fd - FAKE_FD_BASE, so that any errno comes out of the real addon's error path.
//   Other system calls, and other architectures' (x32) calls, never match: the latter kill.
//
// fakeProbe(): flock(FAKE_FD_BASE + 42, LOCK_UN); returns its errno: 42 once the fake answers.
//   Callers check it before they let anything call reboot(2).
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <node_api.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FAKE_FD_BASE 10000

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "unsupported architecture"
#endif

static napi_value Throw(napi_env env, const char* what) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s", what, strerror(errno));
  napi_throw_error(env, NULL, message);
  return NULL;
}

static napi_value Socketpair(napi_env env, napi_callback_info info) {
  (void)info;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) return Throw(env, "socketpair");
  napi_value result, a, b;
  napi_create_array_with_length(env, 2, &result);
  napi_create_int32(env, fds[0], &a);
  napi_create_int32(env, fds[1], &b);
  napi_set_element(env, result, 0, a);
  napi_set_element(env, result, 1, b);
  return result;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg;
  int fd;
  napi_get_cb_info(env, info, &argc, &arg, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, arg, &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "close(fd) takes an integer");
    return NULL;
  }
  if (close(fd) < 0) return Throw(env, "close");
  return NULL;
}

// Process-wide on purpose: the filter is too (and a test process installs it once).
static int listener = -1;
static int rebootDelayMs = 0;
static int rebootErrno = 0;
static int kexecErrno = 0;
static struct seccomp_notif_sizes sizes;
#define KEXEC_LOG_MAX 64
static char kexecLog[KEXEC_LOG_MAX][2][256];
static int kexecLogLength = 0;
static pthread_mutex_t kexecLogMutex = PTHREAD_MUTEX_INITIALIZER;

// What fd `fd` of thread `tid` is, or "" when it is not open (-1: none asked).
static void DescribeFd(uint32_t tid, int fd, char* out, size_t size) {
  out[0] = '\0';
  if (fd < 0) return;
  char link[64];
  snprintf(link, sizeof link, "/proc/%u/fd/%d", tid, fd);
  ssize_t n = readlink(link, out, size - 1);
  out[n > 0 ? n : 0] = '\0';
}

struct Reply {
  uint64_t id;
  int error;
  int delayMs;
};

static void* SendReply(void* arg) {
  struct Reply* reply = arg;
  if (reply->delayMs > 0) {
    struct timespec ts = {reply->delayMs / 1000, (long)(reply->delayMs % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
  }
  struct seccomp_notif_resp* resp = calloc(1, sizes.seccomp_notif_resp);
  resp->id = reply->id;
  resp->error = -reply->error;
  resp->val = 0;
  resp->flags = 0;  // never SECCOMP_USER_NOTIF_FLAG_CONTINUE: nothing reaches the kernel
  ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp);  // ENOENT when the caller went away
  free(resp);
  free(reply);
  return NULL;
}

static void* Supervise(void* arg) {
  (void)arg;
  struct seccomp_notif* req = malloc(sizes.seccomp_notif);
  for (;;) {
    memset(req, 0, sizes.seccomp_notif);
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) < 0) {
      if (errno == EINTR || errno == ENOENT) continue;
      break;
    }
    struct Reply* reply = malloc(sizeof *reply);
    reply->id = req->id;
    if (req->data.nr == __NR_kexec_file_load) {
      pthread_mutex_lock(&kexecLogMutex);
      if (kexecLogLength < KEXEC_LOG_MAX) {
        DescribeFd(req->pid, (int)req->data.args[0], kexecLog[kexecLogLength][0], sizeof kexecLog[0][0]);
        DescribeFd(req->pid, (int)req->data.args[1], kexecLog[kexecLogLength][1], sizeof kexecLog[0][1]);
        kexecLogLength++;
      }
      pthread_mutex_unlock(&kexecLogMutex);
      reply->error = kexecErrno;
      reply->delayMs = 0;
      SendReply(reply);
    } else if (req->data.nr == __NR_reboot) {
      reply->error = rebootErrno;
      reply->delayMs = rebootDelayMs;
      // One thread per call: concurrent halts wait side by side, as in the kernel.
      pthread_t thread;
      pthread_create(&thread, NULL, SendReply, reply);
      pthread_detach(thread);
    } else {
      reply->error = (int)((uint32_t)req->data.args[0] - FAKE_FD_BASE);
      reply->delayMs = 0;
      SendReply(reply);
    }
  }
  free(req);
  return NULL;
}

static int GetIntProperty(napi_env env, napi_value object, const char* name, int* out) {
  napi_value value;
  if (napi_get_named_property(env, object, name, &value) != napi_ok) return -1;
  return napi_get_value_int32(env, value, out) == napi_ok ? 0 : -1;
}

static napi_value FakeSyscalls(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value options;
  napi_get_cb_info(env, info, &argc, &options, NULL, NULL);
  if (argc < 1 || GetIntProperty(env, options, "rebootDelayMs", &rebootDelayMs) < 0 ||
      GetIntProperty(env, options, "rebootErrno", &rebootErrno) < 0 ||
      GetIntProperty(env, options, "kexecErrno", &kexecErrno) < 0) {
    napi_throw_type_error(env, NULL, "fakeSyscalls({ rebootDelayMs, rebootErrno, kexecErrno }) takes integers");
    return NULL;
  }
  if (listener >= 0) {
    napi_throw_error(env, NULL, "fakeSyscalls() was already called in this process");
    return NULL;
  }
  if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0) return Throw(env, "SECCOMP_GET_NOTIF_SIZES");

  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      // x32 system calls (x86_64 numbers with bit 30 set) would slip past the numbers below.
      BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_reboot, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_kexec_file_load, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_flock, 0, 4),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),  // low half (little endian)
      BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, FAKE_FD_BASE, 0, 2),
      BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, FAKE_FD_BASE + 4096, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog program = {.len = sizeof filter / sizeof filter[0], .filter = filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return Throw(env, "PR_SET_NO_NEW_PRIVS");
  // TSYNC: every thread of the process, the ones libuv and V8 started already included.
  int fd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                        SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_TSYNC_ESRCH,
                        &program);
  if (fd < 0) return Throw(env, "seccomp(SECCOMP_SET_MODE_FILTER)");
  listener = fd;
  pthread_t thread;
  if (pthread_create(&thread, NULL, Supervise, NULL) != 0) return Throw(env, "pthread_create");
  pthread_detach(thread);
  return NULL;
}

static napi_value FakeProbe(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  int err = flock(FAKE_FD_BASE + 42, LOCK_UN) < 0 ? errno : 0;
  napi_create_int32(env, err, &result);
  return result;
}

static napi_value FakeKexecLog(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  napi_create_array(env, &result);
  pthread_mutex_lock(&kexecLogMutex);
  for (int i = 0; i < kexecLogLength; i++) {
    napi_value entry, kernel, initrd;
    napi_create_object(env, &entry);
    napi_create_string_utf8(env, kexecLog[i][0], NAPI_AUTO_LENGTH, &kernel);
    napi_create_string_utf8(env, kexecLog[i][1], NAPI_AUTO_LENGTH, &initrd);
    napi_set_named_property(env, entry, "kernel", kernel);
    napi_set_named_property(env, entry, "initrd", initrd);
    napi_set_element(env, result, (uint32_t)i, entry);
  }
  pthread_mutex_unlock(&kexecLogMutex);
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor properties[] = {
      {"socketpair", NULL, Socketpair, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fakeSyscalls", NULL, FakeSyscalls, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fakeProbe", NULL, FakeProbe, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fakeKexecLog", NULL, FakeKexecLog, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties);
  return exports;
}

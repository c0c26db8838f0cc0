// Node-fs-shaped system errors: message `CODE: description, syscall[ 'path']`,
// negative `errno`, `code`, `syscall`, `path` (exactly what fs.closeSync(-1) throws).
#pragma once

#include <napi.h>

namespace mk {

// `err` is a positive errno value.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const char* path = nullptr);

// Promise-returning functions never throw: argument errors become a rejected promise.
Napi::Promise RejectedPromise(Napi::Env env, const Napi::Error& error);

}  // namespace mk

{
  "targets": [
    {
      "target_name": "multikernel",
      "conditions": [
        ["OS=='linux'", {
          "sources": [
            "native/addon.cc",
            "native/args.cc",
            "native/errors.cc",
            "native/kexec.cc",
            "native/reboot.cc",
            "native/mount.cc",
            "native/lock.cc",
            "native/vsock.cc",
            "native/fd.cc",
            "native/fd_watcher.cc",
            "native/notify.cc",
            "native/memfd.cc"
          ],
          "dependencies": [
            "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
          ],
          "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
          "cflags": ["-Wall", "-Wextra", "-fvisibility=hidden"],
          "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-fvisibility=hidden"]
        }, {
          "type": "none"
        }]
      ]
    }
  ]
}
